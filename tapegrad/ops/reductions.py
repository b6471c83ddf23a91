"""Reductions: sum, mean, max/min, prod, softmax, layer normalisation and their
relatives.
"""

import builtins

import numpy as np

from .. import _kernels as K
from ..dtypes import as_np_dtype
from ..tape import TRACE
from ..tensor import Tensor, _dim, _owned_node, _wrap
from .base import (Op, SAVE_A, SAVE_OUT, _FLOATS, _check_tensor, _flat, _float_input,
                   _grad_needed, _shape_row, input_rows, plain, proxy, record, record_listed)
from . import arith, views


# ---------------------------------------------------------------------------
# Helpers shared by the tensor-level VJPs
def sum_to(g, shape):
    """Sums a broadcast gradient back to ``shape`` (the broadcasting rule, undone)."""
    gshape = tuple(g.shape)
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    dims = tuple(range(lead)) + tuple(
        i + lead for i, s in enumerate(shape) if s == 1 and gshape[i + lead] != 1)
    if dims:
        g = sum(g, dims, keepdim=True)
    return views.reshape(g, shape)


# ---------------------------------------------------------------------------
# Reductions
def _vjp_sum(c, g):
    shape = c.shape(K.A)
    mask = c.p(0)
    kshape = tuple(1 if (mask >> i) & 1 else s for i, s in enumerate(shape))
    return (views.expand(views.reshape(g, kshape), shape) * c.f0,)


SUM = Op("SumBackward0", K.K_SUM, _vjp_sum)
SUM_DIM = Op("SumBackward1", K.K_SUM, _vjp_sum)
MEAN = Op("MeanBackward0", K.K_SUM, _vjp_sum)
MEAN_DIM = Op("MeanBackward1", K.K_SUM, _vjp_sum)


def _dims(dim, ndim, opname):
    """Normalized dims (a sorted tuple) and their bitmask."""
    if dim is None:
        dims = tuple(range(ndim))
    else:
        if isinstance(dim, (list, tuple)):
            dims = tuple(_dim(d, ndim, opname) for d in dim)
        else:
            dims = (_dim(dim, ndim, opname),)
        if ndim == 0:
            dims = ()
        if len(set(dims)) != len(dims):
            raise RuntimeError(f"{opname}: dim {dims} appears multiple times in the list "
                               "of dims")
        dims = tuple(sorted(dims))
    mask = 0
    for d in dims:
        mask |= 1 << d
    return dims, mask


def _reduce(op_all, op_dim, npfn, input, dim, keepdim, opname, mean_):
    _check_tensor(input, opname)
    d = input._data
    if mean_ and d.dtype.kind != "f":
        raise RuntimeError(f"{opname}(): could not infer output dtype. Input dtype must be "
                           f"either a floating point or complex dtype. Got: "
                           f"{input.dtype.name.capitalize()}")
    dims, mask = _dims(dim, d.ndim, opname)
    count = 1
    for k in dims:
        count *= d.shape[k]
    if d.dtype in _FLOATS:
        out = np.empty(_reduced_shape(d.shape, dims, keepdim), d.dtype)
        flat = np.ascontiguousarray(d).reshape(-1)
        if K.trailing.py_func(mask, d.ndim):
            K.sum_rows(flat, out.reshape(-1), count, count if mean_ else 0)
        else:
            K.sum_fwd(_shape_row(d.shape), 0, mask, count if mean_ else 0, flat,
                      out.reshape(-1))
        if mean_ and count == 0:
            out[...] = np.nan
    else:
        out = npfn(d, axis=dims, keepdims=keepdim)
        if not isinstance(out, np.ndarray):
            out = np.asarray(out)
    if not mean_ and d.dtype.kind == "b":
        out = out.astype(np.int64)
    params = (mask, count if mean_ else 0)
    op = op_all if dim is None else op_dim
    if _grad_needed(input):
        scale = 1.0 / count if mean_ and count else 1.0
        if mean_ and count == 0:
            scale = float("nan")
        return record(op, out, input, f0=scale, params=params)
    return plain(op, out, [input], params=params)


def _reduced_shape(shape, dims, keepdim):
    if keepdim:
        return tuple(1 if k in dims else s for k, s in enumerate(shape))
    return tuple(s for k, s in enumerate(shape) if k not in dims)


