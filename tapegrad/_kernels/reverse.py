"""The reverse pass: per-op VJP kernels compiled on first use and called through a
table of addresses, and the interpreter that replays a tape's rows in reverse.
"""

import numpy as np
from numba import carray, njit, prange, types
from numba.core.ccallback import CFunc
from numba.core.sigutils import normalize_signature

from .cache import _CACHE, _INL, _JIT, _SUB, _SafeCache, _safe_caches
from .layout import (A, ALIAS, AOFF, B, CAST, DIRTY, DONE, ERR_DIRTY, ERR_FREED, F64, FL,
                     FREED, FUSE_BLOCK, K_AMAX, K_BATCHNORM, K_CAST, K_CAT, K_COPY, K_EXT,
                     K_GATHER, K_LEAF, K_LAYERNORM, K_LINEAR, K_LOGSOFTMAX, K_MATMUL,
                     K_PROD, K_PYFN, K_PYOUT, K_SCATTER, K_SETIDX, K_SOFTMAX, K_STRIDED,
                     K_SUM, K_WHERE, N, NCOL, NKERNELS, OP, P0, PAR_MIN, PAUSE, PAUSED, PYFN,
                     SA, SAVES, SB, SO, SPLIT_MAX, STEP, SWITCH, _bcast, _binary_dst, _call,
                     _dst, _ew, _j, _load, _mode, _nil, _ptr, _put, _raw, _touch, _work,
                     _worth_splitting, general)
from .linalg import _linear_vjp, _matmul_vjp, ensure_blas
from .elementwise import _BINARY_VJPS, _UNARY_VJPS, _arith_vjp1, _inp, _out, _ug, arith1
from .reduce import (_amax, _cat, _indexed, _prod, _softmax, _strided, _sum, _sum_rows,
                     one_run)
from .norm import _batch_norm_vjp, _layer_norm_vjp


NEED = 8          # status: the row's kernel is not compiled yet (Python compiles it)
ARGV = 28         # int64 slots of a kernel's argument block:
(_A_T, _A_F, _A_L, _A_ADJ, _A_SEEN, _A_ROWS, _A_NADJ, _A_NL, _A_NSEEN, _A_R, _A_LO, _A_HI,
 _A_AO, _A_FA, _A_BO, _A_FB, _A_RUNS, _A_NRUNS, _A_KT, _A_OUT, _A_ROW, _A_ADJ2,
 _A_NADJ2, _A_RESUME, _A_THREADS, _A_DST, _A_LEN, _A_SHIFT) = range(28)  # LO < 0: whole
#   row; ADJ2: the other dtype's arena; RESUME: past the pause at the start row; THREADS:
#   for fused runs; DST, LEN, SHIFT: a run's destinations, length and scratch shift
FUSED = K_LEAF    # the VJP table's slot of the fused-run driver (a leaf has no VJP)
REVERSE = NKERNELS  # ... and of reverse_rows on one arena, for programs
GENERAL = NKERNELS + 1      # slot GENERAL + k: op k's general kernel (see general())
BLOCKS = GENERAL + NKERNELS  # elements LO..HI of a fused run (one chunk of a split)
SPLIT = BLOCKS + 1          # a fused run's chunks on all threads
RUNADD = SPLIT + 1          # a view's gradient copied or added into its input, on all
#                             threads (_run_vjp)
KCOLS = RUNADD + 1
REVERSE1 = KCOLS    # reverse_rows with one-element arithmetic inline (no slot of its own:
#                     once compiled, it takes REVERSE's)

_KSIG = types.void(types.int64)
KTAB = np.zeros((2, KCOLS), np.int64)       # kernel addresses by dtype (0, F64), slot
_COMPILED = {}                              # (slot, dtype flag) -> the cfunc


@njit(**_SUB)
def _open(argp, dtype):
    """A kernel's view of the tape, its row and the arena (of ``dtype``), built without
    allocating (kernels run once per row)."""
    a = carray(_ptr(argp, np.int64), ARGV)
    rows = a[_A_ROWS]
    T = carray(_ptr(a[_A_T], np.int64), (rows, NCOL))
    F = carray(_ptr(a[_A_F], np.float64), (rows, 2))
    L = carray(_ptr(a[_A_L], np.int64), a[_A_NL])
    adj = carray(_ptr(a[_A_ADJ], dtype), a[_A_NADJ])
    seen = carray(_ptr(a[_A_SEEN], np.uint8), a[_A_NSEEN])
    return T, F, L, adj, seen, a[_A_R]


