"""Every Numba kernel of tapegrad and the reverse-replay interpreter.

Everything jitted lives in this one file on purpose: Numba's cache is keyed by the
source of the file a function is defined in, so kernels, opcode constants and the
interpreter that inlines them must share a file or a stale cache can survive an edit.

The tape is an int64 row table ``T`` (one row per tensor value: leaf, constant or op
result) plus a float64 table ``F`` of scalar parameters. Values are ordinary NumPy
arrays; a row stores the addresses of the values its backward needs, and the
interpreter reads them through raw pointers, so nothing is copied into an arena.
Adjoints live in one flat arena per backward, at the row's ``AOFF``.
"""
import os

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

_CACHE = os.environ.get("TAPEGRAD_CACHE", "1") != "0"

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

# Kernel opcodes. Ranges matter: binary ops are K_ADD..K_POW, elementwise ops of
# one tensor K_AFFINE..K_ABS.
K_LEAF = 0
K_EXT = 1       # a non-leaf of an older tape: its adjoint is handed on
K_ADD = 2
K_SUB = 3
K_MUL = 4
K_DIV = 5
K_POW = 6
K_AFFINE = 7    # x * F0 + F1
K_DIVS = 8      # x / F0
K_POWS = 9      # x ** F0
K_RPOWS = 10    # F0 ** x
K_RDIVS = 11    # F0 / x
K_EXP = 12
K_LOG = 13
K_SQRT = 14
K_TANH = 15
K_SIGMOID = 16
K_RELU = 17
K_ABS = 18
K_SUM = 19      # sum over the dims in bitmask P0, times F0
K_COPY = 20     # reshape, view, clone: same elements in the same order
K_STRIDED = 21  # transpose, expand, basic indexing: out[i] = x[P0 + sum(i_k * P[1+k])]
K_MATMUL = 22   # P0: 0 = (m,k)@(k,n), 1 = (k)@(k,n), 2 = (m,k)@(k), 3 = (k)@(k)
K_CAST = 23     # dtype conversion between float32 and float64
NKERNELS = 24

# Replay results.
DONE = 0
PAUSED = 1
ERR_FREED = 2
ERR_DIRTY = 3


@intrinsic
def _ptr(typingctx, addr, like):
    """Turns an integer address into a pointer of ``like``'s dtype."""
    ptrty = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptrty))

    return ptrty(types.int64, like), codegen


@njit(cache=_CACHE)
def addr(a):
    """Address of an array's first element."""
    return a.ctypes.data


@njit(cache=_CACHE, inline="always")
def _load(T, r, col, n, like):
    return carray(_ptr(T[r, col], like), n)


@njit(cache=_CACHE, inline="always")
def _adj(adj, T, r):
    off = T[r, AOFF]
    return adj[off:off + T[r, N]]


@njit(cache=_CACHE)
def _touch(adj, T, seen, r):
    """The adjoint of row r, zero-filled on its first contribution."""
    g = _adj(adj, T, r)
    if seen[r] == 0:
        g[:] = 0
        seen[r] = 1
    return g


@njit(cache=_CACHE, inline="always")
def _j(mode, i, idx):
    if mode == 0:
        return i
    if mode == 1:
        return 0
    return idx[i]


@njit(cache=_CACHE)
def _bcast_index(T, o, a):
    """For each element of row o, the flat index of row a's element broadcast to it."""
    nd = T[o, ND]
    na = T[a, ND]
    n = T[o, N]
    st = np.zeros(MAXD, np.int64)
    s = 1
    for k in range(na - 1, -1, -1):
        d = nd - na + k
        if T[a, S0 + k] != 1:
            st[d] = s
        s *= T[a, S0 + k]
    return _odometer(T, o, st, 0, n)


@njit(cache=_CACHE)
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


@njit(cache=_CACHE)
def _mode(T, o, a):
    """How row a's elements line up with row o's: same (0), scalar (1) or mapped (2)."""
    if T[a, N] == 1:
        return 1, np.empty(0, np.int64)
    if T[a, ND] == T[o, ND]:
        same = True
        for k in range(T[o, ND]):
            if T[a, S0 + k] != T[o, S0 + k]:
                same = False
        if same:
            return 0, np.empty(0, np.int64)
    return 2, _bcast_index(T, o, a)


@njit(cache=_CACHE, inline="always")
def _wants(T, r):
    return r >= 0 and (T[r, FL] & REQ) != 0


