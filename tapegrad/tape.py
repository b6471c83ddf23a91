"""The Wengert tape: a growable row table that the Numba interpreter replays.

One row per tensor value that takes part in a recorded computation: leaves and
constants get a LEAF row the first time an op reads them, op results get the op's
row. Python keeps only what the replay cannot hold: the arrays a row saved (so they
stay alive), and the hooks, leaves and retained tensors by row number.

A tape is closed by a backward that frees it; later ops go to a fresh tape, and a
tensor from an older tape enters a newer one through an EXT row, whose adjoint the
backward hands on to the older tape. A tape lives as long as a tensor refers to it.
"""
import ctypes
import functools
import inspect
import itertools
import struct
import threading
import traceback

import numpy as np

from . import _kernels as K


class _State(threading.local):
    def __init__(self):
        self.grad_enabled = True
        self.tape = None


STATE = _State()

# Anomaly detection is process-wide, as in PyTorch; a list so importers see changes.
ANOMALY = [False]

# While any thread records a tg.compile call: a router that hands each tracer call to
# the calling thread's own Tracer (compile.py); None otherwise, so ops pay one check.
TRACE = [None]

# While any thread records or re-runs a tg.compile call: the router that each call of
# the public API (api) goes through, so that the calling thread's recording can log it
# or its re-run can answer it from the replay's values; None otherwise.
API = [None]


# (the file name that tracebacks show for API entries: inside the package, so that
# tg.compile's warnings point past them to the user's line)
_API_FILE = __file__.rsplit(".", 1)[0] + " (API entry)"


def api(fn):
    """``fn`` as an entry point of the public API (what tg.compile logs and matches).

    The entry has fn's own parameters where it can (no ``*args``, ``**kwargs``), which
    makes the call through it about 3x cheaper."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = None
    P = inspect.Parameter
    if params is None or any(p.kind not in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)
                             for p in params):
        @functools.wraps(fn)
        def entry(*args, **kwargs):
            router = API[0]
            if router is None:
                return fn(*args, **kwargs)
            return router.call(fn, args, kwargs)
        return entry
    defaults = tuple(p.default for p in params if p.default is not P.empty)
    head, pos, kw, d = [], [], [], 0
    for p in params:
        text = p.name
        if p.default is not P.empty:
            text += f"=_d[{d}]"
            d += 1
        if p.kind == P.KEYWORD_ONLY:
            if not kw:
                head.append("*")
            kw.append(p.name)
        else:
            pos.append(p.name)
        head.append(text)
    args = "".join(f"{n}, " for n in pos)
    call = ", ".join(pos + [f"{n}={n}" for n in kw])
    source = (f"def entry({', '.join(head)}):\n"
              f"    router = API[0]\n"
              f"    if router is None:\n"
              f"        return fn({call})\n"
              f"    return router.call(fn, ({args}), {{{', '.join(f'{n!r}: {n}' for n in kw)}}})\n")
    space = {"API": API, "fn": fn, "_d": defaults}
    exec(compile(source, _API_FILE, "exec"), space)
    return functools.wraps(fn)(space["entry"])


# Bumped when a module's parameters, buffers or submodules are reassigned: compiled
# recordings that read module attributes are then checked again.
STRUCTURE = [0]

# Bumped when a tg.compile recording starts and when it ends: a module created since
# the last bump cannot have been read by any recording, so changing it bumps nothing.
RECORDINGS = [0]

# Bumped by every in-place write to a storage that some row saved; a tape whose
# saves are all newer than the last bump needs no version check.
EPOCH = [0]

_ids = itertools.count()
SEAL_ROWS = 4096
_F64 = np.dtype(np.float64)


def _struct_addr():
    """Reads an array's data pointer straight from NumPy's PyArrayObject (the field after
    the object header), 4x cheaper than ``arr.ctypes.data``; checked once, else Numba's."""
    read = ctypes.c_void_p.from_address
    probe = np.arange(3.0)[1:]
    if read(id(probe) + _HEAD).value == probe.ctypes.data:
        return lambda a: read(id(a) + _HEAD).value
    return K.addr


