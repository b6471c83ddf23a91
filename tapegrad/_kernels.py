"""Every Numba kernel of tapegrad and the interpreters that call them.

Each op's kernels are compiled the first time an op of that kind and dtype runs (a
C function per op, called through a table of addresses), so a program only pays for
the ops it uses. The cache of compiled code is stamped with a hash of every kernel
source (``KERNEL_SOURCES``), so that no edit can load stale machine code.

The tape is an int64 row table ``T`` (one row per tensor value: leaf, constant or op
result) plus a float64 table ``F`` of scalar parameters. Values are ordinary NumPy
arrays; a row stores the addresses of the values its backward needs, and the
interpreter reads them through raw pointers, so nothing is copied into an arena.
Adjoints live in one flat arena per backward, at the row's ``AOFF``.
"""
import contextlib
import hashlib
import math
import os
import tempfile
import warnings

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.core.caching import CacheImpl, FunctionCache, _CacheLocator
from numba.core.ccallback import CFunc
from numba.core.dispatcher import Dispatcher
from numba.core.sigutils import normalize_signature
from numba.extending import intrinsic, overload

try:
    import fcntl
except ImportError:      # no locking between processes on Windows: each one compiles
    fcntl = None

_CACHE = os.environ.get("TAPEGRAD_CACHE", "1") != "0"
# IEEE semantics (x / 0 is inf or nan, as in PyTorch), not Python's ZeroDivisionError.
_JIT = {"cache": _CACHE, "error_model": "numpy"}


# ======================================================================================
# The on-disk cache of compiled kernels
#
# Numba stamps a cached function with its own source file only, so code inlined from
# another file could load stale machine code: every kernel of tapegrad is stamped with
# one hash of all KERNEL_SOURCES instead. The cache goes to NUMBA_CACHE_DIR when set,
# else next to the package, else to the user's cache directory, else to a temporary
# directory for this process (with a warning). A damaged entry is compiled again and
# replaced (with a warning naming it), and processes starting on a cold cache at once
# compile each kernel once: the first takes a lock per kernel, the others wait and load.

KERNEL_SOURCES = [os.path.abspath(__file__)]
_PKG_DIR = os.path.dirname(KERNEL_SOURCES[0])


def _sources_hash():
    h = hashlib.sha256()
    for path in KERNEL_SOURCES:
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def _writable(path):
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _find_cache_dir():
    """The first writable place: NUMBA_CACHE_DIR, the package, the user's cache."""
    tag = "tapegrad_" + hashlib.sha1(_PKG_DIR.encode()).hexdigest()[:16]
    places = []
    if numba_config.CACHE_DIR:
        places.append(os.path.join(numba_config.CACHE_DIR, tag))
    places.append(os.path.join(_PKG_DIR, "__pycache__"))
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    places.append(os.path.join(home, "tapegrad", tag))
    for path in places:
        if _writable(path):
            return path
    path = tempfile.mkdtemp(prefix="tapegrad-kernels-")
    warnings.warn(f"tapegrad: no writable cache directory ({', '.join(places)}): kernels "
                  f"compiled now are kept in {path} for this process only. Set "
                  "NUMBA_CACHE_DIR to a writable directory to keep them.", stacklevel=2)
    return path


class _Locator(_CacheLocator):
    """Where a tapegrad kernel is cached, stamped with the hash of all kernel sources."""
    _dir = None
    _stamp = None

    def __init__(self, py_func):
        self._lineno = py_func.__code__.co_firstlineno

    def get_cache_path(self):
        return _Locator._dir

    def get_source_stamp(self):
        return _Locator._stamp

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.abspath(py_file) not in KERNEL_SOURCES:
            return None
        if cls._dir is None:
            cls._dir, cls._stamp = _find_cache_dir(), _sources_hash()
        return cls(py_func)


CacheImpl._locator_classes.insert(0, _Locator)


class _SafeCache(FunctionCache):
    """A function's cache entries: damaged ones are dropped (and compiled again), and a
    miss takes a lock on the function, so that one process compiles it at a time."""

    def __init__(self, py_func):
        super().__init__(py_func)
        self._lockfile = None

    def _load(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:        # truncated, junk, unreadable: compile again
            index = self._cache_file._index_path
            warnings.warn(f"tapegrad: damaged kernel cache entry {index} "
                          f"({type(exc).__name__}: {exc}); compiling it again",
                          stacklevel=3)
            with contextlib.suppress(OSError):
                os.remove(index)
            return None

    def load_overload(self, sig, target_context):
        data = self._load(sig, target_context)
        if data is None and self._enabled and self._lock():
            data = self._load(sig, target_context)    # another process may have saved it
            if data is not None:
                self._unlock()
        return data

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        finally:
            self._unlock()

    def _lock(self):
        if fcntl is None or self._lockfile is not None:
            return self._lockfile is not None
        try:
            f = open(self._cache_file._index_path + ".lock", "a")
        except OSError:
            return False
        fcntl.flock(f, fcntl.LOCK_EX)
        self._lockfile = f
        return True

    def _unlock(self):
        f, self._lockfile = self._lockfile, None
        if f is not None:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


def _safe_caches(namespace):
    """Gives every cached kernel defined so far in ``namespace`` a _SafeCache."""
    for obj in namespace.values():
        if isinstance(obj, Dispatcher) and isinstance(obj._cache, FunctionCache) \
                and not isinstance(obj._cache, _SafeCache):
            obj._cache = _SafeCache(obj.py_func)


_ARR = _JIT
_INL = {**_JIT, "inline": "always"}

# Row-table columns, ordered so that recording writes one contiguous slice.
OP = 0      # kernel opcode (below)
NM = 1      # op-table entry (name, tensor-level vjp); not read here
A = 2       # input rows, -1 when absent
B = 3
FL = 4      # flags
N = 5       # number of elements
AOFF = 6    # adjoint offset in the arena, -1 when no grad is needed
SA = 7      # address of the saved value of input A (0: not saved)
SB = 8      # address of the saved value of input B
SO = 9      # address of the saved output value
ND = 10     # number of dims
S0 = 11     # shape, MAXD columns
MAXD = 8
P0 = S0 + MAXD      # integer parameters of the op
P1 = P0 + 1
NP = 10
NCOL = P0 + NP

# Row flags.
REQ = 1       # requires grad
LEAFF = 2     # a leaf (user-created tensor or constant)
PAUSE = 4     # hooks or retain_grad: the replay stops here for Python
FREED = 8     # saved values released by a backward without retain_graph
DIRTY = 16    # a saved value was modified in place after being saved
SAVES = 32    # the op saved tensors (so a second backward needs retain_graph)
F64 = 64      # the value is float64 (else float32): which arena holds its adjoint
U8 = 128      # a program value of one byte per element (a bool)

# Kernel opcodes, numbered by their place in this table. Each family is contiguous, so
# that kernels tell an op's family by a range (BINARY_FIRST..BINARY_LAST,
# UNARY_FIRST..UNARY_LAST): add an op inside its family.
(K_LEAF,
 K_EXT,          # a non-leaf of an older tape: its adjoint is handed on
 # broadcasting binary ops
 K_ADD, K_SUB, K_MUL, K_DIV, K_POW,
 K_MAXIMUM,      # ties split the gradient in half, as PyTorch does
 K_MINIMUM,
 K_WHERE,        # SO: the condition, uint8, broadcast to the output's shape
 # elementwise ops of one tensor (UNARY_OPS)
 K_AFFINE,       # x * F0 + F1
 K_DIVS,         # x / F0
 K_POWS,         # x ** F0
 K_RPOWS,        # F0 ** x
 K_RDIVS,        # F0 / x
 K_EXP, K_LOG, K_SQRT, K_TANH, K_SIGMOID, K_RELU, K_ABS, K_SIN, K_COS, K_TAN, K_LOG1P,
 K_EXPM1, K_RECIP,
 K_CLAMP,        # gradient passes where F0 <= x <= F1 (P0 bit 1: F0 set, bit 2: F1 set)
 K_SIGN,         # zero gradient
 K_ERF,
 # the rest
 K_LINEAR,       # x @ W.T + b, inputs L[P0:P0+P1]
 K_SUM,          # sum over the dims in bitmask P0, times F0
 K_COPY,         # reshape, view, clone: same elements in the same order
 K_STRIDED,      # transpose, expand, basic indexing: out[i] = x[P0 + sum(i_k * P[1+k])]
 K_MATMUL,       # (..., m, k) @ (..., k, n), mode P0 (see matmul_dims; 4: batched)
 K_CAST,         # dtype conversion between float32 and float64
 K_AMAX,         # max/min over the dims in bitmask P0; ties share the gradient evenly
 K_GATHER,       # out[i] = x[idx[i]], idx (int64) at SB
 K_SCATTER,      # out = zeros; out[idx[j]] += x[j], idx at SB
 K_SETIDX,       # out = x; out[idx[j]] = v[j] (B = v), idx at SO
 K_SOFTMAX,      # along a dim of size P0 with P1 elements after it
 K_LOGSOFTMAX,
 K_CAT,          # inputs: L[P0:P0+P1]; P2 elements after the dim, P3 before it
 K_PYFN,         # a user Function: Python runs its backward (inputs: L[P0:P0+P1])
 K_PYOUT,        # a further output of the Function at row P2
 K_PROD,         # product over the dims in bitmask P0 (zeros handled exactly)
 NKERNELS) = range(48)
BINARY_FIRST, BINARY_LAST = K_ADD, K_MINIMUM
UNARY_FIRST, UNARY_LAST = K_AFFINE, K_ERF

# Replay results.
DONE = 0
PAUSED = 1
ERR_FREED = 2
ERR_DIRTY = 3
SWITCH = 4      # the next row to replay holds the other dtype
CAST = 5        # a dtype conversion: Python moves the adjoint between arenas
PYFN = 6        # a user Function: Python runs its backward
STEP = 7        # anomaly mode: a row was replayed (Python looks for NaN gradients)


@intrinsic
def _ptr(typingctx, addr, like):
    """Turns an integer address into a pointer of ``like``'s dtype."""
    ptrty = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptrty))

    return ptrty(types.int64, like), codegen


# ======================================================================================
# Vectorisable elementwise math
#
# Branch-free, SIMD-vectorisable elementwise math for Numba kernels.
#
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
# the tests' millions of cases (NumPy's own float32 exp/log are up to 2-3 ulp off).
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

# -- intrinsics -----------------------------------------------------------------------
@intrinsic
def _var(typingctx, x):
    """``x`` typed as a variable: a constant argument (True, 0) makes Numba compile the
    callee once more, for that constant."""
    ty = types.unliteral(x)

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[0], sig.args[0], ty)

    return ty(x), codegen


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


def _float3(name):
    def impl(typingctx, a, b, c):
        if not all(isinstance(t, (types.Float, types.Integer)) for t in (a, b, c)):
            return None

        def codegen(context, builder, sig, args):
            vals = [context.cast(builder, v, t, types.float64)
                    for v, t in zip(args, sig.args)]
            d = ir.DoubleType()
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(d, [d, d, d]), name + ".f64")
            return builder.call(fn, vals)

        return types.float64(a, b, c), codegen
    impl.__name__ = name.replace(".", "_")
    return intrinsic(impl)


# a*b + c rounded once (exact-product semantics on every target).
_fma = _float3("llvm.fma")
# a*b + c, fused only where the target has a fast FMA: for polynomials.
_mad = _float3("llvm.fmuladd")


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
_TWO_OVER_SQRT_PI = 1.1283791670955126


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
def _like(arr, v):
    """v as a scalar of arr's dtype, so that arithmetic with it stays in that dtype."""
    z = np.empty(1, arr.dtype)
    z[0] = v
    return z[0]


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
        out[i] = vexp(x[i])


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


@njit(**_JIT)
def addr(a):
    """Address of an array's first element."""
    return a.ctypes.data


