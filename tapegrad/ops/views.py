"""Shape ops (reshape family, strided views), indexing with index arrays, and joining
and splitting.
"""

import functools
import math

import numpy as np

from .. import _kernels as K
from ..tape import STATE, TRACE
from ..tensor import Tensor, _dim, _owned_node, _wrap, shape_arg
from .base import (Op, _CATEGORY, _check_tensor, _grad_needed, _rebase, builtins_min,
                   builtins_sum, bump_version, plain, proxy_copy, record, record_listed)
from . import reductions


# ---------------------------------------------------------------------------
# Shape ops: reshape family (same element order) and strided views
def _vjp_copy(c, g):
    return (reshape(g, c.shape(K.A)),)


VIEW = Op("ViewBackward0", K.K_COPY, _vjp_copy)
RESHAPE = Op("ReshapeAliasBackward0", K.K_COPY, _vjp_copy)
UNSQUEEZE = Op("UnsqueezeBackward0", K.K_COPY, _vjp_copy)
SQUEEZE = Op("SqueezeBackward0", K.K_COPY, _vjp_copy)
SQUEEZE_DIM = Op("SqueezeBackward1", K.K_COPY, _vjp_copy)
CLONE = Op("CloneBackward0", K.K_COPY, _vjp_copy)
FLATTEN = Op("ViewBackward0", K.K_COPY, _vjp_copy)


def _shape_arg(shape, opname):
    return shape_arg(shape, opname, "shape")


