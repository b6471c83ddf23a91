"""tapegrad.nn.functional: layers and losses as functions, as ``torch.nn.functional``.

Built on the core's tensor ops (softmax and log_softmax are fused core ops; class
targets are gathered by integer-array indexing). Where a fused op would be faster, or
where values are read into constants of the computation, the code says so
(``COMPOSITE:``): fine for eager autograd, worth knowing for a recorded replay.
"""
import math
import warnings

import numpy as np
import tapegrad as tg

from .. import ops as _ops
from ..tape import TRACE, api
from ..tensor import Tensor
from ._common import _check_tensor, _const, _np_dtype
from ._activations import (celu, cosine_similarity, glu, hardsigmoid, hardswish,
                           logsigmoid, mish, normalize, one_hot, pairwise_distance, relu6,
                           selu, softmin, softsign, tanhshrink, threshold)
from ._windows import (adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, fold, max_pool2d,
                       pad, unfold)

__all__ = ["linear", "relu", "tanh", "sigmoid", "softmax", "log_softmax", "cross_entropy",
           "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy_with_logits", "dropout",
           "gelu", "silu", "leaky_relu", "elu", "softplus", "hardtanh", "layer_norm",
           "embedding", "smooth_l1_loss", "huber_loss", "kl_div", "binary_cross_entropy",
           "conv2d", "conv1d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "pad",
           "unfold", "fold",
           "batch_norm", "scaled_dot_product_attention", "relu6", "hardsigmoid",
           "hardswish", "mish", "selu", "celu", "softsign", "logsigmoid", "softmin", "glu",
           "tanhshrink", "threshold", "one_hot", "normalize", "cosine_similarity",
           "pairwise_distance"]

_REDUCTIONS = ("mean", "sum", "none")
_TORCH_NAMES = {"float32": "Float", "float64": "Double", "bool": "Bool", "int64": "Long"}


# ---------------------------------------------------------------------------
# Helpers
def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _norm_dim(dim, ndim, fname):
    n = max(ndim, 1)
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{fname}(): argument 'dim' must be int, not {type(dim).__name__}")
    if not -n <= dim < n:
        raise IndexError(f"{fname}: Dimension out of range (expected to be in range of "
                         f"[{-n}, {n - 1}], but got {dim})")
    return dim % n


def _softmax_dim(name, ndim):
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the "
                  "call to include dim=X as an argument.", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def _float_or_error(x, fname):
    if not x.dtype.is_floating_point:
        raise RuntimeError(f'"{fname}" not implemented for \'{x.dtype.name.capitalize()}\'')


# ---------------------------------------------------------------------------
# Layers
def linear(input, weight, bias=None):
    """input @ weight.T + bias, for input of shape (*, in_features)."""
    _check_tensor(input, "linear")
    _check_tensor(weight, "linear", "weight")
    return _ops.linear(input, weight, bias)


def relu(input, inplace=False):
    _check_tensor(input, "relu")
    out = tg.relu(input)
    if inplace:
        return input.copy_(out)
    return out


def tanh(input):
    _check_tensor(input, "tanh")
    return tg.tanh(input)


def sigmoid(input):
    _check_tensor(input, "sigmoid")
    return tg.sigmoid(input)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """exp(x) / sum(exp(x)) along ``dim`` (stable: the core op shifts by the max)."""
    _check_tensor(input, "softmax")
    if dtype is not None:
        input = input.to(dtype)
    _float_or_error(input, "softmax")
    if dim is None:
        dim = _softmax_dim("softmax", input.ndim)
    return tg.softmax(input, _norm_dim(dim, input.ndim, "softmax"))


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """x - logsumexp(x) along ``dim`` (stable for logits of 1e4: the core op shifts by
    the max)."""
    _check_tensor(input, "log_softmax")
    if dtype is not None:
        input = input.to(dtype)
    _float_or_error(input, "log_softmax")
    if dim is None:
        dim = _softmax_dim("log_softmax", input.ndim)
    return tg.log_softmax(input, _norm_dim(dim, input.ndim, "log_softmax"))


def dropout(input, p=0.5, training=True, inplace=False):
    """Zeroes each element with probability p and scales the rest by 1/(1-p).

    The mask is drawn from tapegrad's random stream (``tg.manual_seed``).
    """
    _check_tensor(input, "dropout")
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    npdt = _np_dtype(input)
    if p == 1.0:
        noise = _const(np.zeros(tuple(input.shape), npdt))
    else:
        # COMPOSITE: a mask from the random stream times the input (a compiled replay
        # draws a new mask on every call)
        noise = tg.creation.keep_mask(tuple(input.shape), npdt, p)
    if inplace:
        return input.mul_(noise)
    return input * noise


