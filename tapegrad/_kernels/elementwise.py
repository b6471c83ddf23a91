"""Elementwise ops: the one-element formulas and VJPs of ops of one tensor
(UNARY_OPS) and of broadcasting binary ops, and their forward kernels.
"""

import math

import numpy as np
from numba import carray, njit
from numba.extending import overload

from .cache import _ARR, _INL, _JIT, _SUB, _safe_caches
from .layout import (A, AOFF, B, K_ABS, K_ACOS, K_ACOSH, K_ADD, K_AFFINE, K_ASIN, K_ASINH,
                     K_ATAN, K_ATANH, K_CEIL, K_COSH, K_SINH, K_CLAMP, K_COS, K_DIV,
                     K_DIVS, K_ERF, K_EXP, K_EXPM1, K_FLOOR, K_FMOD, K_REMAINDER, K_LOG,
                     K_LOG1P, K_MAXIMUM, K_MINIMUM, K_MUL, K_POW, K_POWS, K_RDIVS, K_RECIP,
                     K_RELU, K_ROUND, K_RPOWS, K_SIGMOID, K_SIGN, K_SIN, K_SQRT, K_SUB,
                     K_TAN, K_TANH, K_TRUNC, K_WHERE, N, SA, SB, SO, UNARY_FIRST, UNARY_LAST,
                     _as, _bcast, _dst, _j, _load, _mode, _ptr, _put, _wants)
from .vmath import (TRIG_MAX, _dtrig, _tpow, cos_array, exp_array, expm1_array,
                    log1p_array, log_array, sigmoid_array, sin_array, tan_array, tanh_array,
                    vcos, vexp, vsin)


# Binary ops' derivatives, one pair of formulas each: (g, x, y) -> the contribution of
# g (the output's gradient) at an element with inputs x and y to x's adjoint and to y's
# (x and y only where the op saved them). The VJP kernels (reverse.py) run them over
# slices (inputs of the output's elements), a single value, or broadcast index maps.

@njit(**_INL)
def _da_add(g, x, y):
    return g


@njit(**_INL)
def _db_sub(g, x, y):
    return -1.0 * g


@njit(**_INL)
def _da_mul(g, x, y):
    return g * y


@njit(**_INL)
def _db_mul(g, x, y):
    return g * x


@njit(**_INL)
def _da_div(g, x, y):
    return g / y


@njit(**_INL)
def _db_div(g, x, y):
    """-(g * ((x / y) / y)), as PyTorch: y * y never overflows."""
    return -(g * (x / y / y))


@njit(**_INL)
def _da_pow(g, x, y):
    """In the inputs' dtype, as PyTorch; 0 where it masks (y = 0)."""
    return g * (0.0 if y == 0.0 else y * x ** (y - _as(y, 1.0)))


@njit(**_INL)
def _db_fmod(g, x, y):
    """-g * trunc(x / y), as PyTorch's."""
    return -g * np.trunc(x / y)


@njit(**_INL)
def _db_remainder(g, x, y):
    """-g * (x // y), the floor division PyTorch computes: (x - fmod(x, y)) / y rounded,
    nan where fmod is (x infinite)."""
    if y == 0:
        return -g * (x / y)
    m = np.fmod(x, y)
    q = (x - m) / y
    if m != 0 and (y < 0) != (m < 0):
        q -= 1
    if q == 0:
        return -g * np.copysign(_as(q, 0.0), x / y)
    f = np.floor(q)
    return -g * (f + 1 if q - f > 0.5 else f)


@njit(**_INL)
def _db_pow(g, x, y):
    """0 where PyTorch masks (x = 0 with y >= 0)."""
    return g * (0.0 if (x == 0.0 and y >= 0.0) else x ** y * np.log(x))


@njit(**_INL)
def _da_maximum(g, x, y):
    """As PyTorch: g / 2 at ties, 0 where the other input wins, else g (NaN included)."""
    return _as(g, 0.0) if x < y else g * 0.5 if x == y else g


@njit(**_INL)
def _db_maximum(g, x, y):
    return _as(g, 0.0) if y < x else g * 0.5 if x == y else g


@njit(**_INL)
def _da_minimum(g, x, y):
    return _as(g, 0.0) if x > y else g * 0.5 if x == y else g


@njit(**_INL)
def _db_minimum(g, x, y):
    return _as(g, 0.0) if y > x else g * 0.5 if x == y else g


