"""tapegrad.nn.utils: gradient clipping, parameters as one vector and padding of
sequences (``rnn.pad_sequence``), as ``torch.nn.utils``."""
import math
import warnings

import tapegrad as tg

from ..tape import api
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_norm", "clip_grad_value_", "get_total_norm",
           "clip_grads_with_norm_", "parameters_to_vector", "vector_to_parameters", "rnn"]


def _as_list(parameters):
    if isinstance(parameters, Tensor):
        return [parameters]
    return list(parameters)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The norm of the norms of ``tensors`` (as if they were one vector), a 0-d tensor."""
    tensors = [t for t in _as_list(tensors) if t is not None]
    norm_type = float(norm_type)
    if not tensors:
        return tg.tensor(0.0)
    with tg.no_grad():
        norms = [t.detach().norm(norm_type) for t in tensors]
        if len({n.dtype.name for n in norms}) > 1:        # promote, as torch.stack does
            norms = [n.to(tg.float64) for n in norms]
        total = tg.stack(norms).norm(norm_type)
    if error_if_nonfinite and not math.isfinite(total.item()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    return total


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scales every gradient by min(max_norm / (total_norm + 1e-6), 1), in place."""
    params = _as_list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    max_norm = float(max_norm)
    if not grads:
        return
    with tg.no_grad():
        if not isinstance(total_norm, Tensor):
            total_norm = tg.tensor(total_norm)
        coef = (max_norm / (total_norm.detach() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype))


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
            g.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters):
    """The parameters flattened into one vector, in order (differentiable)."""
    return tg.cat([p.reshape(-1) for p in _as_list(parameters)])


def vector_to_parameters(vec, parameters):
    """Copies consecutive slices of ``vec`` into the parameters (their ``.data``)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    start = 0
    for p in _as_list(parameters):
        n = p.numel()
        p.data = vec[start:start + n].reshape(p.shape).detach().clone()
        start += n


class rnn:
    """``torch.nn.utils.rnn``: padding a list of sequences into one tensor."""

    @staticmethod
    def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
        """(longest, batch, *) or (batch, longest, *) from sequences of shape (L_i, *),
        each padded with ``padding_value`` at its end (``padding_side="left"``: start)."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"Expected padding_side to be one of left or right, but got "
                             f"{padding_side}.")
        sequences = list(sequences)
        longest = max(s.shape[0] for s in sequences)
        padded = []
        for s in sequences:
            extra = longest - s.shape[0]
            pad = [0, 0] * (s.ndim - 1) + ([extra, 0] if padding_side == "left" else [0, extra])
            padded.append(tg.nn.functional.pad(s, pad, value=padding_value) if extra else s)
        out = tg.stack(padded, 0)
        return out if batch_first else out.transpose(0, 1)


# the public functions, as entries that tg.compile can log and match
for _name in __all__[:-1]:
    globals()[_name] = api(globals()[_name])
del _name
rnn.pad_sequence = staticmethod(api(rnn.pad_sequence))
