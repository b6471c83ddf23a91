"""Math functions built from other ops (atan2, hypot, logaddexp, diag, diagonal, trace,
meshgrid, cdist, diff, cross, ...): values and float64 gradients against PyTorch and
finite differences, second derivatives, and compiled replays equal to eager."""
import math
import warnings

import numpy as np
import pytest

import tapegrad as tg

try:
    from .conftest import numeric_grads
except ImportError:
    from conftest import numeric_grads

torch = pytest.importorskip("torch")


def _away_from_zero(rng, shape):
    return rng.uniform(0.3, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


CASES = {
    "atan2": (lambda L, y, x: L.atan2(y, x), [(4, 5), (4, 5)], _away_from_zero),
    "atan2_bcast_method": (lambda L, y, x: y.arctan2(x), [(3, 1), (4,)], _away_from_zero),
    "hypot": (lambda L, a, b: L.hypot(a, b), [(3, 4), (3, 4)], None),
    "logaddexp": (lambda L, a, b: L.logaddexp(a, b), [(3, 4), (4,)], None),
    "clamp_min_max": (lambda L, a: L.clamp_max(L.clamp_min(a, -0.5), 0.7), [(3, 4)], None),
    "deg2rad_rad2deg": (lambda L, a: L.deg2rad(a) * 3 + a.rad2deg(), [(5,)], None),
    "exp2": (lambda L, a: L.exp2(a), [(5,)], None),
    "diagonal": (lambda L, a: L.diagonal(a, 1, 0, 2), [(3, 2, 4)], None),
    "diagonal_neg": (lambda L, a: a.diagonal(-1), [(4, 3)], None),
    "diag_matrix": (lambda L, a: L.diag(a, -1), [(4, 4)], None),
    "diag_vector": (lambda L, a: L.diag(a, 2), [(3,)], None),
    "trace": (lambda L, a: L.trace(a), [(3, 4)], None),
    "meshgrid_xy": (lambda L, a, b: L.stack(L.meshgrid(a, b, indexing="xy")) *
                    L.stack(L.meshgrid(b, a, indexing="ij")), [(3,), (4,)], None),
    "cdist_2": (lambda L, a, b: L.cdist(a, b), [(2, 4, 3), (2, 5, 3)], None),
    "cdist_1": (lambda L, a, b: L.cdist(a, b, p=1), [(4, 3), (5, 3)], None),
    "cdist_3": (lambda L, a, b: L.cdist(a, b, p=3), [(4, 3), (5, 3)], None),
    "cdist_inf": (lambda L, a, b: L.cdist(a, b, p=math.inf), [(4, 3), (5, 3)], None),
    "diff": (lambda L, a, b: L.diff(a, n=2, dim=0, append=b), [(4, 3), (2, 3)], None),
    "cross": (lambda L, a, b: L.cross(a, b, dim=1), [(4, 3), (4, 3)], None),
    "cross_method_bcast": (lambda L, a, b: a.cross(b, dim=-1), [(2, 4, 3), (1, 4, 3)], None),
}


def _torch_fn(name):
    fn = CASES[name][0]
    if name.startswith("cdist"):      # the exact (difference) path, as ours
        def cdist(a, b, p=2.0):
            return torch.cdist(a, b, p, compute_mode="donot_use_mm_for_euclid_dist")
        return lambda L, *xs: fn(_Lib(torch, cdist=cdist), *xs)
    if name.startswith("cross"):      # torch.cross needs equal shapes; linalg.cross broadcasts
        return lambda L, *xs: fn(_Lib(torch, cross=torch.linalg.cross), *xs)
    return fn


class _Lib:
    def __init__(self, lib, **over):
        self._lib, self._over = lib, over

    def __getattr__(self, name):
        return self._over.get(name) or getattr(self._lib, name)


def _inputs(name):
    _, shapes, gen = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    return [(gen or (lambda r, s: r.standard_normal(s)))(rng, s) for s in shapes]


@pytest.mark.parametrize("name", CASES)
def test_values_and_gradients_match_pytorch(name):
    fn, tfn = CASES[name][0], _torch_fn(name)
    arrays = _inputs(name)
    xs = [tg.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, tout = fn(tg, *xs), tfn(torch, *ts)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-12,
                               atol=1e-12)
    up = np.random.default_rng(5).standard_normal(tuple(out.shape))
    out.backward(tg.tensor(up))
    tout.backward(torch.tensor(up))
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-12)
    num = numeric_grads(lambda *a: fn(tg, *a), arrays, up)
    for x, n in zip(xs, num):
        np.testing.assert_allclose(x.grad.numpy(), n, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["atan2", "hypot", "logaddexp", "exp2", "cross"])
