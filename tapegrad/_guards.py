"""Guards of a tg.compile recording: on the optimizers it stepped (their param_groups,
settings a replay may read anew, everything else fixed, and their state), on what its
function reads from its closure and globals (variables, and numbers read through their
attributes and subscripts), and whether it draws Python's or NumPy's random numbers."""
import dis
import random
import weakref
from operator import is_ as _is
from types import CellType, FunctionType, ModuleType

import numpy as np

from .hyper import is_live_value


_MISSING = object()


_PLAIN = frozenset((int, float, bool, str, type(None)))


class _Settings:
    """Guards an optimizer's param_groups as a recording saw them at its step: the
    group dicts, their parameter lists and every setting. A numeric setting of a live
    update may change (``check`` gives 1 until ``commit``); any other change gives -1."""

    def __init__(self, opt, live):
        self.opt = opt
        self.plist = opt.param_groups
        self.n = len(self.plist)
        self.groups = []
        for g in self.plist:
            keys = tuple(k for k in g if k != "params" and k != "param_names")
            vals = [g[k] for k in keys]
            lv = [live and is_live_value(v) for v in vals]
            self.groups.append((g, g["params"], len(g["params"]), len(g), keys, vals, lv))
        self.pending = []

    def check(self):
        plist = self.opt.param_groups
        if plist is not self.plist or len(plist) != self.n:
            return -1
        pending = self.pending = []
        for i, (g, params, npar, glen, keys, vals, lv) in enumerate(self.groups):
            if plist[i] is not g or g["params"] is not params or len(params) != npar \
                    or len(g) != glen:
                return -1
            if all(map(_is, map(g.get, keys), vals)):    # unchanged (the common case)
                continue
            for j, k in enumerate(keys):
                cur = g.get(k, _MISSING)
                old = vals[j]
                if cur is old:
                    continue
                if lv[j] and is_live_value(cur) and (cur.__class__ is not tuple or
                                                     len(cur) == len(old)):
                    pending.append((vals, j, cur))
                elif cur.__class__ is old.__class__ and cur.__class__ in _PLAIN \
                        and cur == old:
                    vals[j] = cur
                else:
                    return -1
        return 1 if pending else 0

    def commit(self):
        for vals, j, cur in self.pending:
            vals[j] = cur
        self.pending = []


def _state_sig(opt):
    # the values themselves, not their ids: an id can come back for another object
    return [(st, frozenset(st), tuple(st.values())) for st in opt.state.values()]


def _same_state(opt, sig):
    if len(opt.state) != len(sig):
        return False
    for st, keys, vals in sig:
        if len(st) != len(vals) or not all(map(_is, st.values(), vals)) or st.keys() != keys:
            return False
    return all(map(_is, (st for st, _, _ in sig), opt.state.values()))


class _Vary:
    """Stands for a variable a recording reads as an input on every call."""


VARY = _Vary()


def _assigned(code):
    names = {i.argval for i in dis.get_instructions(code)
             if i.opname in ("STORE_DEREF", "STORE_GLOBAL", "DELETE_DEREF", "DELETE_GLOBAL")}
    for c in code.co_consts:
        if hasattr(c, "co_names"):
            names |= _assigned(c)
    return names


def _loads(code, free, names, fast=()):
    """Each read of a variable (a free variable in ``free``, a global in ``names``, a
    local in ``fast``), in code and in the code it defines (globals only there), as
    (variable, chain, method): the chain of attributes and constant subscripts read from
    it (``cfg.lr``, ``state["scale"]``, ``self.beta``) and the method then called on
    what the chain reached, or None."""
    found = set()
    ins = list(dis.get_instructions(code))
    for i, x in enumerate(ins):
        if not (x.opname == "LOAD_GLOBAL" and x.argval in names or
                x.opname == "LOAD_DEREF" and x.argval in free or
                x.opname == "LOAD_FAST" and x.argval in fast):
            continue
        steps = []
        j = i + 1
        while j < len(ins):
            y = ins[j]
            if y.opname == "LOAD_ATTR":
                steps.append((True, y.argval))
                j += 1
            elif (y.opname == "LOAD_CONST" and j + 1 < len(ins) and
                  ins[j + 1].opname == "BINARY_SUBSCR" and
                  y.argval.__class__ in (int, str)):
                steps.append((False, y.argval))
                j += 2
            else:
                break
        method = ins[j].argval if j < len(ins) and ins[j].opname == "LOAD_METHOD" else None
        found.add((x.argval, tuple(steps), method))
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            found |= _loads(c, (), names)
    return found


def _paths(loads):
    """The chains of ``loads`` whose end is read as a value (not an object whose method
    is called)."""
    return {(r, steps) for r, steps, method in loads if steps and method is None}


def _reads(loads):
    """(variable, the attribute or method read from it first, or None) of ``loads``."""
    return {(r, steps[0][1] if steps and steps[0][0] else None if steps else method)
            for r, steps, method in loads}


