"""Extreme values against PyTorch: every op-table case, both dtypes, in every execution
path.

- Every case of ``test_op_grads.CASES`` (which covers the whole op table) runs on
  inputs drawn from +-0, +-inf, nan, the smallest and largest magnitudes of the dtype,
  and ordinary numbers; forward values and gradients must match PyTorch's: the same
  nan and inf positions (with signs), finite values within rounding. Ops that add up
  many terms (sums, means, matrix products, softmax, normalisation) draw from a pool without the
  largest finite magnitudes, since terms of +-1e300 that cancel leave a result that
  depends on summation order in any library. So do binary ops that broadcast an input
  (its gradient is a sum), and fmod and remainder: where x / y overflows, PyTorch's
  vectorised fmod gives nan and C's (ours) the exact remainder.
- The division gradient and the NaN/inf cases found by users, checked in each path:
  eager arrays, one-element rows, fused blocks of a compiled replay, the compiled
  replay and the tensor-level VJPs (``create_graph=True``).
"""
import zlib

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import _kernels as K

try:
    from .test_op_grads import CASES
except ImportError:
    from test_op_grads import CASES

torch = pytest.importorskip("torch")

TINY = {np.float64: 1e-300, np.float32: 1e-38}
HUGE = {np.float64: 1e300, np.float32: 3e38}
ORDINARY = [1.0, -2.5, 0.5, 1e-30]
SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan]
SUMMING = {K.K_SUM, K.K_MATMUL, K.K_LINEAR, K.K_SOFTMAX, K.K_LOGSOFTMAX, K.K_LAYERNORM,
           K.K_BATCHNORM, K.K_FMOD, K.K_REMAINDER}


def pool(dtype, summing):
    vals = SPECIAL + ORDINARY + [TINY[dtype], -TINY[dtype]]
    if not summing:
        vals += [HUGE[dtype], -HUGE[dtype], np.finfo(dtype).smallest_subnormal]
    return np.array(vals, np.float64)