def sum(input, dim=None, keepdim=False, *, dtype=None):
    if dtype is not None:
        as_np_dtype(dtype)
    res = _reduce(SUM, SUM_DIM, np.sum, input, dim, keepdim, "sum", False)
    return res if dtype is None else res.to(dtype)


def mean(input, dim=None, keepdim=False, *, dtype=None):
    if dtype is not None:
        _check_tensor(input, "mean")
        _dims(dim, input.ndim, "mean")
        input = input.to(dtype)
    return _reduce(MEAN, MEAN_DIM, np.mean, input, dim, keepdim, "mean", True)


def _kshape(shape, mask):
    return tuple(1 if (mask >> i) & 1 else n for i, n in enumerate(shape))


def _vjp_amax(c, g):
    shape = c.shape(K.A)
    kshape = _kshape(shape, c.p(0))
    x = c.a._data
    o = c.tape.held(c.r)[K.SO].reshape(kshape)
    everything = c.p(2) == 1
    hit = (x == o) | (np.isnan(x) & np.isnan(o)) if everything else (x == o)
    axes = tuple(i for i in range(len(shape)) if (c.p(0) >> i) & 1)
    share = views.expand(views.reshape(g, kshape), shape) / _wrap(
        hit.sum(axis=axes, keepdims=True).astype(x.dtype))
    if everything:          # PyTorch's evenly_distribute_backward: a select
        return (arith.where(_wrap(hit), share, 0.0),)
    return (share * _wrap(hit.astype(x.dtype)),)


AMAX = Op("AmaxBackward0", K.K_AMAX, _vjp_amax)
AMIN = Op("AminBackward0", K.K_AMAX, _vjp_amax)
MAX_ALL = Op("MaxBackward1", K.K_AMAX, _vjp_amax)
MIN_ALL = Op("MinBackward1", K.K_AMAX, _vjp_amax)


def _extreme(op, npfn, input, dim, keepdim, opname):
    _check_tensor(input, opname)
    d = input._data
    dims, mask = _dims(None if dim == () else dim, d.ndim, opname)
    if d.size == 0 and dim in (None, ()):
        raise RuntimeError(f"{opname}(): Expected reduction dim to be specified for "
                           "input.numel() == 0.")
    for k in dims:
        if d.shape[k] == 0:
            raise IndexError(f"{opname}(): Expected reduction dim {k} to have non-zero size.")
    out = np.asarray(npfn(d, axis=dims, keepdims=keepdim))
    params = (mask, 1 if npfn is np.min else 0, 1 if op is MAX_ALL or op is MIN_ALL else 0)
    if _grad_needed(input):
        return record(op, out, input, save=SAVE_A | SAVE_OUT, params=params)
    return plain(op, out, [input], params=params)


def amax(input, dim=(), keepdim=False):
    return _extreme(AMAX, np.max, input, dim, keepdim, "amax")


def amin(input, dim=(), keepdim=False):
    return _extreme(AMIN, np.min, input, dim, keepdim, "amin")


class _ValuesIndices(tuple):
    """(values, indices), as returned by max/min with a dim."""
    __slots__ = ()

    def __new__(cls, values, indices):
        return tuple.__new__(cls, (values, indices))

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])

    def __repr__(self):
        return f"return_types(values={self[0]!r}, indices={self[1]!r})"


MAX_DIM = Op("MaxBackward0", K.K_GATHER, lambda c, g: views._vjp_gather(c, g))
MIN_DIM = Op("MinBackward0", K.K_GATHER, lambda c, g: views._vjp_gather(c, g))