@njit(**_JIT, inline="always")
def _load(T, r, col, n, like):
    return carray(_ptr(T[r, col], like), n)


@njit(**_JIT, inline="always")
def _touch(adj, T, seen, r):
    """Offset of row r's adjoint in the arena, zero-filled on its first contribution."""
    off = T[r, AOFF]
    if seen[r] == 0:
        seen[r] = 1
        for i in range(T[r, N]):
            adj[off + i] = 0
    return off


@njit(**_JIT, inline="always")
def _dst(adj, T, seen, r):
    """Offset of row r's adjoint for a one-to-one contribution, and whether it is the
    first one (which then overwrites: no zero-fill pass)."""
    if seen[r] == 0:
        seen[r] = 1
        return T[r, AOFF], True
    return T[r, AOFF], False


@njit(**_JIT, inline="always")
def _put(adj, i, v, fresh):
    adj[i] = v if fresh else adj[i] + v      # a select: loops around it vectorise


@njit(**_JIT, inline="always")
def _j(mode, i, idx):
    if mode == 0:
        return i
    if mode == 1:
        return 0
    return idx[i]


@njit(**_JIT)
def _odometer(T, o, st, off, n):
    """Flat offsets off + sum(i_k * st[k]) over the index space of row o's shape."""
    nd = T[o, ND]
    out = np.empty(n, np.int64)
    if nd == 0:
        if n > 0:
            out[0] = off
        return out
    idx = np.zeros(MAXD, np.int64)
    cur = off
    last = nd - 1
    for i in range(n):
        out[i] = cur
        k = last
        while k >= 0:
            idx[k] += 1
            cur += st[k]
            if idx[k] < T[o, S0 + k]:
                break
            cur -= st[k] * idx[k]
            idx[k] = 0
            k -= 1
    return out


@njit(**_JIT)
def _mode(T, o, a, noidx):
    """How row a's elements line up with row o's: same (0), scalar (1) or mapped (2),
    with the map from o's flat index to a's for mode 2."""
    if T[a, N] == 1:
        return (0 if T[o, N] == 1 else 1), noidx
    nd, na = T[o, ND], T[a, ND]
    if na == nd:
        same = True
        for k in range(nd):
            if T[a, S0 + k] != T[o, S0 + k]:
                same = False
        if same:
            return 0, noidx
    st = np.zeros(MAXD, np.int64)
    s = 1
    for k in range(na - 1, -1, -1):
        if T[a, S0 + k] != 1:
            st[nd - na + k] = s
        s *= T[a, S0 + k]
    return 2, _odometer(T, o, st, _var(0), T[o, N])


@njit(**_JIT, inline="always")
def _wants(T, r):
    return r >= 0 and (T[r, FL] & REQ) != 0


@njit(**_JIT, inline="always")
def _into(adj, T, seen, r, mode):
    """Like _dst for a contribution that lines up with r's elements one-to-one (mode 0);
    a broadcast one (several elements into one) accumulates into zeros."""
    if mode == 0:
        return _dst(adj, T, seen, r)
    return _touch(adj, T, seen, r), False


@njit(**_JIT, inline="always")
def _binary_dst(T, r, adj, seen, ma, mb):
    """Where a binary row's input adjoints go (-1: no grad needed) and whether fresh."""
    ao, fa, bo, fb = -1, False, -1, False
    if _wants(T, T[r, A]):
        ao, fa = _into(adj, T, seen, T[r, A], ma)
    if _wants(T, T[r, B]):
        bo, fb = _into(adj, T, seen, T[r, B], mb)
    return ao, fa, bo, fb


# -- vector-Jacobian products of elementwise ops, one function per op -----------------
# Binary ops: (T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi) add g's contribution
# over output elements lo..hi into the inputs' adjoints at ao and bo (-1: no grad
# needed; fa, fb: first contribution, which overwrites); ma, mb say how each input
# lines up with the output (_mode). Same-shape operands take plain loops over slices,
# which vectorise.

