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
SWITCH = 4      # the next row to replay holds the other dtype
CAST = 5        # a dtype conversion: Python moves the adjoint between arenas


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
def _touch(adj, T, seen, r):
    """Offset of row r's adjoint in the arena, zero-filled on its first contribution."""
    off = T[r, AOFF]
    if seen[r] == 0:
        seen[r] = 1
        for i in range(T[r, N]):
            adj[off + i] = 0
    return off


@njit(cache=_CACHE, inline="always")
def _dst(adj, T, seen, r):
    """Offset of row r's adjoint for a one-to-one contribution, and whether it is the
    first one (which then overwrites: no zero-fill pass)."""
    if seen[r] == 0:
        seen[r] = 1
        return T[r, AOFF], True
    return T[r, AOFF], False


@njit(cache=_CACHE, inline="always")
def _put(adj, i, v, fresh):
    if fresh:
        adj[i] = v
    else:
        adj[i] += v


@njit(cache=_CACHE, inline="always")
def _j(mode, i, idx):
    if mode == 0:
        return i
    if mode == 1:
        return 0
    return idx[i]


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
def _mode(T, o, a, noidx):
    """How row a's elements line up with row o's: same (0), scalar (1) or mapped (2),
    with the map from o's flat index to a's for mode 2."""
    if T[a, N] == 1:
        return 1, noidx
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
    return 2, _odometer(T, o, st, 0, T[o, N])


@njit(cache=_CACHE, inline="always")
def _wants(T, r):
    return r >= 0 and (T[r, FL] & REQ) != 0


@njit(cache=_CACHE, inline="always")
def _into(adj, T, seen, r, mode):
    """Like _dst for a contribution that lines up with r's elements one-to-one (mode 0);
    a broadcast one (several elements into one) accumulates into zeros."""
    if mode == 0:
        return _dst(adj, T, seen, r)
    return _touch(adj, T, seen, r), False


@njit(cache=_CACHE)
def _binary(k, T, r, adj, seen, noidx):
    """Vector-Jacobian product of a broadcasting binary op."""
    a = T[r, A]
    b = T[r, B]
    n = T[r, N]
    go = T[r, AOFF]
    ma, ia = _mode(T, r, a, noidx)
    mb, ib = _mode(T, r, b, noidx)
    if k == K_ADD or k == K_SUB:
        if _wants(T, a):
            ao, fa = _into(adj, T, seen, a, ma)
            for i in range(n):
                _put(adj, ao + _j(ma, i, ia), adj[go + i], fa)
        if _wants(T, b):
            bo, fb = _into(adj, T, seen, b, mb)
            sg = 1.0 if k == K_ADD else -1.0
            for i in range(n):
                _put(adj, bo + _j(mb, i, ib), sg * adj[go + i], fb)
        return
    va = _load(T, r, SA, T[a, N], adj)
    vb = _load(T, r, SB, T[b, N], adj)
    if k == K_MUL:
        if _wants(T, a):
            ao, fa = _into(adj, T, seen, a, ma)
            for i in range(n):
                _put(adj, ao + _j(ma, i, ia), adj[go + i] * vb[_j(mb, i, ib)], fa)
        if _wants(T, b):
            bo, fb = _into(adj, T, seen, b, mb)
            for i in range(n):
                _put(adj, bo + _j(mb, i, ib), adj[go + i] * va[_j(ma, i, ia)], fb)
    elif k == K_DIV:
        if _wants(T, a):
            ao, fa = _into(adj, T, seen, a, ma)
            for i in range(n):
                _put(adj, ao + _j(ma, i, ia), adj[go + i] / vb[_j(mb, i, ib)], fa)
        if _wants(T, b):
            bo, fb = _into(adj, T, seen, b, mb)
            for i in range(n):
                y = vb[_j(mb, i, ib)]
                _put(adj, bo + _j(mb, i, ib), -(adj[go + i] * va[_j(ma, i, ia)] / (y * y)), fb)
    else:  # K_POW
        if _wants(T, a):
            ao, fa = _into(adj, T, seen, a, ma)
            for i in range(n):
                x = va[_j(ma, i, ia)]
                y = vb[_j(mb, i, ib)]
                d = 0.0 if y == 0.0 else y * x ** (y - 1.0)
                _put(adj, ao + _j(ma, i, ia), adj[go + i] * d, fa)
        if _wants(T, b):
            bo, fb = _into(adj, T, seen, b, mb)
            for i in range(n):
                x = va[_j(ma, i, ia)]
                y = vb[_j(mb, i, ib)]
                d = 0.0 if (x == 0.0 and y >= 0.0) else x ** y * np.log(x)
                _put(adj, bo + _j(mb, i, ib), adj[go + i] * d, fb)