@njit(**_SUB)
def _driver(argp):
    """A driver kernel's argument block, the tape's fused runs and the VJP table."""
    a = carray(_ptr(argp, np.int64), ARGV)
    return (a, carray(_ptr(a[_A_RUNS], np.int64), a[_A_NRUNS]),
            carray(_ptr(a[_A_KT], np.int64), KCOLS))


@njit(**_SUB)
def _block(argp):
    """A block of a fused run: elements lo..hi (lo < 0: the whole row) and where the
    inputs' adjoints go (ao, bo; -1: not needed) with whether first (fa, fb)."""
    a = carray(_ptr(argp, np.int64), ARGV)
    return a[_A_LO], a[_A_HI], a[_A_AO], a[_A_FA] != 0, a[_A_BO], a[_A_FB] != 0


@njit(**_SUB)
def _bmode(T, r, a):
    """0: input a's elements line up with row r's; 2: a broadcasts (its adjoint then
    accumulates into zeros)."""
    return 0 if T[a, N] == T[r, N] else 2


@njit(**_SUB)
def _full(T, r, a, col, adj, g):
    """Input a's value saved at column col, broadcast to row r's elements; g where the op
    did not save it (its formula does not read it)."""
    if T[r, col] == 0:
        return g
    x = _load(T, r, col, T[a, N], adj)
    if T[a, N] == T[r, N]:
        return x
    e = np.empty(T[r, N], adj.dtype)
    _bcast(T, r, a, x, e, False)
    return e


