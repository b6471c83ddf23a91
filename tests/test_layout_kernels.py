"""Broadcasting binary ops and strided views (transposes, permutes, slices, expands):
values and gradients against PyTorch, eager against a compiled replay bit for bit, and
PyTorch's errors for slice steps below 1."""
import numpy as np
import pytest

import tapegrad as tg

torch = pytest.importorskip("torch")

BROADCASTS = [((3, 1), (4,)), ((2, 1, 4), (3, 1)), ((5,), (2, 3, 5)), ((2, 3, 1, 4), (3, 5, 1)),
              ((1, 6), (7, 1)), ((4, 1, 1), (1, 1, 3)), ((2, 8, 16), (16,)),
              ((2, 8, 16), (2, 8, 1)), ((1, 1), (3, 4))]
OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
       "div": lambda a, b: a / b, "pow": lambda a, b: a.abs() ** b,
       "maximum": lambda L, a, b: L.maximum(a, b)}


def _pair(sa, sb, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, sa), rng.uniform(0.5, 2.0, sb) * rng.choice([-1, 1], sb)


def _run(L, name, xa, xb, g):
    a = L.tensor(xa, requires_grad=True)
    b = L.tensor(xb, requires_grad=True)
    fn = OPS[name]
    y = fn(L, a, b) if name == "maximum" else fn(a, b)
    y.backward(L.tensor(g))
    return y.detach().numpy(), a.grad.numpy(), b.grad.numpy()


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("shapes", BROADCASTS, ids=[f"{a}x{b}" for a, b in BROADCASTS])
def test_broadcasting_binary_ops_as_pytorch(name, shapes):
    xa, xb = _pair(*shapes, seed=len(name))
    g = np.random.default_rng(1).standard_normal(np.broadcast_shapes(*shapes))
    got = _run(tg, name, xa, xb, g)
    want = _run(torch, name, xa, xb, g)
    for what, x, w in zip(("value", "grad a", "grad b"), got, want):
        np.testing.assert_allclose(x, w, rtol=1e-12, atol=1e-12, err_msg=what)


def _views(x):
    return [x.transpose(0, 1), x.permute(2, 0, 3, 1), x.permute(3, 2, 1, 0), x[:, 1:, ::2],
            x[1], x[..., 1:3].transpose(1, 3), x[:, :1].permute(1, 0, 2, 3),
            x.reshape(2, 12, 5).transpose(1, 2), x[:, 2:3].expand(2, 3, 4, 5)]


def test_strided_views_as_pytorch():
    xv = np.random.default_rng(2).standard_normal((2, 3, 4, 5))
    for i in range(len(_views(torch.zeros(2, 3, 4, 5)))):
        outs = []
        for L in (tg, torch):
            x = L.tensor(xv, requires_grad=True)
            v = _views(x)[i]
            w = L.tensor(np.arange(v.numel(), dtype=np.float64).reshape(tuple(v.shape)))
            (v * w).sum().backward()
            outs.append((v.detach().numpy().copy(), x.grad.numpy().copy()))
        np.testing.assert_array_equal(outs[0][0], outs[1][0], err_msg=f"view {i}")
        np.testing.assert_array_equal(outs[0][1], outs[1][1], err_msg=f"view {i} grad")


def test_views_and_broadcasts_compiled_bit_identical_to_eager():
    def fn(x, w, c):
        h = (x.transpose(1, 2) * w).permute(2, 0, 1) + c.transpose(0, 1)[:1, :, None]
        loss = (h.tanh() / (w.abs() + 1.0)[:, None, None]).sum()
        loss.backward()
        return loss

    step = tg.compile(fn)
    rng = np.random.default_rng(5)
    for i in range(3):
        args = [rng.standard_normal(s).astype(np.float32) for s in ((4, 6, 8), (6,), (4, 3))]
        eager = [tg.tensor(a, requires_grad=True) for a in args]
        comp = [tg.tensor(a, requires_grad=True) for a in args]
        le = fn(*eager)
        lc = step(*comp)
        assert le.item() == lc.item()
        for e, c in zip(eager, comp):
            assert np.array_equal(e.grad.numpy(), c.grad.numpy())
    assert step.replays == 2


@pytest.mark.parametrize("step,msg", [(-1, "step must be greater than zero"),
                                      (0, "slice step cannot be zero")])
def test_slice_steps_below_one_raise_as_pytorch(step, msg):
    x = tg.arange(12.0).reshape(3, 4)
    with pytest.raises(ValueError, match=msg):
        x[:, ::step]
    with pytest.raises(ValueError):
        torch.arange(12.0).reshape(3, 4)[:, ::step]


@pytest.mark.parametrize("dims", [(0,), (1, 2), (-1,), (0, 1, 2)])
def test_flip_as_pytorch(dims):
    xv = np.random.default_rng(4).standard_normal((2, 3, 4))
    w = np.random.default_rng(6).standard_normal((2, 3, 4))
    outs = []
    for L in (tg, torch):
        x = L.tensor(xv, requires_grad=True)
        y = x.flip(dims)
        (y * L.tensor(w)).sum().backward()
        outs.append((y.detach().numpy().copy(), x.grad.numpy().copy()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    with pytest.raises(RuntimeError, match="dim 0 appears multiple times"):
        tg.tensor(xv).flip((0, 0))