@njit(cache=_CACHE)
def _binary(k, T, r, g, adj, seen):
    """Vector-Jacobian product of a broadcasting binary op."""
    a = T[r, A]
    b = T[r, B]
    n = T[r, N]
    ma, ia = _mode(T, r, a)
    mb, ib = _mode(T, r, b)
    if k == K_ADD or k == K_SUB:
        if _wants(T, a):
            ga = _touch(adj, T, seen, a)
            for i in range(n):
                ga[_j(ma, i, ia)] += g[i]
        if _wants(T, b):
            gb = _touch(adj, T, seen, b)
            if k == K_ADD:
                for i in range(n):
                    gb[_j(mb, i, ib)] += g[i]
            else:
                for i in range(n):
                    gb[_j(mb, i, ib)] -= g[i]
        return
    va = _load(T, r, SA, T[a, N], g)
    vb = _load(T, r, SB, T[b, N], g)
    if k == K_MUL:
        if _wants(T, a):
            ga = _touch(adj, T, seen, a)
            for i in range(n):
                ga[_j(ma, i, ia)] += g[i] * vb[_j(mb, i, ib)]
        if _wants(T, b):
            gb = _touch(adj, T, seen, b)
            for i in range(n):
                gb[_j(mb, i, ib)] += g[i] * va[_j(ma, i, ia)]
    elif k == K_DIV:
        if _wants(T, a):
            ga = _touch(adj, T, seen, a)
            for i in range(n):
                ga[_j(ma, i, ia)] += g[i] / vb[_j(mb, i, ib)]
        if _wants(T, b):
            gb = _touch(adj, T, seen, b)
            for i in range(n):
                y = vb[_j(mb, i, ib)]
                gb[_j(mb, i, ib)] -= g[i] * va[_j(ma, i, ia)] / (y * y)
    else:  # K_POW
        if _wants(T, a):
            ga = _touch(adj, T, seen, a)
            for i in range(n):
                x = va[_j(ma, i, ia)]
                y = vb[_j(mb, i, ib)]
                d = 0.0 if y == 0.0 else y * x ** (y - 1.0)
                ga[_j(ma, i, ia)] += g[i] * d
        if _wants(T, b):
            gb = _touch(adj, T, seen, b)
            for i in range(n):
                x = va[_j(ma, i, ia)]
                y = vb[_j(mb, i, ib)]
                d = 0.0 if (x == 0.0 and y >= 0.0) else x ** y * np.log(x)
                gb[_j(mb, i, ib)] += g[i] * d


@njit(cache=_CACHE)
def _unary(k, T, r, f0, g, adj, seen):
    """Vector-Jacobian product of an elementwise op of one tensor (f0: its scalar)."""
    a = T[r, A]
    n = T[r, N]
    ga = _touch(adj, T, seen, a)
    if k == K_AFFINE or k == K_DIVS:
        c = f0 if k == K_AFFINE else 1.0 / f0
        for i in range(n):
            ga[i] += g[i] * c
        return
    if k == K_EXP or k == K_TANH or k == K_SIGMOID or k == K_SQRT or k == K_RELU \
            or k == K_RPOWS or k == K_RDIVS:
        o = _load(T, r, SO, n, g)
        if k == K_EXP:
            for i in range(n):
                ga[i] += g[i] * o[i]
        elif k == K_TANH:
            for i in range(n):
                ga[i] += g[i] * (1.0 - o[i] * o[i])
        elif k == K_SIGMOID:
            for i in range(n):
                ga[i] += g[i] * o[i] * (1.0 - o[i])
        elif k == K_SQRT:
            for i in range(n):
                ga[i] += g[i] / (2.0 * o[i])
        elif k == K_RELU:
            for i in range(n):
                if o[i] > 0:
                    ga[i] += g[i]
        elif k == K_RPOWS:
            c = np.log(f0)
            for i in range(n):
                ga[i] += g[i] * o[i] * c
        else:  # K_RDIVS: d(c/x) = -(c/x)/x
            x = _load(T, r, SA, n, g)
            for i in range(n):
                ga[i] -= g[i] * o[i] / x[i]
        return
    x = _load(T, r, SA, n, g)
    if k == K_LOG:
        for i in range(n):
            ga[i] += g[i] / x[i]
    elif k == K_ABS:
        for i in range(n):
            if x[i] > 0:
                ga[i] += g[i]
            elif x[i] < 0:
                ga[i] -= g[i]
    else:  # K_POWS
        p = f0
        if p == 0.0:
            return
        for i in range(n):
            ga[i] += g[i] * p * x[i] ** (p - 1.0)