def _vjp_kernel(k, f64, gen):
    """The C function of opcode k's VJP for one dtype (gen: its general kernel); it
    closes over constants and the op's VJP function (named in its cache key), calling it
    directly: each level of calls between a C function and the loops is a compilation
    of its own."""
    dt = np.float64 if f64 else np.float32
    if k in _UNARY_VJPS:
        formula = _UNARY_VJPS[k].py_func.__code__.co_argcount == 6   # else a VJP function
        du = _UNARY_VJPS[k]

        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            lo, hi, ao, fr, _, _ = _block(argp)
            if lo < 0:
                ao, fr = _dst(adj, T, seen, T[r, A])
                lo, hi = 0, T[r, N]
            if formula:                       # inlined in the loop
                d, g, m = _ug(T, r, adj, ao, lo, hi)
                x = _inp(T, r, adj, lo, hi) if T[r, SA] != 0 else g
                o = _out(T, r, adj, lo, hi) if T[r, SO] != 0 else g
                f0, f1, p0 = F[r, 0], F[r, 1], T[r, P0]
                for i in range(m):
                    _put(d, i, du(g[i], x[i], o[i], f0, f1, p0), fr)
            else:
                du(T, r, F[r, 0], F[r, 1], adj, ao, fr, lo, hi)
    elif k in _BINARY_VJPS and gen and isinstance(_BINARY_VJPS[k], tuple):
        da, db = _BINARY_VJPS[k]

        def kern(argp):        # an input broadcasts (whole rows only, never fused)
            T, F, L, adj, seen, r = _open(argp, dt)
            n = T[r, N]
            ra, rb = T[r, A], T[r, B]
            ao, fa, bo, fb = _binary_dst(T, r, adj, seen, _bmode(T, r, ra), _bmode(T, r, rb))
            go = T[r, AOFF]
            g = adj[go:go + n]
            x = _full(T, r, ra, SA, adj, g)
            y = _full(T, r, rb, SB, adj, g)
            if ao >= 0:
                if T[ra, N] == n:
                    d = adj[ao:ao + n]
                    for i in range(n):
                        _put(d, i, da(g[i], x[i], y[i]), fa)
                else:
                    c = np.empty(n, adj.dtype)
                    for i in range(n):
                        c[i] = da(g[i], x[i], y[i])
                    _bcast(T, r, ra, adj[ao:ao + T[ra, N]], c, True)
            if bo >= 0:
                if T[rb, N] == n:
                    d = adj[bo:bo + n]
                    for i in range(n):
                        _put(d, i, db(g[i], x[i], y[i]), fb)
                else:
                    c = np.empty(n, adj.dtype)
                    for i in range(n):
                        c[i] = db(g[i], x[i], y[i])
                    _bcast(T, r, rb, adj[bo:bo + T[rb, N]], c, True)
    elif k in _BINARY_VJPS:
        formulas = isinstance(_BINARY_VJPS[k], tuple)   # else a VJP function (where)
        da, db = _BINARY_VJPS[k] if formulas else (_BINARY_VJPS[k], None)

        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            lo, hi, ao, fa, bo, fb = _block(argp)
            noidx = _nil(np.int64)
            ma, ia = _ew(T, r, T[r, A]), noidx
            mb, ib = _ew(T, r, T[r, B]), noidx
            if gen:                           # broadcasting: index maps (a whole row)
                ma, ia = _mode(T, r, T[r, A], noidx)
                mb, ib = _mode(T, r, T[r, B], noidx)
            if lo < 0:
                ao, fa, bo, fb = _binary_dst(T, r, adj, seen, ma, mb)
                lo, hi = 0, T[r, N]
            if formulas:      # inlined: over slices when both inputs are the output's
                #               elements (the loops vectorise), else by index
                go = T[r, AOFF]
                g = adj[go:go + T[r, N]]
                x = _load(T, r, SA, T[T[r, A], N], adj) if T[r, SA] != 0 else g
                y = _load(T, r, SB, T[T[r, B], N], adj) if T[r, SB] != 0 else g
                if ma == 0 and mb == 0:
                    m = hi - lo
                    gs, xs, ys = g[lo:hi], x[lo:hi], y[lo:hi]
                    if ao >= 0:
                        d = adj[ao + lo:ao + hi]
                        for i in range(m):
                            _put(d, i, da(gs[i], xs[i], ys[i]), fa)
                    if bo >= 0:
                        d = adj[bo + lo:bo + hi]
                        for i in range(m):
                            _put(d, i, db(gs[i], xs[i], ys[i]), fb)
                    return
                if ao >= 0:
                    for i in range(lo, hi):
                        ja = _j(ma, i, ia)
                        _put(adj, ao + ja, da(g[i], x[ja], y[_j(mb, i, ib)]), fa)
                if bo >= 0:
                    for i in range(lo, hi):
                        jb = _j(mb, i, ib)
                        _put(adj, bo + jb, db(g[i], x[_j(ma, i, ia)], y[jb]), fb)
            else:
                da(T, r, adj, ao, fa, bo, fb, ma, ia, mb, ib, lo, hi)
    elif k == K_SUM:
        vjp = _sum if gen else _sum_rows      # general: dims that are not the last ones

        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            lo, hi, ao, fr, _, _ = _block(argp)
            if lo < 0:
                vjp(T, r, F[r, 0], adj, seen)
                return
            v = adj[T[r, AOFF]] * F[r, 0]     # a block of the run a full sum tops
            d = adj[ao + lo:ao + hi]
            for i in range(hi - lo):
                _put(d, i, v, fr)
    elif k == K_COPY:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            n = T[r, N]
            ao, fr = _dst(adj, T, seen, T[r, A])
            g = adj[T[r, AOFF]:T[r, AOFF] + n]
            d = adj[ao:ao + n]
            for i in range(n):
                _put(d, i, g[i], fr)
    elif k == K_STRIDED:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            if one_run(T, r):
                a, runs, kt = _driver(argp)
                _run_vjp(T, r, adj, seen, kt, a)
            else:
                _strided(T, r, adj, seen)
    elif k == RUNADD:
        def kern(argp):
            a = carray(_ptr(argp, np.int64), ARGV)
            _run_add(a[_A_DST], a[_A_SHIFT], a[_A_LEN], a[_A_FA] != 0,
                     min(a[_A_THREADS], SPLIT_MAX), _nil(dt))
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
    elif k == K_LAYERNORM:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _layer_norm_vjp(T, L, r, F[r, 0], adj, seen)
    elif k == K_BATCHNORM:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            _batch_norm_vjp(T, L, r, F[r, 0], adj, seen)
    elif k == K_CAST:        # into the other dtype's arena (programs; eager does it in Python)
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            a = carray(_ptr(argp, np.int64), ARGV)
            other = carray(_ptr(a[_A_ADJ2], np.float32 if f64 else np.float64), a[_A_NADJ2])
            so, fr = _dst(other, T, seen, T[r, A])
            go = T[r, AOFF]
            for j in range(T[r, N]):
                _put(other, so + j, adj[go + j], fr)
    elif k == REVERSE or k == REVERSE1:
        replay = reverse_rows1 if k == REVERSE1 else reverse_rows

        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            a, runs, kt = _driver(argp)
            no = r < -1
            a[_A_OUT], a[_A_ROW] = replay(T, F, L, adj, seen, r, a[_A_RESUME] != 0, no,
                                          a[_A_ROW], no, kt, a, runs)
    elif k == BLOCKS:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            a, runs, kt = _driver(argp)
            dst = carray(_ptr(a[_A_DST], np.int64), (a[_A_LEN], 4))
            _blocks(T, r, runs, kt, a, dst, a[_A_LO], a[_A_HI], a[_A_SHIFT])
    elif k == SPLIT:
        def kern(argp):
            a = carray(_ptr(argp, np.int64), ARGV)
            T = carray(_ptr(a[_A_T], np.int64), (a[_A_ROWS], NCOL))
            kt = carray(_ptr(a[_A_KT], np.int64), KCOLS)
            _split_run(kt[BLOCKS], a, T, min(a[_A_THREADS], SPLIT_MAX))
    elif k == FUSED:
        def kern(argp):
            T, F, L, adj, seen, r = _open(argp, dt)
            a, runs, kt = _driver(argp)
            a[_A_OUT] = _fused_rows(T, adj, seen, r, runs, kt, a)
    else:
        raise ValueError(f"tapegrad: no VJP kernel for opcode {k}")
    return _cfunc(kern)


