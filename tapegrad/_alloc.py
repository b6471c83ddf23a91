"""Buffers of 4 MiB and more without NumPy's request for transparent huge pages, for
what a compiled program allocates once, when it is recorded (arenas, buffers of its own).

NumPy asks the kernel to back such arrays with huge pages (``madvise``). Where the kernel
compacts memory to serve fresh ones (``defrag`` set to ``madvise``, the usual default),
first writes to new memory cost up to ten times more: 80 MB took 334 ms against 36 ms
on a 2-core VM. Once a process has freed huge pages, reusing them is the faster path
(21 against 46 ms), so eager ops, which allocate their outputs on every call, keep
NumPy's default; a program's buffers are all new, all at once, and then reused.
"""
import math
import threading

import numpy as np

try:
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:                        # NumPy 1.x
    try:
        from numpy.core.multiarray import _set_madvise_hugepage
    except ImportError:
        _set_madvise_hugepage = None

HUGE = 1 << 22          # where NumPy starts asking
_LOCK = threading.Lock()


def empty(shape, dtype=np.float64):
    """``np.empty(shape, dtype)``, big ones on ordinary pages (NumPy's setting is switched
    off for the one allocation, under a lock so that threads restore it right)."""
    dtype = np.dtype(dtype)
    n = shape if isinstance(shape, int) else math.prod(shape)
    if n * dtype.itemsize < HUGE or _set_madvise_hugepage is None:
        return np.empty(shape, dtype)
    with _LOCK:
        was = _set_madvise_hugepage(False)
        try:
            return np.empty(shape, dtype)
        finally:
            _set_madvise_hugepage(was)


def empty_like(a):
    return empty(a.shape, a.dtype)


def copy(a):
    """A C-ordered copy of ``a`` in a buffer of its own."""
    out = empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out
