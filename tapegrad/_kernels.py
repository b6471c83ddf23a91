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
# IEEE semantics (x / 0 is inf or nan, as in PyTorch), not Python's ZeroDivisionError.
_JIT = {"cache": _CACHE, "error_model": "numpy"}

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

# Kernel opcodes. Ranges matter: broadcasting binary ops are K_ADD..K_WHERE,
# elementwise ops of one tensor K_AFFINE..K_CLAMP (and K_SIGN).
K_LEAF = 0
K_EXT = 1         # a non-leaf of an older tape: its adjoint is handed on
K_ADD = 2
K_SUB = 3
K_MUL = 4
K_DIV = 5
K_POW = 6
K_MAXIMUM = 7     # ties split the gradient in half, as PyTorch does
K_MINIMUM = 8
K_WHERE = 9       # SO: the condition, uint8, broadcast to the output's shape
K_AFFINE = 10     # x * F0 + F1
K_DIVS = 11       # x / F0
K_POWS = 12       # x ** F0
K_RPOWS = 13      # F0 ** x
K_RDIVS = 14      # F0 / x
K_EXP = 15
K_LOG = 16
K_SQRT = 17
K_TANH = 18
K_SIGMOID = 19
K_RELU = 20
K_ABS = 21
K_SIN = 22
K_COS = 23
K_TAN = 24
K_LOG1P = 25
K_EXPM1 = 26
K_RECIP = 27
K_CLAMP = 28      # gradient passes where F0 <= x <= F1 (P0 bit 1: F0 set, bit 2: F1 set)
K_SIGN = 44       # zero gradient
K_LINEAR = 45     # x @ W.T + b, inputs L[P0:P0+P1]; its backward runs in Python (MATMUL)
K_SUM = 29        # sum over the dims in bitmask P0, times F0
K_COPY = 30       # reshape, view, clone: same elements in the same order
K_STRIDED = 31    # transpose, expand, basic indexing: out[i] = x[P0 + sum(i_k * P[1+k])]
K_MATMUL = 32     # (..., m, k) @ (..., k, n); its backward runs in Python (MATMUL)
K_CAST = 33       # dtype conversion between float32 and float64
K_AMAX = 34       # max/min over the dims in bitmask P0; ties share the gradient evenly
K_GATHER = 35     # out[i] = x[idx[i]], idx (int64) at SB
K_SCATTER = 36    # out = zeros; out[idx[j]] += x[j], idx at SB
K_SETIDX = 37     # out = x; out[idx[j]] = v[j] (B = v), idx at SO
K_SOFTMAX = 38    # along a dim of size P0 with P1 elements after it
K_LOGSOFTMAX = 39
K_CAT = 40        # inputs: L[P0:P0+P1]; P2 elements after the dim, P3 before it
K_PYFN = 41       # a user Function: Python runs its backward (inputs: L[P0:P0+P1])
K_PYOUT = 42      # a further output of the Function at row P2
K_PROD = 43       # product over the dims in bitmask P0 (zeros handled exactly)
NKERNELS = 46

# Replay results.
DONE = 0
PAUSED = 1
ERR_FREED = 2
ERR_DIRTY = 3
SWITCH = 4      # the next row to replay holds the other dtype
CAST = 5        # a dtype conversion: Python moves the adjoint between arenas
PYFN = 6        # a user Function: Python runs its backward
ERR_NAN = 7     # anomaly mode: the row produced a NaN gradient
MATMUL = 8      # a matrix product: Python runs it with NumPy, so that one BLAS (and
#                 one thread pool) serves forward and backward


@intrinsic
def _ptr(typingctx, addr, like):
    """Turns an integer address into a pointer of ``like``'s dtype."""
    ptrty = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptrty))

    return ptrty(types.int64, like), codegen


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
    if fresh:
        adj[i] = v
    else:
        adj[i] += v


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