class _Snap(tuple):
    """The numbers of a short list or tuple a recording read (compared by value)."""


def same_value(a, b):
    """Whether a value a guard compares holds: the same object, or equal numbers (or
    numbers of a short list) of the same type."""
    return a is b or a.__class__ is b.__class__ and (a.__class__ in _PLAIN or
                                                     a.__class__ is _Snap) and a == b


def _plain_or_snap(v):
    """What a guard compares of a value read through a chain: a number as it is, the
    numbers of a short list of numbers, else None (other guards see the rest)."""
    cls = v.__class__
    if cls in _PLAIN:
        return v
    if (cls is list or cls is tuple) and len(v) <= 64 and all(e.__class__ in _PLAIN for e in v):
        return _Snap(v)
    return None


_RNG_TYPES = (random.Random, np.random.Generator, np.random.RandomState)


def _draws(value, attr):
    """Whether reading ``attr`` of ``value`` (or value itself) is Python's or NumPy's
    random number generation."""
    if value.__class__ is ModuleType:
        name = value.__name__
        return name == "random" or name.startswith("numpy.random") or \
            name == "numpy" and attr == "random"
    if isinstance(value, _RNG_TYPES) or isinstance(getattr(value, "__self__", None),
                                                   _RNG_TYPES):
        return True
    return callable(value) and (getattr(value, "__module__", None) or "").startswith(
        ("random", "numpy.random"))


def _helpers(code, glob, seen):
    """The code of the functions of the same module (no closure) that code calls by a
    global name, and of those they call: their globals are the function's inputs too."""
    found = []
    for n in _names(code):
        f = glob.get(n)
        if f.__class__ is FunctionType and f.__globals__ is glob and not f.__closure__ \
                and f.__code__ not in seen and len(seen) < 64:
            seen.add(f.__code__)
            found += [f.__code__] + _helpers(f.__code__, glob, seen)
    return found


def _module_code(code, glob):
    """code with its module's functions it calls (_helpers), and the globals of ``glob``
    they name."""
    codes = [code] + _helpers(code, glob, set())
    return codes, {n for c in codes for n in _names(c) if n in glob}


_CLASS_READS = weakref.WeakKeyDictionary()     # module class -> class_reads(class)


def class_reads(cls):
    """(globals, global name, steps) of what the ``forward`` of a module class (and the
    functions of its module it calls) reads from its module's globals: a recording
    holds while the numbers there stay the same."""
    reads = _CLASS_READS.get(cls)
    if reads is None:
        fwd = getattr(cls, "forward", None)
        code, glob = getattr(fwd, "__code__", None), getattr(fwd, "__globals__", None)
        reads = []
        if code is not None and glob is not None and \
                not glob.get("__name__", "").startswith("tapegrad."):
            codes, names = _module_code(code, glob)
            reads = [(glob, n, ()) for n in sorted(names)]
            reads += sorted((glob, r, steps) for c in codes
                            for r, steps in _paths(_loads(c, (), names)))
        _CLASS_READS[cls] = reads
    return reads


def _leaf(v, steps):
    """What a recording compares of the value read from ``v`` through ``steps``: a
    number, the numbers of a short list, or None (other guards see the rest)."""
    if _unguarded(v):
        return None
    try:
        for attr, k in steps:
            v = getattr(v, k) if attr else v[k]
    except Exception:
        return _MISSING
    return _plain_or_snap(v)


def read_value(glob, name, steps):
    return _leaf(glob.get(name, _MISSING), steps)


def _self_paths(obj, name, module):
    """The chains from ``self`` read by method ``name`` of obj's class, when that class
    is defined in ``module``, the compiled function's (a library's objects, a progress
    bar counting calls, are left to their own devices)."""
    fn = getattr(type(obj), name, None)
    code = getattr(fn, "__code__", None)
    if fn.__class__ is not FunctionType or not code.co_argcount or \
            getattr(type(obj), "__module__", None) != module:
        return set()
    me = code.co_varnames[0]
    return {steps for r, steps in _paths(_loads(code, (), (), {me})) if r == me}


def _path_name(root, steps):
    return root + "".join(f".{k}" if attr else f"[{k!r}]" for attr, k in steps)


def _unguarded(root):
    """Roots whose chains need no guard: modules (``math.pi``, ``F.relu``) and
    optimizers and schedulers, whose settings a replay reads anew (known per class:
    this runs on every call)."""
    cls = root.__class__
    u = _UNGUARDED.get(cls)
    if u is None:
        if len(_UNGUARDED) > 256:
            _UNGUARDED.clear()
        u = _UNGUARDED[cls] = cls is ModuleType or \
            (getattr(cls, "__module__", None) or "").startswith("tapegrad.optim")
    return u


_UNGUARDED = {}


def _names(code):
    names = set(code.co_names)
    for c in code.co_consts:
        if hasattr(c, "co_names"):
            names |= _names(c)
    return names