@njit(**_INL)
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


# Unary ops' derivatives, one formula each: du(g, x, o, f0, f1, p0) is the contribution
# of g (the output's gradient) at an element with input x and output o to the input's
# adjoint (x and o only where the op saved them), in the adjoint's dtype. The VJP kernel
# (reverse.py) runs it over slices, so that the loop indexes from 0 and vectorises.

@njit(**_INL)
def _du_affine(g, x, o, f0, f1, p0):
    return g * f0


@njit(**_INL)
def _du_divs(g, x, o, f0, f1, p0):
    return g * (1.0 / f0)


@njit(**_INL)
def _du_zero(g, x, o, f0, f1, p0):
    return g * 0.0


@njit(**_INL)
def _du_exp(g, x, o, f0, f1, p0):
    return g * o


@njit(**_INL)
def _du_tanh(g, x, o, f0, f1, p0):
    return g * (1.0 - o * o)


@njit(**_INL)
def _du_sigmoid(g, x, o, f0, f1, p0):
    return g * o * (1.0 - o)


@njit(**_INL)
def _du_sqrt(g, x, o, f0, f1, p0):
    return g / (2.0 * o)


@njit(**_INL)
def _du_relu(g, x, o, f0, f1, p0):
    """A select, as PyTorch: 0 where the result is <= 0 (a zero of g's own type, so the
    select needs no conversion and vectorises)."""
    return _as(g, 0.0) if o <= 0 else g


@njit(**_INL)
def _du_tan(g, x, o, f0, f1, p0):
    return g * (1.0 + o * o)


@njit(**_INL)
def _du_expm1(g, x, o, f0, f1, p0):
    return g * (o + 1.0)


@njit(**_INL)
def _du_recip(g, x, o, f0, f1, p0):
    return -g * o * o


@njit(**_INL)
def _du_rpows(g, x, o, f0, f1, p0):
    return g * o * np.log(f0)


@njit(**_INL)
def _du_rdivs(g, x, o, f0, f1, p0):
    """d(c/x) = -(c/x)/x."""
    return -(g * o / x)


@njit(**_INL)
def _du_log(g, x, o, f0, f1, p0):
    return g / x


@njit(**_INL)
def _du_abs(g, x, o, f0, f1, p0):
    return g * ((x > 0) - (x < 0))


@njit(**_INL)
def _du_log1p(g, x, o, f0, f1, p0):
    return g / (1.0 + x)


_TWO_OVER_SQRT_PI = 1.1283791670955126


@njit(**_INL)
def _du_erf(g, x, o, f0, f1, p0):
    return g * (_TWO_OVER_SQRT_PI * vexp(-(x * x)))


@njit(**_INL)
def _du_atan(g, x, o, f0, f1, p0):
    return g / (x * x + 1.0)


@njit(**_INL)
def _du_asin(g, x, o, f0, f1, p0):
    return g / np.sqrt(1.0 - x * x)


@njit(**_INL)
def _du_acos(g, x, o, f0, f1, p0):
    return -g / np.sqrt(1.0 - x * x)


@njit(**_INL)
def _du_sinh(g, x, o, f0, f1, p0):
    return g * np.cosh(x)


@njit(**_INL)
def _du_cosh(g, x, o, f0, f1, p0):
    return g * np.sinh(x)


@njit(**_INL)
def _du_asinh(g, x, o, f0, f1, p0):
    return g / np.sqrt(x * x + 1.0)


@njit(**_INL)
def _du_acosh(g, x, o, f0, f1, p0):
    return g / np.sqrt(x * x - 1.0)


@njit(**_INL)
def _du_atanh(g, x, o, f0, f1, p0):
    return g / (1.0 - x * x)


@njit(**_INL)
def _du_clamp(g, x, o, f0, f1, p0):
    """g where F0 <= x <= F1 (bounds present by P0 bits 1, 2), else 0 (nan: 0)."""
    cmin = f0 if p0 & 1 else -np.inf
    cmax = f1 if p0 & 2 else np.inf
    return g if (x >= cmin) & (x <= cmax) else _as(g, 0.0)


# VJP functions of their own (T, r, f0, f1, adj, ao, fr, lo, hi), for the ops whose
# loops a formula would not vectorise: sin and cos (unless an argument is beyond
# TRIG_MAX) and pows (squares without a pow() call).

