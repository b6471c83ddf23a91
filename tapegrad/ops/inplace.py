"""User Functions' table entries, dtype conversion and in-place ops.
"""

import numpy as np

from .. import _kernels as K
from ..dtypes import as_np_dtype
from ..hyper import num
from ..tape import TRACE
from ..tensor import Tensor, _wrap
from .base import (Op, _FLOATS, _as_operand, _bcast_error, _check_broadcast, _check_tensor,
                   _grad_needed, _leaf_inplace_check, _rebase, bump_version, plain,
                   proxy_copy, record)
from . import arith, views


# ---------------------------------------------------------------------------
# User Functions (autograd.Function): their backward runs in Python
PYFN = Op("FunctionBackward", K.K_PYFN, None)
PYOUT = Op("FunctionBackward", K.K_PYOUT, None)


# ---------------------------------------------------------------------------
# Dtype conversion
CAST = Op("ToCopyBackward0", K.K_CAST, lambda c, g: (g.to(c.dtype(K.A)),))


def to_dtype(input, dtype):
    npdt = as_np_dtype(dtype)
    d = input._data
    if d.dtype == npdt:
        return input
    out = d.astype(npdt)
    if _grad_needed(input) and npdt.kind == "f":
        return record(CAST, out, input)
    return plain(CAST, out, [input])


_TORCH_TYPE = {"bool": "Bool", "int64": "Long"}


def _inplace_binary(t, other, outofplace, ufunc, opname):
    _check_tensor(t, opname)
    _leaf_inplace_check(t)
    other_t = _as_operand(other, opname)
    _check_broadcast(opname, t, other_t, t._data.shape)
    okind = other_t._data.dtype.kind if isinstance(other_t, Tensor) else \
        "f" if isinstance(other_t, (float, np.floating)) else \
        "b" if isinstance(other_t, (bool, np.bool_)) else "i"
    wider = "Float" if okind == "f" or ufunc is np.divide else \
        "Long" if t._data.dtype == np.bool_ and okind != "b" else None
    if t._data.dtype.kind in "iub" and wider:
        raise RuntimeError(f"{opname}: result type {wider} can't be cast to the desired "
                           f"output type {_TORCH_TYPE.get(t._data.dtype.name, 'Long')}")
    if _grad_needed(t, other_t if isinstance(other_t, Tensor) else None):
        src = t
        if isinstance(other_t, Tensor) and other_t._req and ufunc in (np.multiply, np.divide):
            src = proxy_copy(t)
        res = outofplace(src, other_t)
        if res._data.dtype != t._data.dtype:     # computed in the wider dtype
            res = res.to(t._data.dtype)
        return _rebase(t, res)
    if isinstance(other_t, Tensor) and other_t._data.dtype != t._data.dtype:
        # the op's own type promotion (a 0-d float64 other does not widen a float32 t),
        # then a cast into t: one kernel never reads another dtype's values
        return copy_(t, outofplace(t, other_t))
    o = other_t._data if isinstance(other_t, Tensor) else other_t
    if TRACE[0] is not None:
        _trace_inplace(t, other_t, ufunc)
    try:
        ufunc(t._data, o, out=t._data, casting="same_kind")
    except ValueError:
        raise _bcast_error(opname, t, other_t if isinstance(other_t, Tensor)
                           else _wrap(np.asarray(o))) from None
    except TypeError as exc:
        raise RuntimeError(f"{opname}: {exc}") from None
    bump_version(t)
    return t


_INPLACE = {np.add: (K.K_ADD, 1.0, 0.0), np.subtract: (K.K_SUB, 1.0, -1.0),
            np.multiply: (K.K_MUL, 0.0, 0.0), np.divide: (K.K_DIV, 0.0, 0.0)}


