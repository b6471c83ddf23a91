"""Programs that tests/test_distributed.py runs under ``mpiexec -n N``, and the training
code it also runs in one process as the reference.

usage: mpiexec -n N python tests/mpi_cases.py CASE OUT [options]
"""
import json
import os
import sys
import time

import numpy as np

import tapegrad as tg
import tapegrad.distributed as dist

STEPS = 20
BATCH = 32


def make_model(dtype, bn=False):
    tg.manual_seed(0)
    layers = [tg.nn.Linear(8, 16)]
    if bn:
        layers.append(tg.nn.BatchNorm1d(16))
    layers += [tg.nn.Tanh(), tg.nn.Linear(16, 3)]
    return tg.nn.Sequential(*layers).to(dtype)


def data(dtype, micro=1):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((STEPS, micro, BATCH, 8))
    Y = rng.integers(0, 3, (STEPS, micro, BATCH))
    return tg.tensor(X, dtype=dtype), tg.tensor(Y)


def optimizer(name, params):
    if name == "adam":
        return tg.optim.Adam(params, lr=0.01)
    return tg.optim.SGD(params, lr=0.1, momentum=0.9)


def train(model, opt, rank, world, compiled, micro=1, no_sync=None, dtype=tg.float64):
    """STEPS steps of cross-entropy on this rank's share of each batch; with ``micro``
    > 1, gradients accumulate over micro-batches, all but the last inside
    ``no_sync()`` when given."""
    X, Y = data(dtype, micro)
    share = BATCH // world

    def step(x, y):
        loss = tg.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    def update():
        opt.step()
        opt.zero_grad()

    f = tg.compile(step) if compiled else step
    losses = []
    for i in range(STEPS):
        for m in range(micro):
            x = X[i, m, rank * share:(rank + 1) * share]
            y = Y[i, m, rank * share:(rank + 1) * share]
            if no_sync is not None and m < micro - 1:
                with no_sync():
                    loss = f(x, y)
            else:
                loss = f(x, y)
            losses.append(loss.item())
        update()
    counts = (f.records, f.replays, f.fallbacks) if compiled else None
    return [p.detach().numpy().copy() for p in model.parameters()], losses, counts


def case_train(out, dtype, compiled, opt_name, micro):
    dtype = getattr(tg, dtype)
    compiled, micro = compiled == "1", int(micro)
    rank, world = dist.get_rank(), dist.get_world_size()
    ddp = tg.nn.parallel.DistributedDataParallel(make_model(dtype))
    opt = optimizer(opt_name, ddp.parameters())
    params, _, counts = train(ddp, opt, rank, world, compiled, micro,
                              ddp.no_sync if micro > 1 else None, dtype)
    np.savez(os.path.join(out, f"params_{rank}.npz"), *params)
    with open(os.path.join(out, f"counts_{rank}.json"), "w") as fh:
        json.dump(counts, fh)


def case_collectives(out):
    rank, world = dist.get_rank(), dist.get_world_size()
    R = dist.ReduceOp
    for dt in (tg.float32, tg.float64, tg.int64):
        t = tg.tensor([1, 2, 3], dtype=dt) * (rank + 1)
        dist.all_reduce(t)
        assert t.tolist() == [3, 6, 9] and t.dtype == dt, t
        for op, want in ((R.MAX, 2), (R.MIN, 1), (R.PRODUCT, 2)):
            t = tg.full((2,), rank + 1, dtype=dt)
            dist.all_reduce(t, op=op)
            assert t.tolist() == [want, want], (op, t)
    t = tg.tensor([1.0, 3.0], dtype=tg.float64) * (rank + 1)
    dist.all_reduce(t, op=R.AVG)
    assert t.tolist() == [1.5, 4.5], t
    b = tg.arange(4) * (rank + 1)
    dist.broadcast(b, src=1)
    assert b.tolist() == [0, 2, 4, 6], b
    lst = [tg.zeros(2, 2) for _ in range(world)]
    dist.all_gather(lst, tg.full((2, 2), float(rank)))
    assert [x.tolist() for x in lst] == [[[0.0, 0.0]] * 2, [[1.0, 1.0]] * 2], lst
    r = tg.full((3,), float(rank + 1))
    dist.reduce(r, dst=0)
    assert r.tolist() == ([3.0] * 3 if rank == 0 else [2.0] * 3), r
    m = tg.ones(3, 4)                       # a strided column, written back in place
    dist.all_reduce(m[:, 1])
    assert m.sum().item() == 15.0, m
    w = dist.all_reduce(tg.ones(3), async_op=True)
    assert w.wait() is True and w.is_completed()
    objs = [None, None]
    dist.all_gather_object(objs, {"rank": rank})
    assert objs == [{"rank": 0}, {"rank": 1}], objs
    lst = ["from rank 0" if rank == 0 else None]
    dist.broadcast_object_list(lst, src=0)
    assert lst == ["from rank 0"], lst
    dist.barrier()

    @tg.compile
    def mean_loss(x):                       # a collective inside a compiled function
        loss = (x * x).sum()
        total = loss.detach().clone()
        dist.all_reduce(total)
        return total / world
    for i in range(4):
        got = mean_loss(tg.full((3,), float(rank + i)))
        want = 3 * ((0 + i) ** 2 + (1 + i) ** 2) / 2
        assert got.item() == want, (i, got, want)
    assert mean_loss.replays >= 2 and mean_loss.fallbacks == 0, (mean_loss.replays,
                                                                 mean_loss.fallbacks)
    open(os.path.join(out, f"ok_{rank}"), "w").close()