def _infer(shape, size, opname):
    neg = [i for i, s in enumerate(shape) if s == -1]
    if len(neg) > 1:
        raise RuntimeError(f"{opname}: only one dimension can be inferred")
    if any(s < -1 for s in shape):
        raise RuntimeError(f"{opname}: invalid shape dimension {builtins_min(shape)}")
    known = 1
    for s in shape:
        if s != -1:
            known *= s
    if neg:
        if known == 0 or size % known:
            raise RuntimeError(f"{opname}: shape '{list(shape)}' is invalid for input of "
                               f"size {size}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    elif known != size:
        raise RuntimeError(f"{opname}: shape '{list(shape)}' is invalid for input of size "
                           f"{size}")
    return shape


def _same_order(op, input, shape, opname, view=False):
    """Reshape-like ops: same elements in the same (row-major) order."""
    _check_tensor(input, opname)
    d = input._data
    shape = _infer(shape, d.size, opname)
    if d.flags.c_contiguous or d.size <= 1:
        out = d.reshape(shape)
    else:
        out = d.view()
        try:
            out.shape = shape
        except AttributeError:
            if view:
                raise RuntimeError(
                    f"{opname}: view size is not compatible with input tensor's size and "
                    "stride (at least one dimension spans across two contiguous "
                    "subspaces). Use .reshape(...) instead.") from None
            # a copy that owns its memory (NumPy's reshape gives a view of its copy), so
            # that a compiled replay takes views of it for views, not copies
            out = np.empty(shape, d.dtype)
            out.reshape(d.shape)[...] = d
    return _view_result(op, out, input)


def _view_result(op, out, input, params=None):
    if _grad_needed(input):
        t = record(op, out, input, params=params)
    else:
        t = plain(op, out, [input], params=params or ())
    if out.base is not None and (out.base is input._data or out.base is input._data.base):
        t._base = input._base if input._base is not None else input
    return t


def reshape(input, *shape):
    return _same_order(RESHAPE, input, _shape_arg(shape, "reshape"), "reshape")


def view(input, *shape):
    return _same_order(VIEW, input, _shape_arg(shape, "view"), "view", view=True)


def flatten(input, start_dim=0, end_dim=-1):
    _check_tensor(input, "flatten")
    nd = input.ndim
    if nd == 0:
        return _same_order(FLATTEN, input, (1,), "flatten")
    s = _dim(start_dim, nd, "flatten")
    e = _dim(end_dim, nd, "flatten")
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shp = input._data.shape
    n = 1
    for k in range(s, e + 1):
        n *= shp[k]
    return _same_order(FLATTEN, input, shp[:s] + (n,) + shp[e + 1:], "flatten")


def unsqueeze(input, dim):
    _check_tensor(input, "unsqueeze")
    nd = input.ndim + 1
    d = _dim(dim, nd, "unsqueeze")
    shp = input._data.shape
    return _same_order(UNSQUEEZE, input, shp[:d] + (1,) + shp[d:], "unsqueeze")


def squeeze(input, dim=None):
    _check_tensor(input, "squeeze")
    shp = input._data.shape
    if dim is None:
        return _same_order(SQUEEZE, input, tuple(s for s in shp if s != 1), "squeeze")
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    dims = {_dim(x, input.ndim, "squeeze") for x in dims} if input.ndim else set()
    new = tuple(s for i, s in enumerate(shp) if not (i in dims and s == 1))
    return _same_order(SQUEEZE_DIM, input, new, "squeeze")


def clone(input):
    _check_tensor(input, "clone")
    out = input._data.copy()
    if _grad_needed(input):
        return record(CLONE, out, input)
    return plain(CLONE, out, [input])


def _vjp_strided(c, g):
    """Scatter-add g back to the positions the view read."""
    shape = c.shape(K.A)
    oshape = c.shape(K.OP)
    strides = [c.p(1 + k) for k in range(len(oshape))]
    if strides == _contig_strides(oshape):
        n = 1
        for s in oshape:
            n *= s
        idx = np.arange(c.p(0), c.p(0) + n, dtype=np.int64)   # one run of elements
    else:
        idx = np.full(oshape, c.p(0), dtype=np.int64)
        for k in range(len(oshape)):
            ax = np.arange(oshape[k], dtype=np.int64) * strides[k]
            idx += ax.reshape((-1,) + (1,) * (len(oshape) - k - 1))
    return (scatter_flat(g, idx.reshape(-1), shape, unique=True),)


def _vjp_permute(c, g):
    """The inverse permutation, read off the view's strides."""
    shape = c.shape(K.A)
    oshape = c.shape(K.OP)
    st = _contig_strides(shape)
    used = set()
    perm = []
    for k, s in enumerate(oshape):
        j = next(j for j in range(len(shape)) if j not in used and shape[j] == s
                 and (st[j] == c.p(1 + k) or s == 1))
        used.add(j)
        perm.append(j)
    inv = [0] * len(perm)
    for k, j in enumerate(perm):
        inv[j] = k
    return (permute(g, *inv),)


PERMUTE = Op("PermuteBackward0", K.K_STRIDED, _vjp_permute)
TRANSPOSE = Op("TransposeBackward0", K.K_STRIDED, _vjp_permute)
T_OP = Op("TBackward0", K.K_STRIDED, _vjp_permute)
EXPAND = Op("ExpandBackward0", K.K_STRIDED, lambda c, g: (reductions.sum_to(g, c.shape(K.A)),))
SELECT = Op("SelectBackward0", K.K_STRIDED, _vjp_strided)
SLICE = Op("SliceBackward0", K.K_STRIDED, _vjp_strided)


def _contig_strides(shape):
    st = [0] * len(shape)
    s = 1
    for k in range(len(shape) - 1, -1, -1):
        st[k] = s
        s *= shape[k]
    return st


def _strided(op, input, out, offset, strides):
    if len(strides) > K.MAXD:
        raise RuntimeError(f"{op.name}: tapegrad supports at most {K.MAXD} dims")
    return _view_result(op, out, input, params=(offset,) + tuple(strides))


def permute(input, *dims):
    _check_tensor(input, "permute")
    dims = _shape_arg(dims, "permute")
    nd = input.ndim
    if len(dims) != nd:
        raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input "
                           f"does not match the length of the desired ordering of dimensions "
                           f"i.e. input.dim() = {nd} is not equal to len(dims) = {len(dims)}")
    dims = tuple(_dim(d, nd, "permute") for d in dims)
    if len(set(dims)) != nd:
        raise RuntimeError("permute(): duplicate dims are not allowed.")
    st = _contig_strides(input._data.shape)
    return _strided(PERMUTE, input, input._data.transpose(dims), 0, [st[d] for d in dims])


