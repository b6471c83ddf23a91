"""The tracer of ``tg.compile``: while a compiled function's first call runs eagerly, it
watches every tensor operation (ops recorded or not, in-place updates, backward passes and
the gradients they deposit, optimizer steps, values Python reads, API calls) and turns
them into the instructions of a program (``_kernels``, "Compiled programs")."""
import copy
import functools
import os
import sys

import numpy as np

from . import _kernels as K
from . import tape as _tape
from ._fusion import _BINARY, _UNARY
from ._guards import _Settings, _state_sig, class_reads, read_value
from ._shadow import signature, template
from .hyper import Hyper, live_group, num, rounded
from .tensor import Tensor


class _Unsupported(Exception):
    pass




_F64 = np.dtype(np.float64)
_BOOL = np.dtype(np.bool_)
_I64 = np.dtype(np.int64)
_CMP = {np.equal: 0, np.not_equal: 1, np.less: 2, np.less_equal: 3, np.greater: 4,
        np.greater_equal: 5}
_FLOATS = (np.dtype(np.float32), _F64)
_NUMBERS = (int, float, bool)


_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _site():
    """file:line of the innermost caller outside tapegrad."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_PKG):
        f = f.f_back
    return "" if f is None else f"{f.f_code.co_filename}:{f.f_lineno}"


def _root(arr):
    while arr.base is not None and isinstance(arr.base, np.ndarray):
        arr = arr.base
    return arr


def _watch(hook):
    """A Tracer hook: it does nothing once the recording failed, and what it cannot
    express (_Unsupported) fails the recording."""
    @functools.wraps(hook)
    def watched(self, *args, **kwargs):
        if self.failed is None:
            try:
                hook(self, *args, **kwargs)
            except _Unsupported as exc:
                self.fail(str(exc))
    return watched



def _same_bytes(x, y, chunk=1 << 20):
    """Whether x and y hold the same bytes: compared a megabyte at a time (a whole-array
    comparison allocates its full-size temporaries: 0.8 s for 80 MB)."""
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if not (x.flags.c_contiguous and y.flags.c_contiguous):
        return bool(np.array_equal(x, y, equal_nan=True))
    a, b = x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8)
    for i in range(0, a.size, chunk):
        if not np.array_equal(a[i:i + chunk], b[i:i + chunk]):
            return False
    return True


class Tracer:
    """Turns what one eager call does to tensors into a program."""

    def __init__(self, args):
        self.failed = None       # why the program cannot be replayed
        self.arrays = []         # every buffer, by value id (kept alive)
        self.kind = []           # per value: 'int', 'ext', 'arg', 'const'
        self.ids = {}            # id(array) -> value id
        self.created = {}        # id -> array made inside fn by an untraced path
        self.ins = []            # instructions: (op, o, a, b, params, f0, f1)
        self.li = []             # value lists
        self.ext = {}            # id(tensor) -> (tensor, array, requires_grad)
        self.grad_first = {}     # id(tensor) -> (tensor, grad at first touch, read?)
        self.grad_final = {}     # id(tensor) -> tensor whose .grad was assigned
        self.req_flips = {}      # argument position -> requires_grad the call gave it
        self.own = {}            # id -> a leaf this call made and made require grad
        self.optims = {}         # id(optimizer) -> (optimizer, state signature)
        self.modules = {}        # id(module) -> (module, its training flag at the start)
        self.attrs = []          # (module, name, value) of the modules' number attributes
        self.greads = []         # (globals, name, steps, value): numbers their forward read
        self.streams = {}        # id -> random stream state drawn from
        self.hooks = {}          # tape row -> its tensor hooks (the replay calls them)
        self.fns = {}            # the user Functions of the backward, as tape.fns
        self.log = []            # per API call: (function, result template, instructions)
        self.depth = 0           # API calls in progress
        self.first_read = None   # API calls made before the first value read
        self.inner_read = False  # a value read inside an API call
        self.settings = {}       # id(optimizer) -> _Settings (its param_groups)
        self.hguards = []        # comparisons Python made with optimizer settings
        self.tapes = []          # per backward pass: (tape, T, F, L copies)
        self.rowvid = {}         # (tape id, row) -> value id
        self.checks = []         # instructions checking a value read
        self.sites = []          # file:line of each value read
        self.stale = {}          # value id of a strided copy -> source value id
        self.restores = []       # constants updated in place: reset first on replay
        self.kept = None         # id of the private array the next kept row may hold
        self.calls = []          # (fn, value ids) Python runs at each X_CALL
        self.args = []
        for j, a in enumerate(args):
            if isinstance(a, Tensor):
                # fn runs on a private copy of the argument, which later calls overwrite
                v = self._new(np.array(a._data, order="C", copy=True), "arg")
                self.ins.append((K.X_ARG, v, -1, -1, (j,), 0.0, 0.0))
                self.args.append((j, a, v))

    def swap_args(self):
        """Exchanges the arguments' storage with their private copies (and back)."""
        for _, a, v in self.args:
            a._data, self.arrays[v] = self.arrays[v], a._data
        for _, a, v in self.args:
            self.ids.pop(id(self.arrays[v]), None)
            self.ids[id(a._data)] = v

    def carry_back(self):
        """Copies into each argument what fn wrote into its private copy (an update in
        place, which the program cannot replay: this call's own result still shows it)."""
        for _, a, v in self.args:
            if not _same_bytes(self.arrays[v], a._data):
                a._data[...] = self.arrays[v]

    def call(self, fn, args, kwargs):
        """An API call of the recorded function (nested ones are part of it)."""
        if self.depth:
            return fn(*args, **kwargs)
        self.depth = 1
        try:
            res = fn(*args, **kwargs)
        finally:
            self.depth = 0
        if self.failed is None:
            vid = self._known
            self.log.append((fn, template(self, res, args, kwargs), len(self.ins),
                             (signature(vid, args), signature(vid, kwargs))))
        return res

    def _known(self, t):
        return self.ids.get(id(t._data), -1)

    # -- values ---------------------------------------------------------------
    def fail(self, why):
        if self.failed is None:
            site = _site()
            self.failed = f"{why} (at {site})" if site else why

    def _new(self, arr, kind):
        v = len(self.arrays)
        self.arrays.append(arr)
        self.kind.append(kind)
        self.ids[id(arr)] = v
        return v

    def vid(self, t):
        """The value id of tensor t's storage, registering external storage."""
        arr = t._data
        v = self.ids.get(id(arr))
        if v is not None:
            if v in self.stale and self.stale[v] is None:
                raise _Unsupported("a strided view read after its source was modified in "
                                   "place")
            return v
        if arr.dtype not in _FLOATS and arr.dtype != _BOOL and arr.dtype != _I64:
            raise _Unsupported(f"a {arr.dtype} tensor")
        root = _root(arr)
        rv = self.ids.get(id(root))
        if rv is None:
            if id(root) in self.created:
                raise _Unsupported(f"it reads a tensor made at {self.created[id(root)][1]} by "
                                   "an operation that cannot be replayed")
            if root is not arr:
                rv = self._new(root, "ext")
            else:
                v = self._new(arr, "ext")
                self.ext[id(t)] = (t, arr, t._req)
                return v
            self.ext[id(t)] = (t, arr, t._req)
        elif self.kind[rv] != "arg" and self.arrays[rv] is not root:
            # the program keeps that value in C order elsewhere: this view's elements
            # are not where it points
            raise _Unsupported("a view of a result that NumPy laid out in another order")
        if arr.flags.c_contiguous:
            return self._new(arr, "view")
        v = self._private(arr)
        self._gather(v, arr)
        self.stale[v] = rv
        return v

    def _gather(self, v, view):
        if view.dtype == _BOOL:
            raise _Unsupported("a strided view of a bool tensor")
        item = view.itemsize
        st = [s // item for s in view.strides]
        self.ins.append((K.X_GATHER, v, -1, -1, (_tape.addr(view), 0) + tuple(st), 0.0, 0.0))

    def constant(self, arr):
        if id(arr) not in self.ids:
            self.created.pop(id(_root(arr)), None)
            self._new(arr, "const")

    def wrapped(self, arr):
        """A tensor was made around ``arr``: storage that no traced op produced (nor
        a view of such storage) cannot be replayed."""
        if id(arr) not in self.ids:
            root = _root(arr)
            if id(root) not in self.ids:
                self.created[id(root)] = (root, _site())

    # -- instructions -----------------------------------------------------------
    def _emit(self, op, out, ins, params, f0, f1):
        """Appends an instruction writing ``out`` (an array), reading tensors ``ins``."""
        vs = [self.vid(t) for t in ins]
        dt = out.dtype
        k = op.kernel
        if vs and self.arrays[vs[0]].dtype not in _FLOATS:
            return self._emit_int(op, out, vs[0], params)
        if dt not in _FLOATS:
            raise _Unsupported(f"{op.name} with a {dt} result")
        o = self.ids.get(id(out))
        if o is None:
            if out.base is not None and id(_root(out)) in self.ids:
                raise _Unsupported(f"{op.name} returning a view")
            if out.flags.c_contiguous:
                o = self._new(out, "int")
            else:       # NumPy kept an input's memory order: the program writes C order
                o = self._private(out)
        else:
            self._written(o)
        if k in _UNARY:
            f0, f1 = rounded(f0, dt), rounded(f1, dt)
        a = vs[0] if vs else -1
        b = vs[1] if len(vs) > 1 else -1
        if k in K.LISTED:
            params = (len(self.li), len(vs)) + tuple(params[2:])
            self.li.extend(vs)
            b = -1
        elif k in _BINARY and any(self.arrays[v].size not in (out.size, 1) for v in vs):
            params, k = (k,), K.X_BCAST
        elif k in (K.K_SOFTMAX, K.K_LOGSOFTMAX) and params[1] != 1:
            params, k = (params[0], params[1], 0, int(k == K.K_LOGSOFTMAX)), K.X_SOFTDIM
        elif k == K.K_SUM and K.trailing.py_func(params[0], self.arrays[a].ndim):
            k = K.X_SUMROWS
            params = (self.arrays[a].size // max(out.size, 1), params[1])
        elif k in (K.K_COPY, K.K_CAST, K.X_COPY) or k in _UNARY or k in _BINARY \
                or k in (K.K_SUM, K.K_AMAX, K.K_MATMUL, K.K_SOFTMAX, K.K_LOGSOFTMAX,
                         K.K_PROD, K.K_WHERE, K.K_GATHER):
            pass
        else:
            raise _Unsupported(f"{op.name}")
        self.ins.append((k, o, a, b, tuple(params), f0, f1))
        return o

    def _emit_int(self, op, out, a, params):
        """An op over an int64 or bool tensor: a conversion to float, or a full sum."""
        src = self.arrays[a].dtype
        if op.kernel == K.K_CAST and out.dtype in _FLOATS:
            k = K.X_TOF
        elif op.kernel in (K.K_GATHER, K.K_COPY) and src == _I64:
            return self._emit_bits(op, out, a, params)
        elif op.kernel == K.K_SUM and out.dtype == _I64 and out.size == 1 \
                and params[1] == 0 and params[0] == (1 << self.arrays[a].ndim) - 1:
            k = K.X_ISUM
        else:
            raise _Unsupported(f"{op.name} of a {src} tensor with a {out.dtype} result")
        o = self.ids.get(id(out))
        if o is not None or not out.flags.c_contiguous:
            raise _Unsupported(f"{op.name} of a {src} tensor")
        o = self._new(out, "int")
        self.ins.append((k, o, a, -1, (), 0.0, 0.0))
        return o

    def _emit_bits(self, op, out, a, params):
        """A gather or copy of int64 values: the float64 kernel moves their 8 bytes
        unchanged."""
        o = self.ids.get(id(out))
        if o is not None or not out.flags.c_contiguous:
            raise _Unsupported(f"{op.name} of an int64 tensor")
        o = self._new(out, "int")
        self.ins.append((op.kernel, o, a, -1, tuple(params), 0.0, 0.0))
        return o

    @_watch
    def argidx(self, out, x, size, inner, largest):
        """``out`` (int64) = indices of the max (min) of x along a dim (argmax, argmin)."""
        if x._data.dtype not in _FLOATS:
            raise _Unsupported(f"argmax/argmin of a {x._data.dtype} tensor")
        if not out.flags.c_contiguous:
            raise _Unsupported("argmax/argmin")
        o = self._new(out, "int")
        self.ins.append((K.X_ARGEXT, o, self.vid(x), -1, (size, inner, int(largest), 1),
                         0.0, 0.0))

    def _written(self, v):
        for s, src in list(self.stale.items()):
            if src == v:
                self.stale[s] = None

    @_watch
    def op(self, op, out, ins, f0=0.0, f1=0.0, params=(), tape=None, row=-1):
        """An op produced ``out`` from tensors ``ins`` (a row of ``tape`` if recorded)."""
        if tape is not None and (f0.__class__ is Hyper or f1.__class__ is Hyper):
            raise _Unsupported(f"an optimizer setting in {op.name}, which records gradients")
        try:
            for t in ins:
                self.vid(t)
        except _Unsupported as exc:
            raise _Unsupported(f"{op.name}: {exc}") from None
        if op.kernel in (K.K_STRIDED, K.K_COPY) and id(_root(out)) in self.ids:
            o = self.vid(_wrap_quiet(out))      # a view of a traced buffer
        elif op.kernel == K.K_STRIDED:
            # a view of storage the program holds elsewhere: read it from the
            # input's buffer with the row's own offset and strides
            src = self.arrays[self.vid(ins[0])]
            if src.dtype != out.dtype or len(params) != out.ndim + 1 or src.dtype == _BOOL:
                raise _Unsupported(f"{op.name}")
            o = self._private(out, np.empty(out.shape, out.dtype))
            self.ins.append((K.X_GATHER, o, -1, -1, (_tape.addr(src),) + tuple(params),
                             0.0, 0.0))
        else:
            o = self._emit(op, out, ins, params, f0, f1)
        if tape is not None:
            self.rowvid[(tape.id, row)] = o

    @_watch
    def alias(self, t):
        """A tensor sharing t's storage is being made (``.data``, ``detach``)."""
        dt = t._data.dtype
        if dt in _FLOATS or dt == _I64 or dt == _BOOL:
            self.vid(t)

    @_watch
    def ext_row(self, tape, row, t):
        """Row ``row`` of ``tape`` stands for t, a result of an earlier tape."""
        if t._tape is None or (t._tape.id, t._row) not in self.rowvid:
            raise _Unsupported("a tensor of a graph recorded outside the function")
        self.rowvid[(tape.id, row)] = self.vid(t)

    @_watch
    def leaf_row(self, tape, row, t):
        self.rowvid[(tape.id, row)] = self.vid(t)

    @_watch
    def write(self, op, target, ins, f0=0.0, f1=0.0, params=()):
        """An in-place update of ``target`` (op over tensors ``ins``, None: absent)."""
        o = self.vid(target)
        if self.kind[o] == "arg":
            raise _Unsupported("an in-place update of an argument")
        if self.kind[o] == "const":
            # made inside the function, then updated: each replay starts from its
            # first value
            self.kind[o] = "int"
            snap = self._new(np.array(self.arrays[o], copy=True), "const")
            self.restores.append((K.X_COPY, o, snap, -1, (), 0.0, 0.0))
        vs = [-1 if t is None else self.vid(t) for t in ins]
        self._written(o)
        if self.arrays[o].dtype not in _FLOATS:
            # counters: integer additions (num_batches_tracked += 1), and copies of
            # int64 values (an EMA copying buffers: 8-byte moves, bit for bit)
            if op == "copy" and self.arrays[o].dtype == _I64 == self.arrays[vs[0]].dtype:
                self.ins.append((K.X_COPY, o, vs[0], -1, (), 0.0, 0.0))
                return
            if op != "affine" or self.arrays[o].dtype != _I64 or num(f0) != int(num(f0)):
                raise _Unsupported(f"an in-place update of a {self.arrays[o].dtype} tensor")
            self.ins.append((K.X_IADD, o, -1, -1, (int(num(f0)),), 0.0, 0.0))
        elif op == "fill":
            self.ins.append((K.X_FILL, o, -1, -1, (), num(f0), 0.0))
        elif op == "axpy":
            self.ins.append((K.X_AXPY, o, vs[0], -1, (), num(f0), 0.0))
        elif op in ("affine", "scale", "divs"):
            c = rounded(f0, self.arrays[o].dtype)
            kernel = K.K_DIVS if op == "divs" else K.K_AFFINE
            f0, f1 = (c, 0.0) if op != "affine" else (1.0, c)
            self.ins.append((kernel, o, o, -1, (), f0, f1))
        elif op == "copy":      # (of a value of the target's dtype)
            self.ins.append((K.X_COPY, o, vs[0], -1, (), 0.0, 0.0))
        elif op == K.X_ADAM:    # (further inputs: value ids in the parameters)
            self.ins.append((op, o, vs[0], vs[1], tuple(params) + tuple(vs[2:]), num(f0),
                             num(f1)))
        else:
            self.ins.append((op, o, vs[0], vs[1] if len(vs) > 1 else -1, (), 0.0, 0.0))

    @_watch
    def compare(self, ufunc, out, a, other):
        """``out`` (bool) = ufunc(a, other), other a tensor or a number."""
        dt = a._data.dtype
        if dt not in _FLOATS and dt != _I64:
            raise _Unsupported(f"a comparison of {dt} tensors")
        va = self.vid(a)
        if isinstance(other, Tensor):
            if other._data.dtype != dt:
                raise _Unsupported("a comparison of tensors of two dtypes")
            vb, c = self.vid(other), 0.0
        elif isinstance(other, (bool, int, float, np.number)):
            if dt == _I64 and (float(other) != other or abs(other) >= 2 ** 53):
                raise _Unsupported("a comparison of an int64 tensor with a fraction or a "
                                   "number beyond 2**53")
            vb, c = -1, float(other) if dt == _I64 else rounded(other, dt)
        else:
            raise _Unsupported(f"a comparison with a {type(other).__name__}")
        o = self._private(out)
        op = K.X_ICMP if dt == _I64 else K.X_CMP
        self.ins.append((op, o, va, vb, (_CMP[ufunc],), c, 0.0))

    @_watch
    def bits(self, code, out, a, other):
        """``out`` = a &, |, ^ other (code 0, 1, 2; other a tensor or a number) or ~a
        (code 3), of bool or int64 tensors."""
        dt = a._data.dtype
        if out.dtype != dt or isinstance(other, Tensor) and other._data.dtype != dt:
            raise _Unsupported(f"a bitwise op mixing {dt} and another dtype")
        if isinstance(other, Tensor):
            vb, c = self.vid(other), 0.0
        elif code == 3:
            vb, c = -1, 0.0
        elif abs(int(other)) < 2 ** 53:
            vb, c = -1, float(int(other))
        else:
            raise _Unsupported("a bitwise op with a number beyond 2**53")
        va = self.vid(a)
        o = self._private(out)
        self.ins.append((K.X_BITS, o, va, vb, (code,), c, 0.0))

    def _private(self, arr, buf=None):
        """A value whose eager array the program cannot use as its buffer (not C
        contiguous, or a view): ``buf`` (or a contiguous copy) stands in for it."""
        o = self._new(np.ascontiguousarray(arr) if buf is None else buf, "int")
        self.ids[id(arr)] = o
        self.arrays.append(arr)           # kept alive, so that its id stays unique
        self.kind.append("keep")
        return o

    @_watch
    def where(self, out, cond, condition, tape, row):
        """where(): ``cond`` (bytes of ``condition`` broadcast to ``out``) chooses; the
        where instruction just emitted for ``out`` reads it."""
        if not isinstance(condition, Tensor):
            condition = Tensor(np.asarray(condition))
            self.constant(condition._data)
        src = self.vid(condition)
        v = self._new(cond, "int")
        k, o, a, b, params, f0, f1 = self.ins[-1]
        if k != K.K_WHERE or self.arrays[o] is not out and self.ids.get(id(out)) != o:
            raise _Unsupported("where()")
        self.ins[-1:] = [(K.X_COND, v, src, -1, (), 0.0, 0.0),
                         (k, o, a, b, (v,), f0, f1)]
        self.kept = id(cond)

    @_watch
    def index_key(self, t):
        """Indexing by tensor t: its values must be those seen while recording."""
        v = self.vid(t)
        if self.kind[v] != "const":
            self.read(t)

    @_watch
    def gather(self, out, idx):
        """The gather instruction just emitted for ``out`` reads positions ``idx``,
        fixed while its index tensors hold what they held when recording."""
        k, o, a, b, params, f0, f1 = self.ins[-1]
        if k != K.K_GATHER or self.ids.get(id(out)) != o:
            raise _Unsupported("indexing")
        v = self._new(idx, "const")
        self.ins[-1] = (k, o, a, b, (v,), f0, f1)
        self.kept = id(idx)

    def _positions(self, out, idx, what, make):
        """The gather just emitted for ``out`` reads positions ``idx``, which the
        instruction ``make(v)`` (v: their value) computes again before it on every
        replay."""
        k, o, a, b, params, f0, f1 = self.ins[-1]
        if k != K.K_GATHER or self.ids.get(id(out)) != o:
            raise _Unsupported(what)
        v = self._new(idx, "int")
        self.ins[-1:] = [make(v), (k, o, a, b, (v,), f0, f1)]
        self.kept = id(idx)

    @_watch
    def argext(self, out, idx, x, size, inner, largest):
        """The gather just emitted for ``out`` reads the positions ``idx`` of the max (min)
        of x along a dim."""
        self._positions(out, idx, "max/min along a dim", lambda v: (
            K.X_ARGEXT, v, self.vid(x), -1, (size, inner, int(largest)), 0.0, 0.0))

    @_watch
    def order(self, out, idx, x, size, inner, desc, k):
        """The gather just emitted for ``out`` reads the positions ``idx`` of x's first k
        elements in sorted order along a dim."""
        if x._data.dtype not in _FLOATS:
            raise _Unsupported(f"sort/topk of a {x._data.dtype} tensor")
        self._positions(out, idx, "sort/topk", lambda v: (
            K.X_SORT, v, self.vid(x), -1, (size, inner, int(desc), k), 0.0, 0.0))

    @_watch
    def random(self, out, kind, state, a, b, low=0, high=0):
        """``out`` holds numbers drawn from the random stream ``state``: a replay draws
        the next ones."""
        o = self._new(out, "int")
        self.ins.append((K.X_RAND, o, -1, -1, (kind, _tape.addr(state), low, high), a, b))
        self.streams[id(state)] = state

    @_watch
    def rows(self, out, idx, key, size, inner):
        """The gather just emitted for ``out`` reads the rows ``key`` (int64) selects."""
        self._positions(out, idx, "indexing by a tensor", lambda v: (
            K.X_INDEX, v, self.vid(key), -1, (size, inner), 0.0, 0.0))

    @_watch
    def targets(self, out, idx, target, weight, classes, inner, ignore, wt):
        """The gather just emitted for ``out`` reads the positions ``idx`` of class
        targets, with weights ``wt``: both computed again from the targets (and class
        weights) on every replay."""
        def make(v):
            if target._data.dtype != _I64:
                raise _Unsupported(f"class targets of dtype {target._data.dtype}")
            tv = self.vid(target)
            cw = -1
            if weight is not None:
                if not isinstance(weight, Tensor) or weight._data.dtype != wt.dtype:
                    raise _Unsupported("class weights that are not a tensor of the "
                                       "input's dtype")
                cw = self.vid(weight)
            return (K.X_TARGET, v, tv, self._new(wt, "int"), (classes, inner, ignore, cw),
                    0.0, 0.0)
        self._positions(out, idx, "class targets", make)

    def keep(self, data):
        """A row keeps a private array: fine when where(), gather or argext just said
        how the program computes it."""
        if self.kept != id(data):
            self.fail("advanced indexing or max/min along a dim (index data kept aside)")

    @_watch
    def snapshot(self, copy, t):
        """A contiguous copy of t's value was saved for backward."""
        src = self.vid(t)
        v = self._new(copy, "int")
        self.ins.append((K.X_COPY, v, src, -1, (), 0.0, 0.0))

    @_watch
    def read(self, t):
        """Python read t's value: later calls must read the same bits."""
        v = self.vid(t)
        snap = self._new(np.array(self.arrays[v], copy=True), "const")
        self.ins.append((K.X_CHECK, -1, v, snap, (len(self.sites),), 0.0, 0.0))
        self.checks.append(len(self.ins) - 1)
        self.sites.append(_site())
        if self.depth:
            self.inner_read = True
        if self.first_read is None:
            self.first_read = len(self.log)

    # -- gradients and backward -------------------------------------------------------
    def requires_grad_set(self, t, flag):
        """t's requires_grad changes. An argument's change is made again by every replay
        (``x.requires_grad_()`` in a value-and-gradient function); a tensor this call
        made (``tg.tensor(x, requires_grad=True)``) is the call's own. A tensor from
        outside is state of the caller that the recording's guards do not follow."""
        for j, a, _ in self.args:
            if a is t:
                self.req_flips[j] = flag
                return
        v = self.ids.get(id(t._data))
        if v is None or self.kind[v] in ("ext", "view"):
            self.fail("requires_grad of a tensor from outside the function changed")
        self.own[id(t)] = t

    def grad_touch(self, t, read):
        if id(t) not in self.grad_first and not self._made_here(t):
            self.grad_first[id(t)] = (t, t._grad, read)

    def grad_set(self, t):
        if not self._made_here(t):
            self.grad_touch(t, False)
            self.grad_final[id(t)] = t

    def _made_here(self, t):
        """t is a result of an op of this call, or a leaf it made (its .grad is no state
        of the caller)."""
        return id(t) in self.own or (not t._leaf and t._tape is not None
                                     and (t._tape.id, t._row) in self.rowvid)

    @_watch
    def backward(self, tape, seeds):
        """A backward pass over ``tape`` from ``seeds`` (row -> gradient tensor)."""
        if tape.node_hooks:
            raise _Unsupported("grad_fn hooks in backward")
        for key, fn in tape.fns.items():     # user Functions: the replay calls backward
            if key.__class__ is int:
                cls, ctx, nout, pos = fn
                # (a copy: backward without retain_graph frees the call's own ctx)
                self.fns[key] = (cls, copy.copy(ctx), nout, pos)
            else:
                self.fns[key] = list(fn)
        if _tape.ANOMALY[0]:
            raise _Unsupported("anomaly detection")
        n = tape.n
        T = tape.T[:n].copy()
        T[:, K.FL] &= ~(K.FREED | K.DIRTY | K.PAUSE)
        for r, hooks in tape.hooks.items():    # tensor hooks: the replay pauses there
            if hooks and r < n:
                T[r, K.FL] |= K.PAUSE
                self.hooks[r] = dict(hooks)
        for r in range(n):
            if (tape.id, r) not in self.rowvid:
                raise _Unsupported("a tape row recorded before the compiled call")
        seed = []
        for r, g in seeds.items():
            seed += [r, self.vid(g)]
        self.tapes.append((tape, T, tape.F[:n].copy(), tape.L[:tape.nl].copy()))
        self.ins.append((K.X_BACKWARD, -1, -1, -1,
                         (max(seeds), len(self.li), len(seeds)),
                         0.0, 0.0))
        self.li += seed

    @_watch
    def adjoint(self, arr, tape, r):
        """``arr`` holds the adjoint of row r of the tape of the last backward."""
        v = self._new(arr, "int")
        self.ins.append((K.X_ADJ, v, -1, -1, (r,), 0.0, 0.0))

    def optimizer(self, opt, live=False):
        """``opt`` steps. With ``live`` (its update is tapegrad's own), returns its
        param groups with numeric settings as Hypers, so replays read them afresh."""
        if id(opt) not in self.optims:
            self.optims[id(opt)] = (opt, _state_sig(opt))
            self.settings[id(opt)] = _Settings(opt, live)
        return [live_group(g) for g in opt.param_groups] if live else None

    def module(self, m, training):
        """Module m is called, or its training flag set: its flag before the call counts,
        and so do its number attributes (a dropout's ``p``, a temperature)."""
        if id(m) not in self.modules:
            self.modules[id(m)] = (m, training)
            self.attrs += [(m, k, v) for k, v in vars(m).items()
                           if v.__class__ in _NUMBERS and k != "training"]
            for glob, name, steps in class_reads(type(m)):
                v = read_value(glob, name, steps)
                if v is not None:
                    self.greads.append((glob, name, steps, v))

    @_watch
    def pycall(self, fn, tensors):
        """``fn`` (a collective) updates the storage of ``tensors`` in place: every
        replay stops here and calls it on the program's arrays for them."""
        vs = []
        for t in tensors:
            if not t._data.flags.c_contiguous:
                raise _Unsupported("a collective over a strided tensor")
            v = self.vid(t)
            if self.kind[v] == "arg":
                raise _Unsupported("a collective over an argument")
            self._written(v)
            vs.append(v)
        self.ins.append((K.X_CALL, -1, -1, -1, (len(self.calls),), 0.0, 0.0))
        self.calls.append((fn, vs))

    def hyper_guard(self, check):
        self.hguards.append(check)

    # -- the program ----------------------------------------------------------------------
    def finish(self, result):
        """The template of fn's result for a recording, or None (``failed`` says why)."""
        try:
            out = _flatten(result, self)
        except _Unsupported as exc:
            self.fail(str(exc))
            out = None
        if self.failed:
            return None
        if len({id(t[0]) for t in self.tapes}) > 1:
            # (passes over one tape replay over its last copy, which holds every row)
            self.fail("backward passes over different tapes")
            return None
        for s in self.settings.values():
            if s.check() != 0:
                self.fail("the function changes its optimizer's param_groups after a step "
                          "(a scheduler stepped inside it?), which replays would not do: "
                          "change them outside the compiled function")
                return None
        return out


def _unalias(x, tr):
    """Tensors the recording call hands out get private storage: later replays write
    the program's buffers, not the values a caller already holds."""
    if isinstance(x, Tensor):
        v = tr.ids.get(id(_root(x._data)))
        if v is not None and tr.kind[v] != "ext":
            x._data = x._data.copy()
    elif isinstance(x, (tuple, list)):
        for item in x:
            _unalias(item, tr)
    elif isinstance(x, dict):
        for item in x.values():
            _unalias(item, tr)


def _wrap_quiet(arr):
    t = object.__new__(Tensor)
    t._data = arr
    t._req = False
    return t


def _flatten(x, tr):
    """fn's result as a template: values become ('v', id, shape), the rest stays."""
    if isinstance(x, Tensor):
        return ("v", tr.vid(x), x._data.shape)
    if isinstance(x, (tuple, list)):
        items = [_flatten(i, tr) for i in x]
        return ("seq", type(x), items)
    if isinstance(x, dict):
        return ("dict", type(x), [(k, _flatten(v, tr)) for k, v in x.items()])
    if x is None or isinstance(x, (bool, int, float, complex, str)):
        return ("py", x)
    raise _Unsupported(f"returning a {type(x).__name__}")
