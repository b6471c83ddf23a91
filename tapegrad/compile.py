"""Record once, replay many: ``tg.compile``.

The first call of a compiled function runs it eagerly while a ``Tracer`` watches every
tensor operation: ops (recorded or not), in-place updates, backward passes and the
gradients they deposit. What it saw becomes a program over fixed buffers (``_kernels``,
"Compiled programs"), which later calls replay in one Numba call after copying their
arguments in. Parameters, gradients and optimizer state are the eager run's arrays,
kept alive, so the replay writes them where eager code would; intermediate values get
buffers of their own. The tracer is ``_tracer``; the re-run of a function's Python
around a replay, for the values it reads, is ``_shadow``.

Guards keep a replay from ever being wrong: argument shapes, dtypes, requires_grad
flags and scalar values and grad mode pick a cache entry; each recording then checks
that the tensors it read still hold the same storage, that leaves' gradients are in
the state it saw, that optimizer state has not changed shape, and (inside the replay)
that every value Python read while recording (``item()``, ``bool(t)``...) is the same.
A mismatch records again. What the tracer cannot express makes the recording fall
back to eager calls, with a warning.
"""
import functools
import threading
import warnings
import weakref

import numpy as np

from . import _alloc
from . import _kernels as K
from . import tape as _tape
from ._buffers import (_Uses, _in_arena, _lendable, _own_buffers, _relocations, _run_scratch,
                       claim, lend_slot, unlend)
from ._fusion import _BINARY, _UNARY, _alias_copies, _fuse, _runs
from ._guards import _Sources, _same_state, read_value, same_value
from ._shadow import Diverged, Shadow, eligible
from ._tracer import _BOOL, Tracer, _unalias
from .autograd.engine import FUNCTION_BACKWARD, _apply_hooks
from .hyper import Hyper
from .tensor import Tensor, _wrap

__all__ = ["compile", "CompileWarning"]


class CompileWarning(UserWarning):
    """A compiled function runs eagerly because its recording cannot be replayed."""


def _ignore(*args, **kwargs):
    return None


class _Router:
    """``TRACE[0]`` while any thread records: each tracer call goes to the calling
    thread's own Tracer, and calls from threads that do not record are ignored, so a
    recording never captures another thread's work."""

    def __init__(self):
        self.by_thread = {}
        self.lock = threading.Lock()

    def __getattr__(self, name):
        tr = self.by_thread.get(threading.get_ident())
        return _ignore if tr is None else getattr(tr, name)

    def current(self):
        return self.by_thread.get(threading.get_ident())

    def call(self, fn, args, kwargs):
        """An API call (``tape.api``): the calling thread's Tracer or Shadow takes it."""
        m = self.by_thread.get(threading.get_ident())
        if m is None:
            return fn(*args, **kwargs)
        return m.call(fn, args, kwargs)

    def untraced(self, fn, *args):
        """fn(*args) with the calling thread's recording paused (hooks of a backward:
        a replay calls them itself)."""
        ident = threading.get_ident()
        with self.lock:
            mode = self.by_thread.pop(ident, None)
        try:
            return fn(*args)
        finally:
            if mode is not None:
                with self.lock:
                    self.by_thread[ident] = mode

    def enter(self, tr):
        with self.lock:
            self.by_thread[threading.get_ident()] = tr
            _tape.TRACE[0] = _tape.API[0] = self
            _tape.RECORDINGS[0] += 1

    def leave(self):
        with self.lock:
            _tape.RECORDINGS[0] += 1
            self.by_thread.pop(threading.get_ident(), None)
            if not self.by_thread:
                _tape.TRACE[0] = _tape.API[0] = None


_ROUTER = _Router()
_TRACE = _tape.TRACE


# Recordings kept per argument signature (newest first); value-dependent functions
# keep one per branch taken.
MAX_RECORDINGS = 8


class _TapeView:
    """What a user Function's backward reads of a tape, on a program's copy."""

    def __init__(self, T, L, fns):
        self.T, self.L, self.fns = T, L, fns


def _saved_values(tr):
    """The value ids of what each user Function saved for backward."""
    return {key: [None if t is None else tr.ids.get(id(t._data)) for t in fn[1]._saved]
            for key, fn in tr.fns.items() if key.__class__ is int}


