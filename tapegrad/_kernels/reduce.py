"""Reductions, views, indexing and concatenation: VJPs and forward kernels.
"""

import math

import numpy as np
from numba import carray, njit

from .cache import _INL, _JIT, _SUB, _safe_caches
from .layout import (A, AOFF, B, K_GATHER, K_PYOUT, K_SCATTER, K_SOFTMAX, MAXD, N, ND, OP,
                     P0, P1, S0, SA, SB, SO, _as, _dst, _load, _long_sum, _odometer,
                     _ptr, _put, _row_dot, _row_sum, _shape, _touch, _var, _walk, _wants,
                     listed, trailing)
from .vmath import vexp_t


@njit(**_INL)
def _sum_rows(T, r, f0, adj, seen):
    """Backward of a sum over trailing dims (or all): g of each output element, times
    f0, to its run of input elements."""
    a = T[r, A]
    m = T[r, N]
    inner = T[a, N] // m if m else 0
    go = T[r, AOFF]
    ao, fr = _dst(adj, T, seen, a)
    for j in range(m):
        v = adj[go + j] * f0
        d = adj[ao + j * inner:ao + (j + 1) * inner]
        for i in range(inner):
            _put(d, i, v, fr)


@njit(**_INL)
def _sum(T, r, f0, adj, seen):
    """Backward of a sum over the dims in bitmask P0 (general()): broadcast g back,
    times f0."""
    a = T[r, A]
    n = T[a, N]
    go = T[r, AOFF]
    ao, fr = _dst(adj, T, seen, a)
    idx = _reduced_index(T, a, T[r, P0])
    for i in range(n):
        _put(adj, ao + i, adj[go + idx[i]] * f0, fr)


@njit(**_SUB)
def _permutation(T, r, st):
    """For a view (row r, strides st) that reorders all of its input's elements (a
    transpose or permute): True, its dims in the input's order, and their strides in the
    view, so that the VJP gathers instead of scattering. Else False."""
    nd = T[r, ND]
    shape = np.empty(nd, np.int64)
    vst = np.empty(nd, np.int64)
    if T[r, P0] != 0 or T[r, N] != T[T[r, A], N]:
        return False, shape, vst
    own = np.empty(nd, np.int64)       # the view's own (contiguous) strides
    s = 1
    for k in range(nd - 1, -1, -1):
        own[k] = s
        s *= T[r, S0 + k]
    used = np.zeros(nd, np.uint8)
    expect = 1
    for j in range(nd - 1, -1, -1):    # the input's dims, innermost first
        best = -1
        for k in range(nd):
            if not used[k] and st[k] == expect and (best < 0 or T[r, S0 + k] > 1):
                best = k
        if best < 0:
            return False, shape, vst
        used[best] = 1
        shape[j] = T[r, S0 + best]
        vst[j] = own[best]
        expect *= T[r, S0 + best]
    return True, shape, vst


@njit(**_INL)
def _strided(T, r, adj, seen):
    """Backward of a strided view: its gradient gathered back where the view reorders
    all of its input (transposes), else scatter-added to the elements it read."""
    a = T[r, A]
    go = T[r, AOFF]
    g = adj[go:go + T[r, N]]
    st = np.zeros(T[r, ND], np.int64)
    for k in range(T[r, ND]):
        st[k] = T[r, P0 + 1 + k]
    whole, shape, vst = _permutation(T, r, st)
    if whole:
        ao, fr = _dst(adj, T, seen, a)
        _walk(shape, vst, 0, g, adj[ao:ao + T[a, N]], 0 if fr else 2)
        return
    ao = _touch(adj, T, seen, a)
    _walk(_shape(T, r), st, T[r, P0], adj[ao:ao + T[a, N]], g, 1)


@njit(**_SUB)
def one_run(T, r):
    """Whether strided view r reads consecutive elements of its input (x[i:j], rows of a
    matrix): its VJP is then a copy or an addition (reverse.py), not a walk."""
    s = 1
    for k in range(T[r, ND] - 1, -1, -1):
        if T[r, S0 + k] > 1 and T[r, P0 + 1 + k] != s:
            return False
        s *= T[r, S0 + k]
    return True


@njit(**_SUB)
def _reduced_index(T, a, mask):
    """For each element of row a, its index in a reduction over the dims in ``mask``."""
    st = np.zeros(MAXD, np.int64)
    s = 1
    for k in range(T[a, ND] - 1, -1, -1):
        if ((mask >> k) & 1) == 0:
            st[k] = s
            s *= T[a, S0 + k]
    return _odometer(T, a, st, _var(0), T[a, N])