def transpose(input, dim0, dim1):
    _check_tensor(input, "transpose")
    nd = input.ndim
    if nd == 0:
        _dim(dim0, 1, "transpose"), _dim(dim1, 1, "transpose")
        return _strided(TRANSPOSE, input, input._data.view(), 0, [])
    d0, d1 = _dim(dim0, nd, "transpose"), _dim(dim1, nd, "transpose")
    order = list(range(nd))
    order[d0], order[d1] = order[d1], order[d0]
    st = _contig_strides(input._data.shape)
    return _strided(TRANSPOSE, input, input._data.transpose(order), 0, [st[d] for d in order])


def t(input):
    _check_tensor(input, "t")
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                           f"{input.ndim}D")
    if input.ndim < 2:
        return _strided(T_OP, input, input._data.view(), 0, _contig_strides(input.shape))
    st = _contig_strides(input._data.shape)
    return _strided(T_OP, input, input._data.T, 0, [st[1], st[0]])


def expand(input, *sizes):
    _check_tensor(input, "expand")
    sizes = _shape_arg(sizes, "expand")
    shp = input._data.shape
    if len(sizes) < len(shp):
        raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be "
                           f"greater or equal to the number of dimensions in the tensor "
                           f"({len(shp)})")
    lead = len(sizes) - len(shp)
    st_in = _contig_strides(shp)
    new, st = [], []
    for i, s in enumerate(sizes):
        if i < lead:
            if s < 0:
                raise RuntimeError(f"expand: the expanded size of the tensor ({s}) isn't "
                                   "allowed in a leading, non-existing dimension "
                                   f"{i}")
            new.append(s)
            st.append(0)
            continue
        cur = shp[i - lead]
        if s == -1:
            s = cur
        if cur == s:
            new.append(s)
            st.append(st_in[i - lead])
        elif cur == 1:
            new.append(s)
            st.append(0)
        else:
            raise RuntimeError(f"expand: The expanded size of the tensor ({s}) must match "
                               f"the existing size ({cur}) at non-singleton dimension {i}.  "
                               f"Target sizes: {list(sizes)}.  Tensor sizes: {list(shp)}")
    out = np.broadcast_to(input._data, tuple(new))
    return _strided(EXPAND, input, out, 0, st)


def broadcast_to(input, shape):
    return expand(input, *_shape_arg((shape,), "broadcast_to"))


def _basic_key(key):
    """True when ``key`` uses only ints, slices, None and Ellipsis; a slice step below 1
    is a ValueError, as in PyTorch (views read forwards)."""
    items = key if isinstance(key, tuple) else (key,)
    for k in items:
        if isinstance(k, slice):
            if k.step is not None and not isinstance(k.step, Tensor) and k.step <= 0:
                raise ValueError("slice step cannot be zero" if k.step == 0 else
                                 "step must be greater than zero")
            continue
        if k is None or k is Ellipsis:
            continue
        if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            continue
        return False
    return True


