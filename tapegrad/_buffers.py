"""Who owns a compiled program's big buffers: the recording's temporaries it takes
over (``_own_buffers``), the outputs it hands out without a copy (``_lendable`` and
``_in_arena``, pools that ``claim`` draws from before each replay), the big arguments
it reads where the caller keeps them (``_relocations``) and the values that only a
fused run reads, kept in block-sized scratch (``_run_scratch``)."""
import bisect
import sys

import numpy as np

from . import _alloc
from . import _kernels as K
from . import tape as _tape


def _own_buffers(tr):
    """The program's intermediate values get buffers of their own: tensors the recording
    call handed out or that its Python kept keep that call's values. A buffer that only
    the recording refers to (a temporary of the call) is taken over as it is."""
    state = {id(t._grad._data) for t in tr.grad_final.values() if t._grad is not None}
    moved = {}                           # old address -> (old root, new root)
    for v, kind in enumerate(tr.kind):
        if kind == "int" and _refs(tr.arrays, v) == _FREE:
            continue
        arr = tr.arrays[v]
        if kind != "int" or id(arr) in state or arr.base is not None:
            continue
        new = _alloc.copy(arr)
        moved[_tape.addr(arr)] = (arr, new)
        tr.ids.pop(id(arr), None)
        tr.ids[id(new)] = v
        tr.arrays[v] = new
    if not moved:
        return
    starts = sorted(moved)

    def locate(address):
        """(offset, new buffer) of an address inside a moved buffer, else None."""
        j = bisect.bisect_right(starts, address) - 1
        if j >= 0 and address < starts[j] + moved[starts[j]][0].nbytes:
            return address - starts[j], moved[starts[j]][1]
        return None

    def moved_to(address):
        hit = locate(address)
        return address if hit is None else _tape.addr(hit[1]) + hit[0]
    for v, kind in enumerate(tr.kind):
        arr = tr.arrays[v]
        hit = locate(_tape.addr(arr)) if kind == "view" and arr.size else None
        if hit is not None:
            new = np.ndarray(arr.shape, arr.dtype, buffer=hit[1], offset=hit[0])
            tr.ids.pop(id(arr), None)
            tr.ids[id(new)] = v
            tr.arrays[v] = new
    for i, ins in enumerate(tr.ins):
        if ins[0] == K.X_GATHER:
            p = ins[4]
            tr.ins[i] = ins[:4] + ((moved_to(p[0]),) + tuple(p[1:]),) + ins[5:]
    for tape, T, F, L in tr.tapes:
        for c in (K.SA, K.SB, K.SO):
            for r in range(len(T)):
                if T[r, c]:
                    T[r, c] = moved_to(int(T[r, c]))


# Outputs of at least this many bytes are handed out without a copy (claim)
LEND_BYTES = 1 << 16
LEND_POOL = 3


def _refs(pool, j):
    return sys.getrefcount(pool[j])


_FREE = _refs([np.empty(1)], 0)      # a buffer only its pool refers to


def _values(tpl, into):
    """The value ids a result template refers to."""
    if tpl[0] == "v":
        into.add(tpl[1])
    elif tpl[0] == "seq":
        for t in tpl[2]:
            _values(t, into)
    elif tpl[0] == "dict":
        for _, t in tpl[2]:
            _values(t, into)
    return into


class _Uses:
    """Where a program refers to its values, for what may take a value's buffer away
    (``_lendable``, ``_run_scratch``): instruction inputs and parameters (an X_ADJ's are
    a tape row), value lists, Python calls, restores, and addresses (saved for the
    backward, or of other values: views)."""

    def __init__(self, rec, tr, INS, TT, LI):
        self.refs = INS[:, K.I_A:K.I_P + 10].copy()
        self.refs[INS[:, K.I_OP] == K.X_ADJ, K.I_P - K.I_A:] = -1
        self.ops = INS[:, K.I_OP].tolist()
        self.writers = INS[:, K.I_O].tolist()
        self.elsewhere = set(LI.tolist()) | {v for _, vs in tr.calls for v in vs}
        self.held = {id(a) for a in rec.backup}
        # (sorted, with repeats: a value's own buffer is one of them)
        self.addrs = sorted([a for a in TT[:, [K.SA, K.SB, K.SO]].ravel().tolist() if a]
                            + [_tape.addr(a) for w, a in enumerate(tr.arrays)
                               if a.size and tr.kind[w] != "keep"])

    def own(self, tr, v):
        """v is a float buffer of the program's own that one instruction writes in full
        (not one that adds to it) and that nothing restores, saves or views: the only
        address inside it is its own."""
        arr = tr.arrays[v]
        if tr.kind[v] != "int" or arr.base is not None or arr.dtype.kind != "f" or \
                id(arr) in self.held or v in self.elsewhere or self.writers.count(v) != 1 or \
                self.ops[self.writers.index(v)] in (K.X_AXPY, K.X_IADD, K.X_CALL):
            return False
        lo = _tape.addr(arr)
        inside = bisect.bisect_left(self.addrs, lo + arr.nbytes) - \
            bisect.bisect_left(self.addrs, lo)
        return inside <= 1


