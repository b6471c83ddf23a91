"""Convolution, pooling and unfold/fold for tapegrad.nn.functional: windows gathered by
fixed positions (im2col), then the shared matrix product or a reduction; gradients
scatter back through the gather."""
import math

import numpy as np
import tapegrad as tg

from .. import ops as _ops
from ._common import _check_tensor, _const, _np_dtype


def _pair(v, name, fname):
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) for i in v):
        raise TypeError(f"{fname}(): argument '{name}' must be an int or a pair of ints")
    return v


def pad(input, pad, mode="constant", value=0.0):
    """Constant padding of the last len(pad) // 2 dims: (left, right, top, bottom, ...)."""
    _check_tensor(input, "pad")
    if mode != "constant":
        raise NotImplementedError(f"pad: mode '{mode}' is not supported (only 'constant')")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise RuntimeError("Padding length must be divisible by 2 and at most twice the "
                           "number of dims of the input")
    out = input
    for k in range(len(pad) // 2):
        lo, hi = pad[2 * k], pad[2 * k + 1]
        if lo < 0 or hi < 0:
            raise NotImplementedError("pad: negative padding is not supported")
        dim = input.ndim - 1 - k
        parts = []
        for n in (lo, hi):
            shape = list(out.shape)
            shape[dim] = n
            parts.append(_const(np.full(shape, value, _np_dtype(input))) if n else None)
        pieces = [p for p in (parts[0], out, parts[1]) if p is not None]
        out = tg.cat(pieces, dim) if len(pieces) > 1 else out
    return out


_POSITIONS = {}


def _positions(shape, kernel, stride, padding, dilation, layout, groups=1):
    """Flat positions in a (N, C, H, W) input of every window element, laid out as
    ``layout``: "conv" (groups, N * L, C / groups * kh * kw), rows ready for one matrix
    product; "pool" (N, C, L, kh * kw); "unfold" (N, C * kh * kw, L); L = OH * OW output
    positions. ``padding`` is ((top, bottom), (left, right)). A position in the padding is
    N * C * H * W, one past the input, where the caller appends the padding value (no
    padded copy of the input is made).

    Returns (positions or None when an output size is not positive, (OH, OW), whether a
    padding position occurs)."""
    key = (shape, kernel, stride, padding, dilation, layout, groups)
    found = _POSITIONS.get(key)
    if found is not None:
        return found
    n, c, h, w = shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    (ph, ph_end), (pw, pw_end) = padding
    oh = (h + ph + ph_end - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pw + pw_end - dw * (kw - 1) - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        return None, (oh, ow), False
    rows = (np.arange(oh)[:, None] * sh + np.arange(kh)[None, :] * dh - ph)   # (oh, kh)
    cols = (np.arange(ow)[:, None] * sw + np.arange(kw)[None, :] * dw - pw)   # (ow, kw)
    rows, cols = rows[:, None, :, None], cols[None, :, None, :]              # oh ow kh kw
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    base = np.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1, 1, 1) * (h * w)
    pos = np.where(inside, base + rows * w + cols, n * c * h * w)        # n c oh ow kh kw
    if layout == "conv":
        cg = c // groups
        pos = pos.reshape(n, groups, cg, oh, ow, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
        pos = pos.reshape(groups, n * oh * ow, cg * kh * kw)
    elif layout == "pool":
        pos = pos.reshape(n, c, oh * ow, kh * kw)
    else:
        pos = pos.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, oh * ow)
    if len(_POSITIONS) > 64:
        _POSITIONS.clear()
    _POSITIONS[key] = found = (np.ascontiguousarray(pos, np.int64), (oh, ow),
                               not inside.all())
    return found


def _gather_windows(x, pos, padded, fill):
    """x's elements at ``pos`` (from _positions), padding positions reading ``fill``."""
    return _ops.views.gather_flat(x, pos.reshape(-1), pos.shape, fixed=True,
                                  fill=fill if padded else None)


def _conv_padding(padding, kernel, stride, dilation):
    """((top, bottom), (left, right)) for an int, a pair, "valid" or "same" (an odd total
    puts the extra row or column at the end, as PyTorch)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: {padding!r}")
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return tuple((t // 2, t - t // 2) for t in totals)
    padding = _pair(padding, "padding", "conv2d")
    if min(padding) < 0:
        raise RuntimeError("negative padding is not supported")
    return tuple((p, p) for p in padding)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation of (N, C, H, W) with weight (O, C / groups, kh, kw): the windows
    gathered as rows of (N * OH * OW, C * kh * kw), then one matrix product with the
    flattened weight (per group), so the weight is neither broadcast over the batch nor
    its gradient summed back from per-image products."""
    _check_tensor(input, "conv2d")
    _check_tensor(weight, "conv2d", "weight")
    stride, dilation = _pair(stride, "stride", "conv2d"), _pair(dilation, "dilation", "conv2d")
    if input.ndim != 4 or weight.ndim != 4:
        raise RuntimeError(f"conv2d: expected a 4-D input and weight, got input of shape "
                           f"{list(input.shape)} and weight of shape {list(weight.shape)}")
    n, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    if c != cg * groups or o % groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {list(weight.shape)}, "
                           f"expected input{list(input.shape)} to have {cg * groups} "
                           f"channels, but got {c} channels instead")
    pads = _conv_padding(padding, (kh, kw), stride, dilation)
    pos, (oh, ow), padded = _positions((n, c, h, w), (kh, kw), stride, pads, dilation,
                                       "conv", groups)
    if pos is None:
        raise RuntimeError(f"Calculated output size ({oh}x{ow}) is too small for input of "
                           f"shape {[n, c, h + sum(pads[0]), w + sum(pads[1])]}")
    cols = _gather_windows(input, pos, padded, 0.0)           # groups, N * L, cg * K
    if groups == 1:
        out = _ops.linear(cols.reshape(n * oh * ow, -1), weight.reshape(o, -1), bias)
    else:
        out = cols @ weight.reshape(groups, o // groups, cg * kh * kw).transpose(1, 2)
    out = _ops.views.gather_flat(out, _channels_first(groups, n, oh * ow, o // groups),
                                 (n, o, oh, ow), fixed=True)
    if groups > 1 and bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out


def _channels_first(groups, n, l, og):
    """Flat positions in the products (groups, N * L, O / groups) of the (N, O, L)
    result: one gather, cheaper than a copy of a permuted view and its backward."""
    key = ("out", groups, n, l, og)
    found = _POSITIONS.get(key)
    if found is None:
        found = np.arange(groups * n * l * og).reshape(groups, n, l, og)
        found = np.ascontiguousarray(found.transpose(1, 0, 3, 2)).reshape(-1)
        if len(_POSITIONS) > 64:
            _POSITIONS.clear()
        _POSITIONS[key] = found
    return found


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation of (N, C, L) with weight (O, C / groups, k)."""
    _check_tensor(input, "conv1d")
    _check_tensor(weight, "conv1d", "weight")
    one = (lambda v: (1, v) if isinstance(v, int) else (1, v[0]))
    if not isinstance(padding, str):
        padding = (0, padding if isinstance(padding, int) else padding[0])
    out = conv2d(input.unsqueeze(2), weight.unsqueeze(2), bias, one(stride), padding,
                 one(dilation), groups)
    return out.squeeze(2)


def _pool_args(kernel_size, stride, padding, fname):
    kernel = _pair(kernel_size, "kernel_size", fname)
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride", fname)
    padding = _pair(padding, "padding", fname)
    if min(padding) < 0:
        raise RuntimeError(f"pad must be non-negative, but got pad: {min(padding)}")
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise RuntimeError("pad should be at most half of effective kernel size")
    return kernel, stride, padding


def _both_sides(padding):
    return tuple((p, p) for p in padding)


def _batched(input):
    """(input with a batch dim, its (N, C), whether one was added)."""
    squeeze = input.ndim == 3
    x = input.unsqueeze(0) if squeeze else input
    return x, tuple(x.shape[:2]), squeeze


def _pool_windows(x, kernel, stride, padding, dilation, fill):
    """The windows of a (N, C, H, W) input as (N, C, L, kh * kw), padding read as fill."""
    pos, out_hw, padded = _positions(tuple(x.shape), kernel, stride, _both_sides(padding),
                                     dilation, "pool")
    if pos is None:
        raise RuntimeError(f"Calculated output size ({out_hw[0]}x{out_hw[1]}) is too small "
                           f"for input of shape {list(x.shape)}")
    return _gather_windows(x, pos, padded, fill), out_hw


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """The max of each window (the gradient goes to its first maximum)."""
    _check_tensor(input, "max_pool2d")
    if ceil_mode or return_indices:
        raise NotImplementedError("max_pool2d: ceil_mode and return_indices are not "
                                  "supported")
    kernel, stride, padding = _pool_args(kernel_size, stride, padding, "max_pool2d")
    x, (n, c), squeeze = _batched(input)
    cols, (oh, ow) = _pool_windows(x, kernel, stride, padding,
                                   _pair(dilation, "dilation", "max_pool2d"), -math.inf)
    out = cols.max(dim=3).values.reshape(n, c, oh, ow)
    return out.squeeze(0) if squeeze else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """The mean of each window (padding zeros counted, as PyTorch's default)."""
    _check_tensor(input, "avg_pool2d")
    if ceil_mode or not count_include_pad or divisor_override is not None:
        raise NotImplementedError("avg_pool2d: ceil_mode, count_include_pad=False and "
                                  "divisor_override are not supported")
    kernel, stride, padding = _pool_args(kernel_size, stride, padding, "avg_pool2d")
    x, (n, c), squeeze = _batched(input)
    cols, (oh, ow) = _pool_windows(x, kernel, stride, padding, (1, 1), 0.0)
    out = cols.mean(dim=3).reshape(n, c, oh, ow)
    return out.squeeze(0) if squeeze else out


def adaptive_avg_pool2d(input, output_size):
    """Means over PyTorch's adaptive windows [floor(i H / oh), ceil((i + 1) H / oh)), as
    one product with a fixed averaging matrix."""
    _check_tensor(input, "adaptive_avg_pool2d")
    oh, ow = _pair(output_size, "output_size", "adaptive_avg_pool2d")
    *lead, h, w = input.shape
    a = np.zeros((oh * ow, h * w), _np_dtype(input))
    for i in range(oh):
        r0, r1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            c0, c1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            cells = (np.arange(r0, r1)[:, None] * w + np.arange(c0, c1)[None, :]).ravel()
            a[i * ow + j, cells] = 1.0 / cells.size
    out = input.reshape(*lead, h * w) @ _const(a.T)
    return out.reshape(*lead, oh, ow)


def _block_args(kernel_size, dilation, padding, stride, fname):
    return (_pair(kernel_size, "kernel_size", fname), _pair(dilation, "dilation", fname),
            _pair(padding, "padding", fname), _pair(stride, "stride", fname))


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding blocks as columns (im2col): (N, C, H, W) -> (N, C * kh * kw, L)."""
    _check_tensor(input, "unfold")
    if input.ndim not in (3, 4):
        raise RuntimeError(f"Input Error: Only 3D or 4D input Tensors are supported (got "
                           f"{input.ndim}D)")
    kernel, dilation, padding, stride = _block_args(kernel_size, dilation, padding, stride,
                                                    "unfold")
    if min(padding) < 0:
        raise RuntimeError(f"padding should be non-negative, but got pad_height: "
                           f"{padding[0]} pad_width: {padding[1]}")
    x, _, squeeze = _batched(input)
    pos, (oh, ow), padded = _positions(tuple(x.shape), kernel, stride, _both_sides(padding),
                                       dilation, "unfold")
    if pos is None:
        raise RuntimeError(f"Given input with spatial size {list(input.shape[-2:])}, "
                           f"kernel_size={kernel}, dilation={dilation}, padding={padding}, "
                           "calculated shape of the array of sliding blocks is "
                           f"[{oh}, {ow}], but its components must be at least one.")
    out = _gather_windows(x, pos, padded, 0.0)
    return out.squeeze(0) if squeeze else out


_FOLDS = {}


def _fold_table(n, c, size, kernel, dilation, stride):
    """For each position of the padded output, the flat positions of the input columns
    that add into it, padded with the position of an extra zero: (positions, count)."""
    key = (n, c, size, kernel, dilation, stride)
    table = _FOLDS.get(key)
    if table is None:
        idx, (oh, ow), _ = _positions((n, c) + size, kernel, stride, ((0, 0), (0, 0)),
                                      dilation, "pool")
        k = kernel[0] * kernel[1]
        total = n * c * k * oh * ow
        src = np.arange(total).reshape(n, c, k, oh * ow).transpose(0, 1, 3, 2).ravel()
        dest = idx.ravel()
        order = np.argsort(dest, kind="stable")
        dest, src = dest[order], src[order]
        places = n * c * size[0] * size[1]
        counts = np.bincount(dest, minlength=places)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        table = np.full((places, max(int(counts.max()), 1)), total, np.int64)
        table[dest, np.arange(dest.size) - first[dest]] = src
        if len(_FOLDS) > 64:
            _FOLDS.clear()
        _FOLDS[key] = table
    return table


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Columns summed back into an image (col2im, the adjoint of unfold):
    (N, C * kh * kw, L) -> (N, C, H, W); overlapping blocks add up."""
    _check_tensor(input, "fold")
    if input.ndim not in (2, 3):
        raise RuntimeError(f"Input Error: Only unbatched (2D) or batched (3D) input Tensors "
                           f"are supported (got {input.ndim}D)")
    size = _pair(output_size, "output_size", "fold")
    kernel, dilation, padding, stride = _block_args(kernel_size, dilation, padding, stride,
                                                    "fold")
    squeeze = input.ndim == 2
    x = input.unsqueeze(0) if squeeze else input
    n, ck, blocks = x.shape
    k = kernel[0] * kernel[1]
    if ck % k:
        raise RuntimeError(f"Expected size of input's dimension 1 to be divisible by the "
                           f"product of kernel_size, but got input.size(1)={ck} and "
                           f"kernel_size={kernel}")
    padded = (size[0] + 2 * padding[0], size[1] + 2 * padding[1])
    bh = (padded[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    bw = (padded[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    if bh <= 0 or bw <= 0 or bh * bw != blocks:
        raise RuntimeError(f"Given output_size={size}, kernel_size={kernel}, dilation="
                           f"{dilation}, padding={padding}, stride={stride}, expected size of "
                           f"input's dimension 2 to match the calculated number of sliding "
                           f"blocks {bh} * {bw} = {bh * bw}, but got input.size(2)={blocks}.")
    c = ck // k
    table = _fold_table(n, c, padded, kernel, dilation, stride)
    out = _ops.views.gather_flat(x, table.reshape(-1), table.shape, fixed=True,
                                 fill=0.0).sum(-1)
    out = out.reshape(n, c, padded[0], padded[1])
    if any(padding):
        out = out[:, :, padding[0]:padding[0] + size[0], padding[1]:padding[1] + size[1]]
    return out.squeeze(0) if squeeze else out