@njit(cache=_CACHE)
def _sum(T, r, f0, g, adj, seen):
    """Backward of a sum over the dims in bitmask P0: broadcast g back, times f0."""
    a = T[r, A]
    n = T[a, N]
    ga = _touch(adj, T, seen, a)
    if T[r, N] == 1:
        v = g[0] * f0
        for i in range(n):
            ga[i] += v
        return
    mask = T[r, P0]
    st = np.zeros(MAXD, np.int64)
    s = 1
    for k in range(T[a, ND] - 1, -1, -1):
        if (mask >> k) & 1 == 0:
            st[k] = s
            s *= T[a, S0 + k]
    idx = _odometer(T, a, st, 0, n)
    for i in range(n):
        ga[i] += g[idx[i]] * f0


@njit(cache=_CACHE)
def _strided(T, r, g, adj, seen):
    """Backward of a strided view: scatter-add g to the elements it was read from."""
    a = T[r, A]
    ga = _touch(adj, T, seen, a)
    st = np.zeros(MAXD, np.int64)
    for k in range(T[r, ND]):
        st[k] = T[r, P0 + 1 + k]
    idx = _odometer(T, r, st, T[r, P0], T[r, N])
    for i in range(T[r, N]):
        ga[idx[i]] += g[i]


@njit(cache=_CACHE)
def _matmul(T, r, g, adj, seen):
    """Backward of a 1-D/2-D matrix product: dA = g @ B.T, dB = A.T @ g."""
    a = T[r, A]
    b = T[r, B]
    mode = T[r, P0]
    if mode == 0:
        m, k, n = T[a, S0], T[a, S0 + 1], T[b, S0 + 1]
    elif mode == 1:
        m, k, n = 1, T[a, S0], T[b, S0 + 1]
    elif mode == 2:
        m, k, n = T[a, S0], T[a, S0 + 1], 1
    else:
        m, k, n = 1, T[a, S0], 1
    g2 = g.reshape((m, n))
    if _wants(T, a):
        vb = _load(T, r, SB, k * n, g).reshape((k, n))
        fresh = seen[a] == 0
        ga = _touch(adj, T, seen, a).reshape((m, k))
        if fresh:
            np.dot(g2, vb.T, ga)
        else:
            ga += np.dot(g2, vb.T)
    if _wants(T, b):
        va = _load(T, r, SA, m * k, g).reshape((m, k))
        fresh = seen[b] == 0
        gb = _touch(adj, T, seen, b).reshape((k, n))
        if fresh:
            np.dot(va.T, g2, gb)
        else:
            gb += np.dot(va.T, g2)


@njit(cache=_CACHE)
def _step(k, T, F, r, adj, other, seen):
    """Backward of row r, whose adjoint lives in ``adj`` (``other``: the other dtype)."""
    g = _adj(adj, T, r)
    if k <= K_POW:
        _binary(k, T, r, g, adj, seen)
    elif k <= K_ABS:
        _unary(k, T, r, F[r, 0], g, adj, seen)
    elif k == K_SUM:
        _sum(T, r, F[r, 0], g, adj, seen)
    elif k == K_COPY:
        ga = _touch(adj, T, seen, T[r, A])
        ga += g
    elif k == K_STRIDED:
        _strided(T, r, g, adj, seen)
    elif k == K_MATMUL:
        _matmul(T, r, g, adj, seen)
    elif k == K_CAST:
        ga = _touch(other, T, seen, T[r, A])
        for i in range(g.shape[0]):
            ga[i] += g[i]
    else:
        raise ValueError("tapegrad: unknown kernel opcode", k)


@njit(cache=_CACHE)
def reverse(T, F, adj32, adj64, seen, start, resume, freeing):
    """Replays rows start..0 in reverse, accumulating adjoints into the arenas.

    Only rows already reached (``seen``) are visited. Returns (status, row):
    DONE, PAUSED at a row with hooks (call again with resume=True from that row),
    or an error at the row that was freed or modified in place.
    """
    for r in range(start, -1, -1):
        if seen[r] == 0:
            continue
        fl = T[r, FL]
        if fl & PAUSE and not (resume and r == start):
            return PAUSED, r
        k = T[r, OP]
        if k == K_LEAF or k == K_EXT:
            continue
        if fl & FREED:
            return ERR_FREED, r
        if fl & DIRTY:
            return ERR_DIRTY, r
        if fl & F64:
            _step(k, T, F, r, adj64, adj32, seen)
        else:
            _step(k, T, F, r, adj32, adj64, seen)
        if freeing and fl & SAVES:
            T[r, FL] = fl | FREED
    return DONE, -1