def getitem(input, key):
    _check_tensor(input, "index")
    if key.__class__ is Tensor and key._data.dtype == np.int64 and input._data.ndim:
        return _take_rows(input, key)
    if TRACE[0] is not None:
        for k in key if isinstance(key, tuple) else (key,):
            if isinstance(k, Tensor):
                TRACE[0].index_key(k)
    if isinstance(key, Tensor):
        key = key._data
    elif isinstance(key, tuple):
        key = tuple(k._data if isinstance(k, Tensor) else k for k in key)
    if not _basic_key(key):
        return index_gather(input, key)
    items = key if isinstance(key, tuple) else (key,)
    if not any(k is Ellipsis for k in items):
        items = items + (Ellipsis,)   # so that NumPy returns a 0-d view, not a scalar
    d = input._data
    fake = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), shape=d.shape,
                                           strides=_contig_strides(d.shape))
    try:
        v = fake[items]
        out = d[items]
    except IndexError as exc:
        raise IndexError(f"index: {exc} (tensor of shape {list(d.shape)})") from None
    offset = v.__array_interface__["data"][0] - fake.__array_interface__["data"][0]
    plain = [k for k in items if k is not Ellipsis and k is not None]
    op = SELECT if plain and all(isinstance(k, (int, np.integer)) for k in plain) else SLICE
    return _strided(op, input, out, offset, list(v.strides))


# ---------------------------------------------------------------------------
# Gather by index arrays (advanced indexing), and its scatter-add adjoint
def _flat_index(shape, key):
    """Flat positions (int64) of the elements ``key`` selects from an array of ``shape``."""
    size = 1
    for n in shape:
        size *= n
    try:
        return np.arange(size, dtype=np.int64).reshape(shape)[key]
    except IndexError as exc:
        raise IndexError(f"index: {exc} (tensor of shape {list(shape)})") from None


def _vjp_gather(c, g):
    idx = c.tape.held(c.r)[K.SB]
    shape = c.shape(K.A)
    inside = idx < math.prod(shape)
    if not inside.all():        # positions reading the fill value (padding)
        keep = np.flatnonzero(inside)
        return (scatter_flat(gather_flat(g, keep, (len(keep),)), idx[keep], shape),)
    return (scatter_flat(g, idx, shape),)


def _vjp_scatter(c, g):
    idx = c.tape.held(c.r)[K.SB]
    return (gather_flat(g, idx, c.shape(K.A)),)


GATHER = Op("IndexBackward0", K.K_GATHER, _vjp_gather)
SCATTER = Op("IndexPutBackward0", K.K_SCATTER, _vjp_scatter)


def gather_flat(input, idx, shape, op=GATHER, fixed=False, extreme=None, target=None,
                rows=None, order=None, fill=None):
    """out (of ``shape``) = input.flatten()[idx]; differentiable (scatter-add back).
    With a ``fill`` value, position ``input.numel()`` (one past the end) reads it (the
    padding of windows, with no padded copy of the input). For a compiled replay, idx
    is ``fixed`` (it does not depend on tensor values), the positions of the max/min
    along a dim, ``extreme`` = (size, inner, largest), or the positions of class
    targets, ``target`` = (target, class weight or None, classes, inner size,
    ignore_index, per-target weights), or of rows along dim 0, ``rows`` = (int64 index
    tensor, rows, elements per row), or of the first k elements in sorted order along a
    dim, ``order`` = (size, inner, descending, k)."""
    idx = idx.astype(np.int64, copy=False)
    # indexed by idx in the result's shape: the result owns its memory, so that a
    # compiled replay takes a reshape of it for a view, not a copy
    flat = input._data.reshape(-1)
    if fill is not None:
        flat = np.concatenate([flat, np.full(1, fill, flat.dtype)])
    out = flat[idx.reshape(shape)] if len(shape) else flat[idx].reshape(shape)
    f0 = 0.0 if fill is None else fill
    if _grad_needed(input):
        t = record(op, out, input, f0=f0)
    else:
        t = plain(op, out, [input], f0=f0)
    if TRACE[0] is not None:
        if fixed:
            TRACE[0].gather(out, idx)
        elif extreme is not None:
            TRACE[0].argext(out, idx, input, *extreme)
        elif target is not None:
            TRACE[0].targets(out, idx, *target)
        elif rows is not None:
            TRACE[0].rows(out, idx, *rows)
        elif order is not None:
            TRACE[0].order(out, idx, input, *order)
    if t._req:
        t._tape.keep(t._row, K.SB, idx)
    return t


