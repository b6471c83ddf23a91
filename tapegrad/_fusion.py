"""Fused runs of a compiled program: elementwise instructions over the same many
elements, replayed block by block forward, and the matching runs of tape rows backward;
and reshapes whose adjoint is their input's."""
import numpy as np

from . import _kernels as K


_UNARY = set(K.UNARY_OPS)


_BINARY = set(range(K.BINARY_FIRST, K.BINARY_LAST + 1))


def _elementwise(ins, VD):
    """Elements of instruction ``ins`` if it is elementwise (fusable), else -1."""
    op, o, a, b = ins[0], ins[1], ins[2], ins[3]
    if op == K.X_FILL:
        return VD[o, K.N]
    n = VD[o, K.N]
    if op in _UNARY or op in (K.X_AXPY, K.X_COPY):
        ok = VD[a, K.N] == n or (op == K.X_COPY and VD[a, K.N] == 1)
    elif op in _BINARY:
        ok = all(VD[x, K.N] == 1 or (VD[x, K.N] == n and VD[x, K.ND] == VD[o, K.ND])
                 for x in (a, b))
    else:
        return -1
    if not ok or (VD[a, K.FL] & K.F64) != (VD[o, K.FL] & K.F64):
        return -1
    return n


def _fuse(ins, VD):
    """The instructions with each run of elementwise ones over the same (many) elements
    behind an X_FUSED header. A sum of all the elements of a value of the run that
    follows it ends the run: each block adds its partial sum (so that the summed values
    need no buffer), and a copy of the sum with no input, after the run, totals them."""
    out = []
    i = 0
    while i < len(ins):
        n = _elementwise(ins[i], VD)
        j = i + 1
        total = None
        if n >= K.FUSE_MIN:
            f64 = VD[ins[i][1], K.FL] & K.F64
            while j < len(ins) and _elementwise(ins[j], VD) == n and \
                    (VD[ins[j][1], K.FL] & K.F64) == f64:
                j += 1
            if j < len(ins) and _sums_all(ins[j], VD, n, f64):
                total = ins[j][:2] + (-1,) + ins[j][3:]
                j += 1
        if j - i > 1:
            out.append((K.X_FUSED, -1, -1, -1, (j - i,), 0.0, 0.0))
        out.extend(ins[i:j])
        if total is not None:
            out.append(total)
        i = j
    return out


def _sums_all(ins, VD, n, f64):
    """Whether ``ins`` sums (or averages) all n elements of a value of dtype f64 into one."""
    op, o, a = ins[0], ins[1], ins[2]
    return op == K.X_SUMROWS and ins[4][0] == n and VD[o, K.N] == 1 and \
        VD[a, K.N] == n and (VD[a, K.FL] & K.F64) == f64 == (VD[o, K.FL] & K.F64)


def _runs(T, L, keep, sizes):
    """Per tape row, the length of the run of elementwise rows over the same (many)
    elements that starts there (going down), for the block-wise reverse replay; rows
    of a run whose adjoint only the run produces and reads, and that are not in
    ``keep``, get -1 - (the offset of a block-sized scratch past ``sizes[dtype]``).
    A row with hooks only tops a run (the replay pauses there before the run). Returns
    the runs and the scratch each arena needs."""
    runs = np.zeros(len(T), np.int64)
    run_of = np.full(len(T), -1, np.int64)
    tops = []
    r = len(T) - 1
    while r >= 0:
        n = _ew_row(T, r)
        if n < 0 and _sums_all_of(T, r):     # its VJP fills the run's blocks with g
            n = T[T[r, K.A], K.N]
        q = r - 1
        if n >= K.FUSE_MIN:
            # one-element inputs whose gradient rows of the run sum up: two such rows
            # would interleave their sums block by block, unlike the row-by-row replay
            summed = _summed(T, r)
            while q >= 0 and (_ew_row(T, q) == n or T[q, K.OP] == K.K_LEAF) and \
                    (T[q, K.FL] & K.F64) == (T[r, K.FL] & K.F64) and \
                    not T[q, K.FL] & K.PAUSE and not summed & _summed(T, q):
                summed |= _summed(T, q)
                q -= 1
            while q + 1 < r and T[q + 1, K.OP] == K.K_LEAF:
                q += 1
        if r - q > 1:
            runs[r] = r - q
            run_of[q + 1:r + 1] = r
            tops.append(r)
        r = q
    outside = set(keep)
    for c in range(len(T)):
        k = T[c, K.OP]
        if k in K.LISTED:
            outside.update(int(x) for x in L[T[c, K.P0]:T[c, K.P0] + T[c, K.P0 + 1]])
        for col in (K.A, K.B):
            x = T[c, col]
            if x >= 0 and (run_of[x] < 0 or run_of[x] != run_of[c]):
                outside.add(int(x))
    extra = [0, 0]
    for top in tops:
        f64 = 1 if T[top, K.FL] & K.F64 else 0
        slot = 0
        for r in range(top - 1, top - runs[top], -1):
            if r not in outside and T[r, K.OP] != K.K_LEAF and T[r, K.FL] & K.REQ:
                runs[r] = -1 - (sizes[f64] + slot * K.FUSE_BLOCK)
                slot += 1
        extra[f64] = max(extra[f64], slot * K.FUSE_BLOCK)
    return runs, extra