def case_buffers(out):
    """BatchNorm under DDP: compiled steps equal eager ones to the bit, and an eval
    forward leaves every rank with rank 0's running statistics."""
    rank, world = dist.get_rank(), dist.get_world_size()
    results = []
    for compiled in (False, True):
        ddp = tg.nn.parallel.DistributedDataParallel(make_model(tg.float64, bn=True))
        opt = optimizer("sgd", ddp.parameters())
        params, losses, _ = train(ddp, opt, rank, world, compiled)
        results.append((params, losses, [b.numpy().copy() for b in ddp.buffers()]))
    for a, b in zip(results[0][0] + results[0][2], results[1][0] + results[1][2]):
        assert np.array_equal(a, b), "compiled differs from eager"
    assert results[0][1] == results[1][1]
    ddp.eval()
    ddp(tg.zeros(2, 8, dtype=tg.float64))
    mine = np.concatenate([b.numpy().ravel().astype(float) for b in ddp.buffers()])
    everyone = [None] * world
    dist.all_gather_object(everyone, mine.tolist())
    assert all(e == everyone[0] for e in everyone)
    open(os.path.join(out, f"ok_{rank}"), "w").close()


def case_errors(out):
    """Bad calls raise PyTorch's exception types and change nothing."""
    import pytest
    rank, world = dist.get_rank(), dist.get_world_size()
    assert dist.is_initialized() and dist.get_backend() == "mpi"
    with pytest.raises(ValueError, match="twice"):
        dist.init_process_group("mpi")
    t = tg.ones(3)
    with pytest.raises(RuntimeError, match="invalid root rank: 5"):
        dist.broadcast(t, src=5)
    with pytest.raises(RuntimeError, match="invalid root rank: -1"):
        dist.reduce(t, dst=-1)
    with pytest.raises(RuntimeError, match="expected length"):
        dist.all_gather([tg.ones(3)] * (world + 1), t)
    with pytest.raises(RuntimeError, match=r"expected \[3\]"):
        dist.all_gather([tg.ones(2)] * world, t)
    with pytest.raises(TypeError, match="Expected parameter `tensor`"):
        dist.all_reduce([1.0, 2.0])
    with pytest.raises(TypeError, match="op must be"):
        dist.all_reduce(t, op="sum")
    with pytest.raises(RuntimeError, match="AVG needs a floating point"):
        dist.all_reduce(tg.ones(2, dtype=tg.int64), op=dist.ReduceOp.AVG)
    with pytest.raises(TypeError, match="unsupported dtype"):
        dist.all_reduce(tg.ones(2, dtype=tg.bool))
    assert t.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="device_ids"):
        tg.nn.parallel.DistributedDataParallel(tg.nn.Linear(2, 2), device_ids=[0])
    with pytest.raises(RuntimeError, match="doesn't have any parameter"):
        tg.nn.parallel.DistributedDataParallel(tg.nn.Linear(2, 2).requires_grad_(False))
    ddp = tg.nn.parallel.DistributedDataParallel(tg.nn.Linear(2, 2))
    assert list(ddp.state_dict()) == ["module.weight", "module.bias"]
    sampler = tg.utils.data.DistributedSampler(range(10))
    assert (sampler.num_replicas, sampler.rank) == (world, rank)
    open(os.path.join(out, f"ok_{rank}_of_{world}"), "w").close()


def case_unused(out):
    """A parameter only rank 0 uses counts as zero on rank 1; one nobody uses keeps
    grad None."""
    rank = dist.get_rank()
    tg.manual_seed(0)
    model = tg.nn.Sequential(tg.nn.Linear(2, 1), tg.nn.Linear(2, 1), tg.nn.Linear(2, 1))
    ddp = tg.nn.parallel.DistributedDataParallel(model)
    a, b, c = list(model.children())
    x = tg.ones(1, 2, dtype=tg.float32)
    loss = a(x).sum() + (b(x).sum() if rank == 0 else 0.0)
    loss.backward()
    assert a.weight.grad.tolist() == [[1.0, 1.0]], a.weight.grad
    assert b.weight.grad.tolist() == [[0.5, 0.5]], b.weight.grad
    assert c.weight.grad is None and ddp.module is model
    open(os.path.join(out, f"ok_{rank}"), "w").close()


def case_mismatch(out):
    rank = dist.get_rank()
    model = tg.nn.Linear(3, 2 + rank)
    try:
        tg.nn.parallel.DistributedDataParallel(model)
    except RuntimeError as exc:
        with open(os.path.join(out, f"error_{rank}.txt"), "w") as fh:
            fh.write(str(exc))


def case_fault(out):
    if dist.get_rank() == 1:
        raise ValueError("a bad batch on this rank")
    dist.all_reduce(tg.ones(3))


def case_timeout(out):
    if dist.get_rank() == 1:
        time.sleep(60)
    dist.all_reduce(tg.ones(3))


if __name__ == "__main__":
    name, out = sys.argv[1], sys.argv[2]
    kwargs = {"timeout": 2.0} if name == "timeout" else {}
    dist.init_process_group("mpi", **kwargs)
    globals()["case_" + name](out, *sys.argv[3:])
    dist.destroy_process_group()