def _lendable(rec, tr, uses):
    """Pools of the outputs a replay may hand out as they are: big buffers of the
    program's own that no instruction reads."""
    outs = _values(rec.out, {v for _, v in rec.argrads if v is not None})
    read = set(uses.refs.ravel().tolist())
    return {v: [tr.arrays[v]] for v in outs
            if v not in read and tr.arrays[v].nbytes >= LEND_BYTES and uses.own(tr, v)}


def _run_scratch(rec, tr, saved, uses):
    """Values that one instruction of a fused run writes and only later instructions of
    the same run read get no buffer: the run keeps them in a block of scratch (flag P8
    of their instruction, scratch address in the header). Returns their shapes and
    dtypes, by value id."""
    INS = rec.PG[rec.nt + rec.nv:]
    heads = np.flatnonzero(INS[:, K.I_OP] == K.X_FUSED)
    if not len(heads):
        return {}
    first, last = {}, {}        # value -> the first and last rows referring to it
    for i, row in enumerate(uses.refs.tolist()):
        for x in row:
            first.setdefault(x, i)
            last[x] = i
    busy = (set(uses.refs[:, K.I_P - K.I_A:].ravel().tolist()) | set(rec.lend)
            | {v for vs in saved.values() for v in vs if v is not None}
            | {v for _, v in rec.argrads if v is not None} | _values(rec.out, set()))
    out = {}
    slots = 0
    for h in heads:
        end = h + INS[h, K.I_P]
        k = 0
        for i in range(h + 1, end + 1):
            v = int(INS[i, K.I_O])
            if v in busy or first.get(v, end + 1) <= i or last.get(v, i) > end or \
                    not uses.own(tr, v):
                continue
            k += 1
            INS[i, K.I_P + 8] = k
            out[v] = (tr.arrays[v].shape, tr.arrays[v].dtype)
        slots = max(slots, k)
    if not out:
        return {}
    stride = slots * K.FUSE_BLOCK * 8
    rec.run_scratch = _alloc.empty(stride * K.SPLIT_MAX // 8)
    for h in heads:
        INS[h, K.I_P + 1] = rec.run_scratch.ctypes.data
        INS[h, K.I_P + 2] = stride
    for v in out:
        tr.arrays[v] = np.empty(0, out[v][1])       # its buffer is dropped
    return out


def _in_arena(rec, INS):
    """Lent gradients that the backward writes straight into their pool's buffer: an
    X_ADJ's output after the last backward, of a tape row whose adjoint no other row
    shares. The arena gets LEND_POOL slots past its end; each replay points the row's
    adjoint at the slot lent this time, so that X_ADJ finds it in place (no copy).
    Returns value -> (tape row, the row's own offset, the slots' views); the pool
    becomes the views."""
    ops = INS[:, K.I_OP]
    back = np.flatnonzero(ops == K.X_BACKWARD)
    if not rec.lend or not len(back):
        return {}
    TT, VD = rec.PG[:rec.nt], rec.PG[rec.nt:rec.nt + rec.nv]
    adjs = np.flatnonzero(ops == K.X_ADJ)
    rows = INS[adjs, K.I_P].tolist()
    found = {0: [], K.F64: []}
    for i, r in zip(adjs.tolist(), rows):
        v = int(INS[i, K.I_O])
        f64 = int(TT[r, K.FL] & K.F64)
        lo, n = TT[r, K.AOFF], TT[r, K.N]
        if v not in rec.lend or i < back[-1] or rows.count(r) != 1 or \
                VD[v, K.N] != n or int(VD[v, K.FL] & K.F64) != f64:
            continue
        shares = ((TT[:, K.FL] & K.F64) == f64) & (TT[:, K.AOFF] < lo + n) & \
            (TT[:, K.AOFF] + TT[:, K.N] > lo)
        if shares.sum() == 1:
            found[f64].append((v, r, int(lo), int(n)))
    out = {}
    for f64, vals in found.items():
        if not vals:
            continue
        old = rec.arenas[f64]
        step = 64 // old.itemsize                  # each slot on its own cache lines
        start = -(-old.size // step) * step
        sizes = [-(-n // step) * step for _, _, _, n in vals]
        arena = _alloc.empty(start + LEND_POOL * sum(sizes), old.dtype)
        off = start
        for (v, r, home, n), size in zip(vals, sizes):
            shape = rec.arrays[v].shape
            views = []
            for _ in range(LEND_POOL):
                views.append(arena[off:off + n].reshape(shape))
                off += size
            out[v] = (r, home, views)
        rec.arenas[f64] = arena
        if f64:
            rec.adj64 = arena
        else:
            rec.adj32 = arena
        h = K.H_ADJ64 if f64 else K.H_ADJ32
        rec.ARGS[h:h + 2] = _tape.addr(arena), arena.size
    return out


def _relocations(rec, tr, INS, uses):
    """Big arguments the program reads where the caller keeps them, instead of copying
    them into buffers of its own (X_ARG): every address inside such a buffer (the value,
    views of it, what the backward saved of it) is moved to the caller's array before
    each replay (X_ARG then finds it in place). Only values the program and Python
    never write, return, restore or hand to Python; their own buffers are dropped.
    Returns (ARGS slot, flat positions in PG, offsets, value id, shape, dtype)."""
    if tr.fns or tr.calls or tr.hooks:
        return []
    outs = _values(rec.out, {v for _, v in rec.argrads if v is not None})
    PG = rec.PG.reshape(-1)
    ncol = rec.PG.shape[1]
    nt, nv = rec.nt, rec.nv
    cells = [nt * ncol + np.arange(nv) * ncol + K.SO]
    cells += [np.arange(nt) * ncol + c for c in (K.SA, K.SB, K.SO)]
    gathers = np.flatnonzero(INS[:, K.I_OP] == K.X_GATHER)
    cells.append((nt + nv + gathers) * ncol + K.I_P)
    cells = np.concatenate(cells)
    out = []
    for i in np.flatnonzero(INS[:, K.I_OP] == K.X_ARG).tolist():
        v = int(INS[i, K.I_O])
        arr = tr.arrays[v]
        if arr.nbytes < LEND_BYTES or v in outs or v in rec.lend or v in uses.elsewhere \
                or id(arr) in uses.held or uses.writers.count(v) != 1:
            continue
        lo = _tape.addr(arr)
        at = cells[(PG[cells] >= lo) & (PG[cells] < lo + arr.nbytes)]
        out.append((K.H_ARGS + int(INS[i, K.I_P]), at, PG[at] - lo, v, arr.shape, arr.dtype))
        tr.arrays[v] = np.empty((0,) + arr.shape[1:], arr.dtype)     # its buffer is dropped
    return out


def claim(rec):
    """Before a replay, each output handed out as it is (``lend``) gets a buffer
    that nothing outside its pool refers to any more: its last one (kept last in
    the pool) when the caller dropped it, else the one before (a caller holding last
    step's results while it calls), else a new one; a pool holds at most LEND_POOL."""
    PG = rec.PG
    for v, pool in rec.lend.items():
        if v in rec.inplace:
            _claim_slot(rec, v, pool)
            continue
        if _refs(pool, -1) == _FREE + 1:        # the pool's and rec.arrays' refs
            continue
        for j in range(len(pool) - 1):
            if _refs(pool, j) == _FREE:
                nxt = pool[j]
                break
        else:
            nxt = _alloc.empty_like(pool[-1])
            if len(pool) == LEND_POOL:
                pool.pop(0)
            pool.append(nxt)
        pool.append(pool.pop(next(i for i, b in enumerate(pool) if b is nxt)))
        rec.arrays[v] = nxt
        PG[rec.nt + v, K.SO] = _tape.addr(nxt)


def _claim_slot(rec, v, views):
    """claim for a gradient lent from the arena (_in_arena): a slot nobody else
    holds, the current one first; with every slot held, a buffer of its own, into
    which X_ADJ copies from the row's own offset."""
    arrays = rec.arrays
    for j in range(len(views)):
        if views[j] is arrays[v] and _refs(views, j) == _FREE + 1:
            return
    r, home, _ = rec.inplace[v]
    for j in range(len(views)):
        if _refs(views, j) == _FREE:
            lend_slot(rec, v, r, views[j])
            return
    if any(w is arrays[v] for w in views) or _refs(arrays, v) != _FREE:
        lend_slot(rec, v, r, _alloc.empty_like(views[0]), home)


def lend_slot(rec, v, r, buf, home=None):
    """Value v (the adjoint of tape row r) goes to ``buf``: a slot of the arena,
    where the backward then writes it, or a buffer of its own (the row's adjoint
    back at ``home``)."""
    rec.arrays[v] = buf
    rec.PG[rec.nt + v, K.SO] = _tape.addr(buf)
    arena = rec.arenas[int(rec.PG[r, K.FL] & K.F64)]
    if home is None:
        home = (_tape.addr(buf) - _tape.addr(arena)) // arena.itemsize
    rec.PG[r, K.AOFF] = home


def unlend(rec):
    """Before Python re-runs around replays (it may read any value): lent gradients and
    relocated arguments get buffers of their own again."""
    rec.lend = {}
    for v, (r, home, views) in rec.inplace.items():
        lend_slot(rec, v, r, _alloc.empty_like(views[0]), home)
    rec.inplace = {}
    flat = rec.PG.reshape(-1)
    for _, at, offsets, v, shape, dtype in rec.relocs:
        rec.arrays[v] = np.empty(shape, dtype)
        flat[at] = _tape.addr(rec.arrays[v]) + offsets
    rec.relocs = []
