"""Elementwise ops: the one-element formulas and VJPs of ops of one tensor
(UNARY_OPS) and of broadcasting binary ops, and their forward kernels.
"""

import math

import numpy as np
from numba import carray, njit
from numba.extending import overload

from .cache import _ARR, _INL, _JIT, _SUB, _safe_caches
from .layout import (A, AOFF, B, K_ABS, K_ADD, K_AFFINE, K_CLAMP, K_COS, K_DIV, K_DIVS,
                     K_ERF, K_EXP, K_EXPM1, K_LOG, K_LOG1P, K_MAXIMUM, K_MINIMUM, K_MUL,
                     K_POW, K_POWS, K_RDIVS, K_RECIP, K_RELU, K_RPOWS, K_SIGMOID, K_SIGN,
                     K_SIN, K_SQRT, K_SUB, K_TAN, K_TANH, K_WHERE, N, P0, SA, SB, SO,
                     UNARY_FIRST, UNARY_LAST, _dst, _j, _load, _mode, _ptr, _put, _wants)
from .vmath import (TRIG_MAX, _dtrig, _like, _tpow, cos_array, exp_array, expm1_array,
                    log1p_array, log_array, sigmoid_array, sin_array, tan_array, tanh_array,
                    vcos, vexp, vsin)


@njit(**_SUB)
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


@njit(**_SUB)
def _bv_add(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    _bv_pass(1.0, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)


@njit(**_SUB)
def _bv_sub(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    _bv_pass(-1.0, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)


@njit(**_SUB)
def _operands(T, r, adj):
    return _load(T, r, SA, T[T[r, A], N], adj), _load(T, r, SB, T[T[r, B], N], adj)


@njit(**_SUB)
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


@njit(**_SUB)
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


@njit(**_SUB)
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


@njit(**_SUB)
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


@njit(**_SUB)
def _bv_maximum(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    _bv_extreme(1.0, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)


@njit(**_SUB)
def _bv_minimum(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi):
    _bv_extreme(-1.0, T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)


@njit(**_SUB)
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

@njit(**_SUB)
def _ug(T, r, adj, ao, lo, hi):
    """The input adjoint's and the output gradient's slices for elements lo..hi."""
    go = T[r, AOFF]
    return adj[ao + lo:ao + hi], adj[go + lo:go + hi], hi - lo


@njit(**_SUB)
def _scaled(T, r, c, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * c, fr)


@njit(**_SUB)
def _uv_affine(T, r, f0, f1, adj, ao, fr, lo, hi):
    _scaled(T, r, f0, adj, ao, fr, lo, hi)


@njit(**_SUB)
def _uv_divs(T, r, f0, f1, adj, ao, fr, lo, hi):
    _scaled(T, r, 1.0 / f0, adj, ao, fr, lo, hi)


@njit(**_SUB)
def _uv_sign(T, r, f0, f1, adj, ao, fr, lo, hi):
    _scaled(T, r, 0.0, adj, ao, fr, lo, hi)


@njit(**_SUB)
def _out(T, r, adj, lo, hi):
    return _load(T, r, SO, T[r, N], adj)[lo:hi]


@njit(**_SUB)
def _inp(T, r, adj, lo, hi):
    return _load(T, r, SA, T[r, N], adj)[lo:hi]


@njit(**_SUB)
def _uv_exp(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * o[i], fr)


@njit(**_SUB)
def _uv_tanh(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * (1.0 - o[i] * o[i]), fr)


@njit(**_SUB)
def _uv_sigmoid(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * o[i] * (1.0 - o[i]), fr)


@njit(**_SUB)
def _uv_sqrt(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] / (2.0 * o[i]), fr)


@njit(**_SUB)
def _uv_relu(T, r, f0, f1, adj, ao, fr, lo, hi):
    """A select, as PyTorch: 0 where the result is <= 0 (a zero of adj's own type, so
    the select needs no conversion and vectorises)."""
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    z = np.zeros(1, adj.dtype)[0]
    for i in range(m):
        v = g[i]
        _put(d, i, z if o[i] <= 0 else v, fr)


@njit(**_SUB)
def _uv_tan(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * (1.0 + o[i] * o[i]), fr)


@njit(**_SUB)
def _uv_expm1(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * (o[i] + 1.0), fr)


@njit(**_SUB)
def _uv_recip(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, -g[i] * o[i] * o[i], fr)


@njit(**_SUB)
def _uv_rpows(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    c = np.log(f0)
    for i in range(m):
        _put(d, i, g[i] * o[i] * c, fr)


@njit(**_SUB)
def _uv_rdivs(T, r, f0, f1, adj, ao, fr, lo, hi):
    """d(c/x) = -(c/x)/x."""
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    o = _out(T, r, adj, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, -(g[i] * o[i] / x[i]), fr)


@njit(**_SUB)
def _uv_log(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] / x[i], fr)


@njit(**_SUB)
def _uv_abs(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * ((x[i] > 0) - (x[i] < 0)), fr)


@njit(**_SUB)
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


@njit(**_SUB)
def _uv_sin(T, r, f0, f1, adj, ao, fr, lo, hi):
    _uv_trig(K_SIN, T, r, adj, ao, fr, lo, hi)


@njit(**_SUB)
def _uv_cos(T, r, f0, f1, adj, ao, fr, lo, hi):
    _uv_trig(K_COS, T, r, adj, ao, fr, lo, hi)


@njit(**_SUB)
def _uv_log1p(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] / (1.0 + x[i]), fr)


_TWO_OVER_SQRT_PI = 1.1283791670955126


@njit(**_SUB)
def _uv_erf(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    for i in range(m):
        _put(d, i, g[i] * (_TWO_OVER_SQRT_PI * vexp(-(x[i] * x[i]))), fr)


@njit(**_SUB)
def _uv_clamp(T, r, f0, f1, adj, ao, fr, lo, hi):
    d, g, m = _ug(T, r, adj, ao, lo, hi)
    x = _inp(T, r, adj, lo, hi)
    cmin = f0 if T[r, P0] & 1 else -np.inf
    cmax = f1 if T[r, P0] & 2 else np.inf
    z = np.zeros(1, adj.dtype)[0]
    for i in range(m):
        v = g[i]
        _put(d, i, v if (x[i] >= cmin) & (x[i] <= cmax) else z, fr)


@njit(**_SUB)
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


def _array_kernel(k):
    """The forward array kernel of an op given by its one-element formula (inlined; the
    cache key names it)."""
    f = UNARY_OPS[k][0]

    @njit(**_ARR)
    def kern(x, out, f0=0.0, f1=0.0, p0=0):
        for i in range(out.size):
            out[i] = f(x[i], f0, f1, p0)
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


@njit(**_SUB)
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
    if k == K_MINIMUM:
        return x if x <= y or x != x else y
    raise ValueError("tapegrad: no binary forward for opcode", k)


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


_BINARY_VJPS = {K_ADD: _bv_add, K_SUB: _bv_sub, K_MUL: _bv_mul, K_DIV: _bv_div,
                K_POW: _bv_pow, K_MAXIMUM: _bv_maximum, K_MINIMUM: _bv_minimum,
                K_WHERE: _bv_where}


_safe_caches(globals())
_safe_caches(UNARY_FWD)