def prepare_needed(argv, f64):
    """prepare() for the kernel reverse_rows found missing (NEED) at slot argv[_A_OUT]."""
    slot = int(argv[_A_OUT])
    prepare(slot % GENERAL, f64, slot >= GENERAL)


def prepare(k, f64, gen=False):
    """Compiles (or loads from the cache) opcode k's VJP kernel for one dtype (gen: its
    general kernel, for rows where general() holds)."""
    k, f64 = int(k), 1 if f64 else 0
    slot = GENERAL + k if gen else k
    if (slot, f64) not in _COMPILED:
        if k in (K_MATMUL, K_LINEAR):
            ensure_blas()
        fn = _COMPILED[slot, f64] = _vjp_kernel(k, f64, bool(gen))
        if slot == REVERSE1:
            KTAB[f64, REVERSE] = fn.address
        elif slot != REVERSE or KTAB[f64, REVERSE] == 0:
            KTAB[f64, slot] = fn.address


@njit(**_JIT)
def tape_args(argv, T, F, L, seen, runs):
    """The tape's arrays into a kernel argument block (the arena is set per dtype)."""
    argv[_A_T] = T.ctypes.data
    argv[_A_F] = F.ctypes.data
    argv[_A_L] = L.ctypes.data
    argv[_A_SEEN] = seen.ctypes.data
    argv[_A_ROWS] = T.shape[0]
    argv[_A_NL] = L.size
    argv[_A_NSEEN] = seen.size
    argv[_A_RUNS] = runs.ctypes.data
    argv[_A_NRUNS] = runs.size


