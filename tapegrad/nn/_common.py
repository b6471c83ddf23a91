"""Argument checks and constants shared by tapegrad.nn.functional and its parts."""
import numpy as np

from .. import ops as _ops
from ..tensor import Tensor


def _check_tensor(x, fname, argname="input"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{fname}(): argument '{argname}' must be Tensor, not "
                        f"{type(x).__name__}")


def _np_dtype(t):
    return np.dtype(t.dtype.name)


def _const(arr):
    """A tensor holding a NumPy array, not recorded (a constant of the computation)."""
    return _ops.arith._constant(np.ascontiguousarray(arr))
