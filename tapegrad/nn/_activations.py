"""More of ``torch.nn.functional``: pointwise activations, and vector helpers (one_hot,
normalize, cosine_similarity, pairwise_distance), each a composition of core ops, with
PyTorch's values, gradients (at the kinks too) and errors."""
import numpy as np
import tapegrad as tg

from ._common import _check_tensor

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _inplace(input, out, inplace):
    return input.copy_(out) if inplace else out


def relu6(input, inplace=False):
    """min(max(x, 0), 6); gradient 0 at both bounds, as PyTorch's."""
    _check_tensor(input, "relu6")
    return tg.nn.functional.hardtanh(input, 0.0, 6.0, inplace)


def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6."""
    _check_tensor(input, "hardsigmoid")
    out = tg.nn.functional.hardtanh(input + 3.0, 0.0, 6.0) / 6.0
    return _inplace(input, out, inplace)


def hardswish(input, inplace=False):
    """x * relu6(x + 3) / 6; gradient 0 up to -3, (2x + 3) / 6 inside, 1 from 3 on, as
    PyTorch's."""
    _check_tensor(input, "hardswish")
    zero = tg.zeros_like(input)
    out = tg.where(input <= -3.0, zero, tg.where(input < 3.0, input * (input + 3.0) / 6.0,
                                                 input))
    return _inplace(input, out, inplace)


def mish(input, inplace=False):
    """x * tanh(softplus(x))."""
    _check_tensor(input, "mish")
    return _inplace(input, input * tg.nn.functional.softplus(input).tanh(), inplace)


def selu(input, inplace=False):
    """scale * elu(x, alpha) with SELU's constants."""
    _check_tensor(input, "selu")
    return _inplace(input, tg.nn.functional.elu(input, _SELU_ALPHA) * _SELU_SCALE, inplace)


def celu(input, alpha=1.0, inplace=False):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    _check_tensor(input, "celu")
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError")
    return _inplace(input, tg.nn.functional.elu(input / alpha) * alpha, inplace)


def softsign(input):
    _check_tensor(input, "softsign")
    return input / (input.abs() + 1.0)


def logsigmoid(input):
    """log(sigmoid(x)) = -softplus(-x), stable at both ends."""
    _check_tensor(input, "logsigmoid")
    return -tg.nn.functional.softplus(-input)


def softmin(input, dim=None, dtype=None):
    _check_tensor(input, "softmin")
    return tg.nn.functional.softmax(-input, dim, dtype=dtype)


def glu(input, dim=-1):
    """a * sigmoid(b), a and b the halves of ``input`` along ``dim``."""
    _check_tensor(input, "glu")
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    size = input.shape[dim]
    if size % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension "
                           f"{dim % input.ndim} is size {size}")
    a, b = input.chunk(2, dim)
    return a * b.sigmoid()


def tanhshrink(input):
    _check_tensor(input, "tanhshrink")
    return input - input.tanh()


def threshold(input, threshold, value, inplace=False):
    """x where x > threshold, else ``value``."""
    _check_tensor(input, "threshold")
    out = tg.where(input > threshold, input, tg.full_like(input, value))
    return _inplace(input, out, inplace)


def one_hot(tensor, num_classes=-1):
    """int64 (..., num_classes) with a 1 at each class index (num_classes -1: the largest
    index + 1)."""
    _check_tensor(tensor, "one_hot")
    if tensor.dtype != tg.int64:
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    labels = tensor.detach().numpy()          # read: a recording checks the labels
    if labels.size and labels.min() < 0:
        raise RuntimeError("Class values must be non-negative.")
    if num_classes == -1:
        if not labels.size:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = int(labels.max()) + 1
    elif labels.size and labels.max() >= num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    out = np.zeros(labels.shape + (num_classes,), np.int64)
    np.put_along_axis(out, labels[..., None], 1, axis=-1)
    return tg.tensor(out)


def _clamped(norm, eps):
    """The norm clamped below at eps for its value; its gradient is the norm's (PyTorch
    clamps it in place under no_grad)."""
    return norm + (norm.clamp(min=eps) - norm).detach()


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """input / max(||input||_p along dim, eps)."""
    _check_tensor(input, "normalize")
    return input / input.norm(p, dim, keepdim=True).clamp(min=eps).expand_as(input)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """sum(x1 / max(||x1||, eps) * x2 / max(||x2||, eps)) along dim (broadcast first)."""
    _check_tensor(x1, "cosine_similarity")
    _check_tensor(x2, "cosine_similarity", "x2")
    x1, x2 = tg.broadcast_tensors(x1, x2)
    n1 = _clamped(x1.norm(2, dim, keepdim=True), eps)
    n2 = _clamped(x2.norm(2, dim, keepdim=True), eps)
    return ((x1 / n1) * (x2 / n2)).sum(dim)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """||x1 - x2 + eps||_p along the last dim."""
    _check_tensor(x1, "pairwise_distance")
    _check_tensor(x2, "pairwise_distance", "x2")
    return (x1 - x2 + eps).norm(p, -1, keepdim=keepdim)