def _reverse_rows(inline1):
    """reverse_rows, with the one-element arithmetic path inline (inline1) or through the
    kernels (compiles faster: eager backward takes this one)."""
    @njit(**_JIT)
    def reverse_rows(T, F, L, adj, seen, start, resume, freeing, dtflag, anomaly, kt, argv,
                     runs):
        """Replays rows start..0 in reverse through the VJP kernels ``kt`` (addresses by
        opcode, for ``adj``'s dtype), accumulating adjoints into ``adj``.

        Only rows already reached (``seen``) are visited; one-element arithmetic rows
        take an inline path (inline1). Returns (status, row): DONE; PAUSED at a row with
        hooks (call again with resume=True from that row); SWITCH, CAST or PYFN at a row
        that needs Python; NEED at a row whose kernel (table slot argv[_A_OUT]) is not
        compiled yet (compile it, call again from that row with resume=True); STEP after
        each row in anomaly mode; or an error at a freed or modified row. ``runs`` (empty
        in eager mode) marks runs of elementwise rows to replay block by block
        (_fused_rows).
        """
        T, F, L, adj, seen, runs = _raw(T), _raw(F), _raw(L), _raw(adj), _raw(seen), _raw(runs)
        tape_args(argv, T, F, L, seen, runs)
        argv[_A_ADJ] = adj.ctypes.data
        argv[_A_NADJ] = adj.size
        argv[_A_LO] = -1
        argv[_A_KT] = kt.ctypes.data
        av = argv.ctypes.data
        r = start + 1
        while r > 0:
            r -= 1
            if seen[r] == 0:
                continue
            fl = T[r, FL]
            k = T[r, OP]
            # one-element arithmetic on a plain row (most rows of scalar programs): no
            # other check applies
            inline = inline1 and arith1(k, T[r, N])
            if not inline or (fl & (F64 | PAUSE | FREED | DIRTY)) != dtflag:
                if (fl & F64) != dtflag:
                    return SWITCH, r
                if fl & PAUSE and not (resume and r == start):
                    return PAUSED, r
                if runs.size and runs[r] > 1:      # (hooked rows only top runs)
                    argv[_A_R] = r
                    argv[_A_OUT] = 0
                    if kt[FUSED] != 0:
                        _call(kt[FUSED], av)
                    if argv[_A_OUT] == 0:
                        return NEED, r
                    r -= runs[r] - 1
                    continue
                if fl & ALIAS:
                    seen[T[r, A]] = 1
                    continue
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
            if inline:
                _arith_vjp1(k, T, r, F[r, 0], adj, seen)
            else:
                slot = GENERAL + k if general(T, r) else k
                fn = kt[slot]
                if fn == 0:
                    argv[_A_OUT] = slot
                    return NEED, r
                argv[_A_R] = r
                _call(fn, av)
            if freeing and fl & SAVES:
                T[r, FL] = fl | FREED
            if anomaly:
                return STEP, r
        return DONE, -1
    return reverse_rows


reverse_rows = _reverse_rows(False)
reverse_rows1 = _reverse_rows(True)


@njit(**_SUB)
def run_elements(T, top):
    """The elements of the fused run at row top: its top row's, or its input's when the
    run is topped by a sum of all of them (whose VJP fills each block with g)."""
    return T[T[top, A], N] if T[top, OP] == K_SUM else T[top, N]


@njit(**_INL)
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
    n = run_elements(T, top)
    threads = argv[_A_THREADS]
    if threads > 1 and kt[SPLIT] != 0 and \
            _worth_splitting(n, _work(T, OP, top - length + 1, top + 1)) and \
            _splittable(T, top, dst):
        scratch = 0
        for q in range(1, length):
            scratch += runs[top - q] < 0
        argv[_A_R] = top
        argv[_A_DST] = dst.ctypes.data
        argv[_A_LEN] = length
        argv[_A_SHIFT] = scratch * FUSE_BLOCK
        _call(kt[SPLIT], argv.ctypes.data)
    else:
        _blocks(T, top, runs, kt, argv, dst, 0, n, 0)
    argv[_A_LO] = -1
    return True


@njit(**_SUB)
def _splittable(T, top, dst):
    """Whether a run's chunks write disjoint adjoints: no row accumulates into a
    one-element input across the run's elements."""
    for q in range(dst.shape[0]):
        r = top - q
        if dst[q, 0] >= 0 and _ew(T, r, T[r, A]) == 1:
            return False
        if T[r, OP] <= K_WHERE and dst[q, 2] >= 0 and _ew(T, r, T[r, B]) == 1:
            return False
    return True


