"""Layer normalisation (over rows of the last ``d`` elements) and batch normalisation
(over each channel of (N, C, S)): forward and VJP kernels.

Statistics are computed in float64 (two passes), and the VJPs recompute them from the
saved input rather than keeping them: one more pass over the input, and nothing else
for a row to save or a program to carry.
"""

import numpy as np
from numba import njit

from .cache import _INL, _JIT, _SUB, _safe_caches
from .layout import AOFF, N, P0, SA, SB, _as, _dst, _load, _put, _row_dot, _row_sum, _wants


@njit(**_SUB, fastmath={"reassoc"})
def _sq_dev(X, o, mean):
    """Sum of (X[o, j] - mean)**2 in float64 (vector accumulators, as _row_sum)."""
    s = 0.0
    for j in range(X.shape[1]):
        v = X[o, j] - mean
        s += v * v
    return s


@njit(**_SUB)
def _stats(X, c, ch, eps):
    """mean and 1 / sqrt(biased variance + eps) over rows ch, ch + c, ... of X: a row of
    layer norm (c = the number of rows) or a channel of batch norm (X the (N * C, S) view
    of the input)."""
    count = X.shape[0] // c * X.shape[1]
    t = 0.0
    for o in range(ch, X.shape[0], c):
        t += _row_sum(X, o)
    mean = t / count
    v = 0.0
    for o in range(ch, X.shape[0], c):
        v += _sq_dev(X, o, mean)
    return mean, 1.0 / np.sqrt(v / count + eps)


@njit(**_SUB, fastmath={"reassoc"})
def _row_stats(X, j, eps):
    """_stats of row j of X alone (a layer norm row): one call per row, where _stats
    makes three, each loop with vector accumulators."""
    d = X.shape[1]
    t = 0.0
    for i in range(d):
        t += X[j, i]
    mean = t / d
    v = 0.0
    for i in range(d):
        q = X[j, i] - mean
        v += q * q
    return mean, 1.0 / np.sqrt(v / d + eps)


@njit(**_SUB, fastmath={"reassoc"})
def _grad_sums(G, W, X, o, affine, db):
    """Sums over row o of g * w and of g * w * x (w = 1 unless affine); adds the row's g
    to the bias gradient db (empty: not needed) in the same pass."""
    s1 = 0.0
    s2 = 0.0
    bias = db.size != 0
    for j in range(G.shape[1]):
        g = G[o, j]
        if bias:
            db[j] += g
        gw = np.float64(g) * W[j] if affine else np.float64(g)
        s1 += gw
        s2 += gw * X[o, j]
    return s1, s2


@njit(**_SUB)
def _norm_inputs(T, L, r, flags):
    """Rows of a normalisation's input, weight and bias (-1: absent) and which of them
    need a gradient."""
    start = T[r, P0]
    x = L[start]
    wr = L[start + 1] if flags & 1 else -1
    br = L[start + 1 + (flags & 1)] if flags & 2 else -1
    return x, wr, br, _wants(T, x), wr >= 0 and _wants(T, wr), br >= 0 and _wants(T, br)


@njit(**_SUB)
def _vjp_arrays(T, r, adj, seen, x, rows, cols, nw, affine, want_x, want_w, want_b):
    """A normalisation VJP's (rows, cols) views of g and of the saved input, the saved
    weight (nw values), zeroed float64 weight and bias gradients (empty when not
    needed), and x's adjoint as a view, with whether it is the first contribution."""
    n = rows * cols
    go = T[r, AOFF]
    G = adj[go:go + n].reshape((rows, cols))
    X = _load(T, r, SA, n, adj).reshape((rows, cols))
    vw = _load(T, r, SB, nw, adj) if affine else adj[:0]
    xo, fx = _dst(adj, T, seen, x) if want_x else (0, False)
    D = adj[xo:xo + (n if want_x else 0)].reshape((rows if want_x else 0, cols))
    return G, X, vw, np.zeros(nw if want_w else 0), np.zeros(nw if want_b else 0), D, fx


@njit(**_SUB)
def _dx_coeffs(s1, s2, mean, rstd, count):
    """p, q of dx = rstd * g w + p x + q, from the sums of g w (s1) and g w x (s2) over
    the count elements of a row or channel (PyTorch's arrangement)."""
    p = (s1 * mean - s2) * rstd * rstd * rstd / count
    return p, -p * mean - s1 * rstd / count


@njit(**_SUB)
def _param_grads(adj, T, seen, wr, dw, br, db):
    """The weight's and bias's gradients (dw, db: empty when not needed) into adj."""
    if dw.size:
        wo, fw = _dst(adj, T, seen, wr)
        ws = adj[wo:wo + dw.size]
        for i in range(dw.size):
            _put(ws, i, dw[i], fw)
    if db.size:
        bo, fb = _dst(adj, T, seen, br)
        bs = adj[bo:bo + db.size]
        for i in range(db.size):
            _put(bs, i, db[i], fb)