def _ew_row(T, r):
    k = T[r, K.OP]
    n = T[r, K.N]
    if k in _UNARY:
        return n
    if k in _BINARY:
        for c in (K.A, K.B):
            x = T[r, c]
            same = T[x, K.N] == n and T[x, K.ND] == T[r, K.ND] and \
                (T[x, K.S0:K.S0 + K.MAXD] == T[r, K.S0:K.S0 + K.MAXD]).all()
            if not (T[x, K.N] == 1 or same):
                return -1
        return n
    return -1


def _sums_all_of(T, r):
    """Whether tape row r sums (or averages) all the elements of its input, of its dtype."""
    return T[r, K.OP] == K.K_SUM and T[r, K.N] == 1 and \
        (T[T[r, K.A], K.FL] & K.F64) == (T[r, K.FL] & K.F64)


def _summed(T, r):
    """The one-element inputs of elementwise row r that need a gradient (summed over
    the row's elements)."""
    if T[r, K.OP] == K.K_LEAF or T[r, K.N] == 1:
        return set()
    return {int(x) for x in (T[r, K.A], T[r, K.B])
            if x >= 0 and T[x, K.N] == 1 and T[x, K.FL] & K.REQ}


_NOT_ALIASED = (K.K_LEAF, K.K_EXT, K.K_PYFN, K.K_PYOUT, K.K_CAST)


def _alias_copies(T, L, keep):
    """Gives each reshape-like row (K_COPY: same elements, same order) whose input only it
    reads the input's adjoint: its backward then moves nothing (flag ALIAS). Rows in
    ``keep`` (read or seeded by the program) and hooked rows keep their own."""
    uses = np.zeros(len(T), np.int64)
    for c in range(len(T)):
        k = T[c, K.OP]
        if k in K.LISTED:
            np.add.at(uses, L[T[c, K.P0]:T[c, K.P0] + T[c, K.P0 + 1]], 1)
        elif k == K.K_PYOUT:
            uses[T[c, K.P0 + 2]] += 1
        for col in (K.A, K.B):
            if T[c, col] >= 0:
                uses[T[c, col]] += 1
    kept = set(keep)
    for r in range(len(T)):
        a = T[r, K.A]
        if T[r, K.OP] != K.K_COPY or a < 0 or uses[a] != 1 or r in kept or a in kept or \
                T[a, K.OP] in _NOT_ALIASED or T[r, K.AOFF] < 0 or T[a, K.AOFF] < 0 or \
                (T[r, K.FL] | T[a, K.FL]) & K.PAUSE or \
                (T[r, K.FL] ^ T[a, K.FL]) & K.F64 or T[r, K.N] != T[a, K.N]:
            continue
        T[r, K.AOFF] = T[a, K.AOFF]
        T[r, K.FL] |= K.ALIAS