@njit(**_SUB)
def _ug(T, r, adj, ao, lo, hi):
    """The input adjoint's and the output gradient's slices for elements lo..hi."""
    go = T[r, AOFF]
    return adj[ao + lo:ao + hi], adj[go + lo:go + hi], hi - lo


@njit(**_SUB)
def _out(T, r, adj, lo, hi):
    return _load(T, r, SO, T[r, N], adj)[lo:hi]


@njit(**_SUB)
def _inp(T, r, adj, lo, hi):
    return _load(T, r, SA, T[r, N], adj)[lo:hi]


@njit(**_INL)
def _uv_trig(k, T, r, adj, ao, fr, lo, hi):
    """sin (k = K_SIN) and cos."""
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


@njit(**_INL)
def _uv_pows(T, r, f0, f1, adj, ao, fr, lo, hi):
    """g * (p * x ** (p - 1)) in x's dtype, as PyTorch (0 for p = 0)."""
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    pt = _as(adj[0], f0)        # in the arena's dtype, x's
    if f0 == 2.0:
        for i in range(m):
            _put(d, i, g[i] * (pt * x[i]), fr)
        return
    e = _as(pt, 0.0 if f0 == 0.0 else f0 - 1.0)
    for i in range(m):
        _put(d, i, g[i] * (pt * _tpow(x[i], e)), fr)


@njit(**_INL)
def _uv_sin(T, r, f0, f1, adj, ao, fr, lo, hi):
    _uv_trig(K_SIN, T, r, adj, ao, fr, lo, hi)


@njit(**_INL)
def _uv_cos(T, r, f0, f1, adj, ao, fr, lo, hi):
    _uv_trig(K_COS, T, r, adj, ao, fr, lo, hi)


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


@njit(**_INL)
def _sf_atan(x, f0, f1, p0):
    return math.atan(x)


@njit(**_INL)
def _sf_asin(x, f0, f1, p0):
    return math.asin(x)


@njit(**_INL)
def _sf_acos(x, f0, f1, p0):
    return math.acos(x)


@njit(**_INL)
def _sf_sinh(x, f0, f1, p0):
    return math.sinh(x)


@njit(**_INL)
def _sf_cosh(x, f0, f1, p0):
    return math.cosh(x)


@njit(**_INL)
def _sf_asinh(x, f0, f1, p0):
    return math.asinh(x)


@njit(**_INL)
def _sf_acosh(x, f0, f1, p0):
    return math.acosh(x)


@njit(**_INL)
def _sf_atanh(x, f0, f1, p0):
    return math.atanh(x)


@njit(**_INL)
def _sf_floor(x, f0, f1, p0):
    return np.floor(x)


@njit(**_INL)
def _sf_ceil(x, f0, f1, p0):
    return np.ceil(x)


@njit(**_INL)
def _sf_round(x, f0, f1, p0):
    return np.rint(x)


@njit(**_INL)
def _sf_trunc(x, f0, f1, p0):
    return np.trunc(x)


def _array_kernel(k):
    """The forward array kernel of an op given by its one-element formula (inlined; the
    cache key names it)."""
    f = UNARY_OPS[k][0]
    updates = k == K_AFFINE or k == K_DIVS      # the ops programs apply in place

    @njit(**_ARR)
    def kern(x, out, f0=0.0, f1=0.0, p0=0):
        if updates and out.ctypes.data == x.ctypes.data:    # see _binary_block
            for i in range(out.size):
                out[i] = f(out[i], f0, f1, p0)
        else:
            for i in range(out.size):
                out[i] = f(x[i], f0, f1, p0)
    return kern


