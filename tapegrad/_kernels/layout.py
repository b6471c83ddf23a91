"""The layout shared by every kernel: tape row columns and flags, opcodes, replay
statuses, and the small helpers that read rows, saved values and adjoints.
"""

import numpy as np
from llvmlite import ir
from numba import carray, config, njit, types
from numba.extending import intrinsic

from .cache import _INL, _JIT, _SUB, _safe_caches


# Row-table columns, ordered so that recording writes one contiguous slice.
OP = 0      # kernel opcode (K_* below)
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
ALIAS = 256   # a program's reshape whose adjoint is its input's (same offset): the
              # replay marks the input reached and runs no kernel

# Kernel opcodes, numbered by their place in this table. Each family is contiguous, so
# that kernels tell an op's family by a range (BINARY_FIRST..BINARY_LAST,
# UNARY_FIRST..UNARY_LAST): add an op inside its family.
(K_LEAF,
 K_EXT,          # a non-leaf of an older tape: its adjoint is handed on
 # broadcasting binary ops
 K_ADD, K_SUB, K_MUL, K_DIV, K_POW,
 K_MAXIMUM,      # ties split the gradient in half, as PyTorch does
 K_MINIMUM,
 K_FMOD,         # C's fmod (the sign of x), exact
 K_REMAINDER,    # Python's % (the sign of y), as PyTorch's: fmod, plus y across a sign
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
 K_ATAN, K_ASIN, K_ACOS, K_SINH, K_COSH, K_ASINH, K_ACOSH, K_ATANH,
 K_FLOOR, K_CEIL, K_ROUND, K_TRUNC,     # zero gradient; ROUND: half to even
 # the rest
 K_LINEAR,       # x @ W.T + b, inputs L[P0:P0+P1]
 K_SUM,          # sum over the dims in bitmask P0, times F0
 K_COPY,         # reshape, view, clone: same elements in the same order
 K_STRIDED,      # transpose, expand, basic indexing: out[i] = x[P0 + sum(i_k * P[1+k])]
 K_MATMUL,       # (..., m, k) @ (..., k, n), mode P0 (see matmul_dims; 4: batched)
 K_CAST,         # dtype conversion between float32 and float64
 K_AMAX,         # max/min over the dims in bitmask P0; ties share the gradient evenly
 K_GATHER,       # out[i] = x[idx[i]], idx (int64) at SB; idx[i] = x's size reads F0
 K_SCATTER,      # out = zeros; out[idx[j]] += x[j], idx at SB
 K_SETIDX,       # out = x; out[idx[j]] = v[j] (B = v), idx at SO
 K_SOFTMAX,      # along a dim of size P0 with P1 elements after it
 K_LOGSOFTMAX,
 K_CAT,          # inputs: L[P0:P0+P1]; P2 elements after the dim, P3 before it
 K_PYFN,         # a user Function: Python runs its backward (inputs: L[P0:P0+P1])
 K_PYOUT,        # a further output of the Function at row P2
 K_PROD,         # product over the dims in bitmask P0 (zeros handled exactly)
 K_LAYERNORM,    # rows of the last P2 elements normalised, eps F0; inputs L[P0:P0+P1]: x,
 #                 then the weight if P3 bit 1, the bias if P3 bit 2
 K_BATCHNORM,    # channels of (N, P2, P3) normalised by batch statistics, eps F0; inputs
 #                 as K_LAYERNORM's, flags in P4
 NKERNELS) = range(64)
BINARY_FIRST, BINARY_LAST = K_ADD, K_REMAINDER
# Opcodes whose inputs are the list L[P0:P0+P1], not A and B.
LISTED = (K_LINEAR, K_CAT, K_PYFN, K_LAYERNORM, K_BATCHNORM)
UNARY_FIRST, UNARY_LAST = K_AFFINE, K_TRUNC

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
    """Turns an integer address into a pointer to ``like``: a NumPy scalar type
    (``np.int64``), a value of one, or an array, whose dtype it takes."""
    ptrty = types.CPointer(like.dtype if isinstance(like, types.Array) else
                           like if isinstance(like, types.Number) else like.instance_type)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptrty))

    return ptrty(types.int64, like), codegen


