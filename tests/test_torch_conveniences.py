"""PyTorch's everyday conveniences (comparison and logical functions, isnan/isinf/
isfinite, any/all, isclose/allclose/equal, unbind, index_select, rsqrt, contiguous,
*_as, new_*, cpu): values against PyTorch, gradients where there are any, and compiled
replays that follow new values."""
import numpy as np
import pytest

import tapegrad as tg

torch = pytest.importorskip("torch")

X = np.array([[1.5, np.nan, -2.0], [np.inf, 0.0, -np.inf], [0.25, 3.0, 0.0]])
Y = np.array([[1.5, 1.0, -2.0], [np.inf, 1e-9, 2.0], [0.2500001, 3.0, -0.0]])

CASES = {
    "eq": lambda L, x, y: L.eq(x, y), "ne": lambda L, x, y: x.ne(y),
    "lt": lambda L, x, y: x.lt(y), "le": lambda L, x, y: L.le(x, y),
    "gt": lambda L, x, y: x.gt(0.5), "ge": lambda L, x, y: L.ge(x, y),
    "isnan": lambda L, x, y: L.isnan(x), "isinf": lambda L, x, y: x.isinf(),
    "isfinite": lambda L, x, y: L.isfinite(x),
    "any": lambda L, x, y: x.any(), "all": lambda L, x, y: L.all(x),
    "any_dim": lambda L, x, y: (x > 1).any(1), "all_dim_keep": lambda L, x, y:
    L.all(x, 0, keepdim=True),
    "logical_and": lambda L, x, y: L.logical_and(x > 0, y > 0),
    "logical_or": lambda L, x, y: (x > 0).logical_or(y > 0),
    "logical_xor": lambda L, x, y: L.logical_xor(x, y),
    "logical_not": lambda L, x, y: x.logical_not(),
    "isclose": lambda L, x, y: L.isclose(x, y), "isclose_nan": lambda L, x, y:
    x.isclose(x, equal_nan=True),
    "allclose": lambda L, x, y: L.tensor(L.allclose(y, y + 1e-12)),
    "allclose_no": lambda L, x, y: L.tensor(y.allclose(x)),
    "equal": lambda L, x, y: L.tensor(L.equal(y, y.clone()) and not L.equal(x, y)),
    "int_isinf": lambda L, x, y: L.isinf(L.tensor([1, 2])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_values_as_pytorch(name):
    got = CASES[name](tg, tg.tensor(X), tg.tensor(Y)).numpy()
    want = CASES[name](torch, torch.tensor(X), torch.tensor(Y)).numpy()
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


GRAD_CASES = {
    "rsqrt": lambda L, x: (x.abs() + 0.5).rsqrt(),
    "unbind": lambda L, x: L.stack([t * (i + 1) for i, t in enumerate(x.unbind(1))]),
    "index_select_0": lambda L, x: L.index_select(x, 0, L.tensor([2, 0, 2])),
    "index_select_1": lambda L, x: x.index_select(1, L.tensor([1, 1, 0])),
    "contiguous": lambda L, x: x.transpose(0, 1).contiguous() * L.tensor(np.arange(9.0)
                                                                       .reshape(3, 3)),
    "expand_as": lambda L, x: x[0].expand_as(x) * x,
    "view_as": lambda L, x: x.view_as(L.ones(9)),
    "reshape_as": lambda L, x: x.t().reshape_as(L.ones(9)),
    "type_as": lambda L, x: x.type_as(L.ones(1, dtype=L.float32)),
}


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradients_as_pytorch(name):
    xv = np.random.default_rng(0).standard_normal((3, 3))
    out = []
    for L in (tg, torch):
        x = L.tensor(xv, requires_grad=True)
        y = GRAD_CASES[name](L, x)
        up = np.cos(np.arange(y.numel())).reshape(tuple(y.shape))
        (y * L.tensor(up, dtype=y.dtype)).sum().backward()
        out.append((y.detach().numpy(), x.grad.numpy()))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-6, atol=1e-12)


def test_new_tensors_cpu_and_contiguity():
    a = tg.randn(2, 3, dtype=tg.float64)
    for got, want in ((a.new_zeros(2, 3), np.zeros((2, 3))), (a.new_ones((4,)), np.ones(4)),
                      (a.new_full((2,), 7.0), np.full(2, 7.0)),
                      (a.new_tensor([1, 2]), np.array([1.0, 2.0]))):
        assert got.dtype == tg.float64 and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), want)
    assert a.new_zeros(2, dtype=tg.int64).dtype == tg.int64
    assert a.new_empty(3, 1).shape == (3, 1)
    assert a.cpu() is a
    t = a.transpose(0, 1)
    assert a.is_contiguous() and not t.is_contiguous()
    assert t.contiguous().is_contiguous() and a.contiguous() is a
    with pytest.raises(IndexError, match="index_select"):
        a.index_select(0, tg.tensor([[0]]))


def test_compiled_step_follows_new_values():
    """A step that masks NaNs, checks any(), and picks rows by an index argument: the
    replay sees each call's values, not the recording's."""
    w = tg.tensor(np.ones(3), requires_grad=True)

    def step(x, idx):
        rows = x.index_select(0, idx)
        clean = tg.where(rows.isnan(), 0.0, rows)
        loss = (clean * w).sum() + tg.logical_not(rows.isfinite()).any().to(tg.float64)
        loss.backward()
        return loss

    comp = tg.compile(step)
    rng = np.random.default_rng(1)
    for i in range(4):
        xv = rng.standard_normal((4, 3))
        if i % 2:
            xv[1, 2] = np.nan
        idx = tg.tensor(rng.integers(0, 4, 3))
        w.grad = None
        want = step(tg.tensor(xv), idx).item()
        gw = w.grad.numpy().copy()
        w.grad = None
        assert comp(tg.tensor(xv), idx).item() == want
        assert np.array_equal(w.grad.numpy(), gw)
    assert comp.replays >= 2 and comp.fallbacks == 0


def test_rounding_as_pytorch():
    """floor, ceil, round (halves to even, decimals), trunc and frac: values on halves,
    nan and inf, integer tensors unchanged, zero gradients (frac: one)."""
    xv = np.array([-2.5, -1.5, -0.4, 0.5, 1.5, 2.5, 3.7, -3.7, np.nan, np.inf, -np.inf])
    for name in ("floor", "ceil", "round", "trunc", "frac"):
        got = getattr(tg, name)(tg.tensor(xv)).numpy()
        want = getattr(torch, name)(torch.tensor(xv)).numpy()
        np.testing.assert_array_equal(got, want, err_msg=name)
    np.testing.assert_allclose(tg.round(tg.tensor([1.2345, -0.055]), decimals=2).numpy(),
                               torch.round(torch.tensor([1.2345, -0.055]), decimals=2).numpy())
    ints = tg.tensor([3, -2])
    assert ints.floor().dtype == tg.int64 and ints.round().tolist() == [3, -2]
    x = tg.tensor(xv[:8], requires_grad=True)
    (x.floor() + x.ceil() * 2 + x.round() + x.trunc() + x.frac() * 3).sum().backward()
    assert x.grad.tolist() == [3.0] * 8
    assert x.floor().grad_fn.name() == "FloorBackward0"


def test_abs_and_relu_keep_integer_dtypes():
    for name in ("abs", "relu"):
        got = getattr(tg, name)(tg.tensor([3, -2, 0]))
        want = getattr(torch, name)(torch.tensor([3, -2, 0]))
        assert got.dtype == tg.int64 and got.tolist() == want.tolist()
