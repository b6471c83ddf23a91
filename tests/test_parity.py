"""PyTorch parity on ordinary code that once disagreed: a chain of in-place ops on a
non-leaf, std/var gradients at a zero result, bitwise operators on bool and integer
tensors. Expected values come from PyTorch 2.13 (and are checked against it when it is
installed)."""
import numpy as np
import pytest

import tapegrad as tg

try:
    import torch
except ImportError:
    torch = None


def in_place_chain(L, x, w):
    y = x * 1
    y.add_(w)
    y.sub_(0.5)
    y.mul_(w)
    y.div_(2.0)
    y.clamp_(-0.8, 0.8)
    y[0, 1] = 0.25
    y.sum().backward()
    return x.grad, w.grad


X = np.arange(6.0).reshape(2, 3) / 7
W = np.arange(6.0).reshape(2, 3) / 5 + 0.3
CHAIN_X_GRAD = [[0.15, 0.0, 0.35], [0.45, 0.55, 0.0]]
CHAIN_W_GRAD = [[0.05, 0.0, 0.5928571428571429], [0.8642857142857143, 1.1357142857142857, 0.0]]


def test_in_place_chain_on_a_non_leaf():
    gx, gw = in_place_chain(tg, tg.tensor(X, requires_grad=True), tg.tensor(W, requires_grad=True))
    np.testing.assert_allclose(gx.numpy(), CHAIN_X_GRAD, rtol=1e-15, atol=0)
    np.testing.assert_allclose(gw.numpy(), CHAIN_W_GRAD, rtol=1e-15, atol=1e-17)
    if torch is not None:
        tx, tw = in_place_chain(torch, torch.tensor(X, requires_grad=True),
                                torch.tensor(W, requires_grad=True))
        np.testing.assert_allclose(gx.numpy(), tx.numpy(), rtol=1e-15)
        np.testing.assert_allclose(gw.numpy(), tw.numpy(), rtol=1e-15)


def test_clamp_in_place_then_more_in_place_ops_replays():
    w = tg.tensor([1.5, 2.0], requires_grad=True)

    @tg.compile
    def f(x):
        y = x * 1.0
        y.mul_(w)
        y.clamp_(0.0, 4.0)
        s = y.sum()
        s.backward()
        return s
    got = []
    for i in range(4):
        w.grad = None
        got.append((f(tg.tensor([float(i), 1.0])).item(), w.grad.numpy().tolist()))
    assert got == [(2.0, [0.0, 1.0]), (3.5, [1.0, 1.0]), (5.0, [2.0, 1.0]), (6.0, [0.0, 1.0])]
    assert (f.records, f.replays, f.fallbacks) == (1, 3, 0)


@pytest.mark.parametrize("reduce", ["max", "sum"])
@pytest.mark.parametrize("fn", ["std", "var"])
def test_zero_std_or_var_has_zero_gradient_where_the_incoming_one_is_zero(fn, reduce):
    data = [[1.0, 2.0, 3.0], [1.0, 5.0, 3.0]]          # columns 0 and 2 are constant
    x = tg.tensor(data, dtype=tg.float64, requires_grad=True)
    getattr(getattr(x, fn)(dim=0), reduce)().backward()
    g = x.grad.numpy()
    assert np.all(np.isfinite(g)) and np.all(g[:, [0, 2]] == 0.0)
    if torch is not None:
        t = torch.tensor(data, dtype=torch.float64, requires_grad=True)
        getattr(getattr(t, fn)(dim=0), reduce)().backward()
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-15)


def bitwise_cases(L):
    t = L.tensor([0.5, -1.0, 0.2, 2.0, 0.9])
    i = L.tensor([5, 3, 12, -7, 0])
    m = (t >= 0) & (t < 1)
    return [m, m | (t > 1.5), ~m, m ^ True, True & m, i & 6, 6 | i, ~i, i ^ i, i ^ -3,
            L.bitwise_and(i, i >> 0 if L is torch else i), L.bitwise_not(m)]


def test_bitwise_operators_on_bool_and_int_tensors():
    got = [x.numpy() for x in bitwise_cases(tg)]
    want = [[True, False, True, False, True], [True, False, True, True, True],
            [False, True, False, True, False], [False, True, False, True, False],
            [True, False, True, False, True], [4, 2, 4, 0, 0], [7, 7, 14, -1, 6],
            [-6, -4, -13, 6, -1], [0, 0, 0, 0, 0], [-8, -2, -15, 4, -3],
            [5, 3, 12, -7, 0], [False, True, False, True, False]]
    for g, w in zip(got, want):
        assert g.tolist() == w
    if torch is not None:
        for g, w in zip(got, bitwise_cases(torch)):
            assert g.tolist() == w.numpy().tolist() and g.dtype == w.numpy().dtype


@pytest.mark.parametrize("expr", ["t & t", "~t", "i | 1.5"])
def test_bitwise_operators_on_floats_raise(expr):
    t = tg.tensor([0.5, 1.0])
    i = tg.tensor([1, 2])
    with pytest.raises(RuntimeError, match="bitwise_.*_cpu. not implemented"):
        eval(expr)


def test_masks_replay_in_a_compiled_function():
    def f(x, labels):
        inside = (x >= 0) & (x < 1)
        mask = inside | ~(labels > 0) ^ (labels == 2)
        return (x * mask.to(x.dtype)).sum(), (labels & 1).sum()
    cf = tg.compile(f)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = tg.tensor(rng.standard_normal(8))
        labels = tg.tensor(rng.integers(0, 4, 8))
        got, want = cf(x, labels), f(x, labels)
        assert got[0].item() == want[0].item() and got[1].item() == want[1].item()
    assert (cf.records, cf.replays, cf.fallbacks) == (1, 4, 0)


