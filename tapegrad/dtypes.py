"""The four dtypes tapegrad supports, named as in PyTorch."""
import numpy as np


class dtype:
    __slots__ = ("name", "np", "is_floating_point", "itemsize")

    def __init__(self, name, npdt):
        self.name = name
        self.np = np.dtype(npdt)
        self.is_floating_point = self.np.kind == "f"
        self.itemsize = self.np.itemsize

    def __repr__(self):
        return f"tapegrad.{self.name}"

    def __reduce__(self):
        return (from_np_dtype, (self.np,))


float32 = dtype("float32", np.float32)
float64 = dtype("float64", np.float64)
int64 = dtype("int64", np.int64)
bool = dtype("bool", np.bool_)  # noqa: A001 - PyTorch's name
float = float32  # noqa: A001
double = float64
long = int64

_BY_NP = {d.np: d for d in (float32, float64, int64, bool)}
_DEFAULT = [float32]


def from_np_dtype(npdt):
    return _BY_NP[np.dtype(npdt)]


def as_np_dtype(d):
    """NumPy dtype for a tapegrad dtype, NumPy dtype or Python type."""
    if isinstance(d, dtype):
        return d.np
    try:
        npdt = np.dtype(d)
    except TypeError:
        raise TypeError(f"not a dtype: {d!r}") from None
    if npdt.kind == "f" and npdt.itemsize <= 4:
        return float32.np
    if npdt not in _BY_NP:
        if npdt.kind in "iu":
            return int64.np
        raise TypeError(f"unsupported dtype: {d!r}")
    return npdt


def set_default_dtype(d):
    d = from_np_dtype(as_np_dtype(d))
    if not d.is_floating_point:
        raise TypeError("only floating-point types are supported as the default type")
    _DEFAULT[0] = d


def get_default_dtype():
    return _DEFAULT[0]
