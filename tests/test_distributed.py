"""tapegrad.distributed and DistributedDataParallel: the programs of mpi_cases.py run
under ``mpiexec -n N``; the single-process reference runs here."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.utils.data import DistributedSampler

import mpi_cases

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "mpi_cases.py")


def _mpiexec():
    if importlib.util.find_spec("mpi4py") is None:
        return None
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs the [mpi] extra "
                               "(mpi4py and an MPI library with mpiexec)")


def launch(n, case, out, *args, timeout=240, check=True):
    cmd = [sys.executable, CASES, case, str(out), *args]
    if n:
        cmd = [MPIEXEC, "-n", str(n)] + cmd
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    took = time.perf_counter() - t0
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p, took


# ------------------------------------------------------------------ no MPI needed
def test_import_needs_no_mpi():
    code = ("import sys, tapegrad as tg, tapegrad.nn, tapegrad.distributed, "
            "tapegrad.utils.data; assert 'mpi4py' not in sys.modules; "
            "print(tg.distributed.is_initialized())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr


def test_calls_before_init_raise_as_pytorch():
    dist = tg.distributed
    msg = "Default process group has not been initialized"
    for call in (dist.get_rank, dist.get_world_size, dist.barrier,
                 lambda: dist.all_reduce(tg.ones(2)), lambda: dist.broadcast(tg.ones(2), 0),
                 lambda: tg.nn.parallel.DistributedDataParallel(tg.nn.Linear(2, 2))):
        with pytest.raises(ValueError, match=msg):
            call()
    with pytest.raises(AssertionError, match="Process group cannot be None"):
        dist.destroy_process_group()
    with pytest.raises(RuntimeError, match="doesn't have NCCL built in"):
        dist.init_process_group("nccl")
    with pytest.raises(ValueError, match="Invalid backend"):
        dist.init_process_group("carrier-pigeon")
    assert not dist.is_initialized()


@pytest.mark.parametrize("n, replicas, drop_last", [(10, 3, False), (10, 3, True),
                                                     (12, 4, False), (2, 3, False),
                                                     (7, 2, True)])
def test_distributed_sampler_shards_as_pytorch(n, replicas, drop_last):
    shards = [list(DistributedSampler(range(n), replicas, r, shuffle=False,
                                      drop_last=drop_last)) for r in range(replicas)]
    pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler as TorchSampler
    want = [list(TorchSampler(range(n), replicas, r, shuffle=False, drop_last=drop_last))
            for r in range(replicas)]
    assert shards == want
    assert len(DistributedSampler(range(n), replicas, 0, drop_last=drop_last)) == \
        len(TorchSampler(range(n), replicas, 0, drop_last=drop_last))


def test_distributed_sampler_shuffles_by_epoch():
    def epoch(e, seed=0):
        out = []
        for r in range(3):
            s = DistributedSampler(range(30), 3, r, seed=seed)
            s.set_epoch(e)
            out.append(list(s))
        return out
    a = epoch(0)
    assert sorted(i for shard in a for i in shard) == list(range(30))   # a partition
    assert a == epoch(0)                       # every rank draws the same permutation
    assert a != epoch(1) and a != epoch(0, seed=1)
    assert a[0] != list(range(0, 30, 3))
    with pytest.raises(ValueError, match=r"Invalid rank 3, rank should be in the interval "
                                         r"\[0, 2\]"):
        DistributedSampler(range(30), 3, 3)
    loader = tg.utils.data.DataLoader(tg.utils.data.TensorDataset(tg.arange(30)),
                                      batch_size=4, sampler=DistributedSampler(range(30), 3, 1))
    got = [int(i) for (b,) in loader for i in b.tolist()]
    assert got == a[1]


# ------------------------------------------------------------------ under mpiexec
@needs_mpi
@pytest.mark.parametrize("n", [0, 1, 2])
def test_errors_and_world_size(tmp_path, n):
    """Without a launcher (n = 0) the world is one process."""
    launch(n, "errors", tmp_path)
    world = max(n, 1)
    assert sorted(os.listdir(tmp_path)) == [f"ok_{r}_of_{world}" for r in range(world)]


@needs_mpi
def test_collectives(tmp_path):
    launch(2, "collectives", tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["ok_0", "ok_1"]


def _reference(dtype, opt_name, micro):
    model = mpi_cases.make_model(getattr(tg, dtype))
    opt = mpi_cases.optimizer(opt_name, model.parameters())
    params, _, _ = mpi_cases.train(model, opt, 0, 1, False, micro, None, getattr(tg, dtype))
    return params


@needs_mpi
@pytest.mark.parametrize("dtype, opt_name, micro, tol", [
    ("float64", "sgd", 1, 1e-12), ("float64", "adam", 2, 1e-12), ("float32", "sgd", 1, 1e-5),
])
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("compiled", ["0", "1"])
def test_ranks_match_one_process_with_the_whole_batch(tmp_path, n, dtype, opt_name, micro,
                                                      tol, compiled):
    """N ranks with batch B/N end where one process with batch B ends, after 20 steps
    (micro = 2: gradients accumulated under no_sync(), averaged at the second)."""
    launch(n, "train", tmp_path, dtype, compiled, opt_name, str(micro))
    want = _reference(dtype, opt_name, micro)
    for r in range(n):
        got = np.load(tmp_path / f"params_{r}.npz")
        got = [got[f"arr_{i}"] for i in range(len(got.files))]
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=0, atol=tol)
        with open(tmp_path / f"counts_{r}.json") as fh:
            counts = json.load(fh)
        if compiled == "1":
            records, replays, fallbacks = counts
            assert fallbacks == 0 and replays >= mpi_cases.STEPS * micro - 2 * micro, counts
    first = np.load(tmp_path / "params_0.npz")
    for r in range(1, n):                 # every rank holds the same parameters
        other = np.load(tmp_path / f"params_{r}.npz")
        assert all(np.array_equal(first[k], other[k]) for k in first.files)


@needs_mpi
def test_batchnorm_buffers_follow_rank_0_and_compiled_equals_eager(tmp_path):
    launch(2, "buffers", tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["ok_0", "ok_1"]


@needs_mpi
def test_a_parameter_one_rank_does_not_use_counts_as_zero_there(tmp_path):
    launch(2, "unused", tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["ok_0", "ok_1"]


@needs_mpi
def test_different_models_raise_on_every_rank(tmp_path):
    launch(2, "mismatch", tmp_path)
    for r in range(2):
        text = (tmp_path / f"error_{r}.txt").read_text()
        assert "rank 0 has 'weight' of shape [2, 3]" in text
        assert "rank 1 has 'weight' of shape [3, 3]" in text


@needs_mpi
def test_a_failing_rank_ends_the_job_naming_it(tmp_path):
    p, took = launch(2, "fault", tmp_path, timeout=120, check=False)
    assert p.returncode != 0
    assert "rank 1 of 2: ValueError: a bad batch on this rank" in p.stderr
    assert took < 30, took        # not waiting on the dead rank (which would be forever)


@needs_mpi
def test_a_collective_past_its_timeout_ends_the_job(tmp_path):
    p, took = launch(2, "timeout", tmp_path, timeout=120, check=False)
    assert p.returncode != 0
    assert "rank 0 of 2: all_reduce timed out after 2 s" in p.stderr
    assert took < 50, took        # rank 1 sleeps 60 s: the job did not wait for it


@needs_mpi
def test_ddp_digits_example_two_ranks_train_the_one_process_model():
    script = os.path.join(HERE, os.pardir, "examples", "ddp_digits.py")
    runs = []
    for n, extra in ((0, []), (2, []), (2, ["--compile"])):
        cmd = [sys.executable, script, "--epochs", "25", "--no-progress", *extra]
        if n:
            cmd = [MPIEXEC, "-n", str(n)] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        runs.append(p.stdout.splitlines())
    assert "on 1 rank(s)" in runs[0][0] and "on 2 rank(s)" in runs[1][0]
    quality = [r[1] for r in runs]           # "  test loss L, test accuracy A%"
    assert quality[0] == quality[1] == quality[2], quality
    assert float(quality[0].rsplit(" ", 1)[1].rstrip("%")) >= 97.0, quality[0]
    assert runs[2][2].endswith("replays, 0 fallbacks"), runs[2]