def test_second_derivatives_match_pytorch(name):
    fn, tfn = CASES[name][0], _torch_fn(name)
    arrays = _inputs(name)
    xs = [tg.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    g = tg.autograd.grad(fn(tg, *xs).sum(), xs, create_graph=True)
    tgr = torch.autograd.grad(tfn(torch, *ts).sum(), ts, create_graph=True)
    h = tg.autograd.grad(sum((a * a).sum() for a in g), xs)
    th = torch.autograd.grad(sum((a * a).sum() for a in tgr), ts)
    for a, b in zip(h, th):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_compiled_replay_equals_eager(name):
    fn = CASES[name][0]

    def step(*xs):
        out = fn(tg, *xs)
        out.sum().backward()
        return (out.detach(),) + tuple(x.grad for x in xs)
    want = [t.numpy() for t in step(*[tg.tensor(a, requires_grad=True)
                                      for a in _inputs(name)])]
    compiled = tg.compile(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tg.CompileWarning)
        for _ in range(3):
            got = compiled(*[tg.tensor(a, requires_grad=True) for a in _inputs(name)])
    for g, w in zip(got, want):
        assert np.array_equal(g.numpy(), w)
    assert compiled.replays >= 1 and compiled.fallbacks == 0


def test_atan2_signed_zeros_infinities_and_nan_as_pytorch():
    y = np.array([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 2.0, np.nan, 3.0])
    x = np.array([0.0, 0.0, -0.0, -0.0, -np.inf, np.inf, 1.0, -5.0, 0.0, 1.0, -0.0])
    got = tg.atan2(tg.tensor(y), tg.tensor(x)).numpy()
    want = torch.atan2(torch.tensor(y), torch.tensor(x)).numpy()
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_hypot_and_logaddexp_extremes_as_pytorch():
    a = np.array([1e300, 0.0, np.inf, 3.0, -np.inf])
    b = np.array([1e300, 0.0, np.nan, 4.0, 2.0])
    assert np.array_equal(tg.hypot(tg.tensor(a), tg.tensor(b)).numpy(),
                          torch.hypot(torch.tensor(a), torch.tensor(b)).numpy(), equal_nan=True)
    a = np.array([np.inf, -np.inf, 1.0, -800.0, 5.0])
    b = np.array([np.inf, -np.inf, 1.0, 2.0, -np.inf])
    np.testing.assert_allclose(tg.logaddexp(tg.tensor(a), tg.tensor(b)).numpy(),
                               torch.logaddexp(torch.tensor(a), torch.tensor(b)).numpy(),
                               rtol=1e-15)


def test_float32_stays_float32():
    x = tg.tensor([0.5, -1.5])
    for out in (tg.atan2(x, x * 2), tg.hypot(x, x), tg.logaddexp(x, x), tg.exp2(x),
                tg.deg2rad(x), tg.cdist(x.reshape(2, 1), x.reshape(2, 1))):
        assert out.dtype == tg.float32


def test_bad_inputs_raise_as_pytorch():
    with pytest.raises(RuntimeError, match="ndim larger than 1"):
        tg.diagonal(tg.ones(3))
    with pytest.raises(RuntimeError, match="cannot be identical"):
        tg.diagonal(tg.ones(3, 3), 0, 1, 1)
    with pytest.raises(RuntimeError, match="expected a matrix"):
        tg.trace(tg.ones(2, 2, 2))
    with pytest.raises(RuntimeError, match="same number of columns"):
        tg.cdist(tg.ones(2, 3), tg.ones(2, 4))
    with pytest.raises(RuntimeError, match="must have length 3"):
        tg.cross(tg.ones(2, 4), tg.ones(2, 4), dim=1)
    with pytest.raises(RuntimeError, match="indexing must be one of"):
        tg.meshgrid(tg.ones(2), indexing="ab")
    with pytest.raises(RuntimeError, match="at least one-dimensional"):
        tg.diff(tg.tensor(1.0))


def test_integer_inputs_take_the_default_float_dtype():
    """Integer operands become PyTorch's default float dtype, float64 included."""
    tg.set_default_dtype(tg.float64)
    try:
        i = tg.tensor([1, 2])
        for out in (tg.atan2(i, i), tg.hypot(i, 2.0), tg.logaddexp(i, i)):
            assert out.dtype == tg.float64
    finally:
        tg.set_default_dtype(tg.float32)
    assert tg.atan2(tg.tensor([1, 2]), tg.tensor([3, 4])).dtype == tg.float32