@intrinsic
def _as(typingctx, like, v):
    """v converted to the type of the number ``like``, so that arithmetic with it stays
    in that dtype."""
    def codegen(context, builder, signature, args):
        return context.cast(builder, args[1], signature.args[1], signature.args[0])

    return like(like, v), codegen


@intrinsic
def _var(typingctx, x):
    """``x`` typed as a variable: a constant argument (True, 0) makes Numba compile the
    callee once more, for that constant."""
    ty = types.unliteral(x)

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[0], sig.args[0], ty)

    return ty(x), codegen


@njit(**_JIT)
def addr(a):
    """Address of an array's first element."""
    return a.ctypes.data


@njit(**_INL)
def _load(T, r, col, n, like):
    """The n values (of the dtype of ``like``) at the address in T[r, col]; inlined, as
    a call with a constant column would compile once per column."""
    return carray(_ptr(T[r, col], like), n)


@njit(**_SUB)
def _touch(adj, T, seen, r):
    """Offset of row r's adjoint in the arena, zero-filled on its first contribution."""
    off = T[r, AOFF]
    if seen[r] == 0:
        seen[r] = 1
        d = adj[off:off + T[r, N]]
        for i in range(d.size):
            d[i] = 0
    return off


@njit(**_SUB)
def _dst(adj, T, seen, r):
    """Offset of row r's adjoint for a one-to-one contribution, and whether it is the
    first one (which then overwrites: no zero-fill pass)."""
    if seen[r] == 0:
        seen[r] = 1
        return T[r, AOFF], True
    return T[r, AOFF], False


@njit(**_SUB)
def _put(adj, i, v, fresh):
    adj[i] = v if fresh else adj[i] + v      # a select: loops around it vectorise


@njit(**_SUB)
def _j(mode, i, idx):
    if mode == 0:
        return i
    if mode == 1:
        return 0
    return idx[i]


@njit(**_SUB)
def listed(k):
    """Whether opcode k takes its inputs from the list L."""
    return k in LISTED


@njit(**_JIT)
def trailing(mask, nd):
    """Whether the dims in bitmask ``mask`` (of ``nd``) are the last ones, or none."""
    return ((mask + (mask & -mask)) & ((1 << nd) - 1)) == 0


@njit(**_JIT)
def general(T, r):
    """Whether row r needs its op's general VJP kernel (table slot GENERAL + op): a binary
    op broadcasting an input (not a single value) or a sum over dims that are not the
    last ones. The common kernels leave that code out, and compile faster for it."""
    k = T[r, OP]
    if k >= K_ADD and k <= K_WHERE:
        n = T[r, N]
        na = T[T[r, A], N]
        nb = T[T[r, B], N]
        return (na != n and na != 1) or (nb != n and nb != 1)
    if k == K_SUM:
        return T[r, N] != 1 and not trailing(T[r, P0], T[T[r, A], ND])
    return False


@njit(**_SUB)
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


@njit(**_SUB, fastmath={"reassoc"})
def _block_sum(x, lo, hi):
    """Sum of x[lo:hi] in float64. Reassociation lets LLVM keep vector accumulators (a
    fixed order for a given build and CPU); indexing a slice from 0 drops the negative
    index checks that stop vectorisation."""
    y = x[lo:hi]
    s = 0.0
    for i in range(y.size):
        s += y[i]
    return s


@njit(**_SUB, fastmath={"reassoc"})
def _row_sum(X, o):
    """Sum of row o of a 2-D array in float64 (as _block_sum). Kernels over many short
    rows index 2-D views: a slice per row costs more than the row's arithmetic."""
    s = 0.0
    for j in range(X.shape[1]):
        s += X[o, j]
    return s


@njit(**_SUB, fastmath={"reassoc"})
def _row_dot(X, Y, o):
    """Sum of X[o, j] * Y[o, j] in float64 (as _row_sum)."""
    s = 0.0
    for j in range(X.shape[1]):
        s += np.float64(X[o, j]) * Y[o, j]
    return s