# One packed write per row: OP NM A B FL N AOFF, zeros for SA SB SO, ND, the shape.
_ROW = [struct.Struct(f"=7q24xq{nd}q") for nd in range(K.MAXD + 1)]
_ROWBYTES = K.NCOL * 8
_PACK1 = _ROW[1].pack_into
_PACK2 = _ROW[2].pack_into
_HEAD = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)
addr = _struct_addr()


class Tape:
    __slots__ = ("T", "F", "M", "B", "MF", "L", "nl", "n", "fns", "where", "node_hooks", "metadata", "live",
                 "swept", "id", "saved", "adj32", "adj64", "leaves", "hooks",
                 "retain", "ext", "checks", "epoch", "__weakref__")

    def __init__(self, capacity=64):
        self.T = np.zeros((capacity, K.NCOL), np.int64)
        self.F = np.zeros((capacity, 2))
        self.M = memoryview(self.T.reshape(-1))   # item writes 2x cheaper than T[r, c]
        self.B = self.M.cast("B")
        self.MF = memoryview(self.F.reshape(-1))
        self.L = np.zeros(16, np.int64)   # input lists of rows with more than two inputs
        self.nl = 0
        self.n = 0
        self.fns = {}        # row -> (Function class, ctx) of a user Function
        self.where = {}      # row -> stack summary where it was recorded (anomaly mode)
        self.node_hooks = {}  # row -> {handle id: hook} registered on its grad_fn
        self.live = set()    # rows whose result tensor still exists
        self.swept = 0       # row count at the last sweep of dead rows
        self.metadata = {}   # row -> grad_fn.metadata dict
        self.id = next(_ids)
        self.saved = {}      # row -> {column: array} its backward reads (kept alive)
        self.adj32 = 0       # adjoint elements allocated so far, per arena dtype
        self.adj64 = 0
        self.leaves = {}     # row -> leaf tensor that requires grad
        self.hooks = {}      # row -> {handle id: hook} for non-leaf tensors
        self.retain = {}     # row -> weakref of a non-leaf tensor with retain_grad()
        self.ext = {}        # row -> non-leaf tensor of an older tape
        self.checks = []     # (version holder, version at save, consumer row, column, producer)
        self.epoch = None    # EPOCH when the first value was saved

    def drop(self, r):
        """Row r's result tensor died: with no live result left, no backward can reach
        this tape any more, so what it saved is released and it takes no new rows."""
        live = self.live
        live.discard(r)
        if not live:
            self.release()

    def release(self):
        """Drops everything that keeps values or other tapes alive (a tape sealed in the
        middle of a graph refers to the older tape through ``ext``)."""
        self.saved = {}
        self.checks = []
        self.ext = {}
        self.leaves = {}
        self.hooks = {}
        self.fns = {}
        close(self)

    def sweep(self):
        """Releases what dead rows saved, unless a live row's backward still needs it."""
        alive = np.zeros(self.n, np.uint8)
        alive[list(self.live)] = 1
        needed = K.needed_rows(self.T, self.L, alive, self.n)
        saved = self.saved
        for r in list(saved):
            if not needed[r]:
                del saved[r]
        self.swept = self.n

    def _grow(self):
        if self.n >= 2 * self.swept and self.n >= 256:
            self.sweep()
        if len(self.T) >= SEAL_ROWS and STATE.tape is self:
            # A big tape stops taking new rows, so that a loop that keeps one graph
            # alive while building the next (retain_graph loops) cannot grow it forever.
            STATE.tape = None
        cap = 2 * len(self.T)
        T = np.zeros((cap, K.NCOL), np.int64)
        T[:self.n] = self.T[:self.n]
        F = np.zeros((cap, 2))
        F[:self.n] = self.F[:self.n]
        self.T, self.F = T, F
        self.M = memoryview(T.reshape(-1))
        self.B = self.M.cast("B")
        self.MF = memoryview(F.reshape(-1))

    def input_list(self, rows):
        """Stores a list of input rows; returns where it starts in ``L``."""
        start = self.nl
        if start + len(rows) > len(self.L):
            L = np.zeros(2 * (start + len(rows)), np.int64)
            L[:start] = self.L[:start]
            self.L = L
        self.L[start:start + len(rows)] = rows
        self.nl = start + len(rows)
        return start

    def row(self, kernel, entry, data, req, a=-1, b=-1, flags=0):
        """Appends a row for value ``data``; returns its index."""
        n = self.n
        if n == len(self.T):
            self._grow()
        size = data.size
        aoff = -1
        if data.dtype is _F64:
            flags |= K.F64
            if req:
                flags |= K.REQ
                aoff = self.adj64
                self.adj64 = aoff + size
        elif req:
            flags |= K.REQ
            aoff = self.adj32
            self.adj32 = aoff + size
        shape = data.shape
        nd = len(shape)
        if nd == 1:
            _PACK1(self.B, n * _ROWBYTES, kernel, entry, a, b, flags, size, aoff, 1, shape[0])
        elif nd == 2:
            _PACK2(self.B, n * _ROWBYTES, kernel, entry, a, b, flags, size, aoff, 2, shape[0],
                   shape[1])
        elif nd <= K.MAXD:
            _ROW[nd].pack_into(self.B, n * _ROWBYTES, kernel, entry, a, b, flags, size, aoff,
                               nd, *shape)
        else:
            raise RuntimeError(f"tapegrad records tensors of at most {K.MAXD} dims, got {nd}")
        self.n = n + 1
        if ANOMALY[0]:
            self.where[n] = "".join(traceback.format_stack()[:-3])
        return n

    def held(self, r):
        """The arrays row r saved, by column ({} when none or freed)."""
        return self.saved.get(r) or {}

    def save(self, r, col, t, data, producer):
        """Row r's backward reads ``data``, the value of tensor t (the result of row
        ``producer``, -1 for a leaf): keep it and remember its version. The caller has
        flagged row r with SAVES."""
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
            if TRACE[0] is not None:
                TRACE[0].snapshot(data, t)
        self._hold(r, col, data)
        base = t._base if t._base is not None else t
        ver = base._ver
        if ver is None:
            ver = base._ver = [0]
        if self.epoch is None:
            self.epoch = EPOCH[0]
        self.checks.append((ver, ver[0], r, col, producer))

    def keep(self, r, col, data):
        """Row r's backward reads ``data``, a private array no one can modify."""
        if TRACE[0] is not None:
            TRACE[0].keep(data)
        self._hold(r, col, np.ascontiguousarray(data))

    def _hold(self, r, col, data):
        """Keeps ``data`` alive for row r and stores its address in column ``col``."""
        self.M[r * K.NCOL + col] = addr(data)
        held = self.saved.get(r)
        if held is None:
            self.saved[r] = {col: data}
        else:
            held[col] = data

    def mark_modified(self):
        """Flags rows whose saved values changed in place since they were saved."""
        if self.epoch is None or self.epoch == EPOCH[0]:
            return
        for ver, v, r, _, _ in self.checks:
            if ver[0] != v:
                self.T[r, K.FL] |= K.DIRTY

    def modified_detail(self, r):
        """(value, producer row, version now, version saved) of row r's changed save."""
        for ver, v, row, col, producer in self.checks:
            if row == r and ver[0] != v:
                return self.held(r)[col], producer, ver[0], v
        raise AssertionError("no modified save recorded for this row")


def current():
    """The tape new rows go to."""
    tape = STATE.tape
    if tape is None:
        tape = STATE.tape = Tape()
    return tape


def close(tape):
    """After a freeing backward: later ops start a new tape."""
    if STATE.tape is tape:
        STATE.tape = None


_ARENAS = {}


def take_arena(dtype, size):
    """A scratch adjoint arena of at least ``size`` elements, reused across backwards.

    Arenas are taken out of the pool while in use, so a backward started from a hook
    gets its own.
    """
    pool = _ARENAS.get(dtype)
    if pool:
        a = pool.pop()
        if len(a) >= size:
            return a
        size = max(size, 2 * len(a))
    return np.empty(max(size, 1024), dtype)


def give_arena(arena):
    """Back to the pool, unless a recording of this thread used it: the program replays
    on arenas of its own, and a big recording's would stay resident for nothing."""
    if TRACE[0] is not None and TRACE[0].current() is not None:
        return
    pool = _ARENAS.setdefault(arena.dtype, [])
    if len(pool) < 2:
        pool.append(arena)