class _Sources:
    """The variables a compiled function reads from its closure and from its module's
    globals. A recording holds while each is bound to the object it saw (plain numbers:
    an equal value); a variable seen bound to one tensor (or tuple, list or dict of
    tensors) and then another ``varies``: it becomes an input of the recordings, read on
    every call like an argument. Numbers read through attributes and constant
    subscripts of those variables (``cfg.lr``, ``state["scale"]``) hold by value."""

    def __init__(self, fn):
        self.fn = fn
        self.names = None       # (set up at the first call: globals defined after fn)
        self.varying = []

    def _setup(self):
        fn = self.fn
        call = getattr(fn, "__call__", None)
        if not hasattr(fn, "__code__") and hasattr(call, "__func__") and \
                not (call.__func__.__module__ or "").startswith("tapegrad"):
            fn = call                   # an object with __call__: that bound method
            #                             (a module's is tapegrad's: its forward is seen)
        code = getattr(fn, "__code__", None)
        self.cells = list(getattr(fn, "__closure__", None) or ())
        self.names = list(code.co_freevars) if self.cells else []
        free = set(self.names)
        fast = set()
        if getattr(fn, "__self__", None) is not None and code is not None \
                and code.co_argcount:           # a bound method: its instance, as ``self``
            self.cells.append(CellType(fn.__self__))
            self.names.append(code.co_varnames[0])
            fast.add(code.co_varnames[0])
        self.glob = getattr(fn, "__globals__", None)
        codes, gnames = ([] if code is None else [code]), ()
        if code is not None and self.glob is not None:
            codes, gnames = _module_code(code, self.glob)
        self.gnames = sorted(gnames)
        self.names += self.gnames
        index = {n: i for i, n in enumerate(self.names)}
        gset = set(self.gnames)
        loads = set()
        for c in codes:
            loads |= _loads(c, free, gset, fast) if c is code else _loads(c, (), gset)
        reads = {ra for ra in _reads(loads) if ra[0] not in fast}
        paths = {(index[r], steps) for r, steps in _paths(loads) if r in index}
        roots = self._roots()
        module = (self.glob or {}).get("__name__")
        for r, attr in reads:                   # methods of objects: chains from self
            if attr is not None and r in index:
                paths |= {(index[r], steps)
                          for steps in _self_paths(roots[index[r]], attr, module)}
        self.paths = sorted(paths)
        self.reads = sorted(((index[r], a) for r, a in reads if r in index),
                            key=lambda ra: (ra[0], ra[1] or ""))
        self.names += [_path_name(self.names[i], steps) for i, steps in self.paths]
        self.where = (f"{code.co_filename}:{code.co_firstlineno}" if code is not None
                      else "")
        # the variables the function assigns (nonlocal, global): its Python's output
        assigned = _assigned(code) if code is not None else set()
        self.stored = [i for i, n in enumerate(self.names) if n in assigned]

    def _roots(self):
        vals = []
        for c in self.cells:
            try:
                vals.append(c.cell_contents)
            except ValueError:
                vals.append(_MISSING)
        g = self.glob
        for n in self.gnames:
            vals.append(g.get(n, _MISSING))
        return vals

    def values(self):
        if self.names is None:
            self._setup()
        vals = self._roots()
        for i, steps in self.paths:
            vals.append(_leaf(vals[i], steps))
        return vals

    def draws(self, cur):
        """Why a recording would hold random numbers that Python or NumPy drew (they
        would come back the same on every replay), or None."""
        for i, attr in self.reads:
            if _draws(cur[i], attr):
                name = self.names[i] + (f".{attr}" if attr else "")
                return (f"it draws random numbers with {name} (Python's or NumPy's), "
                        "which a replay would repeat; tg.rand, tg.randn, tg.randint and "
                        "tg.randperm draw anew on every replay")
        return None

    def bound(self, cur):
        """What a recording made now holds to."""
        vals = list(cur)
        for i in self.varying + self.stored:
            vals[i] = VARY
        return vals

    def inputs(self, cur):
        return tuple([cur[i] for i in self.varying]) if self.varying else ()

    def changed(self, bound, cur):
        """The index of the first variable no longer bound as in ``bound``, or -1."""
        if all(map(_is, bound, cur)):
            return -1
        for i, (a, b) in enumerate(zip(bound, cur)):
            if a is not VARY and not same_value(a, b):
                return i
        return -1

    def describe(self, i, old, new):
        kind = "closure variable" if i < len(self.cells) else "global" \
            if i < len(self.cells) + len(self.gnames) else "value"
        return (f"the {kind} '{self.names[i]}' of the function defined at {self.where} "
                f"changed ({_short(old)} -> {_short(new)})")


def _short(x):
    if x is _MISSING:
        return "unbound"
    if x.__class__ in _PLAIN:
        return repr(x)
    shape = getattr(x, "shape", None)
    return f"a {type(x).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")