# The elementwise ops of one tensor: opcode -> (forward, VJP, whether one-element rows of
# a program inline the forward). The forward is a one-element formula (f(x, f0, f1, p0),
# inlined in the array kernel made from it) or an array kernel (x, out, f0, f1, p0) of
# its own (vectorised math, with a second pass for some inputs); the VJP a derivative
# formula (du above) or a VJP function of its own (sin, cos).
UNARY_OPS = {
    K_AFFINE: (_sf_affine, _du_affine, True), K_DIVS: (_sf_divs, _du_divs, True),
    K_POWS: (_sf_pows, _uv_pows, True), K_RPOWS: (_sf_rpows, _du_rpows, True),
    K_RDIVS: (_sf_rdivs, _du_rdivs, True), K_EXP: (exp_array, _du_exp, False),
    K_LOG: (log_array, _du_log, False), K_SQRT: (_sf_sqrt, _du_sqrt, True),
    K_TANH: (tanh_array, _du_tanh, False), K_SIGMOID: (sigmoid_array, _du_sigmoid, False),
    K_RELU: (_sf_relu, _du_relu, True), K_ABS: (_sf_abs, _du_abs, True),
    K_SIN: (sin_array, _uv_sin, False), K_COS: (cos_array, _uv_cos, False),
    K_TAN: (tan_array, _du_tan, False), K_LOG1P: (log1p_array, _du_log1p, False),
    K_EXPM1: (expm1_array, _du_expm1, False), K_RECIP: (_sf_recip, _du_recip, True),
    K_CLAMP: (_sf_clamp, _du_clamp, True), K_SIGN: (_sf_sign, _du_zero, True),
    K_ERF: (_sf_erf, _du_erf, False), K_ATAN: (_sf_atan, _du_atan, False),
    K_ASIN: (_sf_asin, _du_asin, False), K_ACOS: (_sf_acos, _du_acos, False),
    K_SINH: (_sf_sinh, _du_sinh, False), K_COSH: (_sf_cosh, _du_cosh, False),
    K_ASINH: (_sf_asinh, _du_asinh, False), K_ACOSH: (_sf_acosh, _du_acosh, False),
    K_ATANH: (_sf_atanh, _du_atanh, False), K_FLOOR: (_sf_floor, _du_zero, True),
    K_CEIL: (_sf_ceil, _du_zero, True), K_ROUND: (_sf_round, _du_zero, True),
    K_TRUNC: (_sf_trunc, _du_zero, True),
}
assert sorted(UNARY_OPS) == list(range(UNARY_FIRST, UNARY_LAST + 1))
UNARY_FWD = {k: _array_kernel(k) if f.py_func.__code__.co_argcount == 4 else f
             for k, (f, _, _) in UNARY_OPS.items()}
_UNARY_VJPS = {k: v for k, (_, v, _) in UNARY_OPS.items()}
# bit k set: a one-element row of op k runs its kernel (heavier to compile) in a program
_SCALAR_BY_KERNEL = sum(1 << k for k, (_, _, inline) in UNARY_OPS.items() if not inline)


@njit(**_INL)
def _arith(k, x, y):
    """x + - * / y (k in K_ADD..K_DIV); inlined, so LLVM moves the choice out of loops."""
    if k == K_ADD:
        return x + y
    if k == K_SUB:
        return x - y
    if k == K_MUL:
        return x * y
    return x / y


@njit(**_SUB)
def _binop(k, x, y):
    if k <= K_DIV:
        return _arith(k, x, y)
    if k == K_POW:
        return x ** y
    if k == K_MAXIMUM:
        return x if x >= y or x != x else y
    if k == K_MINIMUM:
        return x if x <= y or x != x else y
    if k == K_FMOD:
        return np.fmod(x, y)
    if k == K_REMAINDER:
        m = np.fmod(x, y)
        return m + y if m != 0 and (y < 0) != (m < 0) else m
    raise ValueError("tapegrad: no binary forward for opcode", k)


@njit(**_JIT)
def binary_fwd(k, VD, o, a, b, out, x, y):
    """out = x (op k) y with broadcasting; VD rows o, a, b give the shapes. A broadcast
    input is first laid out over the output's elements, so that the loop vectorises."""
    n = out.size
    xs, ys = x, y
    if x.size != n and x.size != 1:
        xs = np.empty(n, x.dtype)
        _bcast(VD, o, a, x, xs, False)
    if y.size != n and y.size != 1:
        ys = np.empty(n, y.dtype)
        _bcast(VD, o, b, y, ys, False)
    _binary_block(k, out, xs, ys)


@njit(**_SUB)
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


@njit(**_SUB)
def _bit(code, x, y):
    if code == 0:
        return x & y
    if code == 1:
        return x | y
    return x ^ y