SUM_BLOCK = 4096      # elements per partial sum of a long sum


@njit(**_INL)
def _compensated(s, c, v):
    """s + v with its rounding error added to c (Neumaier)."""
    t = s + v
    if abs(s) >= abs(v):
        c += (s - t) + v
    else:
        c += (v - t) + s
    return t, c


@njit(**_SUB)
def _long_sum(x, lo, hi):
    """Sum of a long run: the _block_sum of each SUM_BLOCK elements, added with
    compensation (a fused run sums its blocks alike: sum_parts)."""
    if hi - lo <= SUM_BLOCK:
        return _block_sum(x, lo, hi)
    s = 0.0
    c = 0.0
    for start in range(lo, hi, SUM_BLOCK):
        s, c = _compensated(s, c, _block_sum(x, start, min(start + SUM_BLOCK, hi)))
    return s + c


@njit(**_SUB)
def sum_parts(parts):
    """_long_sum from its blocks' partial sums (more than one)."""
    s = 0.0
    c = 0.0
    for j in range(parts.size):
        s, c = _compensated(s, c, parts[j])
    return s + c


@njit(**_SUB)
def _walk(shape, st, off, x, y, mode):
    """Over the index space ``shape`` in order (element e of y), with element e at
    x[off + sum(i_k * st[k])]: y[e] = x[.] (mode 0), x[.] += y[e] (mode 1) or
    y[e] += x[.] (mode 2): strided views, their VJPs and broadcasts. Dims that x reads
    as one are merged; the last two run as plain loops (the last filled or summed where
    its stride is 0). Strides are never negative (views read forwards)."""
    sh = np.ones(MAXD, np.int64)
    cs = np.zeros(MAXD, np.int64)
    nd = 0
    for k in range(shape.size):
        n = shape[k]
        if n == 1:
            continue
        if nd > 0 and cs[nd - 1] == st[k] * n:
            sh[nd - 1] *= n
            cs[nd - 1] = st[k]
        else:
            sh[nd] = n
            cs[nd] = st[k]
            nd += 1
    if nd == 0:
        nd = 1
    run = sh[nd - 1]
    step = cs[nd - 1]
    rows = sh[nd - 2] if nd > 1 else 1
    rstep = cs[nd - 2] if nd > 1 else 0
    idx = np.zeros(MAXD, np.int64)
    src = off
    e = 0
    for j in range(y.size // (run * rows) if run * rows else 0):
        for q in range(rows):
            b = src + q * rstep
            if step == 0:
                ys = y[e:e + run]
                if mode == 1:
                    x[b] += _long_sum(ys, 0, run)
                else:
                    v = x[b]
                    for i in range(run):
                        ys[i] = v if mode == 0 else ys[i] + v
            elif mode == 0:          # unsigned indices: no negative-index fix-ups, and
                for i in range(run):  # no slice to build per run (runs may be short)
                    y[np.uint64(e + i)] = x[np.uint64(b + i * step)]
            elif mode == 1:
                for i in range(run):
                    x[np.uint64(b + i * step)] += y[np.uint64(e + i)]
            else:
                for i in range(run):
                    y[np.uint64(e + i)] += x[np.uint64(b + i * step)]
            e += run
        k = nd - 3
        while k >= 0:
            idx[k] += 1
            src += cs[k]
            if idx[k] < sh[k]:
                break
            src -= cs[k] * sh[k]
            idx[k] = 0
            k -= 1


@njit(**_SUB)
def _shape(T, o):
    """Row o's shape, as an array."""
    shape = np.empty(T[o, ND], np.int64)
    for k in range(shape.size):
        shape[k] = T[o, S0 + k]
    return shape


@njit(**_SUB)
def _bstrides(T, o, a):
    """Row a's strides over row o's index space: 0 along the dims a broadcasts."""
    nd, na = T[o, ND], T[a, ND]
    st = np.zeros(MAXD, np.int64)
    s = 1
    for k in range(na - 1, -1, -1):
        if T[a, S0 + k] != 1:
            st[nd - na + k] = s
        s *= T[a, S0 + k]
    return st


@njit(**_SUB)
def _bcast(T, o, a, x, out, reduce):
    """Broadcast a's values x over o's elements into out (reduce=False), or add out's
    elements into a's x (reduce=True, a broadcast's VJP), in a fixed order."""
    _walk(_shape(T, o), _bstrides(T, o, a), 0, x, out, 1 if reduce else 0)


@njit(**_SUB)
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
    return 2, _odometer(T, o, _bstrides(T, o, a), _var(0), T[o, N])


@njit(**_SUB)
def _wants(T, r):
    return r >= 0 and (T[r, FL] & REQ) != 0


@njit(**_SUB)
def _into(adj, T, seen, r, mode):
    """Like _dst for a contribution that lines up with r's elements one-to-one (mode 0);
    a broadcast one (several elements into one) accumulates into zeros."""
    if mode == 0:
        return _dst(adj, T, seen, r)
    return _touch(adj, T, seen, r), False


@njit(**_SUB)
def _binary_dst(T, r, adj, seen, ma, mb):
    """Where a binary row's input adjoints go (-1: no grad needed) and whether fresh."""
    ao, fa, bo, fb = -1, False, -1, False
    if _wants(T, T[r, A]):
        ao, fa = _into(adj, T, seen, T[r, A], ma)
    if _wants(T, T[r, B]):
        bo, fb = _into(adj, T, seen, T[r, B], mb)
    return ao, fa, bo, fb


@njit(**_SUB)
def _ew(T, o, a):
    """Elementwise mode of input a of row o: 0 (same elements) or 1 (a scalar)."""
    return 1 if T[a, N] == 1 and T[o, N] != 1 else 0


FUSE_BLOCK = SUM_BLOCK  # elements per block of a fused run of elementwise ops (a
#                         sum that ends the run adds one partial sum per block)
FUSE_MIN = 16384      # runs over fewer elements are replayed op by op
PAR_MIN = 1 << 18     # runs over fewer elements stay on one thread, and so do runs whose
PAR_WORK = 1 << 22    # elements times their rows' WORK fall short of this: waking the
#                       pool costs ~80 us on a VM, and a run of a few additions over
#                       262,144 elements is memory-bound, two threads no faster than one
WORK = np.ones(128, np.int64)       # per-element cost of an elementwise op, by opcode
WORK[[K_POW, K_FMOD, K_REMAINDER, K_POWS, K_RPOWS, K_EXP, K_LOG, K_TANH, K_SIGMOID, K_SIN,
      K_COS, K_TAN, K_LOG1P, K_EXPM1, K_ERF, K_ATAN, K_ASIN, K_ACOS, K_SINH, K_COSH, K_ASINH,
      K_ACOSH, K_ATANH]] = 8
SPLIT_MAX = max(1, config.NUMBA_NUM_THREADS)   # chunks of a split (the pool's threads)


@njit(**_SUB)
def _work(table, col, lo, hi):
    """The WORK of the ops in column col of rows lo..hi-1 (a fused run's instructions or
    tape rows)."""
    w = 0
    for r in range(lo, hi):
        w += WORK[table[r, col]]
    return w


@njit(**_SUB)
def _worth_splitting(n, work):
    """Whether a run over n elements whose rows weigh ``work`` (WORK) goes over the
    threads."""
    return n >= PAR_MIN and n * work >= PAR_WORK


@njit(**_SUB)
def _raw(a):
    return carray(_ptr(a.ctypes.data, a), a.shape)


@intrinsic
def _call(typingctx, fn, argv):
    """Calls the C function at address ``fn`` with the address ``argv``."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64)])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [args[1]])
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@njit(**_INL)
def _nil(dtype):
    """An empty array of ``dtype`` that allocates nothing (a dtype witness)."""
    return carray(_ptr(0, dtype), 0)


_safe_caches(globals())
