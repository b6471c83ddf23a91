"""Tensor creation functions and the random streams."""
import numpy as np

from . import _kernels as K
from .dtypes import as_np_dtype, get_default_dtype
from .tape import TRACE
from .tensor import Tensor, _normalize, _to_array, _wrap, shape_arg

# rand, randn, randint, randperm, dropout and nn.init draw from a counter-based stream
# (key, position) of _kernels.rng, which a compiled replay continues exactly where an
# eager call would: the default one (STREAM) or a Generator's.
STREAM = np.zeros(2, np.int64)


def _key(seed):
    """The stream key of a seed: SplitMix64's mix of it, so that nearby seeds (one per
    worker or process) start unrelated streams, not one stream shifted by a draw."""
    z = (int(seed) + 0x632BE59BD9B4E019) % 2 ** 64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2 ** 64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2 ** 64
    z ^= z >> 31
    return z - 2 ** 64 if z >= 2 ** 63 else z


def _seed_arg(seed, opname="manual_seed"):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer, float)):
        raise RuntimeError(f"{opname} expected a long, but got {type(seed).__name__}")
    seed = int(seed)
    if not -2 ** 63 <= seed < 2 ** 64:
        raise ValueError("Overflow when unpacking long long")
    return seed % 2 ** 64           # as PyTorch: a negative seed reads as its unsigned bits


class Generator:
    """A random stream of its own, as ``torch.Generator``: ``rand``, ``randn``,
    ``randint``, ``randperm``, ``nn.init``, ``random_split``, ``DataLoader`` and the
    samplers draw from it when given ``generator=``. Its state is the stream's key and
    position (two int64)."""

    def __init__(self, device="cpu"):
        if str(device) != "cpu":
            raise RuntimeError(f"Generator: tapegrad runs on the CPU, not on {device!r}")
        self.device = "cpu"
        self._state = np.zeros(2, np.int64)
        self.seed()

    def manual_seed(self, seed):
        """Restarts the stream from ``seed``; returns the generator."""
        self._initial = _seed_arg(seed)
        self._state[0] = _key(self._initial)
        self._state[1] = 0
        return self

    def seed(self):
        """Restarts the stream from a nondeterministic seed and returns it."""
        s = int(np.random.SeedSequence().entropy) % 2 ** 64
        self.manual_seed(s)
        return s

    def initial_seed(self):
        return self._initial

    def get_state(self):
        """The stream's (key, position), an int64 tensor, for ``set_state``."""
        return _wrap(self._state.copy())

    def set_state(self, new_state):
        data = getattr(new_state, "_data", None)
        if data is None or data.dtype != np.int64 or data.shape != (2,):
            raise TypeError("RNG state must be the int64 tensor get_state() returned")
        self._state[:] = data
        return self

    def __repr__(self):
        return "<tapegrad.Generator object>"


def _stream(generator, opname):
    """The stream state a draw advances: the generator's, else the default one."""
    if generator is None:
        return STREAM
    if not isinstance(generator, Generator):
        raise TypeError(f"{opname}(): argument 'generator' must be tapegrad.Generator, not "
                        f"{type(generator).__name__}")
    return generator._state


default_generator = Generator()
default_generator._state = STREAM       # the default stream itself
default_generator.seed()


def manual_seed(seed):
    """Seeds the default random stream; returns ``default_generator``."""
    return default_generator.manual_seed(seed)


def seed():
    """Seeds the default stream nondeterministically; returns the seed."""
    return default_generator.seed()


def initial_seed():
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(new_state):
    default_generator.set_state(new_state)


def _float_dtype(dtype):
    return as_np_dtype(get_default_dtype() if dtype is None else dtype)


def _sizes(size, opname):
    shape = shape_arg(size, opname, "size")
    for s in shape:
        if s < 0:
            raise RuntimeError(f"{opname}: Trying to create tensor with negative dimension "
                               f"{s}: {list(shape)}")
    return shape


def _finish(arr, requires_grad):
    if TRACE[0] is not None:
        TRACE[0].constant(arr)
    t = _wrap(arr)
    if requires_grad:
        t.requires_grad = True
    return t


def tensor(data, dtype=None, requires_grad=False):
    """A new tensor holding a copy of ``data``."""
    if TRACE[0] is not None and isinstance(data, Tensor):
        # a copy that a replay makes again, of data's value then
        t = data.detach()
        same = dtype is None or as_np_dtype(dtype) == t._data.dtype
        t = t.clone() if same else t.to(dtype)
        if requires_grad:
            t.requires_grad = True
        return t
    return _finish(_to_array(data, dtype), requires_grad)


def as_tensor(data, dtype=None):
    """Shares memory with a NumPy array or tensor when the dtype allows."""
    if isinstance(data, Tensor) and (dtype is None or as_np_dtype(dtype) == data._data.dtype):
        return data
    if isinstance(data, np.ndarray):
        arr = _normalize(data, None if dtype is None else as_np_dtype(dtype))
        _shared(arr)
        return _wrap(arr)
    return tensor(data, dtype)