@njit(**_JIT)
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
    if k == K_WHERE:
        c = carray(_ptr(T[r, SO], seen), n)
        if _wants(T, a):
            ao, fa = _into(adj, T, seen, a, ma)
            for i in range(n):
                _put(adj, ao + _j(ma, i, ia), adj[go + i] if c[i] else 0.0, fa)
        if _wants(T, b):
            bo, fb = _into(adj, T, seen, b, mb)
            for i in range(n):
                _put(adj, bo + _j(mb, i, ib), 0.0 if c[i] else adj[go + i], fb)
        return
    va = _load(T, r, SA, T[a, N], adj)
    vb = _load(T, r, SB, T[b, N], adj)
    if k == K_MAXIMUM or k == K_MINIMUM:
        sg = 1.0 if k == K_MAXIMUM else -1.0
        if _wants(T, a):
            ao, fa = _into(adj, T, seen, a, ma)
            for i in range(n):
                d = sg * (va[_j(ma, i, ia)] - vb[_j(mb, i, ib)])
                _put(adj, ao + _j(ma, i, ia),
                     adj[go + i] if d > 0 else 0.5 * adj[go + i] if d == 0 else 0.0, fa)
        if _wants(T, b):
            bo, fb = _into(adj, T, seen, b, mb)
            for i in range(n):
                d = sg * (vb[_j(mb, i, ib)] - va[_j(ma, i, ia)])
                _put(adj, bo + _j(mb, i, ib),
                     adj[go + i] if d > 0 else 0.5 * adj[go + i] if d == 0 else 0.0, fb)
    elif k == K_MUL:
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


@njit(**_JIT)
def _unary(k, T, r, f0, f1, adj, seen):
    """Vector-Jacobian product of an elementwise op of one tensor (f0: its scalar)."""
    n = T[r, N]
    go = T[r, AOFF]
    ao, fr = _dst(adj, T, seen, T[r, A])
    if k == K_AFFINE or k == K_DIVS or k == K_SIGN:
        c = f0 if k == K_AFFINE else 1.0 / f0 if k == K_DIVS else 0.0
        for i in range(n):
            _put(adj, ao + i, adj[go + i] * c, fr)
        return
    if k == K_EXP or k == K_TANH or k == K_SIGMOID or k == K_SQRT or k == K_RELU \
            or k == K_RPOWS or k == K_RDIVS or k == K_TAN or k == K_EXPM1 or k == K_RECIP:
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
        elif k == K_TAN:
            for i in range(n):
                _put(adj, ao + i, adj[go + i] * (1.0 + o[i] * o[i]), fr)
        elif k == K_EXPM1:
            for i in range(n):
                _put(adj, ao + i, adj[go + i] * (o[i] + 1.0), fr)
        elif k == K_RECIP:
            for i in range(n):
                _put(adj, ao + i, -adj[go + i] * o[i] * o[i], fr)
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
    elif k == K_SIN:
        for i in range(n):
            _put(adj, ao + i, adj[go + i] * np.cos(x[i]), fr)
    elif k == K_COS:
        for i in range(n):
            _put(adj, ao + i, -adj[go + i] * np.sin(x[i]), fr)
    elif k == K_LOG1P:
        for i in range(n):
            _put(adj, ao + i, adj[go + i] / (1.0 + x[i]), fr)
    elif k == K_CLAMP:
        lo, hi, has = f0, f1, T[r, P0]
        for i in range(n):
            ok = (not (has & 1) or x[i] >= lo) and (not (has & 2) or x[i] <= hi)
            _put(adj, ao + i, adj[go + i] if ok else 0.0, fr)
    else:  # K_POWS
        p = f0
        for i in range(n):
            d = 0.0 if p == 0.0 else p * x[i] ** (p - 1.0)
            _put(adj, ao + i, adj[go + i] * d, fr)


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
    st = np.zeros(MAXD, np.int64)
    for k in range(T[r, ND]):
        st[k] = T[r, P0 + 1 + k]
    idx = _odometer(T, r, st, ao + T[r, P0], T[r, N])
    for i in range(T[r, N]):
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
    return _odometer(T, a, st, 0, T[a, N])


@njit(**_JIT)
def _amax(T, r, adj, seen):
    """Backward of max/min over dims: the gradient is shared evenly by tied elements."""
    a = T[r, A]
    n = T[a, N]
    go = T[r, AOFF]
    x = _load(T, r, SA, n, adj)
    o = _load(T, r, SO, T[r, N], adj)
    idx = _reduced_index(T, a, T[r, P0])
    cnt = np.zeros(T[r, N], np.int64)
    for i in range(n):
        if x[i] == o[idx[i]]:
            cnt[idx[i]] += 1
    ao, fr = _dst(adj, T, seen, a)
    for i in range(n):
        j = idx[i]
        _put(adj, ao + i, adj[go + j] / cnt[j] if x[i] == o[j] else 0.0, fr)


