"""tapegrad.nn.utils: gradient clipping, as ``torch.nn.utils``."""
import math

import numpy as np
import tapegrad as tg

from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_norm", "clip_grad_value_", "get_total_norm",
           "clip_grads_with_norm_"]


def _as_list(parameters):
    if isinstance(parameters, Tensor):
        return [parameters]
    return list(parameters)


def _vector_norm(a, norm_type):
    # COMPOSITE: per-tensor norms in NumPy, in the gradient's dtype (a tensor norm op
    # would do this on the tape).
    a = a.reshape(-1)
    if a.size == 0:
        return a.dtype.type(0)
    if math.isinf(norm_type):
        return np.max(np.abs(a)) if norm_type > 0 else np.min(np.abs(a))
    if norm_type == 0:
        return a.dtype.type(np.count_nonzero(a))
    if norm_type == 2:
        return np.sqrt(np.sum(a * a, dtype=a.dtype))
    if norm_type == 1:
        return np.sum(np.abs(a), dtype=a.dtype)
    return np.sum(np.abs(a) ** norm_type, dtype=a.dtype) ** (1.0 / norm_type)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The norm of the norms of ``tensors`` (as if they were one vector), a 0-d tensor."""
    tensors = [t for t in _as_list(tensors) if t is not None]
    norm_type = float(norm_type)
    if not tensors:
        return tg.tensor(0.0)
    arrays = [t.detach().numpy() for t in tensors]
    norms = np.array([_vector_norm(a, norm_type) for a in arrays], dtype=arrays[0].dtype)
    total = _vector_norm(norms, norm_type)
    total = np.asarray(total, dtype=arrays[0].dtype)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    return tg.from_numpy(total)


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scales every gradient by min(max_norm / (total_norm + 1e-6), 1), in place."""
    params = _as_list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    max_norm = float(max_norm)
    if not grads:
        return
    tn = total_norm.detach().numpy() if isinstance(total_norm, Tensor) else \
        np.asarray(total_norm)
    coef = np.asarray(max_norm, tn.dtype) / (tn + tn.dtype.type(1e-6))
    coef = np.minimum(coef, tn.dtype.type(1.0))
    with tg.no_grad():
        for g in grads:
            g.mul_(tg.from_numpy(np.asarray(coef, dtype=np.dtype(g.dtype.name))))


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """Rescales the gradients so that their total norm is at most ``max_norm``.

    Returns the total norm before clipping (a 0-d tensor). ``norm_type`` may be
    ``float('inf')``. As in PyTorch the gradients are always multiplied by
    min(max_norm / (total_norm + 1e-6), 1).
    """
    params = _as_list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                   foreach=None):
    """Deprecated alias of :func:`clip_grad_norm_`."""
    import warnings
    warnings.warn("`tapegrad.nn.utils.clip_grad_norm` is now deprecated in favor of "
                  "`tapegrad.nn.utils.clip_grad_norm_`.", FutureWarning, stacklevel=2)
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamps every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    with tg.no_grad():
        for p in _as_list(parameters):
            g = p.grad
            if g is None:
                continue
            # COMPOSITE: np.clip then copy_ (a clamp_ op would do it in place).
            a = g.detach().numpy()
            g.copy_(tg.from_numpy(np.clip(a, -clip_value, clip_value).astype(a.dtype)))