def from_numpy(arr):
    """A tensor sharing ``arr``'s memory."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(arr).__name__})")
    if arr.dtype not in (np.float32, np.float64, np.int64, np.bool_):
        raise TypeError(f"from_numpy: can't convert np.ndarray of type {arr.dtype}. The "
                        "only supported types are: float64, float32, int64, and bool.")
    _shared(arr)
    return _wrap(arr)


def _shared(arr):
    if TRACE[0] is not None:
        TRACE[0].fail("a tensor sharing a NumPy array's memory (pass it as an argument)")


def _draw(shape, dtype, kind, a=0.0, b=0.0, state=STREAM):
    """An array of ``dtype`` from the stream ``state`` (computed in float64 but for
    R_KEEP)."""
    out = np.empty(shape, dtype if kind == K.R_KEEP else np.float64)
    K.fill(out.reshape(-1), kind, state, a, b)
    out = out.astype(dtype, copy=False)
    if TRACE[0] is not None:
        TRACE[0].random(out, kind, state, a, b)
    return out


def keep_mask(shape, dtype, p):
    """Dropout's mask: 1 / (1 - p) with probability 1 - p, else 0 (in ``dtype``)."""
    scale = dtype.type(1.0) / dtype.type(1.0 - p)
    return _finish(_draw(shape, dtype, K.R_KEEP, 1.0 - p, float(scale)), False)


def zeros(*size, dtype=None, requires_grad=False):
    return _finish(np.zeros(_sizes(size, "zeros"), _float_dtype(dtype)), requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return _finish(np.ones(_sizes(size, "ones"), _float_dtype(dtype)), requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return _finish(np.empty(_sizes(size, "empty"), _float_dtype(dtype)), requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    if dtype is None:
        if isinstance(fill_value, bool):
            dtype = np.bool_
        elif isinstance(fill_value, (int, np.integer)):
            dtype = np.int64
    return _finish(np.full(_sizes((size,), "full"), fill_value, _float_dtype(dtype)),
                   requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return _finish(np.zeros(t.shape, t._data.dtype if dtype is None else as_np_dtype(dtype)),
                   requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return _finish(np.ones(t.shape, t._data.dtype if dtype is None else as_np_dtype(dtype)),
                   requires_grad)


def empty_like(t, dtype=None, requires_grad=False):
    return _finish(np.empty(t.shape, t._data.dtype if dtype is None else as_np_dtype(dtype)),
                   requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False):
    return _finish(np.full(t.shape, fill_value,
                           t._data.dtype if dtype is None else as_np_dtype(dtype)),
                   requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if ints else get_default_dtype()
    return _finish(np.arange(start, end, step, dtype=as_np_dtype(dtype)), requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    if steps < 0:
        raise RuntimeError("linspace: number of steps must be non-negative")
    return _finish(np.linspace(start, end, steps, dtype=_float_dtype(dtype)), requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    return _finish(np.eye(n, m, dtype=_float_dtype(dtype)), requires_grad)


def rand(*size, generator=None, dtype=None, requires_grad=False):
    shape = _sizes(size, "rand")
    return _finish(_draw(shape, _float_dtype(dtype), K.R_UNIFORM,
                         state=_stream(generator, "rand")), requires_grad)


def randn(*size, generator=None, dtype=None, requires_grad=False):
    shape = _sizes(size, "randn")
    return _finish(_draw(shape, _float_dtype(dtype), K.R_NORMAL,
                         state=_stream(generator, "randn")), requires_grad)


def randint(low, high=None, size=None, generator=None, dtype=None, requires_grad=False):
    if high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint(): missing required argument 'size'")
    state = _stream(generator, "randint")
    low, high = int(low), int(high)
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got "
                           f"from={low} >= to={high}")
    arr = np.empty(_sizes((size,), "randint"), np.int64)
    K.fill_randint(arr.reshape(-1), state, low, high)
    if TRACE[0] is not None:
        TRACE[0].random(arr, K.R_INT, state, 0.0, 0.0, low, high)
    if dtype is not None and as_np_dtype(dtype) != arr.dtype:
        if TRACE[0] is not None:
            TRACE[0].fail("randint with a dtype other than int64")
        arr = arr.astype(as_np_dtype(dtype))
    return _finish(arr, requires_grad)


def numpy_rng(generator, opname):
    """A NumPy generator for draws the stream has no kernel for (permutations, nn.init
    with a NumPy generator): ``generator`` itself when it is a NumPy one, else one
    seeded by a draw from the tapegrad stream (so that ``manual_seed`` fixes it)."""
    if isinstance(generator, np.random.Generator):
        return generator
    state = _stream(generator, opname)
    seed = np.empty(1, np.int64)
    K.fill_randint(seed, state, 0, 2 ** 62)
    return np.random.default_rng(int(seed[0]))


def randperm(n, generator=None, dtype=None, requires_grad=False):
    """A random permutation of 0..n-1 (int64 unless ``dtype``)."""
    if n < 0:
        raise RuntimeError(f"Trying to create tensor with negative dimension {n}: [{n}]")
    if TRACE[0] is not None:
        TRACE[0].fail("randperm")
    _stream(generator, "randperm")
    arr = numpy_rng(generator, "randperm").permutation(int(n)).astype(np.int64)
    if dtype is not None:
        arr = arr.astype(as_np_dtype(dtype))
    return _finish(arr, requires_grad)


def rand_like(t, dtype=None, requires_grad=False):
    return rand(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def randn_like(t, dtype=None, requires_grad=False):
    return randn(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def _new(make):
    """Tensor.new_zeros and friends: ``make`` in the tensor's dtype unless given one."""
    def method(self, *args, dtype=None, requires_grad=False):
        return make(*args, dtype=self.dtype if dtype is None else dtype,
                    requires_grad=requires_grad)
    method.__name__ = "new_" + make.__name__
    return method


Tensor.new_zeros = _new(zeros)
Tensor.new_ones = _new(ones)
Tensor.new_empty = _new(empty)
Tensor.new_full = _new(full)
Tensor.new_tensor = _new(tensor)