# ---------------------------------------------------------------------------
# Losses
def _check_size_warning(input, target, fname):
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input "
                      f"size ({input.shape}). This will likely lead to incorrect results "
                      "due to broadcasting. Please ensure they have the same size.",
                      UserWarning, stacklevel=3)


def _pointwise_loss(loss, input, weight, reduction):
    if weight is None:
        return _reduce(loss, reduction)
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError("Weights and input must have the same size.")
    loss = loss * weight
    if reduction == "mean":
        return loss.sum() / weight.sum()
    return _reduce(loss, reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Squared error; reduction 'mean' | 'sum' | 'none'; weighted mean = sum(w e) / sum(w)."""
    _check_tensor(input, "mse_loss")
    _check_tensor(target, "mse_loss", "target")
    _check_size_warning(input, target, "mse_loss")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    return _pointwise_loss((input - target) ** 2, input, weight, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Absolute error; reduction 'mean' | 'sum' | 'none'; weighted mean = sum(w e) / sum(w)."""
    _check_tensor(input, "l1_loss")
    _check_tensor(target, "l1_loss", "target")
    _check_size_warning(input, target, "l1_loss")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    return _pointwise_loss((input - target).abs(), input, weight, reduction)


def _legacy_reduction(size_average, reduce, reduction):
    """The deprecated size_average/reduce pair, mapped to a reduction as PyTorch does."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    result = ("mean" if size_average else "sum") if reduce else "none"
    warnings.warn(f"size_average and reduce args will be deprecated, please use "
                  f"reduction='{result}' instead.", UserWarning, stacklevel=3)
    return result


def _class_dim(input):
    return 0 if input.ndim == 1 else 1


def _index_targets(input, target, weight, ignore_index, fname):
    """Checks integer class targets; returns (class per target, its weight, valid mask).

    Ignored targets get class 0 and weight 0. A compiled replay recomputes the classes
    and weights from the target's values (_picked_losses).
    """
    if input.ndim == 0:
        raise ValueError(f"{fname}: input tensor should be 1D or more, got 0D")
    if isinstance(target, Tensor):
        t = target._data
    else:
        t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got "
                           f"{_TORCH_NAMES.get(t.dtype.name, t.dtype.name)}")
    cdim = _class_dim(input)
    shape = tuple(input.shape)
    expected = () if input.ndim == 1 else (shape[0],) + shape[2:]
    if t.shape != expected:
        if input.ndim >= 2 and (t.ndim == 0 or t.shape[0] != shape[0]):
            raise ValueError(f"Expected input batch_size ({shape[0]}) to match target "
                             f"batch_size ({t.shape[0] if t.ndim else 0}).")
        raise RuntimeError(f"{fname}: expected target of shape {list(expected)} for input "
                           f"of shape {list(shape)}, got {list(t.shape)}")
    n_classes = shape[cdim]
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= n_classes))
    if np.any(bad):
        raise IndexError(f"Target {int(t[bad].flat[0])} is out of bounds.")
    tt = np.where(valid, t, 0).astype(np.int64)
    npdt = _np_dtype(input)
    if weight is not None:
        w = weight._data if isinstance(weight, Tensor) else np.asarray(weight)
        if w.shape != (n_classes,):
            raise RuntimeError(f"{fname}: weight tensor should be defined either for all "
                               f"{n_classes} classes or no classes but got weight tensor of "
                               f"shape: {list(w.shape)}")
        wt = np.where(valid, w.astype(npdt)[tt], 0).astype(npdt)
    else:
        wt = valid.astype(npdt)
    return tt, wt, valid


def _picked_losses(logp, tt, wt, valid, target, weight, ignore_index):
    """-w[t] * logp[..., t, ...] for every target: a gather by flat positions, which a
    compiled replay computes from the target's values (and ``weight``) as they are then."""
    n_classes = logp.shape[_class_dim(logp)]
    inner = int(np.prod(logp.shape[2:], dtype=np.int64)) if logp.ndim > 2 else 1
    q = np.arange(tt.size, dtype=np.int64).reshape(tt.shape)
    pos = ((q // inner) * n_classes + tt) * inner + q % inner
    replay = (target, weight, n_classes, inner, ignore_index, wt) \
        if isinstance(target, Tensor) else None
    picked = _ops.views.gather_flat(logp, pos.reshape(-1), tt.shape, fixed=replay is None,
                                    target=replay)
    if weight is None and valid.all() and TRACE[0] is None:
        return -picked
    # (times 1.0 where every target counts: the same bits as -picked)
    return -(picked * _const(wt))


def _weight_sum(wt):
    return _const(wt).sum()


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of log-probabilities ``input`` at class indices ``target``.

    input: (C,), (N, C) or (N, C, d1, ...); target: (), (N,) or (N, d1, ...) int64.
    'mean' divides by the summed weights of the non-ignored targets, as PyTorch does.
    """
    _check_tensor(input, "nll_loss")
    _check_tensor(target, "nll_loss", "target")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    tt, wt, valid = _index_targets(input, target, weight, ignore_index, "nll_loss")
    losses = _picked_losses(input, tt, wt, valid, target, weight, ignore_index)
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    return total / _weight_sum(wt)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """log_softmax over the class dim followed by nll_loss (stable for logits ~1e4).

    ``target`` holds class indices (int64) or, with the input's shape, class
    probabilities; ``label_smoothing`` as in PyTorch.
    """
    _check_tensor(input, "cross_entropy")
    _check_tensor(target, "cross_entropy", "target")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: "
                           f"{label_smoothing:g}")
    if input.ndim == 0:
        raise ValueError("cross_entropy: input tensor should be 1D or more, got 0D")
    cdim = _class_dim(input)
    n_classes = input.shape[cdim]
    wshape = [1] * input.ndim
    wshape[cdim] = n_classes
    if tuple(target.shape) == tuple(input.shape) and target.dtype.is_floating_point:
        return _cross_entropy_probs(log_softmax(input, cdim), target, weight, reduction,
                                    label_smoothing, cdim, n_classes, wshape)
    # checked before anything is recorded
    tt, wt, valid = _index_targets(input, target, weight, ignore_index, "cross_entropy")
    logp = log_softmax(input, cdim)
    losses = _picked_losses(logp, tt, wt, valid, target, weight, ignore_index)
    if reduction == "none":
        nll = losses
    elif reduction == "sum":
        nll = losses.sum()
    else:
        nll = losses.sum() / _weight_sum(wt)
    if label_smoothing <= 0.0:
        return nll
    if weight is not None:
        smooth = -(logp * weight.reshape(*wshape)).sum(cdim)
    else:
        smooth = -logp.sum(cdim)
    # the mask and the weight sum as ops on the targets, so that a replay computes them
    smooth = smooth * (target != ignore_index).to(smooth.dtype)
    if reduction == "none":
        ret = smooth
    elif reduction == "sum":
        ret = smooth.sum()
    else:
        ret = smooth.sum() / _weight_sum(wt)
    return nll * (1.0 - label_smoothing) + ret * (label_smoothing / n_classes)


def _cross_entropy_probs(logp, target, weight, reduction, label_smoothing, cdim, n_classes,
                         wshape):
    if label_smoothing > 0.0:
        target = target * (1.0 - label_smoothing) + label_smoothing / n_classes
    prod = logp * target
    if weight is not None:
        prod = prod * weight.reshape(*wshape)
    if reduction == "none":
        return -prod.sum(cdim)
    if reduction == "sum":
        return -prod.sum()
    return -prod.sum() / (logp.numel() / n_classes)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,
                                     reduce=None, reduction="mean", pos_weight=None):
    """Sigmoid + binary cross entropy in one stable expression.

    loss = (1 - y) x + lw * softplus(-x), lw = (pos_weight - 1) y + 1, with
    softplus(-x) = max(-x, 0) + log(1 + exp(-|x|)) (PyTorch's -log_sigmoid(x)): no
    overflow for any x, inf at x = inf with y = 0, and the gradient sigmoid(x) - y
    holds at x = 0 too (the max's tie shares it).
    """
    _check_tensor(input, "binary_cross_entropy_with_logits")
    _check_tensor(target, "binary_cross_entropy_with_logits", "target")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Target size ({target.shape}) must be the same as input size "
                         f"({input.shape})")
    a = input.abs()
    sp_neg = _ops.maximum(-input, _ops.full_like_const(input, 0.0)) + (-a).exp().log1p()
    if pos_weight is not None:
        sp_neg = ((pos_weight - 1.0) * target + 1.0) * sp_neg
    loss = (1.0 - target) * input + sp_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------
# More activations, normalisation and embeddings (compositions of core ops, so that
# they are differentiable to any order and replayed by tg.compile)
def gelu(input, approximate="none"):
    """x * Phi(x); ``approximate='tanh'``: PyTorch's tanh formula."""
    _check_tensor(input, "gelu")
    if approximate == "none":
        return input * 0.5 * (1.0 + tg.erf(input * 0.7071067811865476))
    if approximate == "tanh":
        inner = (input + 0.044715 * input * input * input) * 0.7978845608028654
        return 0.5 * input * (1.0 + inner.tanh())
    raise RuntimeError("approximate argument must be either none or tanh.")


def silu(input, inplace=False):
    _check_tensor(input, "silu")
    out = input * input.sigmoid()
    return input.copy_(out) if inplace else out


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x where x > 0, else negative_slope * x (the slope's gradient at 0, as PyTorch)."""
    _check_tensor(input, "leaky_relu")
    out = tg.where(input > 0, input, input * negative_slope)
    return input.copy_(out) if inplace else out


def elu(input, alpha=1.0, inplace=False):
    _check_tensor(input, "elu")
    # expm1 of x or 0: the unused branch stays finite (no 0 * inf in its gradient)
    positive = input > 0
    neg = tg.where(positive, _ops.full_like_const(input, 0.0), input).expm1() * alpha
    out = tg.where(positive, input, neg)
    return input.copy_(out) if inplace else out


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x where beta x > threshold."""
    _check_tensor(input, "softplus")
    bx = input * beta
    big = bx > threshold
    soft = tg.where(big, _ops.full_like_const(input, 0.0), bx).exp().log1p() / beta
    return tg.where(big, input, soft)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """clamp(x, min_val, max_val), with gradient 0 at the bounds as PyTorch's."""
    _check_tensor(input, "hardtanh")
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    inside = (input > min_val) & (input < max_val)
    out = tg.where(inside, input, input.clamp(min_val, max_val).detach())
    return input.copy_(out) if inplace else out


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing normalized_shape,
    as one op (statistics in float64)."""
    _check_tensor(input, "layer_norm")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else \
        tuple(normalized_shape)
    k = len(shape)
    if k == 0 or tuple(input.shape[input.ndim - k:]) != shape:
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape "
                           f"[*, {', '.join(map(str, shape))}], but got input of size"
                           f"{list(input.shape)}")
    if input._data.dtype.kind != "f":
        raise RuntimeError(f'"LayerNormKernelImpl" not implemented for '
                           f"'{_TORCH_NAMES.get(input.dtype.name, input.dtype.name)}'")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        _check_tensor(t, "layer_norm", name)
        if tuple(t.shape) != shape:
            raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but "
                               f"got {name} of shape {list(t.shape)} and normalized_shape = "
                               f"{list(shape)}")
        if t.dtype != input.dtype:
            raise RuntimeError(f"expected scalar type {_TORCH_NAMES.get(input.dtype.name)} "
                               f"but found {_TORCH_NAMES.get(t.dtype.name)}")
    return _ops.layer_norm_rows(input, math.prod(shape), weight, bias, eps)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Normalises each channel (dim 1) by the batch's statistics when ``training``, as one
    op (and updates the running ones in place: (1 - momentum) * running + momentum *
    batch, the variance unbiased), else by the running ones."""
    _check_tensor(input, "batch_norm")
    if input.ndim < 2:
        raise ValueError(f"expected 2D or more input (got {input.ndim}D input)")
    n, c = input.shape[0], input.shape[1]
    s = math.prod(input.shape[2:])
    if input._data.dtype.kind != "f":
        raise NotImplementedError(f'"batch_norm" not implemented for '
                                  f"'{_TORCH_NAMES.get(input.dtype.name, input.dtype.name)}'")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{name} should contain {c} elements not {t.numel()}")
        if t is not None and t.dtype != input.dtype:
            raise RuntimeError(f"mixed dtype (CPU): expect parameter to have scalar type of "
                               f"{_TORCH_NAMES.get(input.dtype.name)}")
    if training:
        count = n * s
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got "
                             f"input size {list(input.shape)}")
        out = _ops.batch_norm_channels(input, weight, bias, eps)
        if running_mean is not None:
            with tg.no_grad():
                rows = input.reshape(n, c, s)
                mean = rows.sum(2).sum(0) / count
                centered = rows - mean.reshape(1, c, 1)
                squares = (centered * centered).sum(2).sum(0)
                running_mean.mul_(1 - momentum).add_(mean * momentum)
                running_var.mul_(1 - momentum).add_(squares * (momentum / (count - 1)))
        return out
    shape = (1, c) + (1,) * (input.ndim - 2)
    scale = 1.0 / (running_var + eps).sqrt()
    if weight is not None:
        scale = scale * weight
    out = (input - running_mean.reshape(shape)) * scale.reshape(shape)
    return out + bias.reshape(shape) if bias is not None else out


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None):
    """softmax(q k^T * scale + mask) v over the last two dims; a bool mask keeps True
    positions, a float mask is added; ``is_causal`` keeps j <= i; dropout_p drops
    attention weights (always, as PyTorch: pass 0 when evaluating)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(t, "scaled_dot_product_attention", name)
    if not 0 <= dropout_p <= 1:
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got "
                           f"{dropout_p}")
    if is_causal and attn_mask is not None:
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be "
                           "set when is_causal=True")
    lq, lk = query.shape[-2], key.shape[-2]
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * s
    if is_causal:
        attn_mask = _const(np.tril(np.ones((lq, lk), bool)))
    if attn_mask is not None:
        if attn_mask.dtype == tg.bool:
            scores = scores.masked_fill(~attn_mask, -math.inf)
        else:
            scores = scores + attn_mask
    weights = scores.softmax(-1)
    if dropout_p > 0:
        weights = dropout(weights, dropout_p)
    return weights @ value


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """Rows ``weight[input]``; the padding_idx row gets no gradient."""
    _check_tensor(input, "embedding")
    _check_tensor(weight, "embedding", "weight")
    if input.dtype != tg.int64:
        raise RuntimeError(f"Expected tensor for argument #1 'indices' to have one of the "
                           f"following scalar types: Long, Int; but got "
                           f"{_TORCH_NAMES.get(input.dtype.name, input.dtype.name)} instead")
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are "
                                  "not supported")
    out = weight[input.reshape(-1)]
    if padding_idx is not None:
        if padding_idx < 0:
            padding_idx += weight.shape[0]
        keep = (input.reshape(-1) != padding_idx).unsqueeze(1)
        out = tg.where(keep, out, out.detach())
    return out.reshape(*input.shape, weight.shape[1])


# ---------------------------------------------------------------------------
# More losses
def _diff_loss(input, target, fname, size_average, reduce, reduction):
    _check_tensor(input, fname)
    _check_tensor(target, fname, "target")
    _check_size_warning(input, target, fname)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    return input - target, reduction


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean",
                   beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta = 0: L1)."""
    d, reduction = _diff_loss(input, target, "smooth_l1_loss", size_average, reduce,
                              reduction)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    a = d.abs()
    if beta == 0:
        return _reduce(a, reduction)
    return _reduce(tg.where(a < beta, d * d * (0.5 / beta), a - 0.5 * beta), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)."""
    d, reduction = _diff_loss(input, target, "huber_loss", None, None, reduction)
    a = d.abs()
    loss = tg.where(a < delta, d * d * 0.5, (a - 0.5 * delta) * delta)
    return _pointwise_loss(loss, input, weight, reduction)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """target * (log target - input), 0 where target = 0 (input: log-probabilities);
    reduction 'batchmean' divides the sum by the batch size."""
    _check_tensor(input, "kl_div")
    _check_tensor(target, "kl_div", "target")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in _REDUCTIONS + ("batchmean",):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and "
                      "the support size.'batchmean' divides only by the batch size, and "
                      "aligns with the KL div math definition.'mean' will be changed to "
                      "behave the same as 'batchmean' in the next major release.",
                      UserWarning, stacklevel=3)
    if log_target:
        loss = target.exp() * (target - input)
    else:
        # xlogy(target, target) - target * input: 0 * log 0 counts as 0
        positive = target > 0
        safe = tg.where(positive, target, _ops.full_like_const(target, 1.0))
        loss = tg.where(positive, target * safe.log(), _ops.full_like_const(target, 0.0)) \
            - target * input
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """-(t log x + (1 - t) log(1 - x)), each log clamped at -100 as PyTorch's."""
    _check_tensor(input, "binary_cross_entropy")
    _check_tensor(target, "binary_cross_entropy", "target")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Using a target size ({target.shape}) that is different to the "
                         f"input size ({input.shape}) is deprecated. Please ensure they "
                         "have the same size.")
    # (checked when called; a compiled replay does not check again)
    d = input._data
    if np.any((d < 0) | (d > 1)):
        raise RuntimeError("all elements of input should be between 0 and 1")
    log_x = input.log().clamp(min=-100.0)
    log_1mx = (1.0 - input).log().clamp(min=-100.0)
    loss = -(target * log_x + (1.0 - target) * log_1mx)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


# the public functions, as entries that tg.compile can log and match
for _name in __all__:
    globals()[_name] = api(globals()[_name])
del _name
