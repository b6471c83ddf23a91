"""Accuracy, special values and vectorisation of tapegrad._kernels.

For each function, ~1e6 random points (log-uniform magnitudes of both signs over the
whole domain, plus uniform ranges where the reduction switches) are compared with

- NumPy's float64 ufunc: at most 2 ulp apart (``np.spacing`` of the reference);
- a long double reference (NumPy's ``longdouble``, 64-bit mantissa on x86-64 Linux):
  at most 1 ulp from the exact result (skipped where long double is just double).

float32 inputs are computed in float64 and rounded once, so they must agree with
NumPy's float64 result rounded to float32 within 1 float32 ulp (they are in fact
correctly rounded). NumPy's own float32 ufuncs are up to 2-3 ulp off (its SIMD
exp/log); we check we are never further from them than their own error plus 1 ulp.
"""
import math
import re
import zlib

import numpy as np
import pytest
from numba import njit

from tapegrad import _kernels as vm

N = 1_000_000
LD = np.longdouble
HAVE_LD = np.finfo(LD).nmant >= 60
INF = np.inf
NAN = np.nan
TINY = 5e-324
DMIN = 2.2250738585072014e-308
DMAX = 1.7976931348623157e308


def _rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def logu(rng, lo, hi, n=N, signed=True):
    """|x| log-uniform in [lo, hi], random sign."""
    v = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    return v * rng.choice([-1.0, 1.0], n) if signed else v


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _inputs(name):
    """The random test arguments of each function (lists of 1e6-element arrays)."""
    r = _rng(name)
    if name == "exp":
        return [logu(r, 1e-300, 750), r.uniform(-746, 710, N), r.uniform(-1, 1, N)]
    if name == "expm1":
        return [logu(r, 1e-300, 710), r.uniform(-40, 710, N), r.uniform(-2, 2, N)]
    if name == "log":
        return [logu(r, TINY, DMAX, signed=False), r.uniform(0.5, 2.0, N),
                1.0 + logu(r, 1e-16, 1e-3)]
    if name == "log1p":
        return [logu(r, 1e-300, DMAX, signed=False), -logu(r, 1e-300, 1.0, signed=False),
                r.uniform(-1.0, 2.0, N)]
    if name == "tanh":
        return [logu(r, 1e-300, 40), r.uniform(-3, 3, N)]
    if name == "sigmoid":
        return [logu(r, 1e-300, 800), r.uniform(-40, 40, N)]
    if name in ("sin", "cos", "tan"):
        # Also the doubles nearest to multiples of pi/2 (and a few ulp around them),
        # where the reduced argument suffers the most cancellation.
        k = r.integers(1, 2**40, N).astype(LD)
        near = (k * LD("1.57079632679489661923132169163975144")).astype(np.float64)
        near = (near + r.integers(-3, 4, N) * np.spacing(near)) * r.choice([-1, 1], N)
        return [logu(r, 1e-300, 1e5), logu(r, 1e5, vm.TRIG_MAX), r.uniform(-10, 10, N),
                near]
    raise KeyError(name)


# name: (array kernel, scalar function, NumPy float64 ufunc or None, reference function
# applied to long doubles)
FUNCS = {
    "exp": (vm.exp_array, vm.vexp, np.exp, np.exp),
    "expm1": (vm.expm1_array, vm.vexpm1, np.expm1, np.expm1),
    "log": (vm.log_array, vm.vlog, np.log, np.log),
    "log1p": (vm.log1p_array, vm.vlog1p, np.log1p, np.log1p),
    "tanh": (vm.tanh_array, vm.vtanh, np.tanh, np.tanh),
    "sigmoid": (vm.sigmoid_array, vm.vsigmoid, None, _sigmoid),
    "sin": (vm.sin_array, vm.vsin, np.sin, np.sin),
    "cos": (vm.cos_array, vm.vcos, np.cos, np.cos),
    "tan": (vm.tan_array, vm.vtan, np.tan, np.tan),
}


