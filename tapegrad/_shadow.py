"""Re-running a compiled function's Python around its replay, for the values it reads.

A function that reads tensor values for its own use (``hist.append(loss.item())``,
``print(f"{loss.item():.4f}")``, a progress bar's ``set_postfix``) would record again
on every call, as the values differ. When two recordings of it differ only in the
values read, and every read comes after the last update the program makes to state
Python can see, later calls replay the program and then run the function's Python
again with every call of tapegrad's API (``tape.api``) answered from the recording's
log instead of computed: each answer is a fresh tensor holding the replay's value.
The Python side effects run on every call with the right numbers.

If the Python takes another path than the recording (a branch on a value read), the
rest of the call runs eagerly: the replay has made every update before the first read,
so what follows computes on the right values. A different path before the first read
(the Python depends on something no guard sees) raises an error.
"""
import numpy as np

from . import _kernels as K
from .tensor import Tensor, _init, _new

# Instructions that change what Python sees after the call (beyond new values).
_EFFECTS = (K.X_BACKWARD, K.X_RAND)


def template(tr, x, args, kwargs):
    """What an API call returned, in terms of the recording's values."""
    if isinstance(x, Tensor):
        for path, a in _arguments(args, kwargs):
            if a is x:
                return ("arg", path, tr.ids.get(id(x._data), -1))
        return ("v", tr.ids.get(id(x._data), -1))
    if isinstance(x, (tuple, list)):
        return ("seq", type(x), [template(tr, i, args, kwargs) for i in x])
    if isinstance(x, dict):
        return ("dict", type(x), [(k, template(tr, v, args, kwargs)) for k, v in x.items()])
    return ("py", x)


_VALUES = (bool, int, float, complex, str, bytes, type(None), type(Ellipsis), np.generic)


def signature(vid, x):
    """An API call's argument as the re-run must pass it again: tensors as the value
    ids ``vid`` gives them, numbers, strings and slices by value, other objects by
    identity."""
    if isinstance(x, Tensor):
        return (Tensor, vid(x))
    if isinstance(x, (tuple, list)):
        return (type(x),) + tuple(signature(vid, i) for i in x)
    if isinstance(x, dict):
        return (dict,) + tuple((k, signature(vid, v)) for k, v in x.items())
    if isinstance(x, _VALUES):
        return (type(x), x)
    if isinstance(x, slice):
        return (slice, x.start, x.stop, x.step)
    return ("is", id(x))


def matches(vid, sig, x):
    """signature(vid, x) == sig, without building it."""
    c = x.__class__
    if c is Tensor:
        return sig[0] is Tensor and sig[1] == vid(x)
    if c is tuple or c is list:
        if sig[0] is not c or len(sig) != len(x) + 1:
            return False
        for s, i in zip(sig[1:], x):
            if not matches(vid, s, i):
                return False
        return True
    if c in _PLAIN:
        return sig[0] is c and sig[1] == x
    return signature(vid, x) == sig


_PLAIN = (bool, int, float, str, type(None))


def _arguments(args, kwargs):
    for i, a in enumerate(args):
        yield ("a", i), a
    for k, a in kwargs.items():
        yield ("k", k), a


def _values(tpl):
    kind = tpl[0]
    if kind == "v":
        yield tpl[1]
    elif kind == "arg":
        yield tpl[2]
    elif kind in ("seq", "dict"):
        for item in tpl[2]:
            yield from _values(item[1] if kind == "dict" else item)