def matches(got, want, dtype, scale):
    """Same nan/inf pattern; finite values within rounding (relative to ``scale``, the
    size of the terms)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    if (np.isnan(got) != np.isnan(want)).any():
        return "nan positions differ"
    inf = np.isinf(want)
    if (np.isinf(got) != inf).any() or (got[inf] != want[inf]).any():
        return "inf positions differ"
    fin = np.isfinite(want)
    eps = np.finfo(dtype).eps
    bad = np.abs(got[fin] - want[fin]) > 16 * eps * (np.abs(want[fin]) + scale) \
        + np.finfo(dtype).smallest_subnormal
    if bad.any():
        return f"values differ: {got[fin][bad][:4]} vs {want[fin][bad][:4]}"
    return None


def run(L, case, xs, up):
    ts = [L.tensor(x.copy(), requires_grad=bool(r) and x.dtype.kind == "f")
          for x, r in zip(xs, case.req)]
    y = (case.fn if L is tg else case.torch_fn)(L, *ts)
    g = L.tensor(up.astype(y.detach().numpy().dtype))
    y.backward(g)
    return y.detach().numpy().copy(), [None if t.grad is None else t.grad.numpy().copy()
                                       for t in ts]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_matches_torch_at_extreme_values(case, dtype):
    summing = case.op.kernel in SUMMING or "bcast" in case.id
    vals = pool(dtype, summing)
    for seed in range(3):
        rng = np.random.default_rng(zlib.crc32(f"{case.id}/{seed}".encode()))
        xs = [rng.choice(vals, size=b.shape).astype(dtype) if b.dtype.kind == "f" else b
              for b in case.inputs()]
        with torch.no_grad():
            probe = case.torch_fn(torch, *[torch.tensor(x) for x in xs])
        up = rng.choice([1.0, -0.5, 2.0], size=tuple(probe.shape))
        want_y, want_g = run(torch, case, xs, up)
        got_y, got_g = run(tg, case, xs, up)
        scale = 4.0 if summing else 0.0
        what = f"{case.id} {np.dtype(dtype).name} inputs {[x.ravel().tolist() for x in xs]}"
        err = matches(got_y, want_y, dtype, scale)
        assert err is None, f"forward of {what}: {err}"
        for i, (g, w) in enumerate(zip(got_g, want_g)):
            assert (g is None) == (w is None), f"gradient {i} of {what}: presence"
            if w is not None:
                err = matches(g, w, dtype, scale)
                assert err is None, f"gradient {i} of {what}: {err}\n{g}\n{w}"


# -- the cases users found, in every execution path ----------------------------------------
def div_grads(x, y, path, dtype):
    """d(x / y)/dx and d(x / y)/dy, each of x and y of one value, through ``path``."""
    big = K.FUSE_MIN if path == "block" else 1
    xa = np.full(big if path != "one" else 1, x, dtype)
    ya = np.full(xa.shape, y, dtype)
    if path == "tensor":         # the tensor-level VJP that create_graph records
        xt, yt = tg.tensor(xa, requires_grad=True), tg.tensor(ya, requires_grad=True)
        gx, gy = tg.autograd.grad((xt / yt).sum(), [xt, yt], create_graph=True)
        return gx.detach().numpy()[0], gy.detach().numpy()[0]
    if path in ("compiled", "block"):
        def step(a, b):
            (a / b).sum().backward()
            return a.grad, b.grad
        fn = tg.compile(step)
        for _ in range(2):          # the second call replays
            out = fn(tg.tensor(xa, requires_grad=True), tg.tensor(ya, requires_grad=True))
        assert fn.replays == 1
        return out[0].numpy()[0], out[1].numpy()[0]
    xt, yt = tg.tensor(xa, requires_grad=True), tg.tensor(ya, requires_grad=True)
    (xt / yt).sum().backward()
    return xt.grad.numpy()[0], yt.grad.numpy()[0]


PATHS = ["eager", "one", "block", "compiled", "tensor"]
DIVS = [(1e-23, 1e-23, np.float32), (1e-170, 1e-170, np.float64), (0.0, 1e-170, np.float64),
        (1e300, 1e300, np.float64), (3e38, 3e38, np.float32), (-0.0, 2.0, np.float64)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("x,y,dtype", DIVS)
def test_division_gradient_neither_overflows_nor_underflows(x, y, dtype, path):
    """d(x/y)/dy = -(g * (x / y)) / y, as PyTorch computes it, never x / (y * y)."""
    gx, gy = div_grads(x, y, path, dtype)
    tx = torch.tensor([x], dtype=torch.float64 if dtype is np.float64 else torch.float32,
                      requires_grad=True)
    ty = torch.tensor([y], dtype=tx.dtype, requires_grad=True)
    (tx / ty).sum().backward()
    for got, want in ((gx, tx.grad.numpy()[0]), (gy, ty.grad.numpy()[0])):
        assert matches(np.array([got]), np.array([want]), dtype, 0.0) is None, (got, want)
        assert np.signbit(got) == np.signbit(want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalising_a_zero_vector_has_finite_gradients(dtype):
    v = tg.zeros(3, dtype=tg.float32 if dtype is np.float32 else tg.float64,
                 requires_grad=True)
    (v / (v.norm() + 1e-30)).sum().backward()
    tv = torch.zeros(3, dtype=torch.float32 if dtype is np.float32 else torch.float64,
                     requires_grad=True)
    (tv / (tv.norm() + 1e-30)).sum().backward()
    np.testing.assert_allclose(v.grad.numpy(), tv.grad.numpy(), rtol=1e-6)
    assert np.isfinite(v.grad.numpy()).all()


NAN_CASES = {
    "relu": (lambda L, x: L.relu(x), [np.nan, -1.0, 0.0, 2.0, np.inf]),
    "maximum": (lambda L, x: L.maximum(x, L.tensor([0.0, np.nan, np.inf, 1.0, -np.inf],
                                                   dtype=x.dtype)),
                [np.nan, 1.0, np.inf, 1.0, -np.inf]),
    "minimum": (lambda L, x: L.minimum(x, L.tensor([0.0, np.nan, -np.inf, 1.0, np.inf],
                                                   dtype=x.dtype)),
                [np.nan, 1.0, -np.inf, 1.0, np.inf]),
    "pow_half": (lambda L, x: x ** 0.5, [-np.inf, -0.0, 0.0, np.inf, -2.0]),
    "pow_one_and_half": (lambda L, x: x ** 1.5, [-np.inf, -0.0, 0.0, np.inf, -2.0]),
    "pow_minus_half": (lambda L, x: x ** -0.5, [-np.inf, -0.0, 0.0, np.inf, -2.0]),
    "bce_logits": (lambda L, x: L.nn.functional.binary_cross_entropy_with_logits(
        x, L.tensor([0.0, 1.0, 0.0, 1.0, 0.3], dtype=x.dtype), reduction="none"),
        [np.inf, np.inf, -np.inf, -np.inf, 0.0]),
    "sign": (lambda L, x: L.sign(x) + x, [np.nan, -0.0, 1.0, -np.inf, 3.0]),
    "sin_huge": (lambda L, x: L.sin(x), [1e300, -1e300, 3e38, 1e15, np.nan]),
}


@pytest.mark.parametrize("path", ["eager", "one", "compiled", "tensor"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAN_CASES)
def test_nan_and_inf_cases_match_torch(name, dtype, path):
    fn, vals = NAN_CASES[name]
    x = np.array(vals, dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = fn(torch, tx)
    ty.sum().backward()
    want_y, want_g = ty.detach().numpy(), tx.grad.numpy()
    if path == "one":             # one element at a time: the one-element paths
        got_y, got_g = [], []
        for i in range(len(vals)):
            xi = tg.tensor(x[i:i + 1], requires_grad=True)
            y = fn(tg, xi) if name not in ("maximum", "minimum", "bce_logits") else \
                fn(tg, tg.tensor(x, requires_grad=True))[i:i + 1]
            if name in ("maximum", "minimum", "bce_logits"):
                xi = None
                full = tg.tensor(x, requires_grad=True)
                y = fn(tg, full)
                y[i:i + 1].sum().backward()
                got_y.append(y.detach().numpy()[i])
                got_g.append(full.grad.numpy()[i])
                continue
            y.sum().backward()
            got_y.append(y.detach().numpy()[0])
            got_g.append(xi.grad.numpy()[0])
        got_y, got_g = np.array(got_y), np.array(got_g)
    elif path == "compiled":
        def step(a):
            y = fn(tg, a)
            y.sum().backward()
            return y, a.grad
        comp = tg.compile(step)
        for _ in range(2):
            got_y, got_g = comp(tg.tensor(x, requires_grad=True))
        assert comp.replays == 1
        got_y, got_g = got_y.detach().numpy(), got_g.numpy()
    elif path == "tensor":
        xt = tg.tensor(x, requires_grad=True)
        y = fn(tg, xt)
        (g,) = tg.autograd.grad(y.sum(), [xt], create_graph=True)
        got_y, got_g = y.detach().numpy(), g.detach().numpy()
    else:
        xt = tg.tensor(x, requires_grad=True)
        y = fn(tg, xt)
        y.sum().backward()
        got_y, got_g = y.detach().numpy(), xt.grad.numpy()
    assert matches(got_y, want_y, dtype, 1.0) is None, (got_y, want_y)
    assert matches(got_g, want_g, dtype, 1.0) is None, (got_g, want_g)