def ulp_err(got, ref):
    """|got - ref| in units of np.spacing(ref), the spacing taken in got's precision
    (ref may be float32, float64 or long double); non-finite references must be
    matched exactly (inf otherwise)."""
    prec = np.float32 if got.dtype == np.float32 else np.float64
    wide = np.promote_types(ref.dtype, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        refp = ref.astype(prec)
        fin = np.isfinite(refp)
        err = np.zeros(got.shape)
        sp = np.spacing(np.abs(refp[fin])).astype(wide)
        d = (got[fin].astype(wide) - ref[fin].astype(wide)) / sp
        err[fin] = np.abs(d.astype(np.float64))
    g, r = got[~fin], refp[~fin]
    same = (g == r) | (np.isnan(g) & np.isnan(r))
    err[np.flatnonzero(~fin)[~same]] = np.inf
    return err


def _run(kernel, x):
    out = np.empty_like(x)
    kernel(x, out)
    return out


def _worst(err, x):
    i = int(np.argmax(err))
    return f"max {err[i]:.3f} ulp at x={x[i]!r}"


@pytest.mark.parametrize("name", list(FUNCS))
def test_float64_vs_numpy_and_exact(name):
    kernel, _, npf, ldf = FUNCS[name]
    for x in _inputs(name):
        got = _run(kernel, x)
        if npf is not None:
            with np.errstate(all="ignore"):
                ref = npf(x)
            err = ulp_err(got, ref)
            assert err.max() <= 2.0, f"{name} vs numpy: {_worst(err, x)}"
        if HAVE_LD:
            with np.errstate(all="ignore"):
                ref = ldf(x.astype(LD))
            err = ulp_err(got, ref)
            assert err.max() <= 1.0, f"{name} vs exact: {_worst(err, x)}"
        elif npf is None:        # sigmoid without a long double: the naive formula
            m = x > -700
            with np.errstate(all="ignore"):
                err = ulp_err(got[m], ldf(x[m]))
            assert err.max() <= 3.0, f"{name} vs 1/(1+exp(-x)): {_worst(err, x[m])}"


def _f32(x):
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    return x[np.isfinite(x)]


@pytest.mark.parametrize("name", list(FUNCS))
def test_float32(name):
    kernel, _, npf, ldf = FUNCS[name]
    for x in _inputs(name)[:2]:
        x32 = _f32(x)
        got = _run(kernel, x32)
        assert got.dtype == np.float32
        with np.errstate(all="ignore"):
            ref = (npf or ldf)(x32.astype(np.float64)).astype(np.float32)
        err = ulp_err(got, ref)
        assert err.max() <= 1.0, f"{name} float32 vs numpy float64: {_worst(err, x32)}"
        if npf is not None:
            # NumPy's float32 ufuncs are themselves up to ~3 ulp off (its SIMD exp/log):
            # we may differ from them by their own error plus 1 ulp.
            with np.errstate(all="ignore"):
                n32 = npf(x32)
            own = ulp_err(n32, ref)
            err = ulp_err(got, n32)
            excess = err - own
            assert excess.max() <= 1.0, \
                f"{name} float32 vs numpy float32: {_worst(excess, x32)} beyond numpy's own"


# -- special values ---------------------------------------------------------------------
def _bits_equal(a, b):
    a = np.float64(a)
    b = np.float64(b)
    if np.isnan(b):
        return bool(np.isnan(a))
    return a == b and np.signbit(a) == np.signbit(b)


SPECIAL = {
    "exp": [(0.0, 1.0), (-0.0, 1.0), (INF, INF), (-INF, 0.0), (NAN, NAN),
            (709.782712893384, 1.7976931348622732e308), (709.7828, INF), (1e300, INF),
            (-745.1332191019411, TINY), (-745.2, 0.0), (-1e300, 0.0), (TINY, 1.0),
            (1.0, math.e), (-1.0, 1 / math.e)],
    "expm1": [(0.0, 0.0), (-0.0, -0.0), (TINY, TINY), (-TINY, -TINY), (1e-300, 1e-300),
              (-1e-20, -1e-20), (INF, INF), (-INF, -1.0), (NAN, NAN), (-40.0, -1.0),
              (-1000.0, -1.0), (710.0, INF), (1e300, INF)],
    "log": [(0.0, -INF), (-0.0, -INF), (-1.0, NAN), (-TINY, NAN), (-INF, NAN), (INF, INF),
            (NAN, NAN), (1.0, 0.0), (TINY, -744.4400719213812), (DMIN, -708.3964185322641),
            (DMAX, 709.782712893384), (2.0, math.log(2.0)), (0.5, -math.log(2.0))],
    "log1p": [(0.0, 0.0), (-0.0, -0.0), (TINY, TINY), (-TINY, -TINY), (1e-300, 1e-300),
              (-1.0, -INF), (-1.5, NAN), (-INF, NAN), (INF, INF), (NAN, NAN),
              (DMAX, 709.782712893384)],
    "tanh": [(0.0, 0.0), (-0.0, -0.0), (TINY, TINY), (-TINY, -TINY), (1e-200, 1e-200),
             (INF, 1.0), (-INF, -1.0), (NAN, NAN), (19.5, 1.0), (-19.5, -1.0), (40.0, 1.0),
             (1e300, 1.0), (-1e300, -1.0)],
    "sigmoid": [(0.0, 0.5), (-0.0, 0.5), (INF, 1.0), (-INF, 0.0), (NAN, NAN), (40.0, 1.0),
                (1e300, 1.0), (-800.0, 0.0), (-1e300, 0.0), (-745.0, TINY)],
    "sin": [(0.0, 0.0), (-0.0, -0.0), (TINY, TINY), (-1e-300, -1e-300), (INF, NAN),
            (-INF, NAN), (NAN, NAN)],
    "cos": [(0.0, 1.0), (-0.0, 1.0), (TINY, 1.0), (INF, NAN), (-INF, NAN), (NAN, NAN)],
    "tan": [(0.0, 0.0), (-0.0, -0.0), (TINY, TINY), (-1e-300, -1e-300), (INF, NAN),
            (-INF, NAN), (NAN, NAN)],
}


@pytest.mark.parametrize("name", list(SPECIAL))
def test_special_values(name):
    kernel, scalar, _, _ = FUNCS[name]
    xs = np.array([x for x, _ in SPECIAL[name]])
    arr = _run(kernel, xs)
    for (x, want), a in zip(SPECIAL[name], arr):
        s = scalar(x)
        assert _bits_equal(s, want), f"{name}({x!r}) = {s!r}, want {want!r}"
        assert _bits_equal(a, want), f"{name}_array({x!r}) = {a!r}, want {want!r}"


def test_exp_subnormal_outputs():
    r = _rng("subnormal")
    x = r.uniform(-745.2, -708.3, N)
    got = _run(vm.exp_array, x)
    assert ulp_err(got, np.exp(x)).max() <= 1.0
    s = _run(vm.sigmoid_array, x)              # sigmoid(x) ~ exp(x) there
    assert ulp_err(s, np.exp(x)).max() <= 1.0


def test_exp_float32_subnormal_and_overflow_outputs():
    """float32 exp scales by 2**k in float32: results among the subnormals round once,
    and results past float32's range are inf."""
    x = np.concatenate([np.linspace(-104.5, -86.0, 400_001), np.linspace(88.0, 89.5, 100_001)])
    x32 = x.astype(np.float32)
    got = _run(vm.exp_array, x32)
    with np.errstate(over="ignore"):
        ref = np.exp(x32.astype(np.float64)).astype(np.float32)
    assert ulp_err(got, ref).max() <= 1.0
    assert (got[ref == 0] == 0).all() and np.isinf(got[np.isinf(ref)]).all()


def test_near_zero_accuracy():
    """expm1, log1p, tanh, sin, tan of small arguments: no cancellation."""
    r = _rng("near0")
    x = logu(r, 1e-300, 1e-4)
    for name in ("expm1", "log1p", "tanh", "sin", "tan"):
        kernel, _, npf, _ = FUNCS[name]
        err = ulp_err(_run(kernel, x), npf(x))
        assert err.max() <= 1.0, f"{name}: {_worst(err, x)}"


def test_trig_beyond_trig_max():
    """The scalar functions give NaN beyond TRIG_MAX; the array kernels use libm."""
    x = np.array([vm.TRIG_MAX * 1.5, -1e20, 1e300, DMAX, INF, NAN, 1.0])
    for name in ("sin", "cos", "tan"):
        kernel, scalar, npf, _ = FUNCS[name]
        got = _run(kernel, x)
        with np.errstate(invalid="ignore"):
            assert ulp_err(got, npf(x)).max() <= 1.0, name
        assert math.isnan(scalar(1e20))
        assert not math.isnan(scalar(vm.TRIG_MAX))


def test_tanh_sigmoid_saturate_exactly():
    x = np.linspace(19.1, 1000.0, 10001)
    assert (_run(vm.tanh_array, x) == 1.0).all()
    assert (_run(vm.tanh_array, -x) == -1.0).all()
    x = np.linspace(37.5, 1000.0, 10001)
    assert (_run(vm.sigmoid_array, x) == 1.0).all()


def test_scalar_float32_argument():
    @njit
    def f(v):
        return (vm.vexp(v), vm.vexpm1(v), vm.vlog(v), vm.vlog1p(v), vm.vtanh(v),
                vm.vsigmoid(v), vm.vsin(v), vm.vcos(v), vm.vtan(v))

    got = f(np.float32(0.75))
    v = float(np.float32(0.75))
    want = (math.exp(v), math.expm1(v), math.log(v), math.log1p(v), math.tanh(v),
            1 / (1 + math.exp(-v)), math.sin(v), math.cos(v), math.tan(v))
    for g, w in zip(got, want):
        assert isinstance(g, float)
        assert abs(g - w) <= 2 * abs(np.spacing(w))


# -- vectorisation ----------------------------------------------------------------------
def _host_has(feature):
    try:
        import llvmlite.binding as llb
        return f"+{feature}" in llb.get_host_cpu_features().flatten().split(",")
    except Exception:
        return False


def _loop(f):
    @njit(error_model="numpy")        # not cached: inspect_asm needs a fresh compile
    def k(x, out):
        for i in range(x.size):
            out[i] = f(x[i])
    return k


@pytest.mark.skipif(not _host_has("avx2"), reason="checks AVX2 (or AVX-512) code generation")
@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loop_vectorises(name, dtype):
    f = FUNCS[name][1]
    k = _loop(f)
    x = np.ones(16, dtype)
    k(x, np.empty_like(x))
    asm = k.inspect_asm(k.signatures[0])
    packed = re.findall(
        r"\bv(?:mul|add|sub|fmadd\d+|fmsub\d+|fnmadd\d+|sqrt|div)p[sd]\b[^\n]*[yz]mm", asm)
    assert len(packed) >= 8, f"{name} loop did not vectorise"
    # no libm calls in the loop (exp/log/sin/... would be scalar calls)
    assert not re.search(r"call[q]?\s+\*?[^\n]*\b(exp|log|sin|cos|tan|tanh|expm1|log1p)\b",
                         asm)