def eligible(tr, visible):
    """The log of a recording that later calls may re-run around its replay, or None.

    Each value an API call returned must hold, when the program ends, what it held
    right after that call; no read may happen inside an API call (its op's Python
    depends on it); every instruction after the first read writes values only the
    recording's Python sees (``visible``: value ids of gradients and other state)."""
    if tr.inner_read or not tr.log:
        return None
    for entry in tr.log:
        if _unknown(entry[3]):
            return None
    ins = tr.ins
    first_check = min(tr.checks) if tr.checks else len(ins)
    last = {}
    for i, (op, o, a, b, params, f0, f1) in enumerate(ins):
        if op == K.X_CHECK:
            continue
        if o >= 0:
            last[o] = i
        if op == K.X_TARGET:
            last[b] = i
        if i > first_check and (op in _EFFECTS or o in visible or
                                o >= 0 and tr.kind[o] not in ("int", "keep")):
            return None
    roots = {}
    for v, kind in enumerate(tr.kind):
        if kind == "view":
            arr = tr.arrays[v]
            while arr.base is not None and isinstance(arr.base, np.ndarray):
                arr = arr.base
            roots[v] = tr.ids.get(id(arr), -1)
    for fn, tpl, end, sig in tr.log:
        for v in _values(tpl):
            if v < 0 or last.get(v, -1) >= end or last.get(roots.get(v, v), -1) >= end:
                return None
    return tr.log


def _unknown(sig):
    """A tensor argument that is none of the recording's values."""
    if sig.__class__ is not tuple or not sig:
        return False
    if sig[0] is Tensor:
        return sig[1] < 0
    return any(map(_unknown, sig[1:]))


class Diverged(BaseException):
    """The re-run's Python took another path before its first value read (a
    BaseException, so that the function's own ``except Exception`` cannot hide it)."""


class Shadow:
    """Answers a re-run's API calls from a recording's log and the replay's values."""

    def __init__(self, rec, inputs):
        self.log = rec.log
        self.arrays = rec.arrays
        self.ids = rec.ids
        self.first_read = rec.first_read
        self.k = 0
        self.made = {}              # id of each tensor it handed out -> its value id
        self.inputs = {id(inputs[j]): v for j, v in rec.args}
        self.eager = False

    def vid(self, t):
        v = self.made.get(id(t))
        if v is None:
            v = self.inputs.get(id(t))
            if v is None:
                v = self.ids.get(id(t._data), -1)
        return v

    def call(self, fn, args, kwargs):
        if self.eager:
            return fn(*args, **kwargs)
        k = self.k
        entry = self.log[k] if k < len(self.log) else None
        if entry is None or entry[0] is not fn or not matches(self.vid, entry[3][0], args) \
                or (kwargs or entry[3][1] != (dict,)) and \
                signature(self.vid, kwargs) != entry[3][1]:
            if k < self.first_read:
                raise Diverged(getattr(fn, "__qualname__", repr(fn)))
            self.eager = True               # after the first read: the rest runs eagerly
            return fn(*args, **kwargs)
        self.k = k + 1
        return self._build(entry[1], args, kwargs)

    def unfinished(self):
        """The re-run ended before the first read, short of the recording's calls."""
        return not self.eager and self.k < min(self.first_read, len(self.log))

    def _build(self, tpl, args, kwargs):
        kind = tpl[0]
        if kind == "v":
            return self._fresh(tpl[1])
        if kind == "arg":
            where, key = tpl[1]
            t = args[key] if where == "a" else kwargs[key]
            if id(t) in self.made:          # updated in place: its value after the call
                t._data = self.arrays[tpl[2]].copy()
                self.made[id(t)] = tpl[2]
            return t
        if kind == "seq":
            items = [self._build(i, args, kwargs) for i in tpl[2]]
            return tpl[1](items) if tpl[1] in (list, tuple) else tpl[1](*items)
        if kind == "dict":
            return tpl[1]((k, self._build(v, args, kwargs)) for k, v in tpl[2])
        return tpl[1]

    def _fresh(self, v):
        t = _new(Tensor)
        _init(t, self.arrays[v].copy(), False, True)
        self.made[id(t)] = v
        return t

    # tracer calls: ops that ran outside the API (their values are right, as their
    # inputs are); an update of state the replay already made would be done twice
    def write(self, op, target, ins, f0=0.0):
        if not self.eager and id(target) not in self.made:
            raise Diverged("an in-place update outside tapegrad's API")

    def backward(self, tape, seeds):
        if not self.eager:
            raise Diverged("a backward pass outside tapegrad's API")

    def __getattr__(self, name):
        return _ignore


def _ignore(*args, **kwargs):
    return None