def _max_min(input, dim, keepdim, other, largest):
    opname = "max" if largest else "min"
    _check_tensor(input, opname)
    if isinstance(dim, Tensor):
        other, dim = dim, None
    if other is not None:
        return arith.maximum(input, other) if largest else arith.minimum(input, other)
    if dim is None:
        return _extreme(MAX_ALL if largest else MIN_ALL, np.max if largest else np.min,
                        input, None, False, opname)
    d = input._data
    nd = d.ndim
    k = _dim(dim, nd, opname)
    if nd and d.shape[k] == 0:
        raise IndexError(f"{opname}(): Expected reduction dim {k} to have non-zero size.")
    arg = (np.argmax if largest else np.argmin)(d, axis=k if nd else None, keepdims=True)
    arg = np.asarray(arg).reshape(d.shape[:k] + (1,) + d.shape[k + 1:]) if nd else \
        np.zeros((), np.int64)
    values = np.take_along_axis(d, arg, axis=k) if nd else d.copy()
    if not keepdim and nd:
        values = values.squeeze(k)
        arg = arg.squeeze(k)
    indices = _wrap(arg.astype(np.int64))
    flat = _flat_positions(d.shape, k, arg, keepdim) if nd else np.zeros(1, np.int64)
    inner = 1
    for n in d.shape[k + 1:]:
        inner *= n
    vt = views.gather_flat(input, flat, values.shape, MAX_DIM if largest else MIN_DIM,
                     extreme=(d.shape[k] if nd else 1, inner, largest))
    return _ValuesIndices(vt, indices)


def _flat_positions(shape, k, arg, keepdim):
    """Flat index into an array of ``shape`` of the elements picked by ``arg`` along k."""
    if not keepdim:
        arg = np.expand_dims(arg, k)
    grids = np.indices(arg.shape, sparse=True)
    coords = [grids[i] if i != k else arg for i in range(len(shape))]
    return np.ravel_multi_index(coords, shape).reshape(-1).astype(np.int64)


SORT = Op("SortBackward0", K.K_GATHER, lambda c, g: views._vjp_gather(c, g))
TOPK = Op("TopkBackward0", K.K_GATHER, lambda c, g: views._vjp_gather(c, g))


