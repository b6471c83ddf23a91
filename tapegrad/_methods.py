"""Tensor methods and names that PyTorch code uses around the ops: devices (only the
CPU exists), ``type``, storage facts, in-place forms of the unary ops, in-place random
fills, ``addcmul``/``addcdiv``, ``gather``, ``scatter_add``/``index_add`` and
``nonzero``. Each is written with the ops, so autograd, in-place rules and compiled
replays are theirs."""
import numpy as np

from . import ops
from .creation import arange, rand, randint, randn
from .grad_mode import is_grad_enabled
from .tape import api
from .tensor import Tensor, _dim, _read, _wrap

_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "int64": "LongTensor",
               "bool": "BoolTensor"}


class device:
    """A device, as ``torch.device``: tapegrad has the CPU only."""

    def __init__(self, type, index=None):
        type = getattr(type, "type", type)
        name = str(type).split(":")[0]
        if name != "cpu":
            raise RuntimeError(f"tapegrad runs on the CPU only; got device {str(type)!r}")
        self.type, self.index = "cpu", index

    def __eq__(self, other):
        return isinstance(other, (device, str)) and str(other).split(":")[0] == "cpu"

    def __hash__(self):
        return hash("cpu")

    def __str__(self):
        return "cpu"

    def __repr__(self):
        return "device(type='cpu')"


class cuda:
    """``tg.cuda.is_available()`` is False, as on a machine without a GPU."""

    @staticmethod
    def is_available():
        return False

    @staticmethod
    def device_count():
        return 0


_CPU = device("cpu")
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "meta", "hip")
_device = device


def _to(self, *args, dtype=None, device=None, non_blocking=False, copy=False,
        memory_format=None):
    """to(dtype), to(device), to(device, dtype), to(other tensor): a device other than
    the CPU raises; ``copy`` returns a new tensor even when nothing changes."""
    for a in args:
        if isinstance(a, Tensor):
            dtype = a.dtype
        elif isinstance(a, _device) or str(a).split(":")[0] in _DEVICE_TYPES:
            device = a
        else:
            dtype = a
    if device is not None:
        _device(device)                  # raises for anything but the CPU
    out = self if dtype is None else ops.to_dtype(self, dtype)
    return ops.clone(out) if copy and out is self else out


def _type(self, dtype=None, non_blocking=False):
    """The type name (``tapegrad.FloatTensor``), or the tensor converted to ``dtype``."""
    if dtype is None:
        return "tapegrad." + _TYPE_NAMES[self._data.dtype.name]
    return ops.to_dtype(self, dtype)


def _cuda(self, *args, **kwargs):
    raise RuntimeError("tapegrad runs on the CPU only: there is no CUDA device")


