"""How many threads a compiled replay runs its large fused elementwise runs on (runs of
enough work: ``_worth_splitting``); each thread takes one chunk of whole blocks, so the
results do not depend on the count; at most one per core). BLAS calls never overlap
those runs, so the two thread pools do not oversubscribe the cores. A forked child
that inherits a started pool runs on one thread."""
import os
import warnings

from . import _kernels as K

__all__ = ["set_num_threads", "get_num_threads"]


def set_num_threads(n):
    """Sets the number of threads, as ``torch.set_num_threads``."""
    if n.__class__ is bool or not isinstance(n, int):
        raise RuntimeError(f"set_num_threads expects an int, but got {type(n).__name__}")
    if n < 1:
        raise RuntimeError("set_num_threads expects a positive integer")
    K.THREADS[0] = n


def get_num_threads():
    """The number of threads: TAPEGRAD_NUM_THREADS or OMP_NUM_THREADS when set, else
    one per core, until ``set_num_threads``."""
    return int(K.THREADS[0])


def _forked():
    """A forked child runs on one thread: GNU OpenMP kills a child that uses the pool its
    parent started."""
    if any(K.KFWD[:, K.X_SPLIT]):
        K.THREADS[0] = 1


def _from_environment():
    for name in ("TAPEGRAD_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        try:
            set_num_threads(int(value))
            return
        except (ValueError, RuntimeError):
            warnings.warn(f"tapegrad: ignoring {name}={value!r}, which is not a positive "
                          "integer", RuntimeWarning, stacklevel=3)


_from_environment()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