def _sorted(input, dim, descending, k, op, opname):
    """(values, indices) of the first k elements of each lane along dim in sorted order;
    the values gather from input (gradients scatter back)."""
    d = input._data
    if d.ndim == 0:
        if k > 1:
            raise RuntimeError("selected index k out of range")
        return _ValuesIndices(views.gather_flat(input, np.zeros(1, np.int64), (), op,
                                                order=(1, 1, descending, 1)),
                              _wrap(np.zeros((), np.int64)))
    kd = _dim(dim, d.ndim, opname)
    size = d.shape[kd]
    inner = 1
    for n in d.shape[kd + 1:]:
        inner *= n
    shape = d.shape[:kd] + (k,) + d.shape[kd + 1:]
    x = np.ascontiguousarray(d).reshape(-1)
    pos = np.empty(x.size // size * k if size else 0, np.int64)
    K.sort_fwd(x.view(np.uint8) if x.dtype == np.bool_ else x, pos, size, inner,
               bool(descending), k)
    values = views.gather_flat(input, pos, shape, op, order=(size, inner, descending, k))
    indices = (pos // inner) % builtins.max(size, 1)
    return _ValuesIndices(values, _wrap(indices.reshape(shape)))


def sort(input, dim=-1, descending=False, stable=False):
    """Values along dim in ascending (descending) order and where each came from; equal
    values keep their order (NaN sorts as the largest)."""
    _check_tensor(input, "sort")
    n = input.shape[_dim(dim, input.ndim, "sort")] if input.ndim else 1
    return _sorted(input, dim, descending, n, SORT, "sort")


def argsort(input, dim=-1, descending=False, stable=False):
    """Where each value of sort(input) came from along dim."""
    return sort(input, dim, descending, stable)[1]


def topk(input, k, dim=-1, largest=True, sorted=True):
    """The k largest (smallest) values along dim, in order, and their indices."""
    _check_tensor(input, "topk")
    n = input.shape[_dim(dim, input.ndim, "topk")] if input.ndim else 1
    if not isinstance(k, int) or k < 0 or k > n:
        raise RuntimeError("selected index k out of range")
    return _sorted(input, dim, largest, k, TOPK, "topk")


def max(input, dim=None, keepdim=False, *, other=None):
    return _max_min(input, dim, keepdim, other, True)


def min(input, dim=None, keepdim=False, *, other=None):
    return _max_min(input, dim, keepdim, other, False)


def argmax(input, dim=None, keepdim=False):
    return _arg(np.argmax, input, dim, keepdim, "argmax")


def argmin(input, dim=None, keepdim=False):
    return _arg(np.argmin, input, dim, keepdim, "argmin")


def _arg(fn, input, dim, keepdim, opname):
    _check_tensor(input, opname)
    d = input._data
    if dim is None:
        if d.size == 0:
            raise RuntimeError(f"{opname}(): Expected reduction dim to be specified for "
                               "input.numel() == 0.")
        out = np.asarray(fn(d)).reshape((1,) * d.ndim if keepdim else ()).astype(np.int64)
        if TRACE[0] is not None:
            TRACE[0].argidx(out, input, d.size, 1, fn is np.argmax)
        return _wrap(out)
    k = _dim(dim, d.ndim, opname)
    if d.ndim == 0:
        return _wrap(np.zeros((), np.int64))
    out = np.asarray(fn(d, axis=k, keepdims=keepdim)).astype(np.int64)
    if TRACE[0] is not None:
        inner = 1
        for n in d.shape[k + 1:]:
            inner *= n
        TRACE[0].argidx(out, input, d.shape[k], inner, fn is np.argmax)
    return _wrap(out)


def _vjp_prod(c, g):
    shape = c.shape(K.A)
    mask = c.p(0)
    kshape = _kshape(shape, mask)
    a = c.a
    if not np.any(a._data == 0):
        return (views.expand(views.reshape(g, kshape), shape)
                * (views.expand(views.reshape(c.out, kshape), shape) / a),)
    # With zeros, g times the product of the *other* elements, built explicitly: each
    # element is replaced by 1 in its own copy of the reduced group (n^2, exact).
    red = [i for i in range(len(shape)) if (mask >> i) & 1]
    kept = [i for i in range(len(shape)) if not (mask >> i) & 1]
    n = 1
    for i in red:
        n *= shape[i]
    m = 1
    for i in kept:
        m *= shape[i]
    xp = views.reshape(views.permute(a, *(kept + red)), (m, 1, n))
    eye = _wrap(np.broadcast_to(np.eye(n, dtype=bool), (m, n, n)).copy())
    others = prod(arith.where(eye, 1.0, views.expand(xp, m, n, n)), 2)
    res = views.reshape(views.reshape(g, (m, 1)) * others, tuple(shape[i] for i in kept + red))
    inv = [0] * len(shape)
    for k, i in enumerate(kept + red):
        inv[i] = k
    return (views.permute(res, *inv),)


PROD = Op("ProdBackward0", K.K_PROD, _vjp_prod)
PROD_DIM = Op("ProdBackward1", K.K_PROD, _vjp_prod)


def prod(input, dim=None, keepdim=False, *, dtype=None):
    _check_tensor(input, "prod")
    if dtype is not None:
        _dims(dim, input.ndim, "prod")
        input = input.to(dtype)
    d = input._data
    dims, mask = _dims(dim, d.ndim, "prod")
    if d.dtype in _FLOATS:
        out = np.empty(_reduced_shape(d.shape, dims, keepdim), d.dtype)
        K.prod_fwd(_shape_row(d.shape), 0, mask, _flat(d), out.reshape(-1))
    else:
        out = np.asarray(np.prod(d, axis=dims, keepdims=keepdim))
    if d.dtype.kind == "b":
        out = out.astype(np.int64)
    op = PROD if dim is None else PROD_DIM
    params = (mask, 1 if dim is None else 0)
    if _grad_needed(input):
        return record(op, out, input, save=SAVE_A | SAVE_OUT, params=params)
    return plain(op, out, [input], params=params)


def var(input, dim=None, *, correction=1, keepdim=False, unbiased=None):
    """Variance, composed from mean and sum (so it is differentiable to any order)."""
    _check_tensor(input, "var")
    if unbiased is not None:
        correction = 1 if unbiased else 0
    if input._data.dtype.kind != "f":
        raise RuntimeError("var(): could not infer output dtype. Input dtype must be either "
                           "a floating point or complex dtype.")
    dims, _ = _dims(dim, input.ndim, "var")
    count = 1
    for k in dims:
        count *= input._data.shape[k]
    diff = input - mean(input, dims if dim is not None else None, keepdim=True)
    ss = sum(diff * diff, dims if dim is not None else None, keepdim=keepdim)
    denom = count - correction
    return ss / denom if denom > 0 else ss * float("nan") if count else ss / 0.0


def std(input, dim=None, *, correction=1, keepdim=False, unbiased=None):
    return _sqrt_masked(var(input, dim, correction=correction, keepdim=keepdim,
                            unbiased=unbiased))


def _sqrt_masked(s):
    """sqrt(s) whose gradient is 0 where the result is 0, as PyTorch's norm and std
    backward mask it (a zero vector's norm, a constant column's std)."""
    zero = s == 0.0
    return arith.where(zero, 0.0, arith.sqrt(arith.where(zero, 1.0, s)))


def logsumexp(input, dim, keepdim=False):
    """log(sum(exp(x))) along ``dim``, shifted by the (constant) max for stability."""
    _check_tensor(input, "logsumexp")
    d = _float_input(input, "logsumexp")
    dims, _ = _dims(dim, d.ndim, "logsumexp")
    x = input if input._data.dtype.kind == "f" else _wrap(d)
    if d.size:
        m = amax(x.detach(), dims, keepdim=True)
        m = arith.where(arith.abs(m) < float("inf"), m, 0.0)      # an infinite max shifts by 0
    else:
        m = _wrap(np.zeros(tuple(1 if i in dims else s for i, s in enumerate(d.shape)),
                           d.dtype))
    out = arith.log(sum(arith.exp(x - m), dims, keepdim=True)) + m
    return out if keepdim else views.squeeze(out, dims) if dims else out


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    _check_tensor(input, "norm")
    _dims(dim, input.ndim, "norm")
    x = input if dtype is None else input.to(dtype)
    if p in ("fro", 2, 2.0):
        return _sqrt_masked(sum(x * x, dim, keepdim=keepdim))
    if p in (1, 1.0):
        return sum(arith.abs(x), dim, keepdim=keepdim)
    if p in (float("inf"), "inf"):
        return amax(arith.abs(x), () if dim is None else dim, keepdim=keepdim)
    if p in (float("-inf"), "-inf"):
        return amin(arith.abs(x), () if dim is None else dim, keepdim=keepdim)
    if p == 0:
        return sum(_wrap((x._data != 0).astype(x._data.dtype)), dim, keepdim=keepdim)
    if not isinstance(p, (int, float)):
        raise RuntimeError(f"norm: unsupported p={p!r}")
    return sum(arith.abs(x) ** float(p), dim, keepdim=keepdim) ** (1.0 / p)


def _vjp_softmax(c, g):
    y = c.out
    d = c.p(2)
    return (y * (g - sum(g * y, d, keepdim=True)),)


def _vjp_log_softmax(c, g):
    y = c.out
    d = c.p(2)
    return (g - arith.exp(y) * sum(g, d, keepdim=True),)


SOFTMAX = Op("SoftmaxBackward0", K.K_SOFTMAX, _vjp_softmax)
LOG_SOFTMAX = Op("LogSoftmaxBackward0", K.K_LOGSOFTMAX, _vjp_log_softmax)


def _norm_grads(c, g, x, dims, pdims, w, flags, shape):
    """Gradients of (x - mean) / sqrt(var + eps) * w + b, statistics over ``dims``, as
    differentiable ops (double backward); w broadcasts against x or is None, and the
    gradients of w and b sum over ``pdims``."""
    tape = c.tape
    rows = input_rows(tape, c.r)
    xc = x - mean(x, dims, keepdim=True)
    rstd = (mean(xc * xc, dims, keepdim=True) + c.f0) ** -0.5
    xhat = xc * rstd
    gw = g * w if w is not None else g
    wants = [bool(tape.T[q, K.FL] & K.REQ) for q in rows]
    grads = [views.reshape(rstd * (gw - mean(gw, dims, keepdim=True)
                                   - xhat * mean(gw * xhat, dims, keepdim=True)), shape)
             if wants[0] else None]
    if flags & 1:
        grads.append(views.reshape(sum(g * xhat, pdims), (-1,)) if wants[1] else None)
    if flags & 2:
        grads.append(views.reshape(sum(g, pdims), (-1,)) if wants[-1] else None)
    return tuple(grads)


def _saved_inputs(c):
    tape, r = c.tape, c.r
    rows = input_rows(tape, r)
    held = tape.held(r)
    x = proxy(tape, rows[0], held.get(K.SA))
    w = proxy(tape, rows[1], held.get(K.SB)) if K.SB in held else None
    return x, w


def _vjp_layer_norm(c, g):
    d = c.p(2)
    x, w = _saved_inputs(c)
    return _norm_grads(c, views.reshape(g, (-1, d)), views.reshape(x, (-1, d)), (1,), (0,),
                       w, c.p(3), c.shape(K.OP))


def _vjp_batch_norm(c, g):
    ch, sp = c.p(2), c.p(3)
    x, w = _saved_inputs(c)
    w = views.reshape(w, (1, ch, 1)) if w is not None else None
    return _norm_grads(c, views.reshape(g, (-1, ch, sp)), views.reshape(x, (-1, ch, sp)),
                       (0, 2), (0, 2), w, c.p(4), c.shape(K.OP))


LAYER_NORM = Op("NativeLayerNormBackward0", K.K_LAYERNORM, _vjp_layer_norm)
BATCH_NORM = Op("NativeBatchNormBackward0", K.K_BATCHNORM, _vjp_batch_norm)


def _normalised(op, fwd, input, shape, weight, bias, eps):
    """An input normalised by op (LAYER_NORM, BATCH_NORM; ``shape``: its size params),
    times weight plus bias (or None), as one row; weight and bias have input's dtype."""
    flags = (1 if weight is not None else 0) | (2 if bias is not None else 0)
    ins = [input] + [t for t in (weight, bias) if t is not None]
    x = _flat(input._data)
    out = np.empty(input._data.shape, x.dtype)
    fwd(x, x if weight is None else _flat(weight._data),
        x if bias is None else _flat(bias._data), out.reshape(-1), *shape, float(eps), flags)
    params = tuple(shape) + (flags,)
    if not _grad_needed(*ins):
        return plain(op, out, ins, float(eps), 0.0, (0, len(ins)) + params)
    tape, r, rows = record_listed(op, out, ins, params, K.SAVES, float(eps))
    tape.save(r, K.SA, input, input._data, -1 if input._leaf else rows[0])
    if weight is not None and input._req:
        tape.save(r, K.SB, weight, weight._data, -1 if weight._leaf else rows[1])
    return _owned_node(out, tape, r)


def layer_norm_rows(input, d, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) * weight + bias over rows of the last d elements, as
    one op; weight and bias (d elements each, or None) have input's dtype."""
    return _normalised(LAYER_NORM, K.layer_norm_fwd, input, (d,), weight, bias, eps)


def batch_norm_channels(input, weight, bias, eps):
    """Each channel (dim 1) of input normalised by its batch statistics (biased
    variance), times weight plus bias (C elements each, or None), as one op."""
    c = input.shape[1]
    sp = input.numel() // (input.shape[0] * c) if input.shape[0] * c else 0
    return _normalised(BATCH_NORM, K.batch_norm_fwd, input, (c, sp), weight, bias, eps)


def _softmax_op(op, input, dim, log_):
    opname = "log_softmax" if log_ else "softmax"
    _check_tensor(input, opname)
    if dim is None:
        raise TypeError(f"{opname}() missing required argument 'dim'")
    if input._data.dtype.kind != "f":
        raise NotImplementedError(f'"{opname}" not implemented for '
                                  f"'{input.dtype.name.capitalize()}'")
    d = input._data
    k = _dim(dim, d.ndim, opname) if d.ndim else 0
    inner = 1
    for n in d.shape[k + 1:]:
        inner *= n
    size = d.shape[k] if d.ndim else 1
    out = np.empty(d.shape, d.dtype)
    if inner == 1:
        K.softmax_last(_flat(d), out.reshape(-1), size, log_)
    else:
        K.softmax_fwd(_flat(d), out.reshape(-1), size, inner, log_)
    if _grad_needed(input):
        return record(op, out, input, save=SAVE_OUT, params=(size, inner, k))
    return plain(op, out, [input], params=(size, inner, k))


def softmax(input, dim=None, dtype=None):
    if dtype is not None:
        _check_tensor(input, "softmax")
        _dim(dim, builtins.max(input.ndim, 1), "softmax")
    x = input if dtype is None else input.to(dtype)
    return _softmax_op(SOFTMAX, x, dim, False)


def log_softmax(input, dim=None, dtype=None):
    if dtype is not None:
        _check_tensor(input, "log_softmax")
        _dim(dim, builtins.max(input.ndim, 1), "log_softmax")
    x = input if dtype is None else input.to(dtype)
    return _softmax_op(LOG_SOFTMAX, x, dim, True)