@njit(**_JIT)
def layer_norm_fwd(x, w, b, out, d, eps, flags):
    """out = (x - mean) / sqrt(var + eps) (* w if flags bit 1) (+ b if bit 2), over rows
    of d elements: statistics in float64, the rest in x's dtype (as PyTorch)."""
    m = x.size // d if d else 0
    X = x.reshape((m, d))
    Y = out.reshape((m, d))
    for j in range(m):
        mean, rstd = _row_stats(X, j, eps)
        mc, rs = _as(X[j, 0], mean), _as(X[j, 0], rstd)
        if flags == 3:
            for i in range(d):
                Y[j, i] = (X[j, i] - mc) * rs * w[i] + b[i]
        elif flags == 1:
            for i in range(d):
                Y[j, i] = (X[j, i] - mc) * rs * w[i]
        elif flags == 2:
            for i in range(d):
                Y[j, i] = (X[j, i] - mc) * rs + b[i]
        else:
            for i in range(d):
                Y[j, i] = (X[j, i] - mc) * rs


@njit(**_INL)
def _layer_norm_vjp(T, L, r, f0, adj, seen):
    """dx = rstd * (g w - mean(g w) - xhat mean(g w xhat)), arranged as PyTorch's
    (rstd g w + p x + q, so that infinities and NaNs land alike); dw = column sums of
    g xhat, db = column sums of g."""
    d = T[r, P0 + 2]
    flags = T[r, P0 + 3]
    affine = (flags & 1) != 0
    x, wr, br, want_x, want_w, want_b = _norm_inputs(T, L, r, flags)
    m = T[r, N] // d if d else 0
    G, X, vw, dw, db, D, fx = _vjp_arrays(T, r, adj, seen, x, m, d, d, affine, want_x,
                                          want_w, want_b)
    for j in range(m):          # per row: stats, then one pass of sums, one of results
        mean, rstd = _row_stats(X, j, f0)
        # xhat and dx in the arena's dtype, as the forward and PyTorch (twice the lanes of
        # float64 for float32)
        z = G[j, 0]
        mc, rs = _as(z, mean), _as(z, rstd)
        if not want_x:
            for i in range(db.size):
                db[i] += G[j, i]
            for i in range(dw.size):
                dw[i] += G[j, i] * ((X[j, i] - mc) * rs)
            continue
        s1, s2 = _grad_sums(G, vw, X, j, affine, db)
        p, q = _dx_coeffs(s1, s2, mean, rstd, d)
        pc, qc = _as(z, p), _as(z, q)
        for i in range(d):
            if want_w:
                dw[i] += G[j, i] * ((X[j, i] - mc) * rs)
            gw = G[j, i] * vw[i] if affine else G[j, i]
            v = rs * gw + pc * X[j, i] + qc
            D[j, i] = v if fx else D[j, i] + v
    _param_grads(adj, T, seen, wr, dw, br, db)


@njit(**_JIT)
def batch_norm_fwd(x, w, b, out, c, sp, eps, flags):
    """out = (x - mean) / sqrt(var + eps) (* w if flags bit 1) (+ b if bit 2), each
    channel of (N, c, sp) by its batch statistics (biased variance)."""
    rows = x.size // sp if sp else 0
    X = x.reshape((rows, sp))
    Y = out.reshape((rows, sp))
    for ch in range(c if rows else 0):
        mean, rstd = _stats(X, c, ch, eps)
        scale = rstd * w[ch] if flags & 1 else rstd
        shift = b[ch] - mean * scale if flags & 2 else -mean * scale
        for o in range(ch, rows, c):
            for j in range(sp):
                Y[o, j] = X[o, j] * scale + shift


@njit(**_INL)
def _batch_norm_vjp(T, L, r, f0, adj, seen):
    """As _layer_norm_vjp, per channel: sums over the channel's N * S elements."""
    c = T[r, P0 + 2]
    sp = T[r, P0 + 3]
    flags = T[r, P0 + 4]
    affine = (flags & 1) != 0
    x, wr, br, want_x, want_w, want_b = _norm_inputs(T, L, r, flags)
    rows = T[r, N] // sp if sp else 0
    G, X, vw, dw, db, D, fx = _vjp_arrays(T, r, adj, seen, x, rows, sp, c, affine, want_x,
                                          want_w, want_b)
    count = rows // c * sp if c else 0
    for ch in range(c if rows else 0):
        mean, rstd = _stats(X, c, ch, f0)
        sg = 0.0
        sgx = 0.0
        for o in range(ch, rows, c):
            sg += _row_sum(G, o)
            sgx += _row_dot(G, X, o)
        if want_w:
            dw[ch] = (sgx - mean * sg) * rstd
        if want_b:
            db[ch] = sg
        if want_x:
            wc = vw[ch] if affine else 1.0
            p, q = _dx_coeffs(sg * wc, sgx * wc, mean, rstd, count)
            a = rstd * wc
            for o in range(ch, rows, c):
                for j in range(sp):
                    v = a * G[o, j] + p * X[o, j] + q
                    D[o, j] = v if fx else D[o, j] + v
    _param_grads(adj, T, seen, wr, dw, br, db)


_safe_caches(globals())
