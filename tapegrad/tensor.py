"""Tensor: a thin facade over a NumPy array plus its place on the tape."""
import itertools
import warnings
import weakref

import numpy as np

from . import _interrupt
from . import _kernels as K
from .tape import TRACE as _TRACE
from .tape import api
from .dtypes import as_np_dtype, from_np_dtype, get_default_dtype


_handle_ids = itertools.count()


class RemovableHandle:
    """Returned by ``register_hook``; ``remove()`` unregisters the hook."""
    __slots__ = ("id", "_hooks", "_tape", "_row")

    def __init__(self, hooks, tape=None, row=-1):
        self.id = next(_handle_ids)
        self._hooks = hooks
        self._tape = tape
        self._row = row

    def remove(self):
        self._hooks.pop(self.id, None)
        tape, r = self._tape, self._row
        if tape is not None and not tape.hooks.get(r) and not tape.node_hooks.get(r):
            tape.T[r, K.FL] &= ~K.PAUSE

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Tensor:
    """A NumPy-backed tensor whose ops are recorded on the tape when they need grad.

    A non-leaf refers to the row that produced it (``_tape``, ``_row``); a leaf caches
    the LEAF row it was given on the current tape. Views keep their ``_base`` so that
    in-place writes are seen by the version counter of the storage they share.
    """
    __slots__ = ("_data", "_req", "_leaf", "_tape", "_row", "_base", "_ver", "_grad",
                 "_hooks", "_retains", "_own", "__weakref__")
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data, dtype=None, requires_grad=False):
        arr = _to_array(data, dtype)
        _init(self, arr, False, True)
        if requires_grad:
            self.requires_grad = True

    def __del__(self):
        try:
            if self._own:
                tape = self._tape
                live = tape.live
                live.discard(self._row)
                if not live:
                    tape.release()
        except (AttributeError, TypeError):   # never fully built, or interpreter shutdown
            pass
        except KeyboardInterrupt:
            # Python only prints what a destructor raises: finish, deliver it again
            self._tape.drop(self._row)
            _interrupt.redeliver()

    # -- attributes ---------------------------------------------------------
    @property
    def shape(self):
        return Size(self._data.shape)

    @property
    def dtype(self):
        return from_np_dtype(self._data.dtype)

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    def size(self, dim=None):
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[_dim(dim, self._data.ndim, "size")]

    def numel(self):
        return self._data.size

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    @property
    def requires_grad(self):
        return self._req

    @requires_grad.setter
    def requires_grad(self, flag):
        flag = bool(flag)
        if not self._leaf:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to "
                "use a computed variable in a subgraph that doesn't require differentiation "
                "use var_no_grad = var.detach().")
        if flag and self._data.dtype.kind not in "f":
            raise RuntimeError("only Tensors of floating point and complex dtype can "
                               "require gradients")
        if flag != self._req:
            if _TRACE[0] is not None:
                _TRACE[0].requires_grad_set(self, flag)
            self._req = flag
            self._tape = None

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self):
        return self._leaf

    @property
    def grad(self):
        if not self._leaf and not self._retains and self._grad is None:
            non_leaf_grad_warning()
        if _TRACE[0] is not None:
            _TRACE[0].grad_touch(self, True)
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got "
                                f"grad of type {type(value).__name__}")
            if value._data.shape != self._data.shape:
                raise RuntimeError(f"assigned grad has data of a different size: "
                                   f"{list(value.shape)} vs {list(self.shape)}")
            if value._data.dtype != self._data.dtype:
                raise RuntimeError(f"assigned grad has data of a different type: "
                                   f"{value.dtype} vs {self.dtype}")
        if _TRACE[0] is not None:
            _TRACE[0].grad_set(self)
        self._grad = value

    @property
    def retains_grad(self):
        return self._retains

    @property
    def data(self):
        if _TRACE[0] is not None:
            _TRACE[0].alias(self)
        return _wrap(self._data)

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"data must be a Tensor, not {type(value).__name__}")
        self._data = value._data
        self._base = None
        self._ver = None
        if self._leaf:
            self._tape = None     # its cached LEAF row describes the old storage

    @property
    def T(self):
        return self.permute(*range(self._data.ndim - 1, -1, -1))

    # -- conversion ---------------------------------------------------------
    def numpy(self):
        if self._req:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        _read(self)
        return self._data

    def item(self):
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be "
                               "converted to Scalar")
        _read(self)
        return self._data.reshape(()).item()

    def tolist(self):
        _read(self)
        return self._data.tolist()

    def is_contiguous(self, memory_format=None):
        return bool(self._data.flags.c_contiguous)

    def cpu(self):
        return self

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is "
                               "ambiguous")
        _read(self)
        return bool(self._data.reshape(()).item())

    def __index__(self):
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted "
                            "to an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        if copy is False and dtype is not None and np.dtype(dtype) != self._data.dtype:
            raise ValueError("a copy is needed to convert to the requested dtype")
        _read(self)
        arr = self._data if dtype is None else self._data.astype(dtype, copy=False)
        return arr.copy() if copy else arr

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __hash__(self):
        return id(self)

    def __repr__(self):
        d = self._data
        fmt = _float_format(d) if d.dtype.kind == "f" else None
        body = np.array2string(d, separator=", ", prefix="tensor(", max_line_width=80,
                               formatter=None if fmt is None else {"float_kind": fmt},
                               threshold=1000, edgeitems=3)
        extra = ""
        if d.size == 0:
            extra += f", size={tuple(d.shape)}"
        if d.dtype not in (as_np_dtype(get_default_dtype()), np.dtype(np.int64)):
            extra += f", dtype={self.dtype}"
        if not self._leaf:
            extra += f", grad_fn=<{self.grad_fn.name()}>"
        elif self._req:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def long(self):
        return self.to(np.int64)

    def bool(self):
        return self.to(np.bool_)

    # -- autograd -----------------------------------------------------------
    def register_hook(self, hook):
        if not self._req:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require "
                               "gradient")
        if not callable(hook):
            raise TypeError(f"register_hook: hook must be callable, got "
                            f"{type(hook).__name__}")
        if self._leaf:
            if self._hooks is None:
                self._hooks = {}
            handle = RemovableHandle(self._hooks)
            self._hooks[handle.id] = hook
            return handle
        tape, r = self._tape, self._row
        hooks = tape.hooks.setdefault(r, {})
        handle = RemovableHandle(hooks, tape, r)
        hooks[handle.id] = hook
        tape.T[r, K.FL] |= K.PAUSE
        return handle

    def retain_grad(self):
        if not self._req:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self._leaf or self._retains:
            return
        self._retains = True
        self._tape.retain[self._row] = weakref.ref(self)

    def detach(self):
        if _TRACE[0] is not None:
            _TRACE[0].alias(self)
        t = _wrap(self._data)
        t._base = self._base if self._base is not None else self
        return t

    def detach_(self):
        if not self._leaf and self._base is not None:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        if self._own:
            self._own = False
            self._tape.drop(self._row)
        self._leaf = True
        self._req = False
        self._tape = None
        return self