@njit(**_INL)
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


@njit(**_INL)
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


@njit(**_INL)
def _indexed(k, T, r, adj, seen, witness):
    """Backward of gather, scatter-add and indexed assignment."""
    a = T[r, A]
    go = T[r, AOFF]
    if k == K_GATHER:       # unsigned indices: no negative-index fix-up per element
        idx = carray(_ptr(T[r, SB], witness), T[r, N])
        ao = _touch(adj, T, seen, a)
        dst = adj[ao:ao + T[a, N]]
        g = adj[go:go + T[r, N]]
        n = np.uint64(dst.size)
        for i in range(T[r, N]):
            q = np.uint64(idx[i])
            if q < n:                   # else the fill value's position (padding)
                dst[q] += g[i]
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


@njit(**_INL)
def _softmax(k, T, r, adj, seen):
    """Backward of softmax / log_softmax along a dim of size P0 (P1 elements after it)."""
    n = T[r, N]
    d = T[r, P0]
    inner = T[r, P1]
    outer = n // (d * inner) if d * inner else 0
    go = T[r, AOFF]
    y = _load(T, r, SO, n, adj)
    ao, fr = _dst(adj, T, seen, T[r, A])
    if inner == 1:                  # rows of 2-D views: loops that vectorise
        Y = y.reshape((outer, d))
        G = adj[go:go + n].reshape((outer, d))
        D = adj[ao:ao + n].reshape((outer, d))
        for o in range(outer):
            if k == K_SOFTMAX:
                s = _row_dot(G, Y, o)
                for j in range(d):
                    v = Y[o, j] * (G[o, j] - s)
                    D[o, j] = v if fr else D[o, j] + v
            else:
                s = _row_sum(G, o)
                for j in range(d):
                    v = G[o, j] - vexp_t(Y[o, j]) * s
                    D[o, j] = v if fr else D[o, j] + v
        return
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
                    v = adj[go + e] - vexp_t(y[e]) * s
                _put(adj, ao + e, v, fr)


@njit(**_INL)
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
        if listed(k):
            for q in range(T[r, P0 + 1]):
                need[L[T[r, P0] + q]] = 1
        elif k == K_PYOUT:
            need[T[r, P0 + 2]] = 1
        if T[r, A] >= 0:
            need[T[r, A]] = 1
        if T[r, B] >= 0:
            need[T[r, B]] = 1
    return need


@njit(**_JIT)
def sum_rows(x, out, inner, count):
    """out[j] = the sum of x[j * inner:(j + 1) * inner], divided by count when count > 0:
    a reduction over trailing dims, the common case (compiled alone, it compiles fast)."""
    for j in range(out.size):
        s = _long_sum(x, j * inner, (j + 1) * inner)
        out[j] = s / count if count > 0 else s