def _function_contexts(tr, saved):
    """Each Function's ctx (the recording's copy) saves the program's values, so that its
    backward on a replay reads that replay's."""
    for key, vids in saved.items():
        ctx = tr.fns[key][1]
        tensors = []
        for t, v in zip(ctx._saved, vids):
            if t is not None and v is not None:
                t = _wrap(tr.arrays[v])
            tensors.append(t)
        ctx._saved = tuple(tensors)
        ctx._versions = tuple(None if t is None else 0 for t in tensors)
        ctx._freed = False


class Recording:
    """One recorded program with its guards and the buffers it replays over."""

    def __init__(self, tr, out):
        saved = _saved_values(tr)
        _own_buffers(tr)
        _function_contexts(tr, saved)
        self.arrays = tr.arrays
        self.out = out
        self.args = [(j, v) for j, _, v in tr.args]
        self.slots = [(K.H_ARGS + i, j) for i, (j, _) in enumerate(self.args)]
        nv = len(tr.arrays)
        VD = np.zeros((nv, K.NCOL), np.int64)
        for v, arr in enumerate(tr.arrays):
            if tr.kind[v] == "keep":
                continue
            VD[v, K.SO] = _tape.addr(arr)
            VD[v, K.N] = arr.size
            VD[v, K.ND] = arr.ndim
            VD[v, K.S0:K.S0 + arr.ndim] = arr.shape
            # (int64 values, index data and checked reads only, are 8 bytes like float64)
            VD[v, K.FL] = K.F64 if arr.itemsize == 8 else K.U8 if arr.dtype == _BOOL else 0
        ins = _fuse(tr.restores + tr.ins, VD)
        ni = len(ins)
        patches = []
        INS = np.zeros((ni, K.NCOL), np.int64)
        FI = np.zeros((ni, 2))
        for i, (op, o, a, b, params, f0, f1) in enumerate(ins):
            INS[i, K.I_OP:K.I_B + 1] = op, o, a, b
            INS[i, K.I_P:K.I_P + len(params)] = params
            FI[i] = f0, f1
            for col, f in ((0, f0), (1, f1)):
                if f.__class__ is Hyper:
                    patches.append((i, col, f.get))
            if (op in _UNARY or op in _BINARY) and VD[o, K.N] == 1 and VD[a, K.N] == 1 \
                    and (b < 0 or VD[b, K.N] == 1):
                INS[i, K.I_P + 9] = 1
        self.partials = []                  # of the sums that end fused runs (_fuse)
        for i in np.flatnonzero((INS[:, K.I_OP] == K.X_SUMROWS) & (INS[:, K.I_A] < 0)):
            parts = np.empty((INS[i, K.I_P] + K.SUM_BLOCK - 1) // K.SUM_BLOCK)
            self.partials.append(parts)
            INS[i - 1, K.I_P + 2] = INS[i, K.I_P + 2] = parts.ctypes.data
        for i in range(ni - 2, -1, -1):     # P9: the length of the run from here on
            if INS[i, K.I_P + 9] and INS[i + 1, K.I_P + 9] and \
                    VD[INS[i, K.I_O], K.FL] & K.F64 == VD[INS[i + 1, K.I_O], K.FL] & K.F64:
                INS[i, K.I_P + 9] += INS[i + 1, K.I_P + 9]
        if tr.tapes:
            tape, TT, TF, TL = tr.tapes[-1]
            adj32, adj64 = tape.adj32, tape.adj64
        else:
            TT = np.zeros((0, K.NCOL), np.int64)
            TF = np.zeros((0, 2))
            TL = np.zeros(0, np.int64)
            adj32 = adj64 = 0
        LI = np.array(tr.li, np.int64)
        keep = [i[4][0] for i in tr.ins if i[0] == K.X_ADJ]
        for i in tr.ins:
            if i[0] == K.X_BACKWARD:
                keep += tr.li[i[4][1]:i[4][1] + 2 * i[4][2]:2]
        _alias_copies(TT, TL, keep)
        runs, extra = _runs(TT, TL, keep, (adj32, adj64))
        K.prepare_program(TT, VD, INS, runs)
        self.nt, self.nv = len(TT), nv
        self.sites = tr.sites
        self.bound = tr.bound
        self.ARGV = np.zeros((2, K.ARGV), np.int64)
        self.PG = np.concatenate([TT, VD, INS])
        self.PL = np.concatenate([TL, LI, runs])
        self.PF = np.concatenate([TF, FI])
        self.patches = [(len(TF) + i, col, get) for i, col, get in patches]
        # (scratch for each chunk of a fused run split over threads)
        self.adj32 = _alloc.empty(max(adj32 + extra[0] * K.SPLIT_MAX, 1), np.float32)
        self.adj64 = _alloc.empty(max(adj64 + extra[1] * K.SPLIT_MAX, 1))
        self.seen = np.zeros(max(len(TT), 1), np.uint8)
        self.ARGS = np.zeros(K.H_ARGS + len(self.args), np.int64)
        self.ARGS[:K.H_ARGS] = (len(TT), nv, ni, len(TL), len(LI),
                                self.adj32.ctypes.data, self.adj32.size,
                                self.adj64.ctypes.data, self.adj64.size,
                                self.seen.ctypes.data, self.seen.size,
                                K.KFWD.ctypes.data, K.KTAB.ctypes.data, self.ARGV.ctypes.data,
                                -1, -1, 0, K.THREADS.ctypes.data)
        self.ext = [(weakref.ref(t), arr, req) for t, arr, req in tr.ext.values()]
        used = {id(t) for t, _, _ in tr.ext.values()}
        self.grads = []
        argpos = {id(a): j for j, a, _ in tr.args}
        for t, g, read in tr.grad_first.values():
            if id(t) not in argpos and (read or id(t) not in tr.grad_final):
                ident = g is not None and id(g) in used
                self.grads.append((t, g, ident))
        self.final = []
        self.argrads = []
        self.req_flips = list(tr.req_flips.items())
        for t in tr.grad_final.values():
            g = t._grad
            if g is not None and id(g._data) not in tr.ids:
                self.grads = None        # a gradient the program does not produce
                return
            if id(t) in argpos:
                self.argrads.append((argpos[id(t)], None if g is None else tr.ids[id(g._data)]))
            else:
                self.final.append((t, g))
        self.optims = list(tr.optims.values())
        self.settings = list(tr.settings.values())
        self.hguards = tr.hguards
        self.hooks = tr.hooks
        self.calls = tr.calls
        self.fn_tape = _TapeView(self.PG[:len(TT)], self.PL[:len(TL)], tr.fns)
        self.arenas = {0: self.adj32, K.F64: self.adj64}
        self.streams = list(tr.streams.values())
        self.modes = list(tr.modules.values())
        self.attrs = tr.attrs
        self.greads = tr.greads
        # the flags a replay leaves, as the function's train()/eval() calls did
        self.final_modes = [(m, m.training) for m, f in self.modes if m.training != f]
        self.structure = _tape.STRUCTURE[0]
        last = max(tr.checks) if tr.checks else -1
        written = set()
        for i in range(last):
            op, o = tr.ins[i][0], tr.ins[i][1]
            if o >= 0 and op not in (K.X_ARG, K.X_CHECK) and tr.kind[o] != "arg":
                written.add(o)
        self.backup = [tr.arrays[v] for v in sorted(written) if tr.kind[v] != "keep"]
        visible = {tr.ids[id(g._data)] for _, g in self.final if g is not None}
        visible.update(v for _, v in self.argrads if v is not None)
        self.log = eligible(tr, visible)
        self.ids = tr.ids
        self.first_read = len(tr.log) if tr.first_read is None else tr.first_read
        self.shadow = False
        uses = _Uses(self, tr, INS, TT, LI)
        self.lend = _lendable(self, tr, uses)
        self.inplace = _in_arena(self, INS)
        self.relocs = _relocations(self, tr, INS, uses)
        for v, (r, _, views) in self.inplace.items():
            self.lend[v] = views
            lend_slot(self, v, r, views[0])
        self.scratch = _run_scratch(self, tr, saved, uses)
        self.sig = (tuple((op, o, a, b, params[1:] if op == K.X_GATHER else params,
                           f0 if f0.__class__ is not Hyper else "H",
                           f1 if f1.__class__ is not Hyper else "H")
                          for op, o, a, b, params, f0, f1 in tr.ins),
                    tuple(tr.li), tuple((e[0], e[3]) for e in tr.log))

    def rerun_from_now_on(self):
        """Later calls re-run the Python around the replay: value reads stop checking."""
        INS = self.PG[self.nt + self.nv:]
        checks = INS[:, K.I_OP] == K.X_CHECK
        INS[checks, K.I_B] = INS[checks, K.I_A]
        self.shadow = True
        unlend(self)
        # the re-run's Python may read any value: each gets a buffer again
        INS[:, K.I_P + 8] = 0
        for v, (shape, dtype) in self.scratch.items():
            self.arrays[v] = _alloc.empty(shape, dtype)
            self.PG[self.nt + v, K.SO] = _tape.addr(self.arrays[v])
        self.scratch = {}

    def miss(self, sources, cur):
        """None when the recording holds for this call, else why not."""
        i = sources.changed(self.bound, cur)
        if i >= 0:
            return sources.describe(i, self.bound[i], cur[i])
        if self.structure != _tape.STRUCTURE[0]:
            return "a module's parameters or submodules changed"
        for m, f in self.modes:
            if m.training != f:
                return f"{type(m).__name__}'s train/eval mode changed"
        for m, k, v in self.attrs:
            now = m.__dict__.get(k)
            if not same_value(v, now):
                return f"{type(m).__name__}.{k} changed ({v!r} -> {now!r})"
        for glob, name, steps, v in self.greads:
            if not same_value(v, read_value(glob, name, steps)):
                return f"the global {name} a module's forward reads changed"
        for ref, arr, req in self.ext:
            t = ref()
            if t is None:
                return "a tensor it read was freed (a variable rebound to another tensor?)"
            if t._data is not arr or t._req != req:
                return (f"a tensor of shape {tuple(arr.shape)} it read had its storage or "
                        "requires_grad changed")
        for t, g, ident in self.grads:
            cur_g = t._grad
            if ident:
                if cur_g is not g or cur_g._data is not g._data:
                    return "a .grad it read was replaced"
            elif (cur_g is None) != (g is None):
                return "a .grad went from None to a tensor or back"
        for opt, sig in self.optims:
            if not _same_state(opt, sig):
                return f"the state of {type(opt).__name__} changed shape or keys"
        if self.settings:
            changed = 0
            for st in self.settings:
                c = st.check()
                if c < 0:
                    return f"the param_groups of {type(st.opt).__name__} changed structure"
                changed |= c
            if changed and not self._reread():
                return ("an optimizer setting changed in a way that changes the Python "
                        "path taken")
        return None

    def _reread(self):
        """Optimizer settings changed: the recording still holds if every comparison
        Python made with them still comes out the same; the program's constants computed
        from them are then recomputed."""
        try:
            if not all(check() for check in self.hguards):
                return False
            values = [(row, col, get()) for row, col, get in self.patches]
        except (LookupError, TypeError, ValueError, ArithmeticError):
            return False
        PF = self.PF
        for row, col, v in values:
            PF[row, col] = v
        for s in self.settings:
            s.commit()
        return True

    def _hooks(self, r):
        """Runs the tensor hooks of tape row r on its gradient, as backward does."""
        T = self.PG[r]
        arena = self.adj64 if T[K.FL] & K.F64 else self.adj32
        region = arena[T[K.AOFF]:T[K.AOFF] + T[K.N]]
        shape = tuple(int(n) for n in T[K.S0:K.S0 + T[K.ND]])
        g = _apply_hooks(self.hooks[r], _wrap(region.reshape(shape).copy()))
        region[:] = g._data.reshape(-1)

    def _resume(self, status, i):
        """Serves the program's stops for Python (calls, hooks, user Functions in a
        backward) until it finishes or fails."""
        ARGS = self.ARGS
        while status == K.CALLED or (status == K.PAUSED or status == K.PYFN) and \
                self.PG[self.nt + self.nv + i, K.I_OP] == K.X_BACKWARD:
            if status == K.CALLED:
                fn, vs = self.calls[self.PG[self.nt + self.nv + i, K.I_P]]
                fn([self.arrays[v] for v in vs])
                ARGS[K.H_RESUME] = i
                status, i = _run()(self.PG, self.PL, self.PF, ARGS)
                continue
            r = int(self.ARGV[1, K.PAUSED_ROW])
            if status == K.PAUSED:
                self._hooks(r)
                ARGS[K.H_RESUME:K.H_RESUME + 3] = i, r, 1
            else:
                FUNCTION_BACKWARD["replay"](self.fn_tape, r, self.seen, self.arenas, True)
                ARGS[K.H_RESUME:K.H_RESUME + 3] = i, r - 1, 0
            status, i = _run()(self.PG, self.PL, self.PF, ARGS)
        return status, i

    def replay(self, args, build=True):
        ARGS = self.ARGS
        keep = []
        addr = _tape.addr
        for slot, j in self.slots:
            d = args[j]._data
            if not d.flags.c_contiguous:
                d = np.ascontiguousarray(d)
                keep.append(d)
            ARGS[slot] = addr(d)
        if self.relocs:
            flat = self.PG.reshape(-1)
            for slot, at, offsets, *_ in self.relocs:
                flat[at] = ARGS[slot] + offsets
        saved = [a.copy() for a in self.backup] if self.backup else None
        positions = [s[1] for s in self.streams] if self.streams else None
        if self.lend:
            claim(self)
        # Ctrl-C: state changes only inside this one Numba call, which Python cannot
        # interrupt, so a step is done or not done (the .grad attributes set after it
        # already hold these tensors, unless a guard would record again anyway)
        status, i = _run()(self.PG, self.PL, self.PF, ARGS)
        if status:
            status, i = self._resume(status, i)
        if status:
            if saved is not None:
                for a, s in zip(self.backup, saved):
                    np.copyto(a, s)
            for s, pos in zip(self.streams, positions or ()):
                s[1] = pos
            op = self.PG[self.nt + self.nv + i, K.I_OP]
            if op == K.X_TARGET or op == K.X_INDEX:
                self.why = "a class target or an index out of range"
            else:
                p = self.PG[self.nt + self.nv + i, K.I_P]
                self.why = f"the value read at {self.sites[p]} changed"
            return _MISMATCH
        for t, g in self.final:
            t._grad = g
        for j, flag in self.req_flips:
            args[j]._req, args[j]._tape = flag, None
        for m, f in self.final_modes:
            object.__setattr__(m, "training", f)
        if not build:
            return None
        out = self.out
        if self.lend:
            copies = {v: _wrap(self.arrays[v]) for v in self.lend}
        elif out[0] == "v" and not self.argrads:
            return _wrap(self.arrays[out[1]].copy())
        else:
            copies = {}
        for j, v in self.argrads:
            args[j]._grad = None if v is None else _out(self.arrays[v], copies, v)
        return _build(out, self.arrays, copies)


_MISMATCH = object()
_ENTRY = []


def _run():
    """run_program's compiled entry point once there is one: calling it directly
    skips the dispatcher's type resolution (its argument types never vary)."""
    if _ENTRY:
        return _ENTRY[0]
    sigs = K.run_program.signatures
    if len(sigs) == 1:
        _ENTRY.append(K.run_program.overloads[sigs[0]].entry_point)
        return _ENTRY[0]
    return K.run_program


def _out(arr, copies, v):
    t = copies.get(v)
    if t is None:
        t = copies[v] = _wrap(arr.copy())
    return t


def _build(tpl, arrays, copies):
    kind = tpl[0]
    if kind == "v":
        return _out(arrays[tpl[1]], copies, tpl[1])
    if kind == "seq":
        items = [_build(i, arrays, copies) for i in tpl[2]]
        return tpl[1](items) if tpl[1] in (list, tuple) else tpl[1](*items)
    if kind == "dict":
        return tpl[1]((k, _build(v, arrays, copies)) for k, v in tpl[2])
    return tpl[1]


class _Held:
    """A strong reference, called like a weak one."""
    __slots__ = ("t",)

    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class _Fallback:
    """A recording that cannot be replayed: calls with its guards run eagerly."""

    def __init__(self, tr, why):
        self.why = why
        self.bound = tr.bound
        # (held: a failed recording may have read temporaries)
        self.ext = [(_Held(t), arr, req) for t, arr, req in tr.ext.values()]
        self.optims = list(tr.optims.values())
        self.modes = list(tr.modules.values())
        self.attrs = tr.attrs
        self.greads = tr.greads
        self.settings = []
        self.structure = _tape.STRUCTURE[0]
        args = {id(a) for _, a, _ in tr.args}
        self.grads = [(t, g, False) for t, g, _ in tr.grad_first.values()
                      if id(t) not in args]

    miss = Recording.miss


# Consecutive recordings of one function after which a CompileWarning says why
STORM = 4


class Compiled:
    """The callable ``tg.compile`` returns; ``records``, ``replays`` and ``fallbacks``
    count how calls were served. Calls from several threads take turns (they share the
    recordings' buffers); each recording sees only its own thread's operations."""

    def __init__(self, fn):
        self.fn = fn
        self.cache = {}
        self.records = 0
        self.replays = 0
        self.fallbacks = 0
        self.sources = _Sources(fn)
        self.streak = 0          # calls in a row that recorded
        self.stormed = False
        self.last = None         # (key, values of the variables) of the last recording
        lock = threading.RLock()         # calls from several threads take turns
        self.acquire, self.release = lock.acquire, lock.release
        functools.update_wrapper(self, fn)

    def _key(self, args, leaves):
        """The cache key of a call: grad mode, then per argument its shape, dtype,
        requires_grad and whether .grad is None (tensors, also inside tuples, lists and
        dicts, which go to ``leaves``), its value (numbers, strings) or its identity."""
        key = [_tape.STATE.grad_enabled]
        add = key.append
        for a in args:
            if a.__class__ is Tensor:      # _sig's first case, inline: on every call
                for b in leaves:
                    if b is a:
                        add(_sig(a, leaves))
                        break
                else:
                    leaves.append(a)
                    d = a._data
                    add((d.shape, d.dtype, a._req, a._grad is None))
            else:
                add(_sig(a, leaves))
        return tuple(key)

    def __call__(self, *args):
        if _TRACE[0] is not None and _ROUTER.current() is not None:
            # called by a function this thread records: it becomes part of that recording
            return self.fn(*args)
        self.acquire()
        try:
            src = self.sources
            cur = src.values()
            full = []
            key = self._key(args + src.inputs(cur), full)
            entries = self.cache.get(key)
            why = None
            checked = None               # a recording whose value read came out differently
            if entries:
                for rec in entries:
                    miss = rec.miss(src, cur)
                    if miss is not None:
                        why = why or miss       # the newest recording's reason
                        continue
                    if isinstance(rec, _Fallback):
                        self.fallbacks += 1
                        self.streak = 0
                        warnings.warn(f"tg.compile: {self._name()} runs eagerly: {rec.why}",
                                      CompileWarning, stacklevel=2)
                        return self.fn(*args)
                    res = rec.replay(full, build=not rec.shadow)
                    if res is not _MISMATCH:
                        self.replays += 1
                        self.streak = 0
                        return self._rerun(rec, args, full) if rec.shadow else res
                    why = why or rec.why
                    if rec.why.startswith("the value read"):
                        checked = checked or rec
            else:
                why = self._new_key(key)
            if self._vary(cur):
                full = []
                key = self._key(args + src.inputs(cur), full)
            return self._record(key, args, full, cur, why, checked)
        finally:
            self.release()

    def _rerun(self, rec, args, inputs):
        """The Python of fn around a replay that has just run (``_shadow``)."""
        sh = Shadow(rec, inputs)
        _ROUTER.enter(sh)
        try:
            result = self.fn(*args)
        except Diverged as d:
            raise RuntimeError(self._diverged(f"calls {d} where its recording called "
                                              "something else")) from None
        finally:
            _ROUTER.leave()
        if sh.unfinished():
            raise RuntimeError(self._diverged("returns before making every call its "
                                              "recording made"))
        return result

    def _diverged(self, what):
        self.cache.clear()
        return (f"tg.compile: {self._name()} {what}, before reading any tensor value: "
                "its Python depends on something that no guard sees (a counter in an "
                "object, random module state, time...). This call's replay has already "
                "run; its recordings are dropped. Pass what it depends on as an argument.")

    def _vary(self, cur):
        """Variables bound to other tensors than at the last recording become inputs."""
        if self.last is None:
            return False
        old = self.last[1]
        new = [i for i, (a, b) in enumerate(zip(old, cur))
               if a is not b and _holds_tensors(a) and _holds_tensors(b)
               and i not in self.sources.varying and i not in self.sources.stored]
        self.sources.varying += new
        return bool(new)

    def _new_key(self, key):
        if self.last is None:
            return None
        old = self.last[0]
        if old[0] != key[0]:
            return "grad mode (torch.no_grad / enable_grad) changed"
        a, b = _first_difference(old[1:], key[1:])
        return (f"the arguments changed ({a!r} -> {b!r}); the recordings are kept per "
                "shape, dtype, requires_grad and .grad being None, and per value of a "
                "number argument: pass a tensor for a number that changes")

    def _name(self):
        return getattr(self.fn, "__name__", "the function")

    def _record(self, key, args, full, cur, why, checked=None):
        tr = Tracer(full)
        tr.bound = self.sources.bound(cur)
        draws = self.sources.draws(cur)
        if draws:
            tr.fail(draws)
        _tape.STATE.tape = None
        _ROUTER.enter(tr)
        tr.swap_args()
        try:
            result = self.fn(*args)
        finally:
            _ROUTER.leave()
            _tape.STATE.tape = None
            tr.swap_args()
            tr.carry_back()
        self.records += 1
        self.streak += 1
        self.last = (key, cur)
        if self.streak >= STORM and why and not self.stormed:
            self.stormed = True
            warnings.warn(f"tg.compile: {self._name()} recorded {self.streak} calls in a "
                          f"row: {why}. Each such call runs eagerly and records again; "
                          "keep what the function reads fixed between calls, or pass it "
                          "as a tensor argument", CompileWarning, stacklevel=3)
        out = tr.finish(result)
        rec = None if out is None else Recording(tr, out)
        if rec is not None and rec.grads is None:
            tr.fail("a gradient the program does not produce")
            rec = None
        stored = [self.sources.names[i] for i in self.sources.stored]
        if rec is not None and stored and rec.log is None:
            tr.fail(f"it assigns {', '.join(stored)} (nonlocal or global), which a replay "
                    "would not do, and its Python cannot be re-run around a replay (a "
                    "tensor value read inside a tapegrad function, or a value read "
                    "before the step's last update)")
            rec = None
        if rec is None:
            rec = _Fallback(tr, tr.failed)
            warnings.warn(f"tg.compile: {self._name()} cannot be replayed and runs eagerly: "
                          f"{tr.failed}", CompileWarning, stacklevel=3)
        entries = self.cache.setdefault(key, [])
        if isinstance(rec, Recording) and rec.log is not None and (
                stored or checked is not None and rec.sig == checked.sig):
            # Python that assigns variables, or the same program again with only the
            # values read differing: its Python re-runs around the replays
            rec.rerun_from_now_on()
            if checked is not None and checked in entries:
                entries.remove(checked)
        entries.insert(0, rec)
        del entries[MAX_RECORDINGS:]
        if isinstance(rec, Recording):
            _unalias(result, tr)
            for _, a, _ in tr.args:
                if a._grad is not None:
                    _unalias(a._grad, tr)
        return result


def _sig(a, leaves):
    if a.__class__ is Tensor or isinstance(a, Tensor):
        for k, t in enumerate(leaves):
            if t is a:
                return ("same as", k)
        leaves.append(a)
        d = a._data
        return (d.shape, d.dtype, a._req, a._grad is None)
    if isinstance(a, (bool, int, float, str)) or a is None:
        return (type(a), a)
    if isinstance(a, (tuple, list)):
        return (type(a),) + tuple(_sig(x, leaves) for x in a)
    if isinstance(a, dict) and all(isinstance(k, (str, int)) for k in a):
        return (type(a),) + tuple((k, _sig(v, leaves)) for k, v in a.items())
    return ("id", id(a))


def _holds_tensors(x):
    """A tensor, or a tuple, list or dict of them (what a variable read as an input may
    hold)."""
    if isinstance(x, Tensor):
        return True
    if isinstance(x, dict):
        x = x.values()
    elif not isinstance(x, (tuple, list)):
        return False
    return bool(x) and all(map(_holds_tensors, x))


def _first_difference(a, b):
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        for x, y in zip(a, b):
            if x != y:
                return _first_difference(x, y)
    return a, b


def compile(fn):
    """Records ``fn`` on its first call and replays the recording on later calls."""
    return Compiled(fn)
