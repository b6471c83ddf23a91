"""tapegrad: PyTorch-style reverse-mode autograd on the CPU, recorded on a flat tape and
replayed by a Numba interpreter."""
from . import autograd
from .creation import (Generator, arange, as_tensor, default_generator, empty, empty_like, eye,
                       from_numpy, full, full_like, get_rng_state, initial_seed, linspace,
                       manual_seed, ones, ones_like, rand, rand_like, randint, randn,
                       randn_like, randperm, seed, set_rng_state, tensor, zeros, zeros_like)
from .compile import CompileWarning, compile
from .dtypes import (bool, double, dtype, float, float32, float64, get_default_dtype,
                     int64, long, set_default_dtype)
from .grad_mode import (enable_grad, inference_mode, is_grad_enabled, no_grad,
                        set_grad_enabled)
from .ops import (abs, add, amax, amin, argmax, argmin, bmm, broadcast_to, cat, chunk,
                  clamp, clip, clone, cos, div, dot, erf, exp, expand, expm1, flatten,
                  log, log1p, log_softmax, logsumexp, matmul, max, maximum, mean, min,
                  minimum, mm, mul, narrow, neg, norm, outer, permute, pow, prod, reciprocal,
                  relu, reshape, rsub, sigmoid, sign, sin, softmax, split, sqrt, square,
                  squeeze, stack, std, sub, sum, t, tan, tanh, transpose, unsqueeze, var, view,
                  where, masked_fill, tril, triu, repeat, roll, flip, cumsum, einsum, sort,
                  argsort, topk, rsqrt, isnan, isinf, isfinite, any, all, logical_and,
                  logical_or, logical_xor, logical_not, isclose, allclose, equal, unbind,
                  index_select, floor, ceil, round, trunc, frac, log2, log10, lerp, addmm,
                  mv, swapaxes, movedim, count_nonzero, tile, broadcast_tensors, hstack,
                  vstack, atan, asin, acos, sinh, cosh, asinh, acosh, atanh, atan2, hypot,
                  logaddexp, clamp_min, clamp_max, deg2rad, rad2deg, exp2, diagonal,
                  diag, trace, meshgrid, cdist, diff, cross, fmod, remainder, floor_divide)
from .ops import (acos as arccos, acosh as arccosh, asin as arcsin,
                  asinh as arcsinh, atan as arctan, atan2 as arctan2, atanh as arctanh)
from .ops import cat as concat, cat as concatenate, movedim as moveaxis
from .tensor import Size, Tensor
from .tape import api as _api
from .threads import get_num_threads, set_num_threads

# the public ops and tensor factories, as entries that tg.compile can log and match
for _name in ("arange", "as_tensor", "empty", "eye", "from_numpy", "full", "full_like",
              "linspace", "ones", "ones_like", "rand", "rand_like", "randint", "randn",
              "randn_like", "tensor", "zeros", "zeros_like", "abs", "add", "amax", "amin",
              "argmax", "argmin", "bmm", "broadcast_to", "cat", "chunk", "clamp", "clip",
              "clone", "cos", "div", "dot", "erf", "exp", "expand", "expm1", "flatten",
              "log", "log1p", "log_softmax", "logsumexp", "matmul", "max", "maximum",
              "mean", "min", "minimum", "mm", "mul", "narrow", "neg", "norm", "outer",
              "permute", "pow", "prod", "reciprocal", "relu", "reshape", "rsub", "sigmoid",
              "sign", "sin", "softmax", "split", "sqrt", "square", "squeeze", "stack", "std",
              "sub", "sum", "t", "tan", "tanh", "transpose", "unsqueeze", "var", "view",
              "where", "masked_fill", "tril", "triu", "repeat", "roll", "flip", "cumsum",
              "einsum", "sort", "argsort", "topk", "rsqrt", "isnan", "isinf", "isfinite",
              "any", "all", "logical_and", "logical_or", "logical_xor", "logical_not",
              "isclose", "allclose", "equal", "unbind", "index_select", "floor", "ceil",
              "round", "trunc", "frac", "log2", "log10", "lerp", "addmm", "mv", "swapaxes",
              "movedim", "moveaxis", "count_nonzero", "tile", "broadcast_tensors", "hstack",
              "vstack", "concat", "concatenate", "randperm", "empty_like",
              "atan", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh", "arccos",
              "arccosh", "arcsin", "arcsinh", "arctan", "arctanh", "atan2", "arctan2",
              "hypot", "logaddexp", "clamp_min", "clamp_max", "deg2rad", "rad2deg",
              "exp2", "diagonal", "diag", "trace", "meshgrid", "cdist", "diff", "cross",
              "fmod", "remainder", "floor_divide"):
    globals()[_name] = _api(globals()[_name])
del _name


def is_tensor(obj):
    return isinstance(obj, Tensor)


def numel(input):
    return input.numel()
from . import _methods  # noqa: E402
from ._methods import (addcdiv, addcmul, cuda, device, gather, index_add,  # noqa: E402,F401
                       nonzero, scatter_add)

_methods.bind()
bitwise_and, bitwise_or, bitwise_xor, bitwise_not = (
    Tensor.bitwise_and, Tensor.bitwise_or, Tensor.bitwise_xor, Tensor.bitwise_not)
eq, ne, lt, le, gt, ge = Tensor.eq, Tensor.ne, Tensor.lt, Tensor.le, Tensor.gt, Tensor.ge

__version__ = "0.1.0"

_LAZY = {"nn": ".nn", "optim": ".optim", "utils": ".utils", "distributed": ".distributed",
         "linalg": ".linalg", "save": ".serialization", "load": ".serialization"}


def __getattr__(name):
    """nn, optim, utils, distributed, linalg, save and load are imported on first use: start-up
    pays only for the engine."""
    if name in _LAZY:
        import importlib
        module = importlib.import_module(_LAZY[name], __name__)
        value = module if name in ("nn", "optim", "utils", "distributed", "linalg") \
            else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tapegrad' has no attribute {name!r}")


def FloatTensor(data):
    """Legacy constructor: a float32 tensor."""
    return tensor(data, dtype=float32)


def DoubleTensor(data):
    """Legacy constructor: a float64 tensor."""
    return tensor(data, dtype=float64)


def LongTensor(data):
    """Legacy constructor: an int64 tensor."""
    return tensor(data, dtype=int64)
