"""Matrix products and linear.
"""

import numpy as np

from .. import _kernels as K
from ..tensor import Tensor, _owned_node
from .base import (Op, SAVE_A, SAVE_B, _FLOATS, _check_arg, _check_tensor, _flat,
                   _grad_needed, _promote, plain, proxy, record, record_listed)
from . import reductions, views


# ---------------------------------------------------------------------------
# Matrix products
def _vjp_matmul(c, g):
    wa, wb = c.wants(K.A), c.wants(K.B)
    a = c.a if wb else None
    b = c.b if wa else None
    mode = c.p(0)
    if mode == 0:
        return (matmul(g, b.T) if wa else None), (matmul(a.T, g) if wb else None)
    if mode == 1:
        return (matmul(b, g) if wa else None), (outer(a, g) if wb else None)
    if mode == 2:
        return (outer(g, b) if wa else None), (matmul(g, a) if wb else None)
    if mode == 3:
        return (g * b if wa else None), (g * a if wb else None)
    return (matmul(g, views.transpose(b, -1, -2)) if wa else None,
            matmul(views.transpose(a, -1, -2), g) if wb else None)


MM = Op("MmBackward0", K.K_MATMUL, _vjp_matmul)
MV = Op("MvBackward0", K.K_MATMUL, _vjp_matmul)
VM = Op("MmBackward0", K.K_MATMUL, _vjp_matmul)
DOT = Op("DotBackward0", K.K_MATMUL, _vjp_matmul)
BMM = Op("BmmBackward0", K.K_MATMUL, _vjp_matmul)
_MATMUL_MODE = {(2, 2): (0, MM), (1, 2): (1, VM), (2, 1): (2, MV), (1, 1): (3, DOT)}


def _mismatch(sa, sb):
    if len(sa) == 2 and len(sb) == 2:
        return RuntimeError(f"mat1 and mat2 shapes cannot be multiplied "
                            f"({sa[0]}x{sa[1]} and {sb[0]}x{sb[1]})")
    return RuntimeError(f"matmul: size mismatch, got input {list(sa)} and other "
                        f"{list(sb)}: inner dimensions {sa[-1]} and "
                        f"{sb[-2] if len(sb) > 1 else sb[0]} differ")


def matmul(input, other):
    _check_tensor(input, "matmul")
    _check_arg(other, "matmul", "other")
    input, other = _promote(input, other, "matmul", strict=True)
    na, nb = input.ndim, other.ndim
    if na == 0 or nb == 0:
        raise RuntimeError(f"matmul: both arguments to matmul need to be at least 1D, but "
                           f"they are {na}D and {nb}D")
    sa, sb = input._data.shape, other._data.shape
    if sa[-1] != (sb[-2] if nb > 1 else sb[0]):
        raise _mismatch(sa, sb)
    if na > 2 or nb > 2:
        return _batched(input, other)
    mode, op = _MATMUL_MODE[(na, nb)]
    da, db = input._data, other._data
    if da.dtype in _FLOATS:
        m, kk, n = K.matmul_dims(mode, sa[0], sa[1] if na > 1 else 0, sb[0],
                                 sb[1] if nb > 1 else 0)
        out = np.empty(sa[:-1] + sb[1:], da.dtype)
        K.ensure_blas()
        K.matmul_fwd(_flat(da), _flat(db), out.reshape(-1), 1, m, kk, n)
    else:
        out = np.asarray(np.matmul(da, db))
    if _grad_needed(input, other):
        save = (SAVE_B if input._req else 0) | (SAVE_A if other._req else 0)
        return record(op, out, input, other, save, params=(mode,))
    return plain(op, out, [input, other], params=(mode,))