@njit(**_JIT)
def _prod(T, r, adj, seen):
    """Backward of a product over dims: g * (product of the other elements), computed
    from per-group zero counts so that zeros get their exact gradient."""
    a = T[r, A]
    n = T[a, N]
    m = T[r, N]
    go = T[r, AOFF]
    x = _load(T, r, SA, n, adj)
    idx = _reduced_index(T, a, T[r, P0])
    zeros = np.zeros(m, np.int64)
    nz = np.ones(m, np.float64)
    for i in range(n):
        if x[i] == 0:
            zeros[idx[i]] += 1
        else:
            nz[idx[i]] *= x[i]
    ao, fr = _dst(adj, T, seen, a)
    for i in range(n):
        j = idx[i]
        if zeros[j] == 0:
            v = adj[go + j] * nz[j] / x[i]
        elif zeros[j] == 1 and x[i] == 0:
            v = adj[go + j] * nz[j]
        else:
            v = 0.0
        _put(adj, ao + i, v, fr)


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
                    v = adj[go + e] - np.exp(y[e]) * s
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


@njit(**_JIT)
def _has_nan(adj, T, r):
    if r < 0 or (T[r, FL] & REQ) == 0:
        return False
    off = T[r, AOFF]
    for i in range(T[r, N]):
        if adj[off + i] != adj[off + i]:
            return True
    return False


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


@njit(**_JIT)
def reverse(T, F, L, adj, seen, start, resume, freeing, dtflag, anomaly):
    """Replays rows start..0 in reverse, accumulating adjoints into ``adj``.

    ``adj`` is the arena of one dtype (``dtflag``: F64 or 0); Numba compiles one
    specialization per dtype, only when a program of that dtype first runs. Only rows
    already reached (``seen``) are visited. Returns (status, row): DONE; PAUSED at a
    row with hooks (call again with resume=True from that row); SWITCH, CAST or PYFN
    at a row that needs Python; ERR_NAN (anomaly mode) after a row that produced a
    NaN; or an error at a freed or modified row.
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
        if k == K_PYOUT:
            _touch(adj, T, seen, T[r, P0 + 2])   # so that the Function's row runs
            continue
        if k == K_LEAF or k == K_EXT:
            continue
        if fl & FREED:
            return ERR_FREED, r
        if fl & DIRTY:
            return ERR_DIRTY, r
        if k <= K_WHERE:
            _binary(k, T, r, adj, seen, noidx)
        elif k <= K_CLAMP or k == K_SIGN:
            _unary(k, T, r, F[r, 0], F[r, 1], adj, seen)
        elif k == K_SUM:
            _sum(T, r, F[r, 0], adj, seen)
        elif k == K_COPY:
            go = T[r, AOFF]
            ao, fr = _dst(adj, T, seen, T[r, A])
            for i in range(T[r, N]):
                _put(adj, ao + i, adj[go + i], fr)
        elif k == K_STRIDED:
            _strided(T, r, adj, seen)
        elif k == K_MATMUL or k == K_LINEAR:
            return MATMUL, r
        elif k == K_AMAX:
            _amax(T, r, adj, seen)
        elif k == K_PROD:
            _prod(T, r, adj, seen)
        elif k == K_GATHER or k == K_SCATTER or k == K_SETIDX:
            _indexed(k, T, r, adj, seen, noidx)
        elif k == K_SOFTMAX or k == K_LOGSOFTMAX:
            _softmax(k, T, r, adj, seen)
        elif k == K_CAT:
            _cat(T, L, r, adj, seen)
        elif k == K_CAST:
            return CAST, r
        elif k == K_PYFN:
            return PYFN, r
        else:
            raise ValueError("tapegrad: unknown kernel opcode", k)
        if freeing and fl & SAVES:
            T[r, FL] = fl | FREED
        if anomaly:
            if _has_nan(adj, T, T[r, A]) or _has_nan(adj, T, T[r, B]):
                return ERR_NAN, r
            if k == K_CAT:
                for q in range(T[r, P0 + 1]):
                    if _has_nan(adj, T, L[T[r, P0] + q]):
                        return ERR_NAN, r
    return DONE, -1
