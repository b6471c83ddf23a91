"""Branch-free, SIMD-vectorisable elementwise math for Numba kernels, and the array
kernels of the transcendental ops built on it.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .cache import _ARR, _INL, _safe_caches
from .layout import K_SIN

# PyPI's llvmlite ships without Intel SVML, so inside ``@njit`` code ``math.exp``,
# ``math.tanh``, ``math.sin`` ... are scalar libm calls: they cost 7-25 ns per element and
# stop LLVM from vectorising the loop around them. The functions here are written only
# with operations LLVM can vectorise (float arithmetic, ``llvm.fma``, 64-bit integer
# add/sub/and/or/xor/shift on the bit patterns of floats, and selects), so that
#
#     for i in range(n):
#         out[i] = vexp(x[i])
#
# compiles to AVX2 (or AVX-512 / NEON) code. They are ``@njit(inline="always")`` scalar
# functions: ``float64`` in, ``float64`` out. Called with a ``float32`` (or integer)
# value they compute in float64; the caller casts the result (storing into a float32
# array does that), which gives a correctly rounded float32 result in all but a
# vanishing fraction of cases.
#
# Accuracy: max error against a long-double reference over millions of points per
# function (``tests/test_vmath.py``), in ulp of the exact result; NumPy/glibc for scale:
#
#     vexp     0.65 (0.76 for subnormal results)   numpy 0.51
#     vexpm1   0.60                                 numpy 0.85
#     vlog     0.67                                 numpy 0.52
#     vlog1p   0.66                                 numpy 0.83
#     vtanh    0.55                                 numpy 1.19
#     vsigmoid 0.64                                 (1/(1+np.exp(-x)): ~2.2)
#     vsin     0.78, vcos 0.77, vtan 0.82           numpy 0.52, 0.52, 0.57
#
# so every result is within 1 ulp of NumPy's (2 ulp is what the tests allow). IEEE
# special values (+-inf, nan, +-0, subnormal inputs and outputs, overflow to inf,
# underflow to 0, log(0) = -inf, log(<0) = nan, tanh(+-large) = +-1 exactly) are handled
# by selects. float32 inputs give the float64 result rounded once: correctly rounded in
# the tests' millions of cases (NumPy's own float32 exp/log are up to 2-3 ulp off);
# except exp (``vexp_t``, used by the exp and softmax kernels), which computes a float32
# in float32 arithmetic, twice the lanes, within 1 ulp as PyTorch's (SLEEF's) expf.
#
# Notes for callers
# -----------------
# * Compile the calling kernel with ``error_model="numpy"``: the functions divide, and
#   Python's error model adds a zero check (a branch, then an exception) to every
#   division, which stops log/log1p/tanh/sigmoid/tan loops from vectorising.
# * Never with ``fastmath=True`` (or the 'reassoc', 'nnan', 'ninf', 'afn' flags): the
#   functions rely on exact IEEE rounding (Fast2Sum/TwoSum error terms) and on NaN/inf
#   selects, which those flags let LLVM fold away (errors then reach 2-4 ulp, and
#   garbage for log1p). ``fastmath={'contract'}`` is harmless.
# * Accuracy does not depend on FMA hardware: ``llvm.fma`` is the exactly rounded fused
#   multiply-add, which becomes one instruction where the CPU has FMA (x86-64 since
#   Haswell/Piledriver, all AArch64) and a libm call elsewhere (correct, but slow and the
#   loop then does not vectorise well). Polynomials use ``llvm.fmuladd`` (fused only when
#   that is cheap).
# * ``vsin``/``vcos``/``vtan`` reduce the argument modulo pi/2 with a 159-bit pi/2
#   (Cody-Waite in double-double arithmetic, exact first step thanks to FMA). That is
#   accurate to <1 ulp for ``|x| <= TRIG_MAX`` (2**47 ~ 1.4e14), including arguments
#   closest to multiples of pi/2. Beyond it (and for +-inf) the scalar functions return
#   NaN; the array kernels ``sin_array``/``cos_array``/``tan_array`` recompute those
#   (rare) elements with libm in a second, scalar pass.
# * ``inspect_asm`` shows nothing for a kernel loaded from the cache: set
#   ``TAPEGRAD_CACHE=0`` (or compile a fresh loop) to look for ``ymm`` code.



@intrinsic
def _as_int(typingctx, x):
    """The bit pattern of a float64 as an int64 (a bit cast, no conversion)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float64)
        return builder.bitcast(v, ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def _as_float(typingctx, i):
    """The float64 whose bit pattern is the int64 ``i`` (a bit cast)."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.int64)
        return builder.bitcast(v, ir.DoubleType())

    return types.float64(i), codegen


@intrinsic
def _scale2f(typingctx, p, kd):
    """p * 2**k for float32 p, where kd is the float32 k + 1.5 * 2**23 (k's bits in its
    mantissa), k in [-151, 128]: two exact power-of-two factors, so that a subnormal or
    overflowing result rounds once. All in 32-bit lanes, twice as many as float64."""
    if not (p == types.float32 and kd == types.float32):
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        k = builder.sub(builder.bitcast(args[1], i32), i32(_F_SHIFT_BITS))
        k1 = builder.ashr(k, i32(1))

        def pow2(e):
            return builder.bitcast(builder.shl(builder.add(e, i32(127)), i32(23)),
                                   ir.FloatType())

        return builder.fmul(builder.fmul(args[0], pow2(k1)), pow2(builder.sub(k, k1)))

    return types.float32(p, kd), codegen


@intrinsic
def _is_f32(typingctx, x):
    """True for a float32 value: a constant, so that LLVM keeps one branch of
    ``f(x) if _is_f32(x) else g(x)``."""
    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(1), int(x == types.float32))

    return types.boolean(x), codegen


@intrinsic
def _lshr(typingctx, i, n):
    """Logical (unsigned) right shift of an int64: AVX2 has it for vectors, unlike the
    arithmetic shift that ``>>`` on a signed integer means."""
    if not (isinstance(i, types.Integer) and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.int64)
        b = context.cast(builder, args[1], sig.args[1], types.int64)
        return builder.lshr(a, b)

    return types.int64(i, n), codegen


def _float3(name, ty=types.float64):
    """An LLVM intrinsic of three floats (``name``.f64 or .f32), by direct call."""
    def impl(typingctx, a, b, c):
        if not all(isinstance(t, (types.Float, types.Integer)) for t in (a, b, c)):
            return None

        def codegen(context, builder, sig, args):
            vals = [context.cast(builder, v, t, ty) for v, t in zip(args, sig.args)]
            f = context.get_value_type(ty)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(f, [f, f, f]),
                name + (".f64" if ty == types.float64 else ".f32"))
            return builder.call(fn, vals)

        return ty(a, b, c), codegen
    impl.__name__ = name.replace(".", "_") + ("" if ty == types.float64 else "_f32")
    return intrinsic(impl)


# a*b + c rounded once (exact-product semantics on every target).
_fma = _float3("llvm.fma")
# a*b + c, fused only where the target has a fast FMA: for polynomials.
_mad = _float3("llvm.fmuladd")
_fmaf = _float3("llvm.fma", types.float32)
_madf = _float3("llvm.fmuladd", types.float32)


# -- constants ------------------------------------------------------------------------
_SHIFT = 6755399441055744.0          # 1.5 * 2**52: x + _SHIFT rounds x to an integer
_SHIFT_BITS = 0x4338000000000000     # ... whose value is then in the low mantissa bits
_SIGN = -0x8000000000000000          # the sign bit, as an int64
_EXP1 = 0x3FF0000000000000           # bits of 1.0
_INF = math.inf
_NAN = math.nan
_DBL_MIN = 2.2250738585072014e-308   # smallest normal

_INVLN2 = 1.4426950408889634
_LN2 = 0.6931471805599453            # ln2 rounded: k * _LN2 is exact inside an FMA
_LN2LO = 2.3190468138462996e-17      # ln2 - _LN2
# fdlibm's split (32-bit head) for log: k * _LN2HI is exact for |k| < 2**21.
_LN2HI = 6.93147180369123816490e-01
_LN2HILO = 1.90821492927058770002e-10

# (exp(r) - 1 - r - r**2/2) / r**3 on |r| <= ln2/2: Chebyshev fit, error * r**3 < 2**-60.
_E1 = 0.16666666666666669
_E2 = 0.041666666666666664
_E3 = 0.008333333333330065
_E4 = 0.0013888888888886554
_E5 = 0.00019841269863040545
_E6 = 2.4801587317135164e-05
_E7 = 2.755726848030982e-06
_E8 = 2.755728298405573e-07
_E9 = 2.510037583265786e-08
_E10 = 2.0911229729827565e-09

# log(1+f) = f - f*f/2 + s*(f*f/2 + R(s*s)), s = f/(2+f) (fdlibm e_log.c).
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_LOG_OFF = 0x3FE6A09E667F3BCD        # bits of sqrt(2)/2

# sin/cos on |r| <= pi/4 (fdlibm k_sin.c, k_cos.c).
_S1 = -1.66666666666666324348e-01
_S2 = 8.33333333332248946124e-03
_S3 = -1.98412698298579493134e-04
_S4 = 2.75573137070700676789e-06
_S5 = -2.50507602534068634195e-08
_S6 = 1.58969099521155010221e-10
_C1 = 4.16666666666666019037e-02
_C2 = -1.38888888888741095749e-03
_C3 = 2.48015872894767294178e-05
_C4 = -2.75573143513906633035e-07
_C5 = 2.08757232129817482790e-09
_C6 = -1.13596475577881948265e-11

_INVPIO2 = 6.36619772367581382433e-01
# pi/2 = _P1 + _P2 + _P3 to 159 bits.
_P1 = 1.5707963267948966
_P2 = 6.123233995736766e-17
_P3 = -1.4973849048591698e-33

#: Largest |x| for which vsin/vcos/vtan are accurate; beyond, they return NaN (the
#: array kernels fall back to libm for those elements).
TRIG_MAX = 2.0 ** 47


# -- exp family -----------------------------------------------------------------------
@njit(**_INL)
def _exp_reduce(x):
    """x = k*ln2 + r with |r| <= ln2/2 (for the clamped |x| <= 746).

    Returns (k, u, v) with exp(x) = 2**k * (1 + u + v), |v| < |u|/40: u + v is
    exp(r) - 1 with an error below 2**-59 (u = rhi + rhi**2/2 exactly).
    """
    kd = _fma(x, _INVLN2, _SHIFT)
    k = _as_int(kd) - _SHIFT_BITS
    kd = kd - _SHIFT
    rhi = _fma(-kd, _LN2, x)             # exact
    rlo = -(kd * _LN2LO)                 # |rlo| < 2.4e-14
    r = rhi + rlo
    # exp(r) - 1 = rhi + rhi**2/2 + [rlo + rhi*rlo + r**3 * p(r)]
    r2 = r * r
    r4 = r2 * r2
    # Estrin's scheme: short dependency chains, so that loop iterations overlap.
    p = _mad(r2, _mad(r, _E4, _E3), _mad(r, _E2, _E1))
    p = _mad(r4, _mad(r2, _mad(r, _E8, _E7), _mad(r, _E6, _E5)), p)
    p = _mad(r4 * r4, _mad(r, _E10, _E9), p)
    sq = rhi * rhi
    sql = _fma(rhi, rhi, -sq)            # rhi**2 = sq + sql exactly
    hh = 0.5 * sq
    u = rhi + hh                         # Fast2Sum: hh <= |rhi|/5
    ul = hh - (u - rhi)
    v = ul + (_mad(r * r2, p, rhi * rlo) + (rlo + 0.5 * sql))
    return k, u, v


@njit(**_INL)
def _exp_reduce_fast(x):
    """As _exp_reduce, for exp itself (result near 1, not near 0): exp(r) = h + m with
    h = 1 + rhi exact and m the small rest, to ~2**-55 (saves ~8 operations)."""
    kd = _fma(x, _INVLN2, _SHIFT)
    k = _as_int(kd) - _SHIFT_BITS
    kd = kd - _SHIFT
    rhi = _fma(-kd, _LN2, x)             # exact
    rlo = -(kd * _LN2LO)
    r = rhi + rlo
    r2 = r * r
    r4 = r2 * r2
    p = _mad(r2, _mad(r, _E4, _E3), _mad(r, _E2, _E1))
    p = _mad(r4, _mad(r2, _mad(r, _E8, _E7), _mad(r, _E6, _E5)), p)
    p = _mad(r4 * r4, _mad(r, _E10, _E9), p)
    h = 1.0 + rhi
    lo = (1.0 - h) + rhi                 # Fast2Sum
    return k, h, lo + _mad(r2, _mad(r, p, 0.5), rlo)


@njit(**_INL)
def _pow2_split(k):
    """2**k as the product of two normal floats (for -2044 <= k <= 2046)."""
    k1 = _lshr(k + 2048, 1) - 1024       # floor(k / 2)
    k2 = k - k1
    return _as_float((k1 + 1023) << 52), _as_float((k2 + 1023) << 52)


@njit(**_INL)
def vexp(x):
    """exp(x); < 0.65 ulp (< 0.76 for subnormal results). inf above 709.78,
    subnormal below -708.4, 0 below -745.1."""
    xd = np.float64(x)
    xc = -746.0 if xd < -746.0 else xd
    xc = 710.0 if xc > 710.0 else xc     # NaN passes both
    k, h, m = _exp_reduce_fast(xc)
    y = h + m
    s1, s2 = _pow2_split(k)
    return (y * s1) * s2                 # one rounding, also into the subnormals


# exp of a float32 in float32 arithmetic (twice the lanes of float64), after SLEEF's
# expf_u10: x = k ln2 + r with a two-part ln2, a degree-6 polynomial; within 1 ulp.
_F_SHIFT = np.float32(12582912.0)                   # 1.5 * 2**23
_F_SHIFT_BITS = 0x4B400000
_F_INVLN2 = np.float32(1.44269502)
_F_LN2HI = np.float32(0.693145751953125)
_F_LN2LO = np.float32(1.428606765330187e-06)
_F1 = np.float32(0.000198527617612853646278381)
_F2 = np.float32(0.00139304355252534151077271)
_F3 = np.float32(0.00833336077630519866943359)
_F4 = np.float32(0.0416664853692054748535156)
_F5 = np.float32(0.166666671633720397949219)
_F6 = np.float32(0.5)


@njit(**_INL)
def vexpf(x):
    """exp(x) for a float32 x, as a float32 within 1 ulp, in float32 arithmetic only."""
    xf = np.float32(x)
    xc = np.float32(-104.0) if xf < np.float32(-104.0) else xf
    xc = np.float32(89.0) if xc > np.float32(89.0) else xc     # NaN passes both
    ks = _fmaf(xc, _F_INVLN2, _F_SHIFT)
    kd = ks - _F_SHIFT
    r = _fmaf(-kd, _F_LN2HI, xc)
    r = _fmaf(-kd, _F_LN2LO, r)
    u = _madf(_madf(_madf(_madf(_madf(_F1, r, _F2), r, _F3), r, _F4), r, _F5), r, _F6)
    p = np.float32(1.0) + _madf(r * r, u, r)
    return _scale2f(p, ks)


@njit(**_INL)
def vexp_t(x):
    """exp in the precision of x: vexpf for a float32, else vexp."""
    return vexpf(x) if _is_f32(x) else vexp(x)


@njit(**_INL)
def _expm1_half(x):
    """expm1(x) / 2 = hi + lo (double-double) for x in [-40, 710]."""
    k, u, v = _exp_reduce(x)
    s = _as_float((k + 1022) << 52)      # 2**(k-1) (2**k overflows for k = 1024)
    a = s - 0.5                          # TwoSum: inexact for k > 53 or k < -53
    bb = a - s
    ae = (s - (a - bb)) + (-0.5 - bb)
    b = s * u                            # exact
    hi = a + b                           # Fast2Sum: |a| >= |b| or a == 0
    lo = ((a - hi) + b) + (ae + s * v)
    return hi, lo


@njit(**_INL)
def vexpm1(x):
    """exp(x) - 1, accurate near 0; < 0.6 ulp."""
    xd = np.float64(x)
    xc = -40.0 if xd < -40.0 else xd     # expm1(-40) rounds to -1
    xc = 710.0 if xc > 710.0 else xc
    hi, lo = _expm1_half(xc)
    res = 2.0 * (hi + lo)
    return xd if abs(xd) < 5.551115123125783e-17 else res    # 2**-54: +-0, tiny


@njit(**_INL)
def vtanh(x):
    """tanh(x) = -t/(2+t), t = expm1(-2|x|) in double-double; < 0.6 ulp. Exactly +-1
    for |x| > 19.1, exact for tiny and subnormal x."""
    xd = np.float64(x)
    z = -2.0 * abs(xd)
    z = -40.0 if z < -40.0 else z
    hi, lo = _expm1_half(z)
    th = 2.0 * (hi + lo)                 # t = th + tl, in (-1, 0]
    tl = 2.0 * lo - (th - 2.0 * hi)
    dh = 2.0 + th
    dl = ((2.0 - dh) + th) + tl
    inv = 1.0 / dh
    q = -th * inv
    q = _fma(_fma(q, dh, th) + (q * dl + tl), -inv, q)   # q += (n - q*d)/d, n = -t
    return _as_float((_as_int(q) & ~_SIGN) | (_as_int(xd) & _SIGN))    # copysign(q, x)


@njit(**_INL)
def vsigmoid(x):
    """1 / (1 + exp(-x)), stable for large |x| (0 below -745.2, 1 above 37.4);
    < 0.7 ulp."""
    xd = np.float64(x)
    a = -abs(xd)
    a = -746.0 if a < -746.0 else a
    k, h, m = _exp_reduce_fast(a)
    eh = h + m
    el = m - (eh - h)
    s1, s2 = _pow2_split(k)
    eh = (eh * s1) * s2                  # e = exp(-|x|) = eh + el
    el = (el * s1) * s2
    dh = 1.0 + eh
    dl = ((1.0 - dh) + eh) + el
    neg = xd < 0.0
    nh = eh if neg else 1.0
    nl = el if neg else 0.0
    inv = 1.0 / dh
    q = nh * inv
    return _fma(_fma(-q, dh, nh) + (nl - q * dl), inv, q)


# -- log family -----------------------------------------------------------------------
@njit(**_INL)
def _log_reduce(ix):
    """For the bits ix of a positive normal u: u = 2**k * (1 + f), sqrt(2)/2 <= 1+f <
    sqrt(2). Returns (k as a float, f); f is exact."""
    tmp = ix + (_EXP1 - _LOG_OFF)         # >= 0 for any positive u
    kb = _lshr(tmp, 52)                  # k + 1023
    z = _as_float(ix - ((kb - 1023) << 52))
    kd = _as_float(kb | 0x4330000000000000) - 4503599627371519.0   # kb - 1023
    return kd, z - 1.0


@njit(**_INL)
def _log_finish(kd, f, c):
    """log(2**k * (1+f)) + c for small c: fdlibm's log(1+f) = f - f*f/2 + s*(f*f/2 +
    R(s*s)), s = f/(2+f), with the large terms k*ln2 + f - f*f/2 summed exactly."""
    s = f / (2.0 + f)
    z = s * s
    z2 = z * z
    p = _mad(z2, _mad(z, _LG4, _LG3), _mad(z, _LG2, _LG1))         # Estrin
    p = _mad(z2 * z2, _mad(z2, _LG7, _mad(z, _LG6, _LG5)), p)
    r = z * p
    fsq = f * f
    fsql = _fma(f, f, -fsq)              # f*f = fsq + fsql exactly
    hfsq = 0.5 * fsq
    th = f - hfsq                        # Fast2Sum: |f| >= f*f/2
    tl = (f - th) - hfsq
    a = kd * _LN2HI                      # exact
    sh = a + th                          # Fast2Sum: |a| >= ln2 > |th|, or a == 0
    sl = (a - sh) + th
    small = (s * (hfsq + r) - 0.5 * fsql) + ((kd * _LN2HILO + c) + tl)
    return sh + (sl + small)


@njit(**_INL)
def vlog(x):
    """Natural log; < 0.7 ulp. log(0) = -inf, log(x < 0) = nan, log(inf) = inf."""
    xd = np.float64(x)
    sub = xd < _DBL_MIN
    u = xd * 18014398509481984.0 if sub else xd          # 2**54
    kd, f = _log_reduce(_as_int(u))
    kd = kd - 54.0 if sub else kd
    res = _log_finish(kd, f, 0.0)
    res = res if xd < _INF else xd       # inf, nan
    res = -_INF if xd == 0.0 else res
    return _NAN if xd < 0.0 else res


@njit(**_INL)
def vlog1p(x):
    """log(1 + x), accurate near 0; < 0.7 ulp. log1p(-1) = -inf, nan below."""
    xd = np.float64(x)
    u = 1.0 + xd
    # (1 + x) - u exactly (Fast2Sum, ordered by magnitude), as a relative correction.
    c = (xd - (u - 1.0)) if xd < 1.0 else (1.0 - (u - xd))
    c = c / u
    kd, f = _log_reduce(_as_int(u))
    res = _log_finish(kd, f, c)
    res = xd if abs(xd) < 5.551115123125783e-17 else res      # +-0, tiny
    res = res if xd < _INF else xd
    res = -_INF if xd == -1.0 else res
    return _NAN if xd < -1.0 else res


# -- trigonometric --------------------------------------------------------------------
@njit(**_INL)
def _trig_reduce(x):
    """x = n*pi/2 + (y0 + y1), |y0 + y1| <~ pi/4, y1 below half an ulp of y0.

    Returns (n as int64 (only n mod 4 is used), y0, y1). Exact to far beyond double
    precision for |x| <= TRIG_MAX: the first step is exact with FMA, the remaining
    106 bits of pi/2 are subtracted in double-double.
    """
    kd = _fma(x, _INVPIO2, _SHIFT)
    n = _as_int(kd)
    fn = kd - _SHIFT
    r1 = _fma(-fn, _P1, x)               # exact
    ah = fn * _P2
    al = _fma(fn, _P2, -ah)              # fn*_P2 = ah + al exactly
    sh = r1 - ah                         # TwoSum
    bb = sh - r1
    sl = (r1 - (sh - bb)) + (-ah - bb)
    tail = sl - (al + fn * _P3)
    y0 = sh + tail                       # TwoSum
    bb = y0 - sh
    y1 = (sh - (y0 - bb)) + (tail - bb)
    return n, y0, y1


@njit(**_INL)
def _ksin(x, y, exact):
    """sin(x + y), |x| <= pi/4, as (head, tail) (fdlibm's kernel). With ``exact``,
    x**3 is computed exactly, so that head + tail is good to ~2**-57 (for tan)."""
    z = x * x
    v = z * x
    r = _mad(z, _S6, _S5)
    r = _mad(z, r, _S4)
    r = _mad(z, r, _S3)
    r = _mad(z, r, _S2)
    t = -((z * (0.5 * y - v * r) - y) - v * _S1)
    if exact:
        ve = _fma(z, x, -v) + _fma(x, x, -z) * x     # x**3 = v + ve
        t = t + _S1 * ve
    return x, t


@njit(**_INL)
def _kcos(x, y, exact):
    """cos(x + y), |x| <= pi/4, as (head, tail) (fdlibm's kernel); ``exact`` as in
    _ksin."""
    z = x * x
    w = z * z
    r1 = _mad(z, _C3, _C2)
    r1 = _mad(z, r1, _C1)
    r2 = _mad(z, _C6, _C5)
    r2 = _mad(z, r2, _C4)
    r = z * r1 + (w * w) * r2
    hz = 0.5 * z
    w = 1.0 - hz
    t = ((1.0 - w) - hz) + (z * r - x * y)
    if exact:
        t = t - 0.5 * _fma(x, x, -z)
    return w, t


@njit(**_INL)
def vsin(x):
    """sin(x); < 0.8 ulp for |x| <= TRIG_MAX, NaN beyond (and for +-inf, nan)."""
    xd = np.float64(x)
    n, y0, y1 = _trig_reduce(xd)
    sh, sl = _ksin(y0, y1, False)
    ch, cl = _kcos(y0, y1, False)
    s = sh + sl
    c = ch + cl
    res = c if (n & 1) != 0 else s
    res = _as_float(_as_int(res) ^ ((n & 2) << 62))
    res = xd if abs(xd) < 7.450580596923828e-09 else res     # 2**-27: +-0, tiny
    return res if abs(xd) <= TRIG_MAX else _NAN


@njit(**_INL)
def vcos(x):
    """cos(x); < 0.8 ulp for |x| <= TRIG_MAX, NaN beyond (and for +-inf, nan)."""
    xd = np.float64(x)
    n, y0, y1 = _trig_reduce(xd)
    sh, sl = _ksin(y0, y1, False)
    ch, cl = _kcos(y0, y1, False)
    s = sh + sl
    c = ch + cl
    res = s if (n & 1) != 0 else c
    res = _as_float(_as_int(res) ^ (((n + 1) & 2) << 62))
    return res if abs(xd) <= TRIG_MAX else _NAN


@njit(**_INL)
def vtan(x):
    """tan(x) = sin/cos with both in double-double; < 0.85 ulp for |x| <= TRIG_MAX,
    NaN beyond (and for +-inf, nan)."""
    xd = np.float64(x)
    n, y0, y1 = _trig_reduce(xd)
    sh, sl = _ksin(y0, y1, True)
    ch, cl = _kcos(y0, y1, True)
    s = sh + sl                          # renormalise (Fast2Sum)
    sl = sl - (s - sh)
    c = ch + cl
    cl = cl - (c - ch)
    odd = (n & 1) != 0
    nh = -c if odd else s                # tan(y + pi/2) = -cos(y)/sin(y)
    nl = -cl if odd else sl
    dh = s if odd else c
    dl = sl if odd else cl
    inv = 1.0 / dh
    q = nh * inv
    res = _fma(_fma(-q, dh, nh) + (nl - q * dl), inv, q)
    res = xd if abs(xd) < 7.450580596923828e-09 else res
    return res if abs(xd) <= TRIG_MAX else _NAN


@njit(**_INL)
def _dtrig(k, x):
    """The derivative of sin (k = K_SIN) or cos at x, with libm beyond TRIG_MAX."""
    v = np.float64(x)
    if abs(v) <= TRIG_MAX:
        return vcos(x) if k == K_SIN else -vsin(x)
    return math.cos(v) if k == K_SIN else -math.sin(v)


@njit(**_INL)
def _tpow(x, e):
    """x ** e with PyTorch's special exponents, so that 0, inf and nan come out alike."""
    if e == 0.5:
        return np.sqrt(x)
    if e == -0.5:
        return 1.0 / np.sqrt(x)
    if e == 1.0:
        return x
    if e == 2.0:
        return x * x
    if e == 3.0:
        return x * x * x
    if e == -1.0:
        return 1.0 / x
    if e == -2.0:
        return 1.0 / (x * x)
    return x ** e


# -- array kernels (1-D arrays; out may be float32 or float64); the scalars f0, f1, p0
# are unused, so that these are the ops' forward functions (UNARY_FWD) as they are
@njit(**_ARR)
def exp_array(x, out, f0=0.0, f1=0.0, p0=0):
    for i in range(x.size):
        out[i] = vexp_t(x[i])


@njit(**_ARR)
def expm1_array(x, out, f0=0.0, f1=0.0, p0=0):
    for i in range(x.size):
        out[i] = vexpm1(x[i])


@njit(**_ARR)
def log_array(x, out, f0=0.0, f1=0.0, p0=0):
    for i in range(x.size):
        out[i] = vlog(x[i])


@njit(**_ARR)
def log1p_array(x, out, f0=0.0, f1=0.0, p0=0):
    for i in range(x.size):
        out[i] = vlog1p(x[i])


@njit(**_ARR)
def tanh_array(x, out, f0=0.0, f1=0.0, p0=0):
    for i in range(x.size):
        out[i] = vtanh(x[i])


@njit(**_ARR)
def sigmoid_array(x, out, f0=0.0, f1=0.0, p0=0):
    for i in range(x.size):
        out[i] = vsigmoid(x[i])


@njit(**_ARR)
def _trig_libm(x, out, which):
    """libm for the rare arguments beyond TRIG_MAX (0: sin, 1: cos, 2: tan)."""
    for i in range(x.size):
        if abs(x[i]) > TRIG_MAX:
            v = np.float64(x[i])
            out[i] = math.sin(v) if which == 0 else math.cos(v) if which == 1 else math.tan(v)


@njit(**_ARR)
def sin_array(x, out, f0=0.0, f1=0.0, p0=0):
    big = False
    for i in range(x.size):
        out[i] = vsin(x[i])
        big |= not (abs(x[i]) <= TRIG_MAX)
    if big:
        _trig_libm(x, out, 0)


@njit(**_ARR)
def cos_array(x, out, f0=0.0, f1=0.0, p0=0):
    big = False
    for i in range(x.size):
        out[i] = vcos(x[i])
        big |= not (abs(x[i]) <= TRIG_MAX)
    if big:
        _trig_libm(x, out, 1)


@njit(**_ARR)
def tan_array(x, out, f0=0.0, f1=0.0, p0=0):
    big = False
    for i in range(x.size):
        out[i] = vtan(x[i])
        big |= not (abs(x[i]) <= TRIG_MAX)
    if big:
        _trig_libm(x, out, 2)


_safe_caches(globals())