def _batched(a, b, op=BMM):
    """Batched product: vectors become matrices, batch dims broadcast by expand."""
    va, vb = a.ndim == 1, b.ndim == 1
    if va:
        a = views.unsqueeze(a, 0)
    if vb:
        b = views.unsqueeze(b, -1)
    sa, sb = a._data.shape, b._data.shape
    try:
        batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise RuntimeError(f"matmul: batch dimensions {list(sa[:-2])} and {list(sb[:-2])} "
                           "cannot be broadcast") from None
    if sa[:-2] != batch:
        a = views.expand(a, *(batch + sa[-2:]))
    if sb[:-2] != batch:
        b = views.expand(b, *(batch + sb[-2:]))
    if a._data.dtype in _FLOATS:
        m, kk, n = sa[-2], sa[-1], sb[-1]
        out = np.empty(batch + (m, n), a._data.dtype)
        K.ensure_blas()
        K.matmul_fwd(_flat(a._data), _flat(b._data), out.reshape(-1),
                     out.size // (m * n) if m * n else 0, m, kk, n)
    else:
        out = np.matmul(a._data, b._data)
    if _grad_needed(a, b):
        save = (SAVE_B if a._req else 0) | (SAVE_A if b._req else 0)
        res = record(op, out, a, b, save, params=(4,))
    else:
        res = plain(op, out, [a, b], params=(4,))
    if va:
        res = views.squeeze(res, -2)
    if vb:
        res = views.squeeze(res, -1)
    return res


def _vjp_linear(c, g):
    rows = c.input_rows()
    x, w = proxy(c.tape, rows[0], c.tape.held(c.r).get(K.SA)), \
        proxy(c.tape, rows[1], c.tape.held(c.r).get(K.SB))
    shapes = c.input_shapes()
    g2 = views.reshape(g, (-1, shapes[1][0]))
    gx = views.reshape(matmul(g2, w), shapes[0]) if _wants_row(c.tape, rows[0]) else None
    gw = matmul(g2.T, views.reshape(x, (-1, shapes[1][1]))) if _wants_row(c.tape, rows[1]) \
        else None
    if len(rows) < 3:
        return gx, gw
    return gx, gw, reductions.sum_to(reductions.sum(g2, 0), shapes[2]) if _wants_row(c.tape, rows[2]) else None


def _wants_row(tape, row):
    return bool(tape.T[row, K.FL] & K.REQ)


LINEAR = Op("AddmmBackward0", K.K_LINEAR, _vjp_linear)


def linear(input, weight, bias=None):
    """input @ weight.T + bias as one op (one row, no copy of the transposed weight)."""
    _check_tensor(input, "linear")
    _check_tensor(weight, "linear")
    if weight.ndim != 2:
        raise RuntimeError(f"linear: weight must be a matrix, got {weight.ndim}-D weight")
    if input.ndim == 0:
        raise RuntimeError("linear: both arguments to linear need to be at least 1D, but they "
                           f"are 0D and {weight.ndim}D")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"linear(): argument 'bias' must be Tensor, not {type(bias).__name__}")
    input, weight = _promote(input, weight, "linear", strict=True)
    if input.shape[-1] != weight.shape[1]:
        raise _mismatch(tuple(input.shape[:-1]) + (input.shape[-1],), tuple(weight.shape[::-1]))
    if bias is not None:
        input, bias = _promote(input, bias, "linear", strict=True)
        try:
            if np.broadcast_shapes(bias._data.shape, (weight.shape[0],)) != (weight.shape[0],):
                raise ValueError
        except ValueError:
            raise RuntimeError(f"linear: bias of shape {list(bias.shape)} does not match "
                               f"out_features={weight.shape[0]}") from None
    ins = [input, weight] + ([bias] if bias is not None else [])
    d, w = input._data, weight._data
    if d.dtype in _FLOATS:
        out = np.empty(d.shape[:-1] + w.shape[:1], d.dtype)
        n = w.shape[0]
        K.ensure_blas()
        K.linear_fwd(_flat(d), _flat(w), _flat(bias._data if bias is not None else w),
                     out.reshape(-1), out.size // n if n else 0, w.shape[1], n,
                     bias is not None)
    else:
        out = np.matmul(d, w.T)
        if bias is not None:
            out += bias._data
    if not _grad_needed(input, weight, bias):
        return plain(LINEAR, out, ins)
    tape, r, rows = record_listed(LINEAR, out, ins,
                                  flags=K.SAVES if weight._req or input._req else 0)
    if weight._req:
        tape.save(r, K.SA, input, input._data, -1 if input._leaf else rows[0])
    if input._req:
        tape.save(r, K.SB, weight, weight._data, -1 if weight._leaf else rows[1])
    return _owned_node(out, tape, r)


def bmm(input, mat2):
    _check_tensor(input, "bmm")
    _check_arg(mat2, "bmm", "mat2")
    if input.ndim != 3 or mat2.ndim != 3:
        raise RuntimeError(f"bmm: batch1 must be a 3D tensor, got {input.ndim}D and "
                           f"{mat2.ndim}D")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {input.shape[0]} and {mat2.shape[0]}")
    return matmul(input, mat2)


def dot(input, other):
    _check_tensor(input, "dot")
    _check_arg(other, "dot", "tensor")
    if input.ndim != 1 or other.ndim != 1:
        raise RuntimeError("dot: 1D tensors expected")
    if input.shape[0] != other.shape[0]:
        raise RuntimeError(f"dot: inconsistent tensor size, expected tensor [{input.shape[0]}]"
                           f" and src [{other.shape[0]}] to have the same number of elements,"
                           " but got "
                           f"{input.shape[0]} and {other.shape[0]} elements respectively")
    return matmul(input, other)


def mm(input, mat2):
    _check_tensor(input, "mm")
    _check_arg(mat2, "mm", "mat2")
    if input.ndim != 2:
        raise RuntimeError("mm: self must be a matrix")
    if mat2.ndim != 2:
        raise RuntimeError("mm: mat2 must be a matrix")
    return matmul(input, mat2)


def outer(input, vec2):
    _check_tensor(input, "outer")
    _check_arg(vec2, "outer", "vec2")
    if input.ndim != 1 or vec2.ndim != 1:
        raise RuntimeError("outer: expected 1-D tensors")
    return matmul(views.reshape(input, (-1, 1)), views.reshape(vec2, (1, -1)))