def scatter_flat(src, idx, shape, unique=False):
    """Zeros of ``shape`` with src's elements added at flat positions ``idx`` (which,
    when ``unique``, hold no repeats, so that a plain assignment does it)."""
    size = 1
    for n in shape:
        size *= n
    out = np.zeros(size, dtype=src._data.dtype)
    if unique:
        out[idx] = src._data.reshape(-1)
    else:
        np.add.at(out, idx, src._data.reshape(-1))
    out = out.reshape(shape)
    if _grad_needed(src):
        t = record(SCATTER, out, src)
        t._tape.keep(t._row, K.SB, idx.astype(np.int64, copy=False))
        return t
    return _wrap(out)


def _take_rows(input, key):
    """``input[key]`` for an int64 index tensor: rows along dim 0, found again from the
    index's values on every compiled replay."""
    idx = _flat_index(input._data.shape, key._data)
    inner = 1
    for n in input._data.shape[1:]:
        inner *= n
    return gather_flat(input, idx.reshape(-1), idx.shape,
                       rows=(key, input._data.shape[0], inner))


def index_gather(input, key):
    """Advanced indexing (integer arrays, boolean masks): a gather by flat positions."""
    idx = _flat_index(input._data.shape, key)
    return gather_flat(input, idx.reshape(-1), idx.shape, fixed=True)


def _vjp_setidx(c, g):
    idx = c.tape.held(c.r)[K.SO]
    keep = np.ones(c.shape(K.A), g._data.dtype)
    keep.reshape(-1)[idx] = 0
    return (g * _wrap(keep), gather_flat(g, idx, (len(idx),)))


SETIDX = Op("IndexPutBackward0", K.K_SETIDX, _vjp_setidx)


def setitem(t, key, value):
    """``t[key] = value``: in place; recorded when t or value needs grad."""
    _check_tensor(t, "index_put_")
    if isinstance(key, Tensor):
        key = key._data
    elif isinstance(key, tuple):
        key = tuple(k._data if isinstance(k, Tensor) else k for k in key)
    if isinstance(value, Tensor):
        v = value
        if not _basic_key(key) and v._data.dtype.kind == "f" and t._data.dtype.kind == "f" \
                and v._data.dtype != t._data.dtype:
            raise RuntimeError(f"Index put requires the source and destination dtypes match, "
                               f"got {t.dtype.name.capitalize()} for the destination and "
                               f"{v.dtype.name.capitalize()} for the source.")
    else:
        try:
            arr = np.asarray(value, t._data.dtype)
            if TRACE[0] is not None:
                TRACE[0].constant(arr)
            v = _wrap(arr)
        except (ValueError, TypeError):
            raise TypeError(f"index_put_: can't assign a {type(value).__name__} to a "
                            f"{t.dtype} tensor") from None
    if STATE.grad_enabled and t._req and t._leaf:
        raise RuntimeError("a view of a leaf Variable that requires grad is being used in "
                           "an in-place operation.")
    idx = _flat_index(t._data.shape, key)
    try:
        vb = np.broadcast_to(v._data, idx.shape)
    except ValueError:
        raise RuntimeError(f"index_put_: shape mismatch: value tensor of shape "
                           f"{list(v.shape)} cannot be broadcast to indexing result of "
                           f"shape {list(idx.shape)}") from None
    if not _grad_needed(t, v):
        if TRACE[0] is not None:
            TRACE[0].fail("indexed assignment")
        t._data[key] = vb
        bump_version(t)
        return t
    if v._data.dtype != t._data.dtype:
        v = v.to(t.dtype) if v._data.dtype.kind == "f" else _wrap(v._data.astype(
            t._data.dtype))
    flat = idx.reshape(-1)
    vflat = reshape(expand(v, *idx.shape), -1) if v._data.shape != idx.shape or \
        v.ndim != 1 else v
    out = t._data.copy()
    out.reshape(-1)[flat] = vflat._data
    src = t if not t._req else proxy_copy(t)
    res = record(SETIDX, out, src, vflat)
    res._tape.keep(res._row, K.SO, flat.astype(np.int64))
    return _rebase(t, res)