class Size(tuple):
    """A shape, printed as PyTorch prints ``torch.Size``."""
    __slots__ = ()

    def numel(self):
        n = 1
        for s in self:
            n *= s
        return n

    def __repr__(self):
        return f"tapegrad.Size({list(self)})"


def _init(t, data, req, leaf, tape=None, row=0):
    t._data = data
    t._req = req
    t._leaf = leaf
    t._tape = tape
    t._row = row
    t._base = None
    t._ver = None
    t._grad = None
    t._hooks = None
    t._retains = False
    t._own = False


_new = object.__new__


def _wrap(data):
    """A leaf that needs no grad."""
    if _TRACE[0] is not None:
        _TRACE[0].wrapped(data)
    t = _new(Tensor)
    _init(t, data, False, True)
    return t


def _read(t):
    """Python reads t's value: a recording must check it on replay."""
    if _TRACE[0] is not None:
        _TRACE[0].read(t)


def _node(data, tape, row):
    """A non-leaf standing for row ``row`` of ``tape`` (does not keep the row alive)."""
    t = _new(Tensor)
    _init(t, data, True, False, tape, row)
    return t


def _owned_node(data, tape, row):
    """The result tensor of row ``row``: the row's graph lives as long as it does."""
    t = _new(Tensor)
    _init(t, data, True, False, tape, row)
    t._own = True
    tape.live.add(row)
    return t