@njit(cache=_CACHE, inline="always")
def _unary(k, T, r, f0, adj, seen):
    """Vector-Jacobian product of an elementwise op of one tensor (f0: its scalar)."""
    n = T[r, N]
    go = T[r, AOFF]
    ao, fr = _dst(adj, T, seen, T[r, A])
    if k == K_AFFINE or k == K_DIVS:
        c = f0 if k == K_AFFINE else 1.0 / f0
        for i in range(n):
            _put(adj, ao + i, adj[go + i] * c, fr)
        return
    if k == K_EXP or k == K_TANH or k == K_SIGMOID or k == K_SQRT or k == K_RELU \
            or k == K_RPOWS or k == K_RDIVS:
        o = _load(T, r, SO, n, adj)
        if k == K_EXP:
            for i in range(n):
                _put(adj, ao + i, adj[go + i] * o[i], fr)
        elif k == K_TANH:
            for i in range(n):
                _put(adj, ao + i, adj[go + i] * (1.0 - o[i] * o[i]), fr)
        elif k == K_SIGMOID:
            for i in range(n):
                _put(adj, ao + i, adj[go + i] * o[i] * (1.0 - o[i]), fr)
        elif k == K_SQRT:
            for i in range(n):
                _put(adj, ao + i, adj[go + i] / (2.0 * o[i]), fr)
        elif k == K_RELU:
            for i in range(n):
                _put(adj, ao + i, adj[go + i] if o[i] > 0 else 0.0, fr)
        elif k == K_RPOWS:
            c = np.log(f0)
            for i in range(n):
                _put(adj, ao + i, adj[go + i] * o[i] * c, fr)
        else:  # K_RDIVS: d(c/x) = -(c/x)/x
            x = _load(T, r, SA, n, adj)
            for i in range(n):
                _put(adj, ao + i, -(adj[go + i] * o[i] / x[i]), fr)
        return
    x = _load(T, r, SA, n, adj)
    if k == K_LOG:
        for i in range(n):
            _put(adj, ao + i, adj[go + i] / x[i], fr)
    elif k == K_ABS:
        for i in range(n):
            v = adj[go + i]
            _put(adj, ao + i, v if x[i] > 0 else -v if x[i] < 0 else 0.0, fr)
    else:  # K_POWS
        p = f0
        for i in range(n):
            d = 0.0 if p == 0.0 else p * x[i] ** (p - 1.0)
            _put(adj, ao + i, adj[go + i] * d, fr)


@njit(cache=_CACHE)
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


@njit(cache=_CACHE)
def _strided(T, r, adj, seen):
    """Backward of a strided view: scatter-add g to the elements it was read from."""
    ao = _touch(adj, T, seen, T[r, A])
    go = T[r, AOFF]
    st = np.zeros(MAXD, np.int64)
    for k in range(T[r, ND]):
        st[k] = T[r, P0 + 1 + k]
    idx = _odometer(T, r, st, ao + T[r, P0], T[r, N])
    for i in range(T[r, N]):
        adj[idx[i]] += adj[go + i]


@njit(cache=_CACHE)
def _matmul(T, r, adj, seen):
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
    go = T[r, AOFF]
    g2 = adj[go:go + m * n].reshape((m, n))
    if _wants(T, a):
        vb = _load(T, r, SB, k * n, adj).reshape((k, n))
        fresh = seen[a] == 0
        ao = _touch(adj, T, seen, a)
        ga = adj[ao:ao + m * k].reshape((m, k))
        if fresh:
            np.dot(g2, vb.T, ga)
        else:
            ga += np.dot(g2, vb.T)
    if _wants(T, b):
        va = _load(T, r, SA, m * k, adj).reshape((m, k))
        fresh = seen[b] == 0
        bo = _touch(adj, T, seen, b)
        gb = adj[bo:bo + k * n].reshape((k, n))
        if fresh:
            np.dot(va.T, g2, gb)
        else:
            gb += np.dot(va.T, g2)


@njit(cache=_CACHE)
def reverse(T, F, adj, seen, start, resume, freeing, dtflag):
    """Replays rows start..0 in reverse, accumulating adjoints into ``adj``.

    ``adj`` is the arena of one dtype (``dtflag``: F64 or 0); Numba compiles one
    specialization per dtype, only when a program of that dtype first runs. Only rows
    already reached (``seen``) are visited. Returns (status, row): DONE; PAUSED at a
    row with hooks (call again with resume=True from that row); SWITCH or CAST at a
    row that needs the other arena; or an error at a freed or modified row.
    """
    noidx = np.empty(0, np.int64)
    for r in range(start, -1, -1):
        if seen[r] == 0:
            continue
        fl = T[r, FL]
        if (fl & F64) != dtflag:
            return SWITCH, r
        if fl & PAUSE and not (resume and r == start):
            return PAUSED, r
        k = T[r, OP]
        if k == K_LEAF or k == K_EXT:
            continue
        if fl & FREED:
            return ERR_FREED, r
        if fl & DIRTY:
            return ERR_DIRTY, r
        if k <= K_POW:
            _binary(k, T, r, adj, seen, noidx)
        elif k <= K_ABS:
            _unary(k, T, r, F[r, 0], adj, seen)
        elif k == K_SUM:
            _sum(T, r, F[r, 0], adj, seen)
        elif k == K_COPY:
            go = T[r, AOFF]
            ao, fr = _dst(adj, T, seen, T[r, A])
            for i in range(T[r, N]):
                _put(adj, ao + i, adj[go + i], fr)
        elif k == K_STRIDED:
            _strided(T, r, adj, seen)
        elif k == K_MATMUL:
            _matmul(T, r, adj, seen)
        elif k == K_CAST:
            return CAST, r
        else:
            raise ValueError("tapegrad: unknown kernel opcode", k)
        if freeing and fl & SAVES:
            T[r, FL] = fl | FREED
    return DONE, -1