@njit(**_JIT)
def _bv_pass(sg, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    """g to a, sg * g to b: add (sg = 1) and sub (sg = -1)."""
    go = T[r, AOFF]
    if ma == 0 and mb == 0:
        m = hi - lo
        g = adj[go + lo:go + hi]
        if ao >= 0:
            da = adj[ao + lo:ao + hi]
            for i in range(m):
                _put(da, i, g[i], fa)
        if bo >= 0:
            db = adj[bo + lo:bo + hi]
            for i in range(m):
                _put(db, i, sg * g[i], fb)
        return
    if ao >= 0:
        for i in range(lo, hi):
            _put(adj, ao + _j(ma, i, ia), adj[go + i], fa)
    if bo >= 0:
        for i in range(lo, hi):
            _put(adj, bo + _j(mb, i, ib), sg * adj[go + i], fb)


@njit(**_JIT)
def _bv_add(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    _bv_pass(1.0, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)


@njit(**_JIT)
def _bv_sub(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    _bv_pass(-1.0, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)


@njit(**_JIT, inline="always")
def _operands(T, r, adj):
    return _load(T, r, SA, T[T[r, A], N], adj), _load(T, r, SB, T[T[r, B], N], adj)


@njit(**_JIT)
def _bv_mul(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    go = T[r, AOFF]
    va, vb = _operands(T, r, adj)
    if ma == 0 and mb == 0:
        m = hi - lo
        g = adj[go + lo:go + hi]
        xa = va[lo:hi]
        xb = vb[lo:hi]
        if ao >= 0:
            da = adj[ao + lo:ao + hi]
            for i in range(m):
                _put(da, i, g[i] * xb[i], fa)
        if bo >= 0:
            db = adj[bo + lo:bo + hi]
            for i in range(m):
                _put(db, i, g[i] * xa[i], fb)
        return
    if ao >= 0:
        for i in range(lo, hi):
            _put(adj, ao + _j(ma, i, ia), adj[go + i] * vb[_j(mb, i, ib)], fa)
    if bo >= 0:
        for i in range(lo, hi):
            _put(adj, bo + _j(mb, i, ib), adj[go + i] * va[_j(ma, i, ia)], fb)


@njit(**_JIT)
def _bv_div(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    """g / y to x; -(g * ((x / y) / y)) to y, as PyTorch: y * y never overflows."""
    go = T[r, AOFF]
    va, vb = _operands(T, r, adj)
    if ma == 0 and mb == 0:
        m = hi - lo
        g = adj[go + lo:go + hi]
        xa = va[lo:hi]
        xb = vb[lo:hi]
        if ao >= 0:
            da = adj[ao + lo:ao + hi]
            for i in range(m):
                _put(da, i, g[i] / xb[i], fa)
        if bo >= 0:
            db = adj[bo + lo:bo + hi]
            for i in range(m):
                y = xb[i]
                _put(db, i, -(g[i] * (xa[i] / y / y)), fb)
        return
    if ao >= 0:
        for i in range(lo, hi):
            _put(adj, ao + _j(ma, i, ia), adj[go + i] / vb[_j(mb, i, ib)], fa)
    if bo >= 0:
        for i in range(lo, hi):
            y = vb[_j(mb, i, ib)]
            _put(adj, bo + _j(mb, i, ib), -(adj[go + i] * (va[_j(ma, i, ia)] / y / y)), fb)


@njit(**_JIT)
def _bv_pow(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    """In the inputs' dtype, as PyTorch; 0 where it masks (y = 0; x = 0 with y >= 0)."""
    go = T[r, AOFF]
    va, vb = _operands(T, r, adj)
    one = np.ones(1, adj.dtype)[0]
    if ao >= 0:
        for i in range(lo, hi):
            x = va[_j(ma, i, ia)]
            y = vb[_j(mb, i, ib)]
            d = 0.0 if y == 0.0 else y * x ** (y - one)
            _put(adj, ao + _j(ma, i, ia), adj[go + i] * d, fa)
    if bo >= 0:
        for i in range(lo, hi):
            x = va[_j(ma, i, ia)]
            y = vb[_j(mb, i, ib)]
            d = 0.0 if (x == 0.0 and y >= 0.0) else x ** y * np.log(x)
            _put(adj, bo + _j(mb, i, ib), adj[go + i] * d, fb)


@njit(**_JIT)
def _bv_extreme(sg, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    """maximum (sg = 1), minimum (sg = -1), as PyTorch: g / 2 at ties, 0 where the
    other input wins, else g (NaN included)."""
    go = T[r, AOFF]
    va, vb = _operands(T, r, adj)
    z = np.zeros(1, adj.dtype)[0]
    if ao >= 0:
        for i in range(lo, hi):
            p = va[_j(ma, i, ia)]
            q = vb[_j(mb, i, ib)]
            v = adj[go + i]
            h = v * 0.5
            _put(adj, ao + _j(ma, i, ia), z if sg * p < sg * q else h if p == q else v, fa)
    if bo >= 0:
        for i in range(lo, hi):
            p = va[_j(ma, i, ia)]
            q = vb[_j(mb, i, ib)]
            v = adj[go + i]
            h = v * 0.5
            _put(adj, bo + _j(mb, i, ib), z if sg * q < sg * p else h if p == q else v, fb)


@njit(**_JIT)
def _bv_maximum(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    _bv_extreme(1.0, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)


@njit(**_JIT)
def _bv_minimum(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    _bv_extreme(-1.0, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)


@njit(**_JIT)
def _bv_where(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    """g where the condition (uint8 at SO) holds to a, elsewhere to b."""
    go = T[r, AOFF]
    c = carray(_ptr(T[r, SO], adj.view(np.uint8)), T[r, N])
    z = np.zeros(1, adj.dtype)[0]
    if ao >= 0:
        for i in range(lo, hi):
            v = adj[go + i]
            _put(adj, ao + _j(ma, i, ia), v if c[i] else z, fa)
    if bo >= 0:
        for i in range(lo, hi):
            v = adj[go + i]
            _put(adj, bo + _j(mb, i, ib), z if c[i] else v, fb)


# Unary ops: (T, r, f0, f1, adj, ao, fr, lo, hi) add g's contribution over elements
# lo..hi of row r into its input's adjoint at ao (fr: first contribution). Each loop
# runs over slices, so that it indexes from 0 and vectorises.

@njit(**_JIT, inline="always")
def _ug(T, r, adj, ao, lo, hi):
    """The input adjoint's and the output gradient's slices for elements lo..hi."""
    go = T[r, AOFF]
    return adj[ao + lo:ao + hi], adj[go + lo:go + hi], hi - lo


@njit(**_JIT, inline="always")
def _scaled(T, r, c, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * c, fr)


@njit(**_JIT)
def _uv_affine(T, r, f0, f1, adj, ao, fr, lo, hi):
    _scaled(T, r, f0, adj, ao, fr, lo, hi)


@njit(**_JIT)
def _uv_divs(T, r, f0, f1, adj, ao, fr, lo, hi):
    _scaled(T, r, 1.0 / f0, adj, ao, fr, lo, hi)


@njit(**_JIT)
def _uv_sign(T, r, f0, f1, adj, ao, fr, lo, hi):
    _scaled(T, r, 0.0, adj, ao, fr, lo, hi)


@njit(**_JIT, inline="always")
def _out(T, r, adj, lo, hi):
    return _load(T, r, SO, T[r, N], adj)[lo:hi]


@njit(**_JIT, inline="always")
def _inp(T, r, adj, lo, hi):
    return _load(T, r, SA, T[r, N], adj)[lo:hi]


@njit(**_JIT)
def _uv_exp(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * o[i], fr)


@njit(**_JIT)
def _uv_tanh(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * (1.0 - o[i] * o[i]), fr)


@njit(**_JIT)
def _uv_sigmoid(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * o[i] * (1.0 - o[i]), fr)


@njit(**_JIT)
def _uv_sqrt(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] / (2.0 * o[i]), fr)


@njit(**_JIT)
def _uv_relu(T, r, f0, f1, adj, ao, fr, lo, hi):
    """A select, as PyTorch: 0 where the result is <= 0 (a zero of adj's own type, so
    the select needs no conversion and vectorises)."""
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    z = np.zeros(1, adj.dtype)[0]
    for i in range(m):
        v = g[i]
        _put(d, i, z if o[i] <= 0 else v, fr)


@njit(**_JIT)
def _uv_tan(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * (1.0 + o[i] * o[i]), fr)


@njit(**_JIT)
def _uv_expm1(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * (o[i] + 1.0), fr)


@njit(**_JIT)
def _uv_recip(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, -g[i] * o[i] * o[i], fr)


@njit(**_JIT)
def _uv_rpows(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    c = np.log(f0)
    for i in range(m):
        _put(d, i, g[i] * o[i] * c, fr)


@njit(**_JIT)
def _uv_rdivs(T, r, f0, f1, adj, ao, fr, lo, hi):
    """d(c/x) = -(c/x)/x."""
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, -(g[i] * o[i] / x[i]), fr)


@njit(**_JIT)
def _uv_log(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] / x[i], fr)


@njit(**_JIT)
def _uv_abs(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * ((x[i] > 0) - (x[i] < 0)), fr)


@njit(**_JIT)
def _uv_trig(k, T, r, adj, ao, fr, lo, hi):
    """sin (k = K_SIN) and cos: vectorised unless an argument is beyond TRIG_MAX."""
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    big = False
    for i in range(m):
        big |= not (abs(x[i]) <= TRIG_MAX)
    if big:
        for i in range(m):
            _put(d, i, g[i] * _dtrig(k, x[i]), fr)
    elif k == K_SIN:
        for i in range(m):
            _put(d, i, g[i] * vcos(x[i]), fr)
    else:
        for i in range(m):
            _put(d, i, -g[i] * vsin(x[i]), fr)


@njit(**_JIT)
def _uv_sin(T, r, f0, f1, adj, ao, fr, lo, hi):
    _uv_trig(K_SIN, T, r, adj, ao, fr, lo, hi)


@njit(**_JIT)
def _uv_cos(T, r, f0, f1, adj, ao, fr, lo, hi):
    _uv_trig(K_COS, T, r, adj, ao, fr, lo, hi)


@njit(**_JIT)
def _uv_log1p(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] / (1.0 + x[i]), fr)


@njit(**_JIT)
def _uv_erf(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * (_TWO_OVER_SQRT_PI * vexp(-(x[i] * x[i]))), fr)


@njit(**_JIT)
def _uv_clamp(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    cmin = f0 if T[r, P0] & 1 else -np.inf
    cmax = f1 if T[r, P0] & 2 else np.inf
    z = np.zeros(1, adj.dtype)[0]
    for i in range(m):
        v = g[i]
        _put(d, i, v if (x[i] >= cmin) & (x[i] <= cmax) else z, fr)


@njit(**_JIT)
def _uv_pows(T, r, f0, f1, adj, ao, fr, lo, hi):
    """g * (p * x ** (p - 1)) in x's dtype, as PyTorch; small integer powers without a
    pow() call per element."""
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    p = f0
    pt = _like(x, p)
    if p == 2.0:
        for i in range(m):
            _put(d, i, g[i] * (pt * x[i]), fr)
    elif p == 3.0:
        for i in range(m):
            _put(d, i, g[i] * (pt * (x[i] * x[i])), fr)
    elif p == 1.0 or p == 0.0:
        for i in range(m):
            _put(d, i, g[i] * pt, fr)
    else:
        e = _like(x, p - 1.0)
        for i in range(m):
            _put(d, i, g[i] * (pt * _tpow(x[i], e)), fr)


@njit(**_JIT)
def _sum(T, r, f0, adj, seen):
    """Backward of a sum over the dims in bitmask P0: broadcast g back, times f0."""
    a = T[r, A]
    n = T[a, N]
    go = T[r, AOFF]
    ao, fr = _dst(adj, T, seen, a)
    if T[r, N] == 1:
        v = adj[go] * f0
        for i in range(n):
            _put(adj, ao + i, v, fr)
        return
    mask = T[r, P0]
    st = np.zeros(MAXD, np.int64)
    s = 1
    for k in range(T[a, ND] - 1, -1, -1):
        if ((mask >> k) & 1) == 0:
            st[k] = s
            s *= T[a, S0 + k]
    idx = _odometer(T, a, st, go, n)
    for i in range(n):
        _put(adj, ao + i, adj[idx[i]] * f0, fr)


@njit(**_JIT)
def _strided(T, r, adj, seen):
    """Backward of a strided view: scatter-add g to the elements it was read from."""
    ao = _touch(adj, T, seen, T[r, A])
    go = T[r, AOFF]
    n = T[r, N]
    st = np.zeros(MAXD, np.int64)
    run = True      # the view reads consecutive elements (a slice along the first dims)
    s = 1
    for k in range(T[r, ND] - 1, -1, -1):
        st[k] = T[r, P0 + 1 + k]
        if T[r, S0 + k] > 1 and st[k] != s:
            run = False
        s *= T[r, S0 + k]
    if run:
        base = ao + T[r, P0]
        for i in range(n):
            adj[base + i] += adj[go + i]
        return
    idx = _odometer(T, r, st, ao + T[r, P0], n)
    for i in range(n):
        adj[idx[i]] += adj[go + i]


@njit(**_JIT)
def _reduced_index(T, a, mask):
    """For each element of row a, its index in a reduction over the dims in ``mask``."""
    st = np.zeros(MAXD, np.int64)
    s = 1
    for k in range(T[a, ND] - 1, -1, -1):
        if ((mask >> k) & 1) == 0:
            st[k] = s
            s *= T[a, S0 + k]
    return _odometer(T, a, st, _var(0), T[a, N])


@njit(**_JIT)
def _amax(T, r, adj, seen):
    """Backward of max/min over dims, as PyTorch: amax/amin share g evenly by tied
    elements, (g / count) * hit, so a NaN result gives NaN; max()/min() of everything
    (P2 = 1) put g / count where hit only, and a NaN result goes to the NaN inputs."""
    a = T[r, A]
    n = T[a, N]
    go = T[r, AOFF]
    x = _load(T, r, SA, n, adj)
    o = _load(T, r, SO, T[r, N], adj)
    idx = _reduced_index(T, a, T[r, P0])
    everything = T[r, P0 + 2] == 1
    hit = np.zeros(n, np.bool_)
    cnt = np.zeros(T[r, N], np.int64)
    for i in range(n):
        j = idx[i]
        h = x[i] == o[j] or (everything and x[i] != x[i] and o[j] != o[j])
        hit[i] = h
        cnt[j] += h
    ao, fr = _dst(adj, T, seen, a)
    for i in range(n):
        j = idx[i]
        v = adj[go + j] / cnt[j]
        if everything:
            _put(adj, ao + i, v if hit[i] else 0.0, fr)
        else:
            _put(adj, ao + i, v * hit[i], fr)


@njit(**_JIT)
def _prod(T, r, adj, seen):
    """Backward of a product over dims, as PyTorch: g * (result / x) when no element
    is zero; else g times the exclusive products before and after each element (so
    zeros get their exact gradient); a product of everything (P1 = 1) with several
    zeros gives 0, one of a 0-d tensor passes g."""
    a = T[r, A]
    n = T[a, N]
    m = T[r, N]
    go = T[r, AOFF]
    x = _load(T, r, SA, n, adj)
    ao, fr = _dst(adj, T, seen, a)
    if T[a, ND] == 0:
        _put(adj, ao, adj[go], fr)
        return
    idx = _reduced_index(T, a, T[r, P0])
    zeros = 0
    for i in range(n):
        zeros += x[i] == 0
    acc = np.ones(m)
    if zeros == 0:
        for i in range(n):
            acc[idx[i]] *= x[i]
        res = acc.astype(adj.dtype)           # the forward's result (prod_fwd's order)
        for i in range(n):
            j = idx[i]
            _put(adj, ao + i, adj[go + j] * (res[j] / x[i]), fr)
        return
    if zeros > 1 and T[r, P1] == 1:
        for i in range(n):
            _put(adj, ao + i, 0.0, fr)
        return
    left = np.empty(n)
    for i in range(n):
        j = idx[i]
        left[i] = acc[j]
        acc[j] *= x[i]
    acc[:] = 1.0
    for i in range(n - 1, -1, -1):
        j = idx[i]
        _put(adj, ao + i, adj[go + j] * (left[i] * acc[j]), fr)
        acc[j] *= x[i]


@njit(**_JIT)
def _indexed(k, T, r, adj, seen, witness):
    """Backward of gather, scatter-add and indexed assignment."""
    a = T[r, A]
    go = T[r, AOFF]
    if k == K_GATHER:
        idx = carray(_ptr(T[r, SB], witness), T[r, N])
        ao = _touch(adj, T, seen, a)
        for i in range(T[r, N]):
            adj[ao + idx[i]] += adj[go + i]
    elif k == K_SCATTER:
        idx = carray(_ptr(T[r, SB], witness), T[a, N])
        ao, fr = _dst(adj, T, seen, a)
        for j in range(T[a, N]):
            _put(adj, ao + j, adj[go + idx[j]], fr)
    else:
        b = T[r, B]
        nv = T[b, N] if b >= 0 else 0
        idx = carray(_ptr(T[r, SO], witness), nv)
        if _wants(T, a):
            keep = np.ones(T[r, N], np.uint8)
            for j in range(nv):
                keep[idx[j]] = 0
            ao, fr = _dst(adj, T, seen, a)
            for i in range(T[r, N]):
                _put(adj, ao + i, adj[go + i] if keep[i] else 0.0, fr)
        if _wants(T, b):
            bo, fb = _dst(adj, T, seen, b)
            for j in range(nv):
                _put(adj, bo + j, adj[go + idx[j]], fb)


@njit(**_JIT)
def _softmax(k, T, r, adj, seen):
    """Backward of softmax / log_softmax along a dim of size P0 (P1 elements after it)."""
    n = T[r, N]
    d = T[r, P0]
    inner = T[r, P1]
    outer = n // (d * inner) if d * inner else 0
    go = T[r, AOFF]
    y = _load(T, r, SO, n, adj)
    ao, fr = _dst(adj, T, seen, T[r, A])
    for o in range(outer):
        for i in range(inner):
            base = o * d * inner + i
            s = 0.0
            for j in range(d):
                e = base + j * inner
                s += adj[go + e] * y[e] if k == K_SOFTMAX else adj[go + e]
            for j in range(d):
                e = base + j * inner
                if k == K_SOFTMAX:
                    v = y[e] * (adj[go + e] - s)
                else:
                    v = adj[go + e] - vexp(y[e]) * s
                _put(adj, ao + e, v, fr)


@njit(**_JIT)
def _cat(T, L, r, adj, seen):
    """Backward of cat: each input takes its slice of the gradient."""
    inner = T[r, P0 + 2]
    outer = T[r, P0 + 3]
    blk = outer * inner
    dtot = T[r, N] // blk if blk else 0
    go = T[r, AOFF]
    off = 0
    for q in range(T[r, P0 + 1]):
        a = L[T[r, P0] + q]
        dj = T[a, N] // blk if blk else 0
        if _wants(T, a):
            ao, fr = _dst(adj, T, seen, a)
            for o in range(outer):
                for d in range(dj):
                    src = go + (o * dtot + off + d) * inner
                    dst = ao + (o * dj + d) * inner
                    for i in range(inner):
                        _put(adj, dst + i, adj[src + i], fr)
        off += dj


@njit(**_JIT, inline="always")
def _ew(T, o, a):
    """Elementwise mode of input a of row o: 0 (same elements) or 1 (a scalar)."""
    return 1 if T[a, N] == 1 and T[o, N] != 1 else 0


@njit(**_JIT)
def axpy(y, alpha, x):
    """y += alpha * x in one pass (in-place updates such as an optimizer's step)."""
    for i in range(y.size):
        y[i] += alpha * x[i]


@njit(**_JIT)
def needed_rows(T, L, alive, n):
    """Rows a live result can still backpropagate through: the live rows and all their
    ancestors."""
    need = np.zeros(n, np.uint8)
    for r in range(n):
        need[r] = alive[r]
    for r in range(n - 1, -1, -1):
        if need[r] == 0:
            continue
        k = T[r, OP]
        if k == K_CAT or k == K_PYFN or k == K_LINEAR:
            for q in range(T[r, P0 + 1]):
                need[L[T[r, P0] + q]] = 1
        elif k == K_PYOUT:
            need[T[r, P0 + 2]] = 1
        if T[r, A] >= 0:
            need[T[r, A]] = 1
        if T[r, B] >= 0:
            need[T[r, B]] = 1
    return need


# ======================================================================================
# Forward kernels, shared by eager ops and the replay of compiled programs
#
# Eager ops call these on their NumPy arrays and a compiled program's replay calls the
# same functions on the same memory, so both give the same floats. Float32 arithmetic
# is done in float64 and rounded once, which gives the correctly rounded float32 result
# for + - * / and sqrt; scalar constants arrive rounded to the array's dtype.

SMALL_GEMM = 32768
FUSE_BLOCK = 4096     # elements per block of a fused run of elementwise ops
FUSE_MIN = 16384      # runs over fewer elements are replayed op by op    # below this many multiply-adds a loop beats the BLAS call


_BLAS = {}     # "sgemm"/"dgemm" -> address, once registered as an LLVM symbol


def ensure_blas():
    """Registers SciPy's BLAS gemm under the symbols the kernels call. Done before the
    first matrix product rather than at import (scipy.linalg takes 0.1 s to import);
    compiled code, cached or new, links to the symbols when it is loaded."""
    if _BLAS:
        return
    import ctypes

    import scipy.linalg.cython_blas as blas
    from llvmlite import binding

    name = ctypes.pythonapi.PyCapsule_GetName
    name.restype, name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    for fn in ("sgemm", "dgemm"):
        cap = blas.__pyx_capi__[fn]
        _BLAS[fn] = get(cap, name(cap))
        binding.add_symbol("tapegrad_" + fn, _BLAS[fn])


@intrinsic
def _xgemm(typingctx, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """BLAS gemm (column-major): c = op(a) @ op(b) + beta * c, by direct call."""
    dt = c.dtype
    sig = types.void(types.boolean, types.boolean, types.int64, types.int64, types.int64,
                     a, types.int64, b, types.int64, types.float64, c, types.int64)

    def codegen(context, builder, signature, args):
        fl = context.get_value_type(dt)
        i8, i32 = ir.IntType(8), ir.IntType(32)
        p8, p32, pf = i8.as_pointer(), i32.as_pointer(), fl.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(),
                               [p8, p8, p32, p32, p32, pf, pf, p32, pf, p32, pf, pf, p32])
        fn = cgutils.get_or_insert_function(
            builder.module, fnty, "tapegrad_dgemm" if dt == types.float64 else "tapegrad_sgemm")

        def ref(ty, v):
            p = cgutils.alloca_once(builder, ty)
            builder.store(v, p)
            return p

        def trans(flag):
            return ref(i8, builder.select(flag, i8(ord("T")), i8(ord("N"))))

        def dim(v):
            return ref(i32, builder.trunc(v, i32))

        def scal(v):
            return ref(fl, v if fl == ir.DoubleType() else builder.fptrunc(v, fl))

        def data(ty, v):
            return builder.bitcast(context.make_array(ty)(context, builder, v).data, pf)

        ta_, tb_, m_, n_, k_, a_, lda_, b_, ldb_, beta_, c_, ldc_ = args
        ty = signature.args
        builder.call(fn, [trans(ta_), trans(tb_), dim(m_), dim(n_), dim(k_),
                          scal(ir.Constant(ir.DoubleType(), 1.0)), data(ty[5], a_), dim(lda_),
                          data(ty[7], b_), dim(ldb_), scal(beta_), data(ty[10], c_),
                          dim(ldc_)])
        return context.get_dummy_value()

    return sig, codegen


@njit(**_JIT)
def gemm(a, b, out, m, kk, n, ta, tb, acc):
    """out (m x n, flat) = or += op(a) @ op(b), op(a) m x kk (a stored kk x m when ta)."""
    if m * kk * n <= SMALL_GEMM:
        for i in range(m):
            for j in range(n):
                s = 0.0
                for p in range(kk):
                    x = a[p * m + i] if ta else a[i * kk + p]
                    y = b[j * kk + p] if tb else b[p * n + j]
                    s += x * y
                if acc:
                    out[i * n + j] += s
                else:
                    out[i * n + j] = s
    else:
        # Row-major out is column-major out^T = op(b)^T @ op(a)^T: the stored arrays
        # as they are, with the flags swapped.
        _xgemm(tb, ta, n, m, kk, b, kk if tb else n, a, m if ta else kk,
               1.0 if acc else 0.0, out, n)


@njit(**_JIT)
def matmul_dims(mode, sa0, sa1, sb0, sb1):
    """(m, k, n) of a product of mode 0 (2-D @ 2-D), 1 (1-D @ 2-D), 2 (2-D @ 1-D), 3 (dot)."""
    if mode == 0:
        return sa0, sa1, sb1
    if mode == 1:
        return 1, sa0, sb1
    if mode == 2:
        return sa0, sa1, 1
    return 1, sa0, 1


@njit(**_JIT)
def matmul_fwd(x, y, out, batch, m, kk, n):
    """out = x @ y over ``batch`` stacked products."""
    for q in range(batch):
        gemm(x[q * m * kk:], y[q * kk * n:], out[q * m * n:], m, kk, n, _var(False), _var(False),
             _var(False))


@njit(**_JIT)
def _mm_shape(T, o, a, b, mode):
    """(batch, m, k, n) of a product of mode ``mode`` of rows a and b into row o (tape
    rows, or a program's values: both tables keep shapes in the same columns)."""
    if mode == 4:
        nd = T[a, ND]
        m = T[a, S0 + nd - 2]
        n = T[b, S0 + nd - 1]
        return T[o, N] // (m * n) if m * n else 0, m, T[a, S0 + nd - 1], n
    m, kk, n = matmul_dims(mode, T[a, S0], T[a, S0 + 1] if T[a, ND] > 1 else 0,
                           T[b, S0], T[b, S0 + 1] if T[b, ND] > 1 else 0)
    return 1, m, kk, n


@njit(**_JIT)
def _matmul_vjp(T, r, adj, seen):
    """dA = g @ B^T, dB = A^T @ g, per product of the batch."""
    a = T[r, A]
    b = T[r, B]
    batch, m, kk, n = _mm_shape(T, r, a, b, T[r, P0])
    go = T[r, AOFF]
    g = adj[go:go + T[r, N]]
    if _wants(T, a):
        vb = _load(T, r, SB, T[b, N], adj)
        ao, fr = _dst(adj, T, seen, a)
        for q in range(batch):
            gemm(g[q * m * n:], vb[q * kk * n:], adj[ao + q * m * kk:], m, n, kk,
                 _var(False), _var(True), not fr)
    if _wants(T, b):
        va = _load(T, r, SA, T[a, N], adj)
        bo, fb = _dst(adj, T, seen, b)
        for q in range(batch):
            gemm(va[q * m * kk:], g[q * m * n:], adj[bo + q * kk * n:], kk, m, n,
                 _var(True), _var(False), not fb)


@njit(**_JIT)
def linear_fwd(x, w, bias, out, m, kk, n, has_bias):
    """out (m x n) = x (m x kk) @ w.T (w: n x kk) + bias (n values or one)."""
    gemm(x, w, out, m, kk, n, _var(False), _var(True), _var(False))
    if has_bias:
        nb = bias.size
        for i in range(m):
            for j in range(n):
                out[i * n + j] += bias[j if nb > 1 else 0]


@njit(**_JIT)
def _linear_vjp(T, L, r, adj, seen):
    """y = x @ W.T + b: dx = g @ W, dW = g^T @ x, db = column sums of g."""
    start = T[r, P0]
    x = L[start]
    w = L[start + 1]
    n = T[w, S0]
    kk = T[w, S0 + 1]
    m = T[r, N] // n if n else 0
    go = T[r, AOFF]
    g = adj[go:go + T[r, N]]
    if _wants(T, x):
        vw = _load(T, r, SB, T[w, N], adj)
        xo, fx = _dst(adj, T, seen, x)
        gemm(g, vw, adj[xo:], m, n, kk, _var(False), _var(False), not fx)
    if _wants(T, w):
        vx = _load(T, r, SA, T[x, N], adj)
        wo, fw = _dst(adj, T, seen, w)
        gemm(g, vx, adj[wo:], n, m, kk, _var(True), _var(False), not fw)
    if T[r, P1] > 2:
        bb = L[start + 2]
        if _wants(T, bb):
            nb = T[bb, N]
            col = np.zeros(n)
            for i in range(m):
                for j in range(n):
                    col[j] += g[i * n + j]
            bo, fb = _dst(adj, T, seen, bb)
            if nb == n:
                for j in range(n):
                    _put(adj, bo + j, col[j], fb)
            else:
                s = 0.0
                for j in range(n):
                    s += col[j]
                _put(adj, bo, s, fb)


# Forward kernels of elementwise ops of one tensor, one function per op:
# (x, out, f0, f1, p0) with scalars f0, f1 rounded to x's dtype. Eager ops call the
# op's own function (so each compiles on its first use), the program replay the
# dispatcher unary_fwd.

@njit(**_INL)
def _sf_affine(x, f0, f1, p0):
    if f0 == 1.0:
        return x + f1
    if f1 == 0.0:
        return x * f0
    if f0 == -1.0:
        return f1 - x
    return x * f0 + f1


@njit(**_INL)
def _sf_divs(x, f0, f1, p0):
    return x / f0


@njit(**_INL)
def _sf_rdivs(x, f0, f1, p0):
    return f0 / x


@njit(**_INL)
def _sf_pows(x, f0, f1, p0):
    if f0 == 2.0:
        return x * x
    if f0 == 1.0:
        return x
    if f0 == 0.5:
        return np.sqrt(x)
    return _tpow(x, f0)


@njit(**_INL)
def _sf_rpows(x, f0, f1, p0):
    return f0 ** x


@njit(**_INL)
def _sf_sqrt(x, f0, f1, p0):
    return np.sqrt(x)


@njit(**_INL)
def _sf_relu(x, f0, f1, p0):
    return 0.0 if x < 0 else x


@njit(**_INL)
def _sf_abs(x, f0, f1, p0):
    return abs(x)


@njit(**_INL)
def _sf_recip(x, f0, f1, p0):
    return 1.0 / x


@njit(**_INL)
def _sf_sign(x, f0, f1, p0):
    return (x > 0) - (x < 0)      # nan -> 0, as PyTorch


@njit(**_INL)
def _sf_clamp(x, f0, f1, p0):
    """Bounds f0 (p0 bit 1) and f1 (bit 2); nan stays nan."""
    if p0 & 1 and not x != x and not x > f0:
        x = f0
    if p0 & 2 and not x != x and not x < f1:
        x = f1
    return x


@njit(**_INL)
def _sf_erf(x, f0, f1, p0):
    return math.erf(x)


def _op_scalar(k, x, f0, f1, p0):
    """Op k's one-element formula, chosen while compiling (k a constant)."""
    raise NotImplementedError


@overload(_op_scalar, jit_options={"error_model": "numpy"})
def _ol_op_scalar(k, x, f0, f1, p0):
    if isinstance(k, types.IntegerLiteral):
        fn = UNARY_OPS[k.literal_value][0]
        return lambda k, x, f0, f1, p0: fn(x, f0, f1, p0)
    return None


def _array_kernel(k):
    """The forward array kernel of an op given by its one-element formula; it closes over
    the opcode only, so that Numba's cache finds it again in a new process."""
    @njit(**_ARR)
    def kern(x, out, f0=0.0, f1=0.0, p0=0):
        for i in range(out.size):
            out[i] = _op_scalar(k, x[i], f0, f1, p0)
    return kern


# The elementwise ops of one tensor: opcode -> (forward, VJP kernel, whether one-element
# rows of a program inline the forward). The forward is a one-element formula (f(x, f0,
# f1, p0), inlined in the array kernel made from it) or an array kernel (x, out, f0, f1,
# p0) of its own (vectorised math, with a second pass for some inputs).
UNARY_OPS = {
    K_AFFINE: (_sf_affine, _uv_affine, True), K_DIVS: (_sf_divs, _uv_divs, True),
    K_POWS: (_sf_pows, _uv_pows, True), K_RPOWS: (_sf_rpows, _uv_rpows, True),
    K_RDIVS: (_sf_rdivs, _uv_rdivs, True), K_EXP: (exp_array, _uv_exp, False),
    K_LOG: (log_array, _uv_log, False), K_SQRT: (_sf_sqrt, _uv_sqrt, True),
    K_TANH: (tanh_array, _uv_tanh, False), K_SIGMOID: (sigmoid_array, _uv_sigmoid, False),
    K_RELU: (_sf_relu, _uv_relu, True), K_ABS: (_sf_abs, _uv_abs, True),
    K_SIN: (sin_array, _uv_sin, False), K_COS: (cos_array, _uv_cos, False),
    K_TAN: (tan_array, _uv_tan, False), K_LOG1P: (log1p_array, _uv_log1p, False),
    K_EXPM1: (expm1_array, _uv_expm1, False), K_RECIP: (_sf_recip, _uv_recip, True),
    K_CLAMP: (_sf_clamp, _uv_clamp, True), K_SIGN: (_sf_sign, _uv_sign, True),
    K_ERF: (_sf_erf, _uv_erf, False),
}
assert sorted(UNARY_OPS) == list(range(UNARY_FIRST, UNARY_LAST + 1))
UNARY_FWD = {k: _array_kernel(k) if f.py_func.__code__.co_argcount == 4 else f
             for k, (f, _, _) in UNARY_OPS.items()}
_UNARY_VJPS = {k: v for k, (_, v, _) in UNARY_OPS.items()}
# bit k set: a one-element row of op k runs its kernel (heavier to compile) in a program
_SCALAR_BY_KERNEL = sum(1 << k for k, (_, _, inline) in UNARY_OPS.items() if not inline)


@njit(**_JIT)
def _binop(k, x, y):
    if k == K_ADD:
        return x + y
    if k == K_SUB:
        return x - y
    if k == K_MUL:
        return x * y
    if k == K_DIV:
        return x / y
    if k == K_POW:
        return x ** y
    if k == K_MAXIMUM:
        return x if x >= y or x != x else y
    return x if x <= y or x != x else y


@njit(**_JIT)
def binary_fwd(k, VD, o, a, b, out, x, y, noidx):
    """out = x (op k) y with broadcasting; VD rows o, a, b give the shapes."""
    n = out.size
    ma, ia = _mode(VD, o, a, noidx)
    mb, ib = _mode(VD, o, b, noidx)
    if ma != 2 and mb != 2:
        _binary_block(k, out, x, y)
        return
    for i in range(n):
        out[i] = _binop(k, x[_j(ma, i, ia)], y[_j(mb, i, ib)])


@njit(**_JIT)
def _block_sum(x, lo, hi):
    """Sum of x[lo:hi] in float64, eight lanes then pairwise (vectorisable, accurate)."""
    acc = np.zeros(8)
    i = lo
    while i + 8 <= hi:
        for j in range(8):
            acc[j] += x[i + j]
        i += 8
    s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    while i < hi:
        s += x[i]
        i += 1
    return s


@njit(**_JIT)
def _long_sum(x, lo, hi):
    """Sum of a long run: blocks of 4096 added with compensation."""
    if hi - lo <= 4096:
        return _block_sum(x, lo, hi)
    s = 0.0
    c = 0.0
    for start in range(lo, hi, 4096):
        v = _block_sum(x, start, min(start + 4096, hi))
        t = s + v
        if abs(s) >= abs(v):
            c += (s - t) + v
        else:
            c += (v - t) + s
        s = t
    return s + c


@njit(**_JIT)
def sum_fwd(VD, a, mask, count, x, out):
    """Sum (mean when count > 0: divided by count) over the dims in bitmask ``mask`` of
    row a of VD (its shape)."""
    n = x.size
    m = out.size
    nd = VD[a, ND]
    # trailing reduced dims read contiguous runs
    inner = 1
    lead = nd
    while lead > 0 and (mask >> (lead - 1)) & 1:
        lead -= 1
        inner *= VD[a, S0 + lead]
    rest = 0
    for q in range(lead):
        rest |= (mask >> q) & 1
    if rest == 0:
        for j in range(m):
            s = _long_sum(x, j * inner, (j + 1) * inner)
            out[j] = s / count if count > 0 else s
        return
    acc = np.zeros(m)
    idx = _reduced_index(VD, a, mask)
    for i in range(n):
        acc[idx[i]] += x[i]
    for j in range(m):
        out[j] = acc[j] / count if count > 0 else acc[j]


@njit(**_JIT)
def amax_fwd(VD, a, mask, is_min, x, out):
    """max (min) over the dims in bitmask ``mask``; NaN propagates."""
    m = out.size
    idx = _reduced_index(VD, a, mask)
    first = np.ones(m, np.uint8)
    for i in range(x.size):
        j = idx[i]
        v = x[i]
        if first[j]:
            out[j] = v
            first[j] = 0
        elif v != v or (v < out[j] if is_min else v > out[j]):
            if out[j] == out[j]:
                out[j] = v


@njit(**_JIT)
def softmax_fwd(x, out, d, inner, log):
    """softmax (log_softmax) along a dim of size d with ``inner`` elements after it,
    shifted by the max; sums in float64. As PyTorch, a slice whose max is not finite
    (inf, -inf everywhere, nan) gives nan."""
    n = x.size
    outer = n // (d * inner) if d * inner else 0
    for o in range(outer):
        for i in range(inner):
            base = o * d * inner + i
            m = x[base]
            for j in range(1, d):
                v = x[base + j * inner]
                if v > m or v != v:
                    if m == m:
                        m = v
            s = 0.0
            for j in range(d):
                z = x[base + j * inner] - m
                s += vexp(z)
            ls = vlog(s)
            for j in range(d):
                e = base + j * inner
                z = x[e] - m
                out[e] = z - ls if log else vexp(z) / s


@njit(**_JIT)
def prod_fwd(VD, a, mask, x, out):
    """Product over the dims in bitmask ``mask`` of row a of VD, in float64."""
    m = out.size
    acc = np.ones(m)
    idx = _reduced_index(VD, a, mask)
    for i in range(x.size):
        acc[idx[i]] *= x[i]
    for j in range(m):
        out[j] = acc[j]


@njit(**_JIT)
def cat_fwd(out, x, off, dj, dtot, outer, inner):
    """Input x (dj slices along the dim) into out at slice ``off`` of dtot."""
    for o in range(outer):
        for d in range(dj):
            src = (o * dj + d) * inner
            dst = (o * dtot + off + d) * inner
            for i in range(inner):
                out[dst + i] = x[src + i]


@njit(**_JIT, inline="always")
def _cmp(code, x, y):
    if code == 0:
        return x == y
    if code == 1:
        return x != y
    if code == 2:
        return x < y
    if code == 3:
        return x <= y
    if code == 4:
        return x > y
    return x >= y


@njit(**_JIT)
def compare_fwd(code, VD, o, a, b, out, x, y, c, noidx):
    """out (bool bytes) = x compared with y (broadcast), or with c when b < 0."""
    ma, ia = _mode(VD, o, a, noidx)
    if b < 0:
        for i in range(out.size):
            out[i] = _cmp(code, x[_j(ma, i, ia)], c)
        return
    mb, ib = _mode(VD, o, b, noidx)
    for i in range(out.size):
        out[i] = _cmp(code, x[_j(ma, i, ia)], y[_j(mb, i, ib)])


@njit(**_JIT)
def argext_fwd(x, pos, d, inner, largest):
    outer = x.size // (d * inner) if d * inner else 0
    for o in range(outer):
        for i in range(inner):
            base = o * d * inner + i
            best = x[base]
            bj = 0
            for j in range(1, d):
                v = x[base + j * inner]
                if best == best and (v != v or (v > best if largest else v < best)):
                    best = v
                    bj = j
            pos[o * inner + i] = base + bj * inner


@njit(**_JIT)
def gather_strided(VD, o, src, off, st, out):
    """out[i] = src[off + sum(i_k * st[k])] over row o's index space (a strided view)."""
    idx = _odometer(VD, o, st, off, out.size)
    for i in range(out.size):
        out[i] = src[idx[i]]


# ======================================================================================
# Compiled programs: a recorded function replayed in one call
#
# A program is a list of instructions over values. ``VD`` describes each value in the
# row layout of the tape (N, ND, shape S0.., F64 in FL) with its fixed address in SO;
# ``INS`` rows hold an opcode, the output value O, inputs A and B, and parameters;
# ``FI`` two float parameters each; ``LI`` value lists (inputs of linear, seeds).
# Kernel opcodes replay the forward of a tape row; the X_ opcodes below move data.
# The backward of a recorded tape is the reverse interpreter above, on a copy of that
# tape ``TT`` whose saved-value addresses point at the program's values.
I_OP = 0
I_O = 1
I_A = 2
I_B = 3
I_P = 4          # ten integer parameters
ICOL = I_P + 10

X_ARG = 64       # O = the caller's array P0 (its address in ARGS)
X_GATHER = 65    # O = strided read at address P0, offset P1, element strides P2..
X_AXPY = 66      # O += F0 * A
X_FILL = 67      # O = F0
X_COPY = 68      # O = A broadcast to O's shape (same dtype)
X_BACKWARD = 69  # reverse replay from tape row P0, seeds LI[P1:P1+2*P2] (row, value)
X_ADJ = 70       # O = adjoint of tape row P0 after the last backward (zeros if unreached)
X_CHECK = 71     # stop with MISMATCH unless A holds the same bits as B
X_CMP = 73       # O (bool) = A compared with B (or F0 when B < 0); P0: 0 ==, 1 !=, 2 <,
#                  3 <=, 4 >, 5 >=
X_COND = 74      # O (bool) = A (bool) broadcast to O's shape
X_ARGEXT = 75    # O (int64) = flat positions of the max (P2 = 1) or min of A along a dim
#                  of size P0 with P1 elements after it (first one; NaN counts as max)
X_FUSED = 72     # the next P0 instructions are elementwise over the same elements: run
#                  them block by block
X_SCALAR = 76    # (a forward kernel, no instruction) instructions P_LO..P_HI, flagged
#                  by P9 = the number of one-element instructions from this one on
H_ARGS = 5       # ARGS: nt, nv, ni, len(TL), len(LI), then the caller's array addresses

MISMATCH = 1     # run_program: a value read while recording came out differently


@njit(**_JIT, inline="always")
def _val(VD, v, like):
    return carray(_ptr(VD[v, SO], like), VD[v, N])


@njit(**_JIT, inline="always")
def _kernel_call(kf, k, argv, i, lo, hi):
    fn = kf[k]
    if fn == 0:
        raise ValueError("tapegrad: no kernel compiled for program opcode", k)
    argv[_P_I] = i
    argv[_P_LO] = lo
    argv[_P_HI] = hi
    _call(fn, argv.ctypes.data)


@njit(**_JIT)
def _cast(out, x):
    for j in range(out.size):
        out[j] = x[j]


@njit(**_JIT)
def _seed(adj, TT, seen, r, g):
    off = TT[r, AOFF]
    for j in range(TT[r, N]):
        adj[off + j] = g[j]
    seen[r] = 1


@njit(**_JIT)
def _cast_adjoint(TT, seen, r, src, dst):
    """A dtype conversion's backward: its adjoint, converted, into its input's."""
    so, fr = _dst(dst, TT, seen, TT[r, A])
    go = TT[r, AOFF]
    for j in range(TT[r, N]):
        _put(dst, so + j, src[go + j], fr)


@njit(**_JIT)
def _backward(TT, TF, TL, adj32, adj64, seen, start, runs, KT, argv):
    """The reverse replay across both arenas: dtype switches, casts between them."""
    dt = TT[start, FL] & F64
    no = start < 0      # not a constant: reverse_rows keeps the types of an eager call,
    while start >= 0:   # whose compiled code it then shares
        if dt:
            status, r = reverse_rows(TT, TF, TL, adj64, seen, start, no, no, dt, no, KT[1],
                                     argv, runs)
        else:
            status, r = reverse_rows(TT, TF, TL, adj32, seen, start, no, no, dt, no, KT[0],
                                     argv, runs)
        if status == DONE:
            return 0
        if status == SWITCH:
            dt ^= F64
            start = r
        elif status == CAST:
            if dt:
                _cast_adjoint(TT, seen, r, adj64, adj32)
            else:
                _cast_adjoint(TT, seen, r, adj32, adj64)
            start = r - 1
        else:
            return status
    return 0


@njit(**_JIT)
def _binary_block(k, out, x, y):
    """out = x (op k) y, elementwise; x or y may be a single value."""
    n = out.size
    if x.size == n and y.size == n:
        if k == K_ADD:
            for i in range(n):
                out[i] = x[i] + y[i]
        elif k == K_SUB:
            for i in range(n):
                out[i] = x[i] - y[i]
        elif k == K_MUL:
            for i in range(n):
                out[i] = x[i] * y[i]
        elif k == K_DIV:
            for i in range(n):
                out[i] = x[i] / y[i]
        else:
            for i in range(n):
                out[i] = _binop(k, x[i], y[i])
    elif y.size == n:
        c = x[0]
        for i in range(n):
            out[i] = _binop(k, c, y[i])
    elif x.size == n:
        c = y[0]
        for i in range(n):
            out[i] = _binop(k, x[i], c)
    else:
        for i in range(n):
            out[i] = _binop(k, x[0], y[0])


@njit(**_JIT)
def _fused(INS, VD, start, count, kf, argv):
    """A fused run (X_FUSED): its instructions block by block, so that each block stays
    in cache from one instruction to the next."""
    n = VD[INS[start, I_O], N]
    for lo in range(0, n, FUSE_BLOCK):
        hi = min(lo + FUSE_BLOCK, n)
        for i in range(start, start + count):
            _kernel_call(kf, INS[i, I_OP], argv, i, lo, hi)


@njit(**_JIT, inline="always")
def _raw(a):
    return carray(_ptr(a.ctypes.data, a), a.shape)


@njit(**_JIT)
def run_program(PG, PL, PF, adj32, adj64, seen, ARGS, KF, KT, ARGV):
    """Replays a compiled program; returns (0, -1), or (MISMATCH, instruction) when a
    value read while recording differs now, or (status, row) of a failed backward.

    PG stacks the tape copy TT, the values VD and the instructions INS; PL the tape's
    input lists TL, the value lists LI and the fused runs of TT; PF the tape's F and
    the instructions' FI (sizes in ARGS' header), so that a call passes few arrays.
    KF and KT are the forward and VJP kernel tables (KFWD, KTAB), with every kernel the
    program reaches compiled (prepare_program); ARGV two argument blocks for them.
    """
    # Views without a reference count: calls between kernels then pass arrays for free
    # (each counted array costs atomic increments and decrements per call).
    PG, PL, PF, ARGS = _raw(PG), _raw(PL), _raw(PF), _raw(ARGS)
    adj32, adj64, seen = _raw(adj32), _raw(adj64), _raw(seen)
    nt, nv, ni, ntl, nli = ARGS[0], ARGS[1], ARGS[2], ARGS[3], ARGS[4]
    TT = PG[:nt]
    VD = PG[nt:nt + nv]
    INS = PG[nt + nv:nt + nv + ni]
    TL = PL[:ntl]
    LI = PL[ntl:ntl + nli]
    runs = PL[ntl + nli:ntl + nli + nt]
    TF = PF[:nt]
    FI = PF[nt:nt + ni]
    w32 = np.empty(0, np.float32)
    w64 = np.empty(0, np.float64)
    wb = np.empty(0, np.uint8)
    noidx = np.empty(0, np.int64)
    KF, KT, ARGV = _raw(KF), _raw(KT), _raw(ARGV)
    argf = ARGV[0]
    argb = ARGV[1]
    argf[_P_INS] = INS.ctypes.data
    argf[_P_FI] = FI.ctypes.data
    argf[_P_LI] = LI.ctypes.data
    argf[_P_VD] = VD.ctypes.data
    argf[_P_NI] = ni
    argf[_P_NV] = nv
    argf[_P_NLI] = LI.size
    i = 0
    while i < ni:
        k = INS[i, I_OP]
        o = INS[i, I_O]
        kf = KF[1 if VD[o if k != X_CMP and k != X_ARGEXT else INS[i, I_A], FL] & F64 else 0]
        if INS[i, I_P + 9]:          # a run of one-element instructions
            count = INS[i, I_P + 9]
            argf[_P_KF] = kf.ctypes.data
            _kernel_call(kf, X_SCALAR, argf, i, i, i + count)
            i += count
        elif k == X_BACKWARD:
            for r in range(nt):
                seen[r] = 0
            p = INS[i, I_P + 1]
            for q in range(INS[i, I_P + 2]):
                r = LI[p + 2 * q]
                v = LI[p + 2 * q + 1]
                if TT[r, FL] & F64:
                    _seed(adj64, TT, seen, r, _val(VD, v, w64))
                else:
                    _seed(adj32, TT, seen, r, _val(VD, v, w32))
            status = _backward(TT, TF, TL, adj32, adj64, seen, INS[i, I_P], runs, KT, argb)
            if status != 0:
                return status, i
            i += 1
        elif k == X_FUSED:
            count = INS[i, I_P]
            _fused(INS, VD, i + 1, count, KF[1 if VD[INS[i + 1, I_O], FL] & F64 else 0],
                   argf)
            i += count + 1
        elif k == X_CHECK:
            a = INS[i, I_A]
            b = INS[i, I_B]
            nb = VD[a, N] * (1 if VD[a, FL] & U8 else 8 if VD[a, FL] & F64 else 4)
            x = carray(_ptr(VD[a, SO], wb), nb)
            y = carray(_ptr(VD[b, SO], wb), nb)
            for j in range(nb):
                if x[j] != y[j]:
                    return MISMATCH, i
            i += 1
        else:
            if k == X_ADJ:
                r = INS[i, I_P]
                off = TT[r, AOFF]
                if VD[o, FL] & F64:
                    out = _val(VD, o, w64)
                    for j in range(out.size):
                        out[j] = adj64[off + j] if seen[r] else 0.0
                else:
                    out32 = _val(VD, o, w32)
                    for j in range(out32.size):
                        out32[j] = adj32[off + j] if seen[r] else 0.0
            elif k == X_ARG:
                nb = VD[o, N] * (8 if VD[o, FL] & F64 else 4)
                d = carray(_ptr(VD[o, SO], wb), nb)
                src = carray(_ptr(ARGS[H_ARGS + INS[i, I_P]], wb), nb)
                for j in range(nb):
                    d[j] = src[j]
            elif k == X_COND:
                a = INS[i, I_A]
                out8 = _val(VD, o, wb)
                src8 = _val(VD, a, wb)
                ma, ia = _mode(VD, o, a, noidx)
                for j in range(out8.size):
                    out8[j] = src8[_j(ma, j, ia)]
            elif k == K_CAST:
                a = INS[i, I_A]
                if VD[o, FL] & F64:
                    _cast(_val(VD, o, w64), _val(VD, a, w32))
                else:
                    _cast(_val(VD, o, w32), _val(VD, a, w64))
            else:
                _kernel_call(kf, k, argf, i, -1, 0)
            i += 1
    return 0, -1


# -- single values --------------------------------------------------------------------
# Programs over scalars (an ODE's steps, say) spend their time in per-op overhead, so
# runs of one-element instructions take one kernel call (X_SCALAR) that inlines the
# ops' one-element formulas (UNARY_OPS, _binop), and the reverse pass inlines the VJPs
# of one-element + - * / and affine rows.

def _scalar_unary(k, x, f0, f1, p0):
    """The one-element formula of op k (a variable), for the ops that programs inline."""
    raise NotImplementedError


@overload(_scalar_unary, jit_options={"error_model": "numpy"}, inline="always")
def _ol_scalar_unary(k, x, f0, f1, p0):
    # if k == K_AFFINE: return _sf_affine(...) ... for each inlined op of UNARY_OPS
    codes = [c for c, (_, _, inline) in UNARY_OPS.items() if inline]
    src = "def impl(k, x, f0, f1, p0):\n" + "".join(
        f"    if k == {c}:\n        return f{c}(x, f0, f1, p0)\n" for c in codes) + \
        "    raise ValueError('tapegrad: no one-element forward for opcode', k)\n"
    scope = {f"f{c}": UNARY_OPS[c][0] for c in codes}
    exec(src, scope)
    return scope["impl"]


@njit(**_JIT, inline="always")
def _scalar_fwd(INS, FI, VD, i, w, kf, argv):
    """Instruction i on one-element values (flagged at build time); transcendental
    ops, heavier to compile, go through their kernels."""
    k = INS[i, I_OP]
    if (_SCALAR_BY_KERNEL >> k) & 1:
        _kernel_call(kf, k, argv, i, -1, 0)
        return
    out = _val(VD, INS[i, I_O], w)
    x = _val(VD, INS[i, I_A], w)
    if k <= BINARY_LAST:
        out[0] = _binop(k, x[0], _val(VD, INS[i, I_B], w)[0])
    else:
        out[0] = _scalar_unary(k, x[0], FI[i, 0], FI[i, 1], INS[i, I_P])


@njit(**_JIT, inline="always")
def _arith_vjp1(k, T, r, f0, adj, seen):
    """The VJP of a one-element + - * / (K_ADD..K_DIV) or affine / divide-by-constant
    row, inlined in the reverse pass (scalar programs are made of these)."""
    g = adj[T[r, AOFF]]
    a = T[r, A]
    if k >= K_AFFINE:
        ao, fa = _dst(adj, T, seen, a)
        _put(adj, ao, g * f0 if k == K_AFFINE else g * (1.0 / f0), fa)
        return
    b = T[r, B]
    if k == K_ADD or k == K_SUB:
        ga = g
        gb = g if k == K_ADD else -1.0 * g
    else:
        va = _load(T, r, SA, 1, adj)[0] if _wants(T, b) else g
        vb = _load(T, r, SB, 1, adj)[0] if _wants(T, a) or k == K_DIV else g
        if k == K_MUL:
            ga = g * vb
            gb = g * va
        else:
            ga = g / vb
            gb = -(g * (va / vb / vb))
    if _wants(T, a):
        ao, fa = _dst(adj, T, seen, a)
        _put(adj, ao, ga, fa)
    if _wants(T, b):
        bo, fb = _dst(adj, T, seen, b)
        _put(adj, bo, gb, fb)


# ======================================================================================
# Kernels compiled one by one, on first use
#
# The reverse pass of eager backward() dispatches each row to its op's VJP kernel: a
# C function compiled (and cached) for that op and dtype the first time a backward
# meets it, called through a table of addresses. Compiling the monolithic interpreter
# took tens of seconds; one kernel takes a fraction of a second, and a program only
# pays for the ops it uses.

NEED = 8          # status: the row's kernel is not compiled yet (Python compiles it)
ARGV = 24         # int64 slots of a kernel's argument block:
(_A_T, _A_F, _A_L, _A_ADJ, _A_SEEN, _A_ROWS, _A_NADJ, _A_NL, _A_NSEEN, _A_R, _A_LO, _A_HI,
 _A_AO, _A_FA, _A_BO, _A_FB, _A_RUNS, _A_NRUNS, _A_KT, _A_OUT) = range(20)  # LO < 0: whole row
FUSED = K_LEAF    # the VJP table's slot of the fused-run driver (a leaf has no VJP)

_KSIG = types.void(types.int64)
KTAB = np.zeros((2, NKERNELS), np.int64)    # kernel addresses by dtype (0, F64), opcode
_COMPILED = {}                              # (opcode, dtype flag) -> the cfunc


@intrinsic
def _call(typingctx, fn, argv):
    """Calls the C function at address ``fn`` with the address ``argv``."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64)])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [args[1]])
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@intrinsic
def _ptr_t(typingctx, addr, dtype):
    """An integer address as a pointer to ``dtype`` (a NumPy scalar type)."""
    ptrty = types.CPointer(dtype.instance_type)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptrty))

    return ptrty(types.int64, dtype), codegen


@njit(**_INL)
def _nil(dtype):
    """An empty array of ``dtype`` that allocates nothing (a dtype witness)."""
    return carray(_ptr_t(0, dtype), 0)


@njit(**_JIT)
def _open(argp, dtype):
    """A kernel's view of the tape, its row and the arena (of ``dtype``), built without
    allocating (kernels run once per row)."""
    a = carray(_ptr_t(argp, np.int64), ARGV)
    rows = a[_A_ROWS]
    T = carray(_ptr_t(a[_A_T], np.int64), (rows, NCOL))
    F = carray(_ptr_t(a[_A_F], np.float64), (rows, 2))
    L = carray(_ptr_t(a[_A_L], np.int64), a[_A_NL])
    adj = carray(_ptr_t(a[_A_ADJ], dtype), a[_A_NADJ])
    seen = carray(_ptr_t(a[_A_SEEN], np.uint8), a[_A_NSEEN])
    return T, F, L, adj, seen, a[_A_R]


@njit(**_JIT)
def _block(argp):
    """A block of a fused run: elements lo..hi (lo < 0: the whole row) and where the
    inputs' adjoints go (ao, bo; -1: not needed) with whether first (fa, fb)."""
    a = carray(_ptr_t(argp, np.int64), ARGV)
    return a[_A_LO], a[_A_HI], a[_A_AO], a[_A_FA] != 0, a[_A_BO], a[_A_FB] != 0


_BINARY_VJPS = {K_ADD: _bv_add, K_SUB: _bv_sub, K_MUL: _bv_mul, K_DIV: _bv_div,
                K_POW: _bv_pow, K_MAXIMUM: _bv_maximum, K_MINIMUM: _bv_minimum,
                K_WHERE: _bv_where}


def _op_vjp(k, T, r, f0, f1, adj, ao, fr, lo, hi):
    """Op k's unary VJP function, chosen while compiling (k a constant)."""
    raise NotImplementedError


def _op_bvjp(k, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    """Op k's binary VJP function, chosen while compiling (k a constant)."""
    raise NotImplementedError


@overload(_op_vjp, jit_options={"error_model": "numpy"})
def _ol_op_vjp(k, T, r, f0, f1, adj, ao, fr, lo, hi):
    if isinstance(k, types.IntegerLiteral):
        fn = _UNARY_VJPS[k.literal_value]
        return lambda k, T, r, f0, f1, adj, ao, fr, lo, hi: fn(T, r, f0, f1, adj, ao, fr,
                                                                lo, hi)
    return None


@overload(_op_bvjp, jit_options={"error_model": "numpy"})
def _ol_op_bvjp(k, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    if isinstance(k, types.IntegerLiteral):
        fn = _BINARY_VJPS[k.literal_value]
        return lambda k, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi: fn(
            T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)
    return None


def _vjp_kernel(k, f64):
    """The C function of opcode k's VJP for one dtype; it closes over constants only
    (k and the dtype), so that Numba's cache finds it again in a new process."""
    dt = np.float64 if f64 else np.float32
    if k in _UNARY_VJPS:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            lo, hi, ao, fr, _, _ = _block(argp)
            if lo < 0:
                ao, fr = _dst(adj, T, seen, T[r, A])
                lo, hi = 0, T[r, N]
            _op_vjp(k, T, r, F[r, 0], F[r, 1], adj, ao, fr, lo, hi)
    elif k in _BINARY_VJPS:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            lo, hi, ao, fa, bo, fb = _block(argp)
            ia = ib = _nil(np.int64)
            if lo < 0:       # one call site: each call site is a compilation of its own
                ma, ia = _mode(T, r, T[r, A], ia)
                mb, ib = _mode(T, r, T[r, B], ib)
                ao, fa, bo, fb = _binary_dst(T, r, adj, seen, ma, mb)
                lo, hi = 0, T[r, N]
            else:
                ma, mb = _ew(T, r, T[r, A]), _ew(T, r, T[r, B])
            _op_bvjp(k, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)
    elif k == K_SUM:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _sum(T, r, F[r, 0], adj, seen)
    elif k == K_COPY:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            go = T[r, AOFF]
            ao, fr = _dst(adj, T, seen, T[r, A])
            for i in range(T[r, N]):
                _put(adj, ao + i, adj[go + i], fr)
    elif k == K_STRIDED:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _strided(T, r, adj, seen)
    elif k == K_MATMUL:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _matmul_vjp(T, r, adj, seen)
    elif k == K_LINEAR:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _linear_vjp(T, L, r, adj, seen)
    elif k == K_AMAX:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _amax(T, r, adj, seen)
    elif k == K_PROD:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _prod(T, r, adj, seen)
    elif k in (K_GATHER, K_SCATTER, K_SETIDX):
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _indexed(k, T, r, adj, seen, _nil(np.int64))
    elif k in (K_SOFTMAX, K_LOGSOFTMAX):
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _softmax(k, T, r, adj, seen)
    elif k == K_CAT:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _cat(T, L, r, adj, seen)
    elif k == FUSED:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            a = carray(_ptr_t(argp, np.int64), ARGV)
            runs = carray(_ptr_t(a[_A_RUNS], np.int64), a[_A_NRUNS])
            kt = carray(_ptr_t(a[_A_KT], np.int64), NKERNELS)
            a[_A_OUT] = _fused_rows(T, adj, seen, r, runs, kt, a)
    else:
        raise ValueError(f"tapegrad: no VJP kernel for opcode {k}")
    return _cfunc(kern)


def prepare(k, f64):
    """Compiles (or loads from the cache) opcode k's VJP kernel for one dtype."""
    key = (int(k), 1 if f64 else 0)
    if key not in _COMPILED:
        if key[0] in (K_MATMUL, K_LINEAR):
            ensure_blas()
        fn = _COMPILED[key] = _vjp_kernel(*key)
        KTAB[key[1], key[0]] = fn.address


@njit(**_JIT)
def reverse_rows(T, F, L, adj, seen, start, resume, freeing, dtflag, anomaly, kt, argv, runs):
    """Replays rows start..0 in reverse through the VJP kernels ``kt`` (addresses by
    opcode, for ``adj``'s dtype), accumulating adjoints into ``adj``.

    Only rows already reached (``seen``) are visited; one-element elementwise rows take
    an inline path. Returns (status, row): DONE; PAUSED at a row with hooks (call again
    with resume=True from that row); SWITCH, CAST or PYFN at a row that needs Python;
    NEED at a row whose kernel is not compiled yet (compile it, call again from that
    row with resume=True); STEP after each row in anomaly mode; or
    an error at a freed or modified row. ``runs`` (empty in eager mode) marks runs of
    elementwise rows to replay block by block (_fused_rows).
    """
    T, F, L, adj, seen, runs = _raw(T), _raw(F), _raw(L), _raw(adj), _raw(seen), _raw(runs)
    argv[_A_T] = T.ctypes.data
    argv[_A_F] = F.ctypes.data
    argv[_A_L] = L.ctypes.data
    argv[_A_ADJ] = adj.ctypes.data
    argv[_A_SEEN] = seen.ctypes.data
    argv[_A_ROWS] = T.shape[0]
    argv[_A_NADJ] = adj.size
    argv[_A_NL] = L.size
    argv[_A_NSEEN] = seen.size
    argv[_A_LO] = -1
    argv[_A_RUNS] = runs.ctypes.data
    argv[_A_NRUNS] = runs.size
    argv[_A_KT] = kt.ctypes.data
    av = argv.ctypes.data
    r = start + 1
    while r > 0:
        r -= 1
        if seen[r] == 0:
            continue
        if runs.size and runs[r] > 1:
            argv[_A_R] = r
            argv[_A_OUT] = 0
            if kt[FUSED] != 0:
                _call(kt[FUSED], av)
            if argv[_A_OUT] == 0:
                return NEED, r
            r -= runs[r] - 1
            continue
        fl = T[r, FL]
        if (fl & F64) != dtflag:
            return SWITCH, r
        if fl & PAUSE and not (resume and r == start):
            return PAUSED, r
        k = T[r, OP]
        if k == K_PYOUT:
            _touch(adj, T, seen, T[r, P0 + 2])   # so that the Function's row runs
            continue
        if k == K_LEAF or k == K_EXT:
            continue
        if fl & FREED:
            return ERR_FREED, r
        if fl & DIRTY:
            return ERR_DIRTY, r
        if k == K_CAST:
            return CAST, r
        if k == K_PYFN:
            return PYFN, r
        if T[r, N] == 1 and k <= K_DIVS and k != K_POW and k >= K_ADD and (
                k <= K_DIV or k >= K_AFFINE):
            _arith_vjp1(k, T, r, F[r, 0], adj, seen)
        else:
            fn = kt[k]
            if fn == 0:
                return NEED, r
            argv[_A_R] = r
            _call(fn, av)
        if freeing and fl & SAVES:
            T[r, FL] = fl | FREED
        if anomaly:
            return STEP, r
    return DONE, -1


@njit(**_JIT)
def _fused_rows(T, adj, seen, top, runs, kt, argv):
    """Rows top..top-runs[top]+1, elementwise over the same n elements, replayed block
    by block so that each block's adjoints stay in cache from one row to the next.
    Each row's targets are settled first, in row order, so the results are those of
    the row-by-row replay. A row whose adjoint only rows of the run produce and read
    (runs[r] = -1 - offset) keeps it in a block-sized scratch at that arena offset.
    False when a row's kernel is not compiled yet (nothing done then)."""
    length = runs[top]
    for q in range(length):
        k = T[top - q, OP]
        if k != K_LEAF and kt[k] == 0:
            return False
    dst = np.zeros((length, 4), np.int64)
    for q in range(length):
        r = top - q
        k = T[r, OP]
        if seen[r] == 0 or k == K_LEAF:
            dst[q, 0] = -2
        elif k <= K_WHERE:
            ao, fa, bo, fb = _binary_dst(T, r, adj, seen, _ew(T, r, T[r, A]),
                                         _ew(T, r, T[r, B]))
            dst[q, 0], dst[q, 1], dst[q, 2], dst[q, 3] = ao, fa, bo, fb
        else:
            ao, fr = _dst(adj, T, seen, T[r, A])
            dst[q, 0], dst[q, 1] = ao, fr
    av = argv.ctypes.data
    n = T[top, N]
    for lo in range(0, n, FUSE_BLOCK):
        hi = min(lo + FUSE_BLOCK, n)
        for q in range(1, length):
            if runs[top - q] < 0:
                T[top - q, AOFF] = -1 - runs[top - q] - lo
        for q in range(length):
            if dst[q, 0] == -2:
                continue
            r = top - q
            k = T[r, OP]
            argv[_A_R] = r
            argv[_A_LO] = lo
            argv[_A_HI] = hi
            argv[_A_AO] = T[T[r, A], AOFF] if dst[q, 0] >= 0 else -1
            argv[_A_FA] = dst[q, 1]
            argv[_A_BO] = T[T[r, B], AOFF] if k <= K_WHERE and dst[q, 2] >= 0 else -1
            argv[_A_FB] = dst[q, 3]
            _call(kt[k], av)
    argv[_A_LO] = -1
    return True



# -- the program replay's instructions ---------------------------------------------------
# An op instruction of a compiled program runs through its op's forward kernel, compiled
# on first use like the VJP kernels: (argv) with the program's arrays and the
# instruction, and a block lo..hi of a fused run (lo < 0: all of it).

(_P_INS, _P_FI, _P_LI, _P_VD, _P_NI, _P_NV, _P_NLI, _P_I, _P_LO, _P_HI, _P_KF) = range(11)
NOPS = 128                                  # opcodes a program may hold (K_* and X_*)
KFWD = np.zeros((2, NOPS), np.int64)        # forward kernel addresses by dtype, opcode
_FWD_COMPILED = {}


@njit(**_INL)
def _open_program(argp):
    a = carray(_ptr_t(argp, np.int64), ARGV)
    INS = carray(_ptr_t(a[_P_INS], np.int64), (a[_P_NI], NCOL))
    FI = carray(_ptr_t(a[_P_FI], np.float64), (a[_P_NI], 2))
    LI = carray(_ptr_t(a[_P_LI], np.int64), a[_P_NLI])
    VD = carray(_ptr_t(a[_P_VD], np.int64), (a[_P_NV], NCOL))
    return INS, FI, LI, VD, a[_P_I], a[_P_LO], a[_P_HI]


def _op_fwd(k, x, out, f0, f1, p0):
    """Op k's unary forward function, chosen while compiling (k a constant)."""
    raise NotImplementedError


@overload(_op_fwd, jit_options={"error_model": "numpy"})
def _ol_op_fwd(k, x, out, f0, f1, p0):
    if isinstance(k, types.IntegerLiteral):
        fn = UNARY_FWD[k.literal_value]
        return lambda k, x, out, f0, f1, p0: fn(x, out, f0, f1, p0)
    return None


_BINARY_OPS = range(BINARY_FIRST, BINARY_LAST + 1)


def _fwd_kernel(k, f64):
    """The C function running instructions of opcode k for one dtype (one for all the
    broadcasting binary ops); it closes over constants only."""
    dt = np.float64 if f64 else np.float32
    if k in UNARY_FWD:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            x = _val(VD, INS[i, I_A], w)
            out = _val(VD, INS[i, I_O], w)
            if lo >= 0:
                x = x[lo:hi]
                out = out[lo:hi]
            _op_fwd(k, x, out, FI[i, 0], FI[i, 1], INS[i, I_P])
    elif k in _BINARY_OPS:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            x = _val(VD, a, w)
            y = _val(VD, b, w)
            out = _val(VD, o, w)
            if lo < 0:
                binary_fwd(INS[i, I_OP], VD, o, a, b, out, x, y, _nil(np.int64))
            else:
                _binary_block(INS[i, I_OP], out[lo:hi], x if x.size == 1 else x[lo:hi],
                              y if y.size == 1 else y[lo:hi])
    elif k == K_WHERE:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            noidx = _nil(np.int64)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            cond = _val(VD, INS[i, I_P], _nil(np.uint8))
            ma, ia = _mode(VD, o, a, noidx)
            mb, ib = _mode(VD, o, b, noidx)
            x = _val(VD, a, w)
            y = _val(VD, b, w)
            out = _val(VD, o, w)
            for j in range(out.size):
                out[j] = x[_j(ma, j, ia)] if cond[j] else y[_j(mb, j, ib)]
    elif k == K_SUM:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            a = INS[i, I_A]
            sum_fwd(VD, a, INS[i, I_P], INS[i, I_P + 1], _val(VD, a, w), _val(VD, INS[i, I_O], w))
    elif k == K_AMAX:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            a = INS[i, I_A]
            amax_fwd(VD, a, INS[i, I_P], INS[i, I_P + 1], _val(VD, a, w),
                     _val(VD, INS[i, I_O], w))
    elif k == K_MATMUL:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            batch, m, kk, n = _mm_shape(VD, o, a, b, INS[i, I_P])
            matmul_fwd(_val(VD, a, w), _val(VD, b, w), _val(VD, o, w), batch, m, kk, n)
    elif k == K_LINEAR:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            start = INS[i, I_P]
            x = LI[start]
            wt = LI[start + 1]
            n = VD[wt, S0]
            kk = VD[wt, S0 + 1]
            has_bias = INS[i, I_P + 1] > 2
            bias = _val(VD, LI[start + 2], w) if has_bias else _val(VD, wt, w)
            o = INS[i, I_O]
            linear_fwd(_val(VD, x, w), _val(VD, wt, w), bias, _val(VD, o, w),
                       VD[o, N] // n if n else 0, kk, n, has_bias)
    elif k == K_GATHER:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            idx = _val(VD, INS[i, I_P], _nil(np.int64))
            x = _val(VD, INS[i, I_A], w)
            out = _val(VD, INS[i, I_O], w)
            for j in range(out.size):
                out[j] = x[idx[j]]
    elif k in (K_SOFTMAX, K_LOGSOFTMAX):
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            softmax_fwd(_val(VD, INS[i, I_A], w), _val(VD, INS[i, I_O], w), INS[i, I_P],
                        INS[i, I_P + 1], k == K_LOGSOFTMAX)
    elif k == K_PROD:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            a = INS[i, I_A]
            prod_fwd(VD, a, INS[i, I_P], _val(VD, a, w), _val(VD, INS[i, I_O], w))
    elif k == K_CAT:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o = INS[i, I_O]
            out = _val(VD, o, w)
            start = INS[i, I_P]
            inner = INS[i, I_P + 2]
            outer = INS[i, I_P + 3]
            blk = outer * inner
            dtot = VD[o, N] // blk if blk else 0
            off = 0
            for q in range(INS[i, I_P + 1]):
                x = LI[start + q]
                dj = VD[x, N] // blk if blk else 0
                cat_fwd(out, _val(VD, x, w), off, dj, dtot, outer, inner)
                off += dj
    elif k == K_COPY:         # reshape-like: the same elements in the same order
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            x = _val(VD, INS[i, I_A], w)
            out = _val(VD, INS[i, I_O], w)
            for j in range(out.size):
                out[j] = x[j]
    elif k == X_COPY:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o, a = INS[i, I_O], INS[i, I_A]
            x = _val(VD, a, w)
            out = _val(VD, o, w)
            if lo < 0:
                ma, ia = _mode(VD, o, a, _nil(np.int64))
                for j in range(out.size):
                    out[j] = x[_j(ma, j, ia)]
            else:        # slices, not range(lo, hi): no negative-index checks per element
                out = out[lo:hi]
                if x.size == 1:
                    for j in range(out.size):
                        out[j] = x[0]
                else:
                    x = x[lo:hi]
                    for j in range(out.size):
                        out[j] = x[j]
    elif k == X_GATHER:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o = INS[i, I_O]
            st = np.zeros(MAXD, np.int64)
            ext = INS[i, I_P + 1] + 1
            for d in range(VD[o, ND]):
                st[d] = INS[i, I_P + 2 + d]
                if st[d] > 0:
                    ext += (VD[o, S0 + d] - 1) * st[d]
            src = carray(_ptr_t(INS[i, I_P], dt), ext)
            gather_strided(VD, o, src, INS[i, I_P + 1], st, _val(VD, o, w))
    elif k == X_AXPY or k == X_FILL:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            out = _val(VD, INS[i, I_O], w)
            x = _val(VD, INS[i, I_A if k == X_AXPY else I_O], w)
            if lo >= 0:
                out = out[lo:hi]
                x = x[lo:hi]
            c = FI[i, 0]
            if k == X_FILL:
                for j in range(out.size):
                    out[j] = c
            else:
                for j in range(out.size):
                    out[j] += c * x[j]
    elif k == X_CMP:          # for A's dtype
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            compare_fwd(INS[i, I_P], VD, o, a, b, _val(VD, o, _nil(np.uint8)), _val(VD, a, w),
                        _val(VD, max(b, 0), w), FI[i, 0], _nil(np.int64))
    elif k == X_ARGEXT:       # for A's dtype
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            argext_fwd(_val(VD, INS[i, I_A], _nil(dt)), _val(VD, INS[i, I_O], _nil(np.int64)),
                       INS[i, I_P], INS[i, I_P + 1], INS[i, I_P + 2])
    elif k == X_SCALAR:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            a = carray(_ptr_t(argp, np.int64), ARGV)
            kf = carray(_ptr_t(a[_P_KF], np.int64), NOPS)
            for q in range(lo, hi):
                _scalar_fwd(INS, FI, VD, q, w, kf, a)
    else:
        raise ValueError(f"tapegrad: no forward kernel for program opcode {k}")
    return _cfunc(kern)


def _cfunc(kern):
    fn = CFunc(kern, normalize_signature(_KSIG), locals={}, options={"error_model": "numpy"})
    if _CACHE:
        fn._cache = _SafeCache(kern)
    fn.compile()
    return fn


def prepare_forward(k, f64):
    """Compiles (or loads) the forward kernel of program opcode k for one dtype."""
    k, d = int(k), 1 if f64 else 0
    if (k, d) in _FWD_COMPILED:
        return
    base = K_ADD if k in _BINARY_OPS else k
    fn = _FWD_COMPILED.get((base, d))
    if fn is None:
        if k in (K_MATMUL, K_LINEAR):
            ensure_blas()
        fn = _fwd_kernel(base, d)
    for op in (_BINARY_OPS if base == K_ADD else (k,)):
        _FWD_COMPILED[(op, d)] = fn
        KFWD[d, op] = fn.address


# Program instructions that the interpreter runs itself (no kernel).
INLINE_OPS = (K_CAST, X_ARG, X_BACKWARD, X_ADJ, X_CHECK, X_FUSED, X_COND)


def prepare_program(TT, VD, INS, runs):
    """Compiles every kernel a program's replay can reach: its instructions' forward
    kernels and its tape's VJP kernels."""
    for i in range(len(INS)):
        k = int(INS[i, I_OP])
        f64 = VD[INS[i, I_A if k in (X_CMP, X_ARGEXT) else I_O], FL] & F64
        if k not in INLINE_OPS:
            prepare_forward(k, f64)
        if INS[i, I_P + 9]:
            prepare_forward(X_SCALAR, f64)
    for r in range(len(TT)):
        k = int(TT[r, OP])
        if k in _UNARY_VJPS or k in _BINARY_VJPS or k in _FAMILY_VJPS:
            prepare(k, TT[r, FL] & F64)
    if runs.any():
        prepare(FUSED, 0)
        prepare(FUSED, 1)


_FAMILY_VJPS = (K_SUM, K_COPY, K_STRIDED, K_MATMUL, K_LINEAR, K_AMAX, K_PROD, K_GATHER,
                K_SCATTER, K_SETIDX, K_SOFTMAX, K_LOGSOFTMAX, K_CAT)


_safe_caches(globals())
_safe_caches(UNARY_FWD)