def _dim(d, ndim, op):
    n = max(ndim, 1)
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
        raise TypeError(f"{op}: dim must be an int, got {type(d).__name__}")
    if d < -n or d >= n:
        raise IndexError(f"{op}: Dimension out of range (expected to be in range of "
                         f"[{-n}, {n - 1}], but got {d})")
    return d % n


def shape_arg(shape, opname, what):
    """Sizes given as ``*sizes`` or one tuple/list, as ints (0-d int tensors accepted)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    out = []
    for s in shape:
        if isinstance(s, Tensor):
            s = int(s)
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool):
            raise TypeError(f"{opname}(): argument '{what}' must be tuple of ints, but found "
                            f"element of type {type(s).__name__}")
        out.append(int(s))
    return tuple(out)


def _to_array(data, dtype=None):
    npdt = None if dtype is None else as_np_dtype(dtype)
    if isinstance(data, Tensor):
        _read(data)
        arr = data._data.copy()
    elif isinstance(data, np.ndarray):
        arr = data.copy()
    else:
        try:
            arr = np.array(data)
        except ValueError as exc:
            raise ValueError(f"tensor: expected a rectangular sequence of numbers ({exc})") \
                from None
        if arr.dtype.kind == "O" or arr.dtype.kind in "USV":
            raise TypeError(f"tensor: can't convert {type(data).__name__} of "
                            f"{arr.dtype} to a tensor")
        if arr.dtype.kind == "f" and npdt is None and not isinstance(data, np.generic):
            npdt = as_np_dtype(get_default_dtype())
    return _normalize(arr, npdt)


def _normalize(arr, npdt=None):
    """Casts to one of the supported dtypes (float32, float64, int64, bool)."""
    if npdt is not None:
        return arr.astype(npdt, copy=False)
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype.itemsize < 4:
            return arr.astype(np.float32)
        return arr if arr.dtype.itemsize <= 8 else arr.astype(np.float64)
    if kind in "iu":
        return arr.astype(np.int64, copy=False)
    if kind == "b":
        return arr
    raise TypeError(f"tensor: unsupported dtype {arr.dtype}")


def _float_format(d):
    """PyTorch's float printing: '1.' when all values are integral, else 4 decimals,
    scientific when the magnitudes span too much; right-aligned to one width."""
    finite = np.abs(d[np.isfinite(d)]).astype(np.float64)
    nz = finite[finite != 0]
    if finite.size and np.all(finite == np.round(finite)):
        sci = nz.size and nz.max() > 1e8
        one = (lambda v: f"{v:.4e}") if sci else (lambda v: f"{v:.0f}.")
    else:
        sci = nz.size and (nz.max() / nz.min() > 1000 or nz.max() > 1e8 or nz.min() < 1e-4)
        one = (lambda v: f"{v:.4e}") if sci else (lambda v: f"{v:.4f}")

    def show(v):
        return one(v) if np.isfinite(v) else str(v)
    width = max((len(show(v)) for v in d.reshape(-1)[:2000]), default=0)
    return lambda v: show(v).rjust(width)


def non_leaf_grad_warning():
    warnings.warn(
        "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its "
        ".grad attribute won't be populated during autograd.backward(). If you indeed "
        "want the .grad field to be populated for a non-leaf Tensor, use .retain_grad() "
        "on the non-leaf Tensor.", UserWarning, stacklevel=3)


_TORCH_KINDS = {"float32": "Float", "float64": "Double"}


def bind(**methods):
    """Binds methods that other modules implement (``backward`` in autograd.engine,
    ``grad_fn`` in autograd.graph), so that this module imports none of them."""
    for name, fn in methods.items():
        setattr(Tensor, name, api(fn) if callable(fn) else fn)


def bind_methods(ops):
    """Operators and methods that forward to the ops; called once the ops module exists."""
    def swap(fn):
        return lambda self, other: fn(other, self)

    table = {
        "__add__": ops.add, "__radd__": ops.add, "__sub__": ops.sub,
        "__rsub__": lambda self, other: ops.rsub(self, other),
        "__mul__": ops.mul, "__rmul__": ops.mul, "__truediv__": ops.div,
        "__rtruediv__": lambda self, other: ops.rdiv(self, other),
        "__mod__": ops.remainder, "__rmod__": lambda self, other: ops.remainder(other, self),
        "__floordiv__": ops.floor_divide,
        "__rfloordiv__": lambda self, other: ops.floor_divide(other, self),
        "fmod": ops.fmod, "remainder": ops.remainder, "floor_divide": ops.floor_divide,
        "__pow__": ops.pow, "__rpow__": lambda self, other: ops.rpow(self, other),
        "__matmul__": ops.matmul, "__rmatmul__": swap(ops.matmul),
        "__neg__": ops.neg, "__getitem__": ops.getitem,
        "__iadd__": ops.add_, "__isub__": ops.sub_, "__imul__": ops.mul_,
        "__itruediv__": ops.div_,
        "add": ops.add, "sub": ops.sub, "mul": ops.mul, "div": ops.div, "pow": ops.pow,
        "neg": ops.neg, "sign": ops.sign, **ops.UNARY_FUNCTIONS,
        "sum": ops.sum, "mean": ops.mean, "matmul": ops.matmul, "mm": ops.mm,
        "reshape": ops.reshape, "view": ops.view, "flatten": ops.flatten,
        "unsqueeze": ops.unsqueeze, "squeeze": ops.squeeze, "transpose": ops.transpose,
        "permute": ops.permute, "t": ops.t, "expand": ops.expand, "clone": ops.clone,
        "outer": ops.outer, "square": ops.square, "clamp": ops.clamp, "clip": ops.clamp,
        "clamp_": ops.clamp_, "clip_": ops.clamp_, "maximum": ops.maximum, "minimum": ops.minimum,
        "amax": ops.amax, "amin": ops.amin, "max": ops.max, "min": ops.min,
        "argmax": ops.argmax, "argmin": ops.argmin, "prod": ops.prod, "var": ops.var,
        "std": ops.std, "logsumexp": ops.logsumexp, "norm": ops.norm,
        "softmax": ops.softmax, "log_softmax": ops.log_softmax, "bmm": ops.bmm,
        "dot": ops.dot, "split": ops.split, "chunk": ops.chunk, "narrow": ops.narrow,
        "broadcast_to": ops.broadcast_to, "__setitem__": ops.setitem, "where":
        lambda self, condition, other: ops.where(condition, self, other),
        "add_": ops.add_, "sub_": ops.sub_, "mul_": ops.mul_, "div_": ops.div_,
        "zero_": ops.zero_, "fill_": ops.fill_, "copy_": ops.copy_, "to": ops.to_dtype,
        "masked_fill": ops.masked_fill, "tril": ops.tril, "triu": ops.triu,
        "repeat": ops.repeat, "roll": ops.roll, "flip": ops.flip, "cumsum": ops.cumsum,
        "sort": ops.sort, "argsort": ops.argsort, "topk": ops.topk, "rsqrt": ops.rsqrt,
        "frac": ops.frac,
        "contiguous": ops.contiguous, "isnan": ops.isnan, "isinf": ops.isinf,
        "isfinite": ops.isfinite, "any": ops.any, "all": ops.all,
        "logical_and": ops.logical_and, "logical_or": ops.logical_or,
        "logical_xor": ops.logical_xor, "logical_not": ops.logical_not,
        "isclose": ops.isclose, "allclose": ops.allclose, "equal": ops.equal,
        "unbind": ops.unbind, "index_select": ops.index_select, "log2": ops.log2,
        "log10": ops.log10, "lerp": ops.lerp, "addmm": ops.addmm, "mv": ops.mv,
        "swapaxes": ops.swapaxes, "movedim": ops.movedim, "moveaxis": ops.movedim,
        "count_nonzero": ops.count_nonzero, "tile": ops.tile,
        "arctan": ops.atan, "arcsin": ops.asin, "arccos": ops.acos, "arcsinh": ops.asinh,
        "arccosh": ops.acosh, "arctanh": ops.atanh, "atan2": ops.atan2,
        "arctan2": ops.atan2, "hypot": ops.hypot, "logaddexp": ops.logaddexp,
        "clamp_min": ops.clamp_min, "clamp_max": ops.clamp_max, "deg2rad": ops.deg2rad,
        "rad2deg": ops.rad2deg, "exp2": ops.exp2, "diagonal": ops.diagonal,
        "diag": ops.diag, "trace": ops.trace, "diff": ops.diff, "cross": ops.cross,
        "expand_as": lambda self, other: ops.expand(self, *other.shape),
        "view_as": lambda self, other: ops.view(self, *other.shape),
        "reshape_as": lambda self, other: ops.reshape(self, *other.shape),
        "type_as": lambda self, other: ops.to_dtype(self, other.dtype),
        "masked_fill_": lambda self, mask, value: self.copy_(ops.masked_fill(self, mask,
                                                                             value)),
    }
    for name, fn in table.items():
        setattr(Tensor, name, api(fn))
    Tensor.__abs__ = api(ops.abs)

    def cmp(ufunc):
        def method(self, other):
            o = other._data if isinstance(other, Tensor) else other
            try:
                out = np.asarray(ufunc(self._data, o))
                if _TRACE[0] is not None:
                    _TRACE[0].compare(ufunc, out, self, other)
                return _wrap(out)
            except ValueError:
                raise ops._bcast_error(ufunc.__name__, self,
                                       other if isinstance(other, Tensor)
                                       else _wrap(np.asarray(o))) from None
        return method

    def bitwise(code, name, ufunc, reflected=False):
        def method(self, other=None):
            if code == 3:
                if self._data.dtype.kind not in "biu":
                    raise RuntimeError(f'"bitwise_not_cpu" not implemented for '
                                       f"'{_TORCH_KINDS[self._data.dtype.name]}'")
                out = np.asarray(np.invert(self._data))
            else:
                o = other._data if isinstance(other, Tensor) else other
                for arr in (self._data, np.asarray(o)):
                    if arr.dtype.kind not in "biu":
                        raise RuntimeError(f'"{name}_cpu" not implemented for '
                                           f"'{_TORCH_KINDS.get(arr.dtype.name, 'Float')}'")
                try:
                    out = np.asarray(ufunc(o, self._data) if reflected else
                                     ufunc(self._data, o))
                except ValueError:
                    raise ops._bcast_error(name, self, other if isinstance(other, Tensor)
                                           else _wrap(np.asarray(o))) from None
            if _TRACE[0] is not None:
                _TRACE[0].bits(code, out, self, other)
            return _wrap(out)
        return method

    for code, name, ufunc in ((0, "bitwise_and", np.bitwise_and),
                              (1, "bitwise_or", np.bitwise_or),
                              (2, "bitwise_xor", np.bitwise_xor)):
        op = "__" + name.split("_")[1] + "__"
        setattr(Tensor, op, api(bitwise(code, name, ufunc)))
        setattr(Tensor, "__r" + op[2:], api(bitwise(code, name, ufunc, reflected=True)))
        setattr(Tensor, name, api(bitwise(code, name, ufunc)))
    Tensor.__invert__ = Tensor.bitwise_not = api(bitwise(3, "bitwise_not", np.invert))

    for name, ufunc in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                        ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)):
        method = api(cmp(ufunc))
        setattr(Tensor, name, method)
        setattr(Tensor, f"__{name}__", method)
    Tensor.__hash__ = lambda self: id(self)