def promotion_cases(L):
    a = L.tensor([1.5, 2.0], dtype=L.float32, requires_grad=True)
    b = L.tensor([0.25, 3.0], dtype=L.float64, requires_grad=True)
    z = L.tensor(2.5, dtype=L.float64, requires_grad=True)
    i = L.tensor([1, 2])
    m = L.tensor([True, False])
    exprs = [lambda: a * b, lambda: b / a, lambda: a ** b, lambda: a + i, lambda: i * b,
             lambda: a * z, lambda: z - a, lambda: L.where(a > 1.8, a, b),
             lambda: L.maximum(a, b), lambda: a + m, lambda: i + m, lambda: i * z]
    out = []
    for f in exprs:
        for t in (a, b, z):
            t.grad = None
        r = f()
        if r.requires_grad:
            r.sum().backward()
        out.append((str(r.dtype).split(".")[-1], r.detach().numpy().tolist(),
                    [None if t.grad is None else t.grad.numpy().tolist() for t in (a, b, z)]))
    return out


PROMOTED = [
    ("float64", [0.375, 6.0], [[0.25, 3.0], [1.5, 2.0], None]),
    ("float64", [0.16666666666666666, 1.5], [[-0.1111111119389534, -0.75],
                                            [0.6666666666666666, 0.5], None]),
    ("float64", [1.1066819197003215, 8.0], [[0.18444699048995972, 12.0],
                                            [0.44872090421264177, 5.545177444479562], None]),
    ("float32", [2.5, 4.0], [[1.0, 1.0], None, None]),
    ("float64", [0.25, 6.0], [None, [1.0, 2.0], None]),
    ("float32", [3.75, 5.0], [[2.5, 2.5], None, 3.5]),
    ("float32", [1.0, 0.5], [[-1.0, -1.0], None, 2.0]),
    ("float64", [0.25, 2.0], [[0.0, 1.0], [1.0, 0.0], None]),
    ("float64", [1.5, 3.0], [[1.0, 0.0], [0.0, 1.0], None]),
    ("float32", [2.5, 2.0], [[1.0, 1.0], None, None]),
    ("int64", [2, 2], [None, None, None]),
    ("float64", [2.5, 5.0], [None, None, 3.0]),
]


def test_type_promotion_as_pytorch():
    """float32 with float64 gives float64, an integer or bool tensor with a float one the
    float dtype, a 0-d tensor of the same category does not promote a dimensioned one;
    gradients come back in each input's dtype."""
    got = promotion_cases(tg)
    for g, w in zip(got, PROMOTED):
        assert g[0] == w[0] and g[2] == w[2]
        np.testing.assert_allclose(g[1], w[1], rtol=1e-15)
    if torch is not None:
        assert got == promotion_cases(torch)


def test_matrix_products_still_raise_on_mixed_floats():
    a = tg.ones(2, 3)
    d = tg.ones(3, 2, dtype=tg.float64)
    for f in (lambda: a @ d, lambda: tg.mm(a, d), lambda: tg.nn.functional.linear(a, d.t())):
        with pytest.raises(RuntimeError, match="same dtype"):
            f()


REARRANGE = {
    "repeat": lambda L, x: x.repeat(2, 1, 3),
    "repeat_new_dim": lambda L, x: x.repeat(2, 1, 1, 1),
    "roll_flat": lambda L, x: L.roll(x, 4),
    "roll_dims": lambda L, x: x.roll((1, -2), (0, 2)),
    "tril": lambda L, x: x.tril(),
    "triu_offset": lambda L, x: L.triu(x, 1),
    "tril_negative": lambda L, x: x.tril(-1),
    "masked_fill": lambda L, x: x.masked_fill(x > 0.3, -2.0),
    "masked_fill_bcast": lambda L, x: x.masked_fill(L.tensor([True, False, True, False]),
                                                    0.5),
}


@pytest.mark.skipif(torch is None, reason="PyTorch is the oracle")
@pytest.mark.parametrize("name", REARRANGE)
def test_rearranging_ops_as_pytorch(name):
    data = np.random.default_rng(6).standard_normal((2, 3, 4))
    out = []
    for L in (tg, torch):
        x = L.tensor(data, requires_grad=True)
        y = REARRANGE[name](L, x)
        (y * y.detach().cos()).sum().backward()
        out.append((y.detach().numpy(), x.grad.numpy()))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-15)


def test_rearranging_ops_replay():
    w = tg.tensor(np.arange(12.0).reshape(3, 4) / 10, requires_grad=True)

    @tg.compile
    def f(x):
        y = (x * w).repeat(2, 1).roll(1, 0).tril().masked_fill(x.repeat(2, 1) > 0.5, 0.0)
        s = (y * y).sum()
        s.backward()
        return s
    rng = np.random.default_rng(7)
    for _ in range(4):
        x = tg.tensor(rng.random((3, 4)))
        w.grad = None
        got, g1 = f(x).item(), w.grad.numpy().copy()
        w.grad = None
        y = (x * w).repeat(2, 1).roll(1, 0).tril().masked_fill(x.repeat(2, 1) > 0.5, 0.0)
        want = (y * y).sum()
        want.backward()
        assert got == want.item() and (g1 == w.grad.numpy()).all()
    assert (f.records, f.replays, f.fallbacks) == (1, 3, 0)