@njit(**_JIT)
def sum_fwd(VD, a, mask, count, x, out):
    """Sum (mean when count > 0: divided by count) over the dims in bitmask ``mask`` of
    row a of VD (its shape)."""
    n = x.size
    m = out.size
    if trailing(mask, VD[a, ND]):      # trailing reduced dims read contiguous runs
        sum_rows(x, out, n // m if m else 0, count)
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


@njit(**_SUB)
def _nanmax(x, lo, hi, inner):
    """Max of x[lo], x[lo + inner], ... below hi; nan if any is nan."""
    m = x[lo]
    for e in range(lo + inner, hi, inner):
        v = x[e]
        if v > m or v != v:
            if m == m:
                m = v
    return m


@njit(**_SUB)
def _rowmax(X, o):
    """Max of row o of X (not empty), nan if any element is nan: eight select chains that
    do not depend on each other, and a vectorised nan count, instead of a branch per
    element."""
    n = X.shape[1]
    c = 0
    for i in range(n):
        c += X[o, i] != X[o, i]
    if c:
        return _as(X[o, 0], np.nan)      # in X's dtype, as the max
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = X[o, 0]
    for k in range(n // 8):
        i = 8 * k
        m0 = X[o, i] if X[o, i] > m0 else m0
        m1 = X[o, i + 1] if X[o, i + 1] > m1 else m1
        m2 = X[o, i + 2] if X[o, i + 2] > m2 else m2
        m3 = X[o, i + 3] if X[o, i + 3] > m3 else m3
        m4 = X[o, i + 4] if X[o, i + 4] > m4 else m4
        m5 = X[o, i + 5] if X[o, i + 5] > m5 else m5
        m6 = X[o, i + 6] if X[o, i + 6] > m6 else m6
        m7 = X[o, i + 7] if X[o, i + 7] > m7 else m7
    m0 = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for i in range(n - n % 8, n):
        m0 = X[o, i] if X[o, i] > m0 else m0
    return m0


@njit(**_JIT)
def softmax_last(x, out, d, log):
    """softmax (log_softmax) along the last dim, of size d, shifted by the max; sums in
    float64. As PyTorch, a row whose max is not finite (inf, -inf everywhere, nan) gives
    nan. ``out`` keeps exp(x - max) (exact in x's dtype but for subnormals), and each
    step is one pass over all rows: each pass is a short loop that vectorises, and fused
    they do not. (Other dims: softmax_fwd, a kernel of its own that compiles only when
    used.)"""
    outer = x.size // d if d else 0
    X = x.reshape((outer, d))
    Y = out.reshape((outer, d))
    M = np.empty(outer, x.dtype)
    for o in range(outer):
        M[o] = _rowmax(X, o)
    for o in range(outer):
        m = M[o]
        for j in range(d):
            Y[o, j] = vexp_t(X[o, j] - m)
    for o in range(outer):
        s = _row_sum(Y, o)
        if log:
            m = M[o]
            ls = math.log(s)
            for j in range(d):
                Y[o, j] = (X[o, j] - m) - ls
        else:
            r = 1.0 / s
            for j in range(d):
                Y[o, j] = Y[o, j] * r


@njit(**_JIT)
def softmax_fwd(x, out, d, inner, log):
    """softmax (log_softmax) along a dim of size d with ``inner`` elements after it, as
    softmax_last."""
    n = x.size
    outer = n // (d * inner) if d * inner else 0
    for o in range(outer):
        for i in range(inner):
            base = o * d * inner + i
            m = _nanmax(x, base, base + d * inner, inner)
            s = 0.0
            for j in range(d):
                z = x[base + j * inner] - m
                s += vexp_t(z)
            ls = math.log(s)
            for j in range(d):
                e = base + j * inner
                z = x[e] - m
                out[e] = z - ls if log else vexp_t(z) / s


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


@njit(**_JIT)
def argext_fwd(x, pos, d, inner, largest, along):
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
            pos[o * inner + i] = bj if along else base + bj * inner


@njit(**_SUB)
def _before(a, b, desc):
    """a sorts before b (NaN counts as the largest value, as PyTorch's sort)."""
    if desc:
        return (a != a and b == b) or a > b
    return (b != b and a == a) or a < b


@njit(**_JIT)
def sort_fwd(x, pos, d, inner, desc, k):
    """pos = flat positions in x of the first k elements of each lane along a dim of
    size d (inner elements after it), sorted ascending or descending, ties in their
    order (a stable bottom-up merge sort: the same positions eager and replayed)."""
    outer = x.size // (d * inner) if d * inner else 0
    idx = np.empty(d, np.int64)
    tmp = np.empty(d, np.int64)
    key = np.empty(d, x.dtype)
    for o in range(outer):
        for i in range(inner):
            base = o * d * inner + i
            for j in range(d):
                idx[j] = j
                key[j] = x[base + j * inner]
            width = 1
            while width < d:
                for lo in range(0, d, 2 * width):
                    mid = min(lo + width, d)
                    hi = min(lo + 2 * width, d)
                    a, b, t = lo, mid, lo
                    while a < mid and b < hi:
                        if _before(key[idx[b]], key[idx[a]], desc):
                            tmp[t] = idx[b]
                            b += 1
                        else:
                            tmp[t] = idx[a]
                            a += 1
                        t += 1
                    while a < mid:
                        tmp[t] = idx[a]
                        a += 1
                        t += 1
                    while b < hi:
                        tmp[t] = idx[b]
                        b += 1
                        t += 1
                for j in range(d):
                    idx[j] = tmp[j]
                width *= 2
            for j in range(k):
                pos[(o * k + j) * inner + i] = base + idx[j] * inner


@njit(**_JIT)
def gather_strided(VD, o, src, off, st, out):
    """out[i] = src[off + sum(i_k * st[k])] over row o's index space (a strided view)."""
    _walk(_shape(VD, o), st, off, src, out, 0)


_safe_caches(globals())