# ---------------------------------------------------------------------------
# Joining and splitting
def _vjp_cat(c, g):
    d = c.p(4)
    outs = []
    off = 0
    for shape in c.input_shapes():
        n = shape[d]
        outs.append(narrow(g, d, off, n))
        off += n
    return tuple(outs)


CAT = Op("CatBackward0", K.K_CAT, _vjp_cat)
SPLIT = Op("SplitBackward0", K.K_STRIDED, _vjp_strided)


def _tensor_list(tensors, opname, empty_error):
    """A list or tuple of tensors, as cat and stack take (PyTorch's error for an empty one
    differs between them)."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{opname}(): argument 'tensors' (position 1) must be tuple of "
                        f"Tensors, not {type(tensors).__name__}")
    if not tensors:
        raise empty_error(f"{opname}(): expected a non-empty list of Tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{opname}(): expected Tensor as element {i} in argument 0, but "
                            f"got {type(t).__name__}")
    return list(tensors)


def cat(tensors, dim=0):
    tensors = _tensor_list(tensors, "cat", ValueError)
    ref = tensors[0]
    nd = ref.ndim
    if nd == 0:
        raise RuntimeError("cat(): zero-dimensional tensor (at position 0) cannot be "
                           "concatenated")
    d = _dim(dim, nd, "cat")
    for i, t in enumerate(tensors):
        if t.ndim != nd:
            raise RuntimeError(f"cat(): Tensors must have same number of dimensions: got "
                               f"{nd} and {t.ndim}")
        for k in range(nd):
            if k != d and t.shape[k] != ref.shape[k]:
                raise RuntimeError(f"cat(): Sizes of tensors must match except in dimension "
                                   f"{d}. Expected size {ref.shape[k]} but got size "
                                   f"{t.shape[k]} for tensor number {i} in the list.")
    dtypes = {t._data.dtype for t in tensors}
    if len(dtypes) > 1:         # PyTorch's promotion: the highest kind, its widest dtype
        top = max(_CATEGORY[dt.kind] for dt in dtypes)
        dt = functools.reduce(np.promote_types, [d for d in dtypes
                                                 if _CATEGORY[d.kind] == top])
        tensors = [t if t._data.dtype == dt else t.to(dt) for t in tensors]
    out = np.concatenate([t._data for t in tensors], axis=d)
    inner = 1
    for n in out.shape[d + 1:]:
        inner *= n
    outer = 1
    for n in out.shape[:d]:
        outer *= n
    if not _grad_needed(*tensors):
        return plain(CAT, out, tensors, params=(0, len(tensors), inner, outer, d))
    tape, r, _ = record_listed(CAT, out, tensors, (inner, outer, d))
    return _owned_node(out, tape, r)


def stack(tensors, dim=0):
    tensors = _tensor_list(tensors, "stack", RuntimeError)
    shape = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.shape != shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got "
                               f"{list(shape)} at entry 0 and {list(t.shape)} at entry {i}")
    d = _dim(dim, len(shape) + 1, "stack")
    return cat([unsqueeze(t, d) for t in tensors], d)


def narrow(input, dim, start, length):
    _check_tensor(input, "narrow")
    d = _dim(dim, input.ndim, "narrow")
    n = input.shape[d]
    if start < 0:
        start += n
    if start < 0 or length < 0 or start + length > n:
        raise RuntimeError(f"narrow(): start ({start}) + length ({length}) exceeds dimension "
                         f"size ({n}).")
    key = (slice(None),) * d + (slice(start, start + length),)
    return getitem(input, key)


def split(tensor, split_size_or_sections, dim=0):
    _check_tensor(tensor, "split")
    d = _dim(dim, tensor.ndim, "split")
    n = tensor.shape[d]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = list(split_size_or_sections)
        if any(not isinstance(s, (int, np.integer)) for s in sizes):
            raise TypeError("split(): split_sizes must be ints")
        if any(s < 0 for s in sizes):
            raise RuntimeError(f"split_with_sizes expects split_sizes have only non-negative "
                               f"entries, but got split_sizes={sizes}")
        if builtins_sum(sizes) != n:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} "
                               f"(input tensor's size at dimension {d}), but got "
                               f"split_sizes={sizes}")
    else:
        if not isinstance(split_size_or_sections, (int, np.integer)) or \
                isinstance(split_size_or_sections, bool):
            raise TypeError(f"split(): argument 'split_size' must be int, not "
                            f"{type(split_size_or_sections).__name__}")
        step = int(split_size_or_sections)
        if step <= 0:
            raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got "
                               f"dimension size of {n}")
        sizes = [builtins_min(step, n - i) for i in range(0, n, step)] or [0]
    outs = []
    off = 0
    for k, size in enumerate(sizes):
        key = (slice(None),) * d + (slice(off, off + size),)
        piece = getitem(tensor, key)
        if not piece._leaf:
            T = piece._tape.T
            T[piece._row, K.NM] = SPLIT.index
            T[piece._row, K.P0 + K.NP - 1] = k
        outs.append(piece)
        off += size
    return tuple(outs)


def chunk(input, chunks, dim=0):
    _check_tensor(input, "chunk")
    if chunks <= 0:
        raise RuntimeError("chunk expects `chunks` to be greater than 0, got: "
                           f"{chunks}")
    d = _dim(dim, input.ndim, "chunk")
    n = input.shape[d]
    step = -(-n // chunks) if n else 1
    return split(input, step, d)


# ---------------------------------------------------------------------------
# Rearrangements by fixed positions (a gather, so the gradient scatters back)
def _arranged(input, positions, opname):
    """input's elements at ``positions`` (an int64 array of the result's shape)."""
    return gather_flat(input, positions.reshape(-1), positions.shape, fixed=True)


def repeat(input, *sizes):
    """Tiles input ``sizes`` times along each dim (leading new dims allowed)."""
    _check_tensor(input, "repeat")
    reps = _shape_arg(sizes, "repeat")
    if len(reps) < input.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than "
                           "number of dimensions of tensor")
    if any(r < 0 for r in reps):
        raise RuntimeError(f"Trying to create tensor with negative dimension: {list(reps)}")
    pos = np.arange(input._data.size, dtype=np.int64).reshape(input._data.shape)
    return _arranged(input, np.tile(pos, reps), "repeat")


def flip(input, dims):
    """Elements in reverse order along ``dims`` (a copy, as PyTorch's flip)."""
    _check_tensor(input, "flip")
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    axes = tuple(_dim(d, input.ndim or 1, "flip") for d in dims)
    for i, d in enumerate(axes):
        if d in axes[:i]:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    pos = np.arange(input._data.size, dtype=np.int64).reshape(input._data.shape)
    return _arranged(input, np.flip(pos, axes) if input.ndim else pos, "flip")


def roll(input, shifts, dims=None):
    """Elements shifted cyclically by ``shifts`` along ``dims`` (flattened when None)."""
    _check_tensor(input, "roll")
    pos = np.arange(input._data.size, dtype=np.int64).reshape(input._data.shape)
    if dims is None:
        out = np.roll(pos.reshape(-1), shifts).reshape(pos.shape)
    else:
        shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if len(shifts) != len(dims):
            raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, "
                               f"dims:{len(dims)}")
        out = np.roll(pos, shifts, tuple(_dim(d, input.ndim, "roll") for d in dims))
    return _arranged(input, out, "roll")