def _stride(self, dim=None):
    st = tuple(s // self._data.itemsize for s in self._data.strides)
    return st if dim is None else st[_dim(dim, max(self.ndim, 1), "stride")]


def _inplace(fn):
    """The in-place form of an op: its result copied into the tensor. With grad, the op
    reads a copy, so that what its backward saved is not the value overwritten (as
    PyTorch keeps the original of an in-place op whose derivative needs it)."""
    def method(self, *args, **kwargs):
        src = ops.clone(self) if self._req and is_grad_enabled() else self
        return ops.copy_(self, fn(src, *args, **kwargs))
    return method


def _uniform_(self, from_=0.0, to=1.0, *, generator=None):
    return ops.copy_(self, rand(*self.shape, dtype=self.dtype, generator=generator)
                     * (to - from_) + from_)


def _normal_(self, mean=0.0, std=1.0, *, generator=None):
    return ops.copy_(self, randn(*self.shape, dtype=self.dtype, generator=generator)
                     * std + mean)


def _bernoulli_(self, p=0.5, *, generator=None):
    return ops.copy_(self, ops.to_dtype(rand(*self.shape, dtype=self.dtype
                                             if self._data.dtype.kind == "f" else None,
                                             generator=generator) < p, self.dtype))


def _random_(self, from_=0, to=None, *, generator=None):
    """Integers in [from_, to), or in [0, from_) when only one bound is given."""
    low, high = (0, from_) if to is None else (from_, to)
    return ops.copy_(self, ops.to_dtype(randint(low, high, tuple(self.shape),
                                                generator=generator), self.dtype))


def addcmul(input, tensor1, tensor2, *, value=1):
    """input + value * tensor1 * tensor2."""
    return ops.add(input, ops.mul(ops.mul(tensor1, tensor2), value))


def addcdiv(input, tensor1, tensor2, *, value=1):
    """input + value * tensor1 / tensor2."""
    return ops.add(input, ops.mul(ops.div(tensor1, tensor2), value))


GATHER_COMPARE = 64    # up to this size along dim, gather compares (replayable)


def gather(input, dim, index):
    """out[i][j][k] = input[index[i][j][k]][j][k] for dim 0, and so on. Along a dim of
    at most GATHER_COMPARE entries, by comparing ``index`` with every position (ops a
    compiled replay computes again with new indices: policy gradients, class scores);
    along a longer one, by integer indexing (indices read by Python)."""
    if not isinstance(index, Tensor) or index._data.dtype != np.int64:
        raise RuntimeError("gather(): Expected dtype int64 for index")
    d = _dim(dim, max(input.ndim, 1), "gather")
    if index.ndim != input.ndim:
        raise RuntimeError("Index tensor must have the same number of dimensions as input "
                           "tensor")
    for k in range(index.ndim):
        if k != d and index.shape[k] > input.shape[k]:
            raise RuntimeError(f"Size does not match at dimension {k} expected index "
                               f"{list(index.shape)} to be smaller than self "
                               f"{list(input.shape)} apart from dimension {d}")
    if input.ndim == 0:
        return ops.clone(input)
    size = input.shape[d]
    if size <= GATHER_COMPARE:
        x = input
        for k in range(index.ndim):
            if k != d and index.shape[k] < input.shape[k]:
                x = ops.narrow(x, k, 0, index.shape[k])
        where = [1] * (index.ndim + 1)
        where[d + 1] = size
        hits = ops.unsqueeze(index, d + 1) == ops.reshape(arange(size), where)
        picked = ops.where(hits, ops.unsqueeze(x, d), 0.0)
        return ops.sum(picked, d + 1)
    key = []
    for k in range(index.ndim):
        if k == d:
            key.append(index)
        else:
            shape = [1] * index.ndim
            shape[k] = index.shape[k]
            key.append(ops.reshape(arange(index.shape[k]), shape))
    return ops.getitem(input, tuple(key))


def _positions(shape, dim, index):
    """Flat positions in a tensor of ``shape`` of every entry of ``index`` along dim
    (the other coordinates: the entry's own)."""
    grid = np.indices(index.shape)
    grid[dim] = index
    return np.ravel_multi_index(tuple(grid), shape).reshape(-1)


def _checked_index(opname, input, dim, index):
    if not isinstance(index, Tensor) or index._data.dtype != np.int64:
        raise RuntimeError(f"{opname}(): Expected dtype int64 for index")
    _read(index)                   # the positions are data: a recording checks them
    idx = index._data
    d = _dim(dim, max(input.ndim, 1), opname)
    size = input.shape[d] if input.ndim else 1
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.size:
        raise RuntimeError(f"index {int(bad[0])} is out of bounds for dimension {d} with size "
                           f"{size}")
    return d, idx


def scatter_add(input, dim, index, src):
    """input with src[i][j][k] added at [index[i][j][k]][j][k] (dim 0), and so on."""
    d, idx = _checked_index("scatter_add", input, dim, index)
    if idx.ndim != input.ndim or any(idx.shape[k] > src.shape[k] for k in range(idx.ndim)):
        raise RuntimeError("scatter_add(): Expected index of the input's dimensions and no "
                           "larger than src")
    part = src
    for k in range(idx.ndim):
        if idx.shape[k] < src.shape[k]:
            part = ops.narrow(part, k, 0, idx.shape[k])
    pos = _positions(tuple(input.shape), d, idx)
    return ops.add(input, ops.scatter_flat(ops.contiguous(part), pos, tuple(input.shape)))


def index_add(input, dim, index, source, *, alpha=1):
    """input with alpha * source's slices added at the positions ``index`` (a vector)
    names along dim."""
    d, idx = _checked_index("index_add", input, dim, index)
    if idx.ndim != 1 or source.shape[d] != idx.size:
        raise RuntimeError("index_add_(): Index should have dimension 1 and as many "
                           "entries as source has along dim")
    shape = list(source.shape)
    full = np.broadcast_to(idx.reshape([-1 if k == d else 1 for k in range(len(shape))]),
                           shape)
    pos = _positions(tuple(input.shape), d, full)
    part = source if alpha == 1 else ops.mul(source, alpha)
    return ops.add(input, ops.scatter_flat(ops.contiguous(part), pos, tuple(input.shape)))


def nonzero(input, *, as_tuple=False):
    """The indices of the nonzero entries, (n, ndim) int64 (a value read: the count
    decides the shape)."""
    _read(input)
    idx = np.argwhere(input._data)
    if as_tuple:
        return tuple(_wrap(np.ascontiguousarray(idx[:, k])) for k in range(idx.shape[1]))
    return _wrap(idx.astype(np.int64))


def bind():
    table = {
        "to": _to, "type": _type, "cuda": _cuda,
        "element_size": lambda self: self._data.itemsize,
        "nelement": lambda self: self._data.size, "stride": _stride,
        "data_ptr": lambda self: self._data.__array_interface__["data"][0],
        "uniform_": _uniform_, "normal_": _normal_, "bernoulli_": _bernoulli_,
        "random_": _random_, "addcmul": addcmul, "addcdiv": addcdiv,
        "addcmul_": _inplace(addcmul), "addcdiv_": _inplace(addcdiv), "gather": gather,
        "nonzero": nonzero, "cpu": lambda self: self, "scatter_add": scatter_add,
        "scatter_add_": _inplace(scatter_add), "index_add": index_add,
        "index_add_": _inplace(index_add),
    }
    for name in ("exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "abs", "neg", "sign",
                 "relu", "sigmoid", "tanh", "sin", "cos", "tan", "erf", "floor", "ceil",
                 "round", "trunc", "frac", "reciprocal", "square", "pow", "log2", "log10",
                 "lerp", "atan", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh",
                 "atan2", "hypot", "logaddexp", "exp2", "deg2rad", "rad2deg", "clamp_min",
                 "clamp_max", "fmod", "remainder", "floor_divide"):
        table[name + "_"] = _inplace(getattr(ops, name))
    for name in ("atan", "asin", "acos", "asinh", "acosh", "atanh", "atan2"):
        table["arc" + name[1:] + "_"] = table[name + "_"]
    for name, fn in table.items():
        setattr(Tensor, name, fn if name in ("type", "element_size", "nelement", "stride",
                                             "data_ptr", "cuda", "cpu") else api(fn))
    Tensor.device = property(lambda self: _CPU)
    Tensor.is_cuda = property(lambda self: False)
    Tensor.mT = property(lambda self: ops.transpose(self, -2, -1))
    Tensor.__format__ = _format


def _format(self, spec):
    """A 0-d tensor formats as its number (``f"{loss:.4f}"``), as PyTorch's."""
    if self._data.ndim == 0:
        return self.item().__format__(spec)
    return object.__format__(self, spec)