def _trace_inplace(t, other, ufunc):
    """Tells the recording about ``ufunc(t, other, out=t)``."""
    kernel, f0, sign = _INPLACE[ufunc]
    if isinstance(other, Tensor):
        TRACE[0].write(kernel, t, [t, other])
    elif kernel == K.K_ADD or kernel == K.K_SUB:
        TRACE[0].write("affine", t, [t], sign * num(other) if sign else num(other))
    elif kernel == K.K_MUL:
        TRACE[0].write("scale", t, [t], num(other))
    else:
        TRACE[0].write("divs", t, [t], num(other))


def add_(t, other, *, alpha=1):
    if alpha != 1:
        if _axpy(t, other, alpha):
            return t
        other = other * alpha
    return _inplace_binary(t, other, arith.add, np.add, "add_")


def _axpy(t, other, alpha):
    """t += alpha * other without a temporary, when nothing is recorded: True if done."""
    if not isinstance(t, Tensor) or not isinstance(other, Tensor):
        return False
    d, o = t._data, other._data
    if _grad_needed(t, other) or d.shape != o.shape or d.dtype != o.dtype \
            or d.dtype not in _FLOATS or not d.flags.c_contiguous or not o.flags.c_contiguous:
        return False
    if TRACE[0] is not None:
        TRACE[0].write("axpy", t, [other], num(alpha))
    K.axpy(d.reshape(-1), float(alpha), o.reshape(-1))
    bump_version(t)
    return True


def sub_(t, other, *, alpha=1):
    if alpha != 1:
        if _axpy(t, other, -alpha):
            return t
        other = other * alpha
    return _inplace_binary(t, other, arith.sub, np.subtract, "sub_")


def mul_(t, other):
    return _inplace_binary(t, other, arith.mul, np.multiply, "mul_")


def div_(t, other):
    return _inplace_binary(t, other, arith.div, np.divide, "div_")


def clamp_(t, min=None, max=None):
    _check_tensor(t, "clamp_")
    _leaf_inplace_check(t)
    if _grad_needed(t):
        # (the backward reads the input: a copy, as t's storage takes the result)
        return _rebase(t, arith.clamp(proxy_copy(t), min, max))
    if TRACE[0] is not None or min is None and max is None or \
            isinstance(min, Tensor) or isinstance(max, Tensor):
        return copy_(t, arith.clamp(t, min, max))
    np.clip(t._data, min, max, out=t._data)
    bump_version(t)
    return t


def fill_(t, value):
    _check_tensor(t, "fill_")
    _leaf_inplace_check(t)
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                               f"with {value.ndim} dimensions.")
        if _grad_needed(value, t):
            return _rebase(t, views.expand(value.to(t.dtype), *t.shape) + t * 0.0)
        value = value.item()
    if _grad_needed(t):
        return _rebase(t, t * 0.0 + float(value))
    if TRACE[0] is not None:
        TRACE[0].write("fill", t, [], value)
    t._data.fill(value)
    bump_version(t)
    return t


def zero_(t):
    return fill_(t, 0)


def copy_(t, src):
    _check_tensor(t, "copy_")
    _leaf_inplace_check(t)
    if not isinstance(src, Tensor):
        src = Tensor(np.asarray(src))
    try:
        np.broadcast_shapes(src._data.shape, t._data.shape)
        if np.broadcast_shapes(src._data.shape, t._data.shape) != t._data.shape:
            raise ValueError
    except ValueError:
        raise RuntimeError(f"copy_: the size of src {list(src.shape)} cannot be broadcast "
                           f"to the size of self {list(t.shape)}") from None
    if _grad_needed(t, src):
        s = src.to(t.dtype) if src._data.dtype.kind == "f" else _wrap(
            src._data.astype(t._data.dtype))
        return _rebase(t, t * 0.0 + views.expand(s, *t.shape))
    if TRACE[0] is not None:
        # the conversion as an op of its own: the recorded copy moves values of one dtype
        TRACE[0].write("copy", t, [to_dtype(src, t.dtype)])
    np.copyto(t._data, src._data, casting="unsafe")
    bump_version(t)
    return t