@njit(**_JIT)
def bits_fwd(code, VD, o, a, b, out, x, y, c, noidx):
    """out = x &, |, ^ (code 0, 1, 2) y (broadcast), or c when b < 0; code 3: ~x (for
    bytes holding bools: not x). Bools and int64 alike."""
    ma, ia = _mode(VD, o, a, noidx)
    if code == 3:
        flip = out.itemsize == 1
        for i in range(out.size):
            v = x[_j(ma, i, ia)]
            out[i] = (1 - v) if flip else ~v
        return
    if b < 0:
        cv = np.int64(c)
        for i in range(out.size):
            out[i] = _bit(code, x[_j(ma, i, ia)], cv)
        return
    mb, ib = _mode(VD, o, b, noidx)
    for i in range(out.size):
        out[i] = _bit(code, x[_j(ma, i, ia)], y[_j(mb, i, ib)])


@njit(**_SUB)
def _binary_block(k, out, x, y):
    """out = x (op k) y, elementwise; x or y may be a single value. In-place updates (out
    is x) get loops of their own: LLVM vectorises a loop only where its runtime check
    finds the output apart from every input."""
    n = out.size
    if k > K_DIV or x.size != n:
        for i in range(n):
            out[i] = _binop(k, x[i if x.size == n else 0], y[i if y.size == n else 0])
    elif y.size == n:
        if out.ctypes.data == x.ctypes.data:
            for i in range(n):
                out[i] = _arith(k, out[i], y[i])
        elif k == K_ADD:        # (one loop per op: _arith's choice is not always hoisted)
            for i in range(n):
                out[i] = x[i] + y[i]
        elif k == K_SUB:
            for i in range(n):
                out[i] = x[i] - y[i]
        elif k == K_MUL:
            for i in range(n):
                out[i] = x[i] * y[i]
        else:
            for i in range(n):
                out[i] = x[i] / y[i]
    else:
        c = y[0]
        if out.ctypes.data == x.ctypes.data:
            for i in range(n):
                out[i] = _arith(k, out[i], c)
        else:
            for i in range(n):
                out[i] = _arith(k, x[i], c)


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


@njit(**_JIT)
def arith1(k, n):
    """Whether a row of op k over n elements is one-element arithmetic (_arith_vjp1)."""
    return n == 1 and K_ADD <= k <= K_DIVS and k != K_POW and (k <= K_DIV or k >= K_AFFINE)


@njit(**_INL)
def _arith_vjp1(k, T, r, f0, adj, seen):
    """The VJP of a one-element + - * / (K_ADD..K_DIV) or affine / divide-by-constant
    row, by the ops' formulas, inlined in the reverse pass (scalar programs are made of
    these)."""
    g = adj[T[r, AOFF]]
    a = T[r, A]
    if k >= K_AFFINE:
        ao, fa = _dst(adj, T, seen, a)
        _put(adj, ao, _du_affine(g, g, g, f0, 0.0, 0) if k == K_AFFINE else
             _du_divs(g, g, g, f0, 0.0, 0), fa)
        return
    b = T[r, B]
    x = _load(T, r, SA, 1, adj)[0] if T[r, SA] != 0 else g
    y = _load(T, r, SB, 1, adj)[0] if T[r, SB] != 0 else g
    if k == K_ADD:
        ga, gb = _da_add(g, x, y), _da_add(g, x, y)
    elif k == K_SUB:
        ga, gb = _da_add(g, x, y), _db_sub(g, x, y)
    elif k == K_MUL:
        ga, gb = _da_mul(g, x, y), _db_mul(g, x, y)
    else:
        ga, gb = _da_div(g, x, y), _db_div(g, x, y)
    if _wants(T, a):
        ao, fa = _dst(adj, T, seen, a)
        _put(adj, ao, ga, fa)
    if _wants(T, b):
        bo, fb = _dst(adj, T, seen, b)
        _put(adj, bo, gb, fb)


# opcode -> (x's, y's derivative formula), or a VJP function of its own (where)
_BINARY_VJPS = {K_ADD: (_da_add, _da_add), K_SUB: (_da_add, _db_sub),
                K_MUL: (_da_mul, _db_mul), K_DIV: (_da_div, _db_div),
                K_POW: (_da_pow, _db_pow), K_MAXIMUM: (_da_maximum, _db_maximum),
                K_MINIMUM: (_da_minimum, _db_minimum), K_FMOD: (_da_add, _db_fmod),
                K_REMAINDER: (_da_add, _db_remainder), K_WHERE: _bv_where}


_safe_caches(globals())
_safe_caches(UNARY_FWD)