@njit(**_SUB)
def _blocks(T, top, runs, kt, argv, dst, lo, hi, shift):
    """Elements lo..hi of the fused run at row top, block by block; rows whose adjoint
    lives in a block-sized scratch find it ``shift`` past their slot."""
    av = argv.ctypes.data
    length = dst.shape[0]
    for blo in range(lo, hi, FUSE_BLOCK):
        bhi = min(blo + FUSE_BLOCK, hi)
        for q in range(1, length):
            if runs[top - q] < 0:
                T[top - q, AOFF] = -1 - runs[top - q] + shift - blo
        for q in range(length):
            if dst[q, 0] == -2:
                continue
            r = top - q
            k = T[r, OP]
            argv[_A_R] = r
            argv[_A_LO] = blo
            argv[_A_HI] = bhi
            argv[_A_AO] = T[T[r, A], AOFF] if dst[q, 0] >= 0 else -1
            argv[_A_FA] = dst[q, 1]
            argv[_A_BO] = T[T[r, B], AOFF] if k <= K_WHERE and dst[q, 2] >= 0 else -1
            argv[_A_FB] = dst[q, 3]
            _call(kt[k], av)


@njit(parallel=True, **_SUB)
def _split_run(fn, argv, T, chunks):
    """The fused run at row argv[_A_R] in one chunk of whole blocks per thread, each
    with its own argument block, copy of the tape (whose scratch offsets it moves) and
    scratch (argv[_A_SHIFT] apart): elementwise, so any split gives the same results."""
    n = run_elements(T, argv[_A_R])
    stride = argv[_A_SHIFT]
    per = ((n + FUSE_BLOCK - 1) // FUSE_BLOCK + chunks - 1) // chunks * FUSE_BLOCK
    for c in prange(chunks):
        av = argv.copy()
        tc = T.copy()
        av[_A_T] = tc.ctypes.data
        av[_A_LO] = min(n, c * per)
        av[_A_HI] = min(n, c * per + per)
        av[_A_SHIFT] = c * stride
        _call(fn, av.ctypes.data)


@njit(**_INL)
def _run_vjp(T, r, adj, seen, kt, argv):
    """The VJP of a view of consecutive elements (one_run): on the input's first
    contribution its gradient is written there, zeros around it (one pass less than
    adding to zeros; -0.0 stays, as in PyTorch's slice backward), else added; big ones
    in a replay on all threads (RUNADD: elementwise, so any split gives the same
    results)."""
    a = T[r, A]
    off, n = T[r, P0], T[r, N]
    first = seen[a] == 0
    base = T[a, AOFF]
    if first:
        seen[a] = 1
        for i in range(base, base + off):
            adj[i] = 0
        for i in range(base + off + n, base + T[a, N]):
            adj[i] = 0
    d = adj[base + off:base + off + n]
    g = adj[T[r, AOFF]:T[r, AOFF] + n]
    if argv[_A_THREADS] > 1 and n >= PAR_MIN and kt[RUNADD] != 0:
        argv[_A_DST] = d.ctypes.data
        argv[_A_SHIFT] = g.ctypes.data
        argv[_A_LEN] = n
        argv[_A_FA] = first
        _call(kt[RUNADD], argv.ctypes.data)
    elif first:
        for i in range(n):
            d[i] = g[i]
    else:
        for i in range(n):
            d[i] += g[i]


@njit(parallel=True, **_SUB)
def _run_add(dst, src, n, fresh, chunks, like):
    """n values at address src copied (fresh) or added to those at dst, in one chunk
    per thread."""
    d = carray(_ptr(dst, like), n)
    s = carray(_ptr(src, like), n)
    per = (n + chunks - 1) // chunks
    for c in prange(chunks):
        lo = min(n, c * per)
        hi = min(n, lo + per)
        if fresh:
            for i in range(lo, hi):
                d[i] = s[i]
        else:
            for i in range(lo, hi):
                d[i] += s[i]


def _cfunc(kern):
    fn = CFunc(kern, normalize_signature(_KSIG), locals={}, options={"error_model": "numpy"})
    if _CACHE:
        fn._cache = _SafeCache(kern)
    fn.compile()
    return fn


_FAMILY_VJPS = (K_SUM, K_COPY, K_STRIDED, K_MATMUL, K_LINEAR, K_AMAX, K_PROD, K_GATHER,
                K_SCATTER, K_SETIDX, K_SOFTMAX, K_LOGSOFTMAX, K_CAT, K_LAYERNORM, K_BATCHNORM)


_safe_caches(globals())
