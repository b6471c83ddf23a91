"""Ops written with other ops (no row of their own): ``einsum`` as permutes, sums and
one batched matrix product per pair of operands, ``cumsum`` as a log-depth scan of
shifted additions. Their gradients, double backward and compiled replays come from
the ops they use."""
import math

import numpy as np

from ..tensor import Tensor, _dim
from . import arith, linalg, reductions, views
from .arith import _constant
from .base import _check_tensor, _np_float

_ELLIPSIS = [chr(0x2460 + i) for i in range(20)]     # stand-ins for the dims of "..."


def _subscripts(term, ndim, i, equation):
    """Operand i's letters, its ``...`` expanded to stand-ins (right-aligned)."""
    if term.count("...") > 1 or term.replace("...", "").count("."):
        raise RuntimeError(f"einsum(): found '.' for operand {i} that is not part of any "
                           f"ellipsis in '{equation}'")
    for ch in term.replace("...", ""):
        if not ch.isascii() or not ch.isalpha():
            raise RuntimeError(f"einsum(): invalid subscript given at index "
                               f"{equation.index(ch)} in the equation string, subscripts "
                               "must be in [a-zA-Z]")
    head, dots, tail = term.partition("...")
    named = len(head) + len(tail)
    if (ndim != named and not dots) or named > ndim:
        raise RuntimeError(f"einsum(): the number of subscripts in the equation ({named}) "
                           f"{'is more than' if dots else 'does not match'} the number of "
                           f"dimensions ({ndim}) for operand {i}"
                           f"{'' if dots else ' and no ellipsis was given'}")
    return list(head) + _ELLIPSIS[len(_ELLIPSIS) - (ndim - named):] * bool(dots) + list(tail)


def _diagonal(x, letters):
    """x with each repeated letter's dims reduced to their diagonal (``ii->i``)."""
    unique = list(dict.fromkeys(letters))
    if len(unique) == len(letters):
        return x, letters
    size = {}
    for ch, n in zip(letters, x.shape):
        if size.setdefault(ch, n) != n:
            raise RuntimeError(f"einsum(): subscript {ch} is repeated for operand 0 but the "
                               f"sizes don't match, {size[ch]} != {n}")
    grid = np.indices([size[ch] for ch in unique]).reshape(len(unique), -1)
    at = {ch: k for k, ch in enumerate(unique)}
    pos = np.ravel_multi_index([grid[at[ch]] for ch in letters], x.shape)
    return views.gather_flat(x, pos.reshape(-1), [size[ch] for ch in unique],
                             fixed=True), unique


def _sum_out(x, letters, keep):
    drop = [k for k, ch in enumerate(letters) if ch not in keep]
    if drop:
        x = reductions.sum(x, drop)
        letters = [ch for ch in letters if ch in keep]
    return x, letters


def _pair(a, la, b, lb, keep, sizes):
    """The contraction of a (letters la) with b over their shared letters not in keep."""
    a, la = _sum_out(a, la, keep | set(lb))
    b, lb = _sum_out(b, lb, keep | set(la))
    batch = [ch for ch in la if ch in lb and ch in keep]
    inner = [ch for ch in la if ch in lb and ch not in keep]
    left = [ch for ch in la if ch not in lb]
    right = [ch for ch in lb if ch not in la]

    def arrange(x, lx, order, groups):
        x = views.permute(x, [lx.index(ch) for ch in order])
        full = [sizes[ch] for ch in order]
        if list(x.shape) != full:
            x = views.expand(x, full)
        flat = []
        for g in groups:
            n = 1
            for ch in g:
                n *= sizes[ch]
            flat.append(n)
        return views.reshape(x, flat)

    m = linalg.matmul(arrange(a, la, batch + left + inner, (batch, left, inner)),
                      arrange(b, lb, batch + inner + right, (batch, inner, right)))
    out = batch + left + right
    return views.reshape(m, [sizes[ch] for ch in out]), out


def einsum(equation, *operands):
    """Sums of products over the letters of ``equation`` (``"bij,bjk->bik"``), as
    torch.einsum: ``...`` broadcasts, a letter missing from the output is summed, and a
    letter repeated in one operand takes its diagonal."""
    if not isinstance(equation, str):
        raise TypeError(f"einsum(): argument 'equation' must be str, not "
                        f"{type(equation).__name__}")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    for x in operands:
        _check_tensor(x, "einsum")
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise RuntimeError(f"einsum(): {'more' if len(operands) > len(terms) else 'fewer'} "
                           "operands were provided than specified in the equation")
    letters = [_subscripts(t, x.ndim, i, eq) for i, (t, x) in enumerate(zip(terms, operands))]
    sizes = {}
    for i, (lx, x) in enumerate(zip(letters, operands)):
        for ch, n in zip(lx, x.shape):
            have = sizes.get(ch, 1)
            if n != 1 and have != 1 and n != have:
                raise RuntimeError(
                    "einsum(): operands do not broadcast with remapped shapes "
                    f"(original->remapped): subscript '{ch}' has size {have} in an earlier "
                    f"operand and size {n} in operand {i} of shape {list(x.shape)}")
            sizes[ch] = max(have, n)
    dots = [ch for ch in _ELLIPSIS if ch in sizes]
    if arrow:
        out = _subscripts(rhs, len(set(rhs.replace("...", ""))) + len(dots) * ("..." in rhs),
                          "output", eq)
        for ch in out:
            if ch not in sizes:
                raise RuntimeError(f"einsum(): output subscript {ch} does not appear in the "
                                   "equation for any input operand")
        if len(set(out)) != len(out):
            raise RuntimeError("einsum(): output subscript appears more than once in the "
                               "output")
    else:
        once = [ch for ch in sizes if ch not in _ELLIPSIS and
                sum(lx.count(ch) for lx in letters) == 1]
        out = dots + sorted(once)
    ops = []
    for x, lx in zip(operands, letters):
        x, lx = _diagonal(x, lx)
        ops.append((x, lx))
    cur, lc = ops[0]
    for j in range(1, len(ops)):
        keep = set(out).union(*(lx for _, lx in ops[j + 1:]))
        cur, lc = _pair(cur, lc, ops[j][0], ops[j][1], keep, sizes)
    cur, lc = _sum_out(cur, lc, set(out))
    cur = views.permute(cur, [lc.index(ch) for ch in out]) if lc != out else cur
    want = [sizes[ch] for ch in out]
    return views.expand(cur, want) if list(cur.shape) != want else cur


def cumsum(input, dim, *, dtype=None):
    """Running sums along ``dim``: log2(n) additions of the sums shifted by 1, 2, 4, ...
    (Hillis-Steele), so that gradients and replays use existing ops."""
    _check_tensor(input, "cumsum")
    d = _dim(dim, max(input.ndim, 1), "cumsum")
    x = input if dtype is None else input.to(dtype)
    if x._data.dtype.kind in "biu":
        x = x.to(np.int64)
    if x.ndim == 0:
        return views.clone(x)
    n = x.shape[d]
    k = 1
    while k < n:
        shape = list(x.shape)
        shape[d] = k
        zeros = _constant(np.zeros(shape, x._data.dtype))
        x = x + views.cat([zeros, views.narrow(x, d, 0, n - k)], d)
        k *= 2
    return x if x is not input else views.clone(x)


# -- PyTorch's conveniences, written with the ops above (so they trace and replay) -------
def rsqrt(input):
    """1 / sqrt(x), differentiable (as x ** -0.5)."""
    return arith.pow(input, -0.5)


def contiguous(input, memory_format=None):
    """input itself when its elements are in C order, else a copy that is."""
    return input if input._data.flags.c_contiguous else views.clone(input)


def isnan(input):
    return input != input


def isinf(input):
    _check_tensor(input, "isinf")
    if input._data.dtype.kind != "f":
        return input != input
    return arith.abs(input.detach()) == np.inf


def isfinite(input):
    _check_tensor(input, "isfinite")
    if input._data.dtype.kind != "f":
        return input == input
    return (input == input) & (arith.abs(input.detach()) != np.inf)


def _truth(t):
    """t != 0 as a bool tensor (t itself when it is one)."""
    return t if t._data.dtype == np.bool_ else t != 0


def any(input, dim=None, keepdim=False):
    """Whether any element (along ``dim``) is nonzero, as a bool tensor."""
    _check_tensor(input, "any")
    nonzero = _truth(input)
    if dim is None:
        return reductions.sum(nonzero) > 0
    return reductions.sum(nonzero, dim, keepdim=keepdim) > 0


def all(input, dim=None, keepdim=False):
    """Whether every element (along ``dim``) is nonzero, as a bool tensor."""
    _check_tensor(input, "all")
    nonzero = _truth(input)
    if dim is None:
        return reductions.sum(nonzero) == input.numel()
    d = _dim(dim, max(input.ndim, 1), "all")
    return reductions.sum(nonzero, d, keepdim=keepdim) == (input.shape[d] if input.ndim else 1)


def logical_and(input, other):
    return _truth(input) & _truth(other)


def logical_or(input, other):
    return _truth(input) | _truth(other)


def logical_xor(input, other):
    return _truth(input) ^ _truth(other)


def logical_not(input):
    return ~_truth(input)


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|input - other| <= atol + rtol * |other| elementwise (equal infinities close)."""
    _check_tensor(input, "isclose")
    _check_tensor(other, "isclose")
    a, b = input.detach(), other.detach()
    with np.errstate(invalid="ignore"):        # inf - inf: nan, not close (a == b is)
        close = (a == b) | (arith.abs(a - b) <= arith.abs(b) * rtol + atol)
    return close | (isnan(a) & isnan(b)) if equal_nan else close


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    return bool(all(isclose(input, other, rtol, atol, equal_nan)))


def equal(input, other):
    """Same shape and the same values."""
    return tuple(input.shape) == tuple(other.shape) and bool(all(input == other))


def unbind(input, dim=0):
    """The slices along ``dim``, as a tuple of views."""
    _check_tensor(input, "unbind")
    d = _dim(dim, input.ndim, "unbind")
    return tuple(input[(slice(None),) * d + (i,)] for i in range(input.shape[d]))


def index_select(input, dim, index):
    """The entries at ``index`` (an int64 vector) along ``dim``."""
    _check_tensor(input, "index_select")
    if not isinstance(index, Tensor) or index._data.dtype != np.int64 or index.ndim > 1:
        raise IndexError("index_select(): Expected a 1-D int64 tensor as index")
    d = _dim(dim, max(input.ndim, 1), "index_select")
    if d == 0:
        return input[index.reshape(-1)]
    return views.transpose(views.transpose(input, 0, d)[index.reshape(-1)], 0, d)


def log2(input):
    return arith.log(input) * (1.0 / math.log(2.0))


def log10(input):
    return arith.log(input) * (1.0 / math.log(10.0))


def lerp(input, end, weight):
    """input + weight * (end - input)."""
    _check_tensor(input, "lerp")
    return arith.add(input, arith.mul(weight, arith.sub(end, input)))


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    """beta * input + alpha * (mat1 @ mat2)."""
    _check_tensor(input, "addmm")
    prod = linalg.mm(mat1, mat2)
    prod = prod if alpha == 1 else arith.mul(prod, alpha)
    return arith.add(input if beta == 1 else arith.mul(input, beta), prod) if beta else prod


def mv(input, vec):
    _check_tensor(input, "mv")
    if input.ndim != 2 or getattr(vec, "ndim", None) != 1:
        raise RuntimeError(f"vector + matrix @ vector expected, got {input.ndim}, "
                           f"{getattr(vec, 'ndim', 0)}")
    return linalg.matmul(input, vec)


def swapaxes(input, axis0, axis1):
    return views.transpose(input, axis0, axis1)


def movedim(input, source, destination):
    """Dims ``source`` moved to ``destination``, the others in their order."""
    _check_tensor(input, "movedim")
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: Invalid source or destination dims: source ({src} "
                           f"dims) should contain the same number of dims as destination "
                           f"({dst} dims)")
    nd = max(input.ndim, 1)
    src = [_dim(d, nd, "movedim") for d in src]
    dst = [_dim(d, nd, "movedim") for d in dst]
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise RuntimeError("movedim: repeated dim in `source` or `destination`")
    order = [None] * input.ndim
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(d for d in range(input.ndim) if d not in src)
    return views.permute(input, *[o if o is not None else next(rest) for o in order])


def count_nonzero(input, dim=None):
    _check_tensor(input, "count_nonzero")
    return reductions.sum((input != 0).long(), dim)


def tile(input, dims):
    """repeat() after prepending ones to ``dims`` (or to the input's shape)."""
    _check_tensor(input, "tile")
    dims = tuple(dims)
    if len(dims) < input.ndim:
        dims = (1,) * (input.ndim - len(dims)) + dims
    return views.repeat(input, *dims)


def broadcast_tensors(*tensors):
    """The tensors expanded to their common shape."""
    shape = np.broadcast_shapes(*(tuple(t.shape) for t in tensors))
    return tuple(views.broadcast_to(t, shape) for t in tensors)


def hstack(tensors):
    """cat along dim 1, or dim 0 for 1-D tensors."""
    tensors = list(tensors)
    return views.cat(tensors, 0 if tensors and tensors[0].ndim == 1 else 1)


def vstack(tensors):
    """cat along dim 0 of the tensors viewed as at least 2-D."""
    return views.cat([t.reshape(1, -1) if t.ndim < 2 else t for t in tensors], 0)


# -- elementwise functions of two tensors, and angles --------------------------------------
def _float_operands(a, b, opname):
    """a and b as tensors (either may be a number) in their promoted floating dtype."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{opname}(): argument 'input' must be Tensor, not "
                        f"{type(a).__name__}")
    like = a if isinstance(a, Tensor) else b
    a, b = (x if isinstance(x, Tensor) else _constant(np.asarray(x, like._data.dtype
            if like._data.dtype.kind == "f" else _np_float())) for x in (a, b))
    if a._data.dtype.kind != "f" and b._data.dtype.kind != "f":
        a = a.to(_np_float())               # PyTorch's default float dtype
    return a, b


def atan2(input, other):
    """The angle of (other, input) in (-pi, pi], gradients other / r^2 and -input / r^2,
    as PyTorch's. atan of the smaller over the larger coordinate, each with a safe
    denominator, so that the branch not taken has finite gradients (then zero)."""
    _check_tensor(input, "atan2")
    y, x = _float_operands(input, other, "atan2")
    ay, ax = arith.abs(y.detach()), arith.abs(x.detach())
    flat = ax >= ay                                  # |angle| <= pi/4 away from the x axis
    xs = arith.where(flat & (x != 0), x, 1.0)
    ys = arith.where(flat, 1.0, y)
    with np.errstate(divide="ignore"):             # 1 / -0 = -inf tells -0 from 0
        x_neg, y_neg = [(v < 0) | ((v == 0) & (1.0 / v < 0)) for v in (x.detach(), y.detach())]
    half = arith.where(y_neg, -1.0, 1.0).to(y.dtype) * math.pi      # pi in y's dtype
    near = arith.atan(y / xs)
    near = arith.where(x_neg, near + half, near)       # (adding 0 would lose -0's sign)
    steep = half * 0.5 - arith.atan(x / ys)
    return arith.where(flat, near, steep)


def hypot(input, other):
    """sqrt(input^2 + other^2) without overflow: scaled by the larger magnitude."""
    _check_tensor(input, "hypot")
    a, b = _float_operands(input, other, "hypot")
    m = arith.maximum(arith.abs(a.detach()), arith.abs(b.detach()))
    m = arith.where((m == 0) | isinf(m), 1.0, m)
    out = m * arith.sqrt(arith.square(a / m) + arith.square(b / m))
    return arith.where(isinf(a) | isinf(b), math.inf, out)


def logaddexp(input, other):
    """log(exp(input) + exp(other)): max + log1p(exp(-|difference|)); equal inputs
    (infinities too) give x + log 2."""
    _check_tensor(input, "logaddexp")
    a, b = _float_operands(input, other, "logaddexp")
    with np.errstate(invalid="ignore"):             # inf - inf, not taken
        d = arith.where(a == b, 0.0, a - b)
    return arith.maximum(a, b) + arith.log1p(arith.exp(-arith.abs(d)))


def clamp_min(input, min):
    return arith.clamp(input, min=min)


def clamp_max(input, max):
    return arith.clamp(input, max=max)


def deg2rad(input):
    _check_tensor(input, "deg2rad")
    return arith.mul(input, math.pi / 180.0)


def rad2deg(input):
    _check_tensor(input, "rad2deg")
    return arith.mul(input, 180.0 / math.pi)


def exp2(input):
    _check_tensor(input, "exp2")
    return arith.rpow(input, 2.0)


# -- diagonals, grids, distances, differences --------------------------------------------
def diagonal(input, offset=0, dim1=0, dim2=1):
    """The diagonal ``offset`` of the planes of dims dim1 and dim2, as the last dim."""
    _check_tensor(input, "diagonal")
    nd = input.ndim
    if nd < 2:
        raise RuntimeError(f"diagonal dimensions requires ndim larger than 1, but got {nd}")
    d1, d2 = _dim(dim1, nd, "diagonal"), _dim(dim2, nd, "diagonal")
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    x = movedim(input, (d1, d2), (-2, -1))
    rows, cols = x.shape[-2], x.shape[-1]
    if offset >= 0:
        n = max(0, min(rows, cols - offset))
        x = views.narrow(views.narrow(x, -2, 0, n), -1, min(offset, cols), n)
    else:
        n = max(0, min(rows + offset, cols))
        x = views.narrow(views.narrow(x, -2, min(-offset, rows), n), -1, 0, n)
    return einsum("...ii->...i", x) if n else reductions.sum(x, -2)


def diag(input, diagonal=0):
    """A 1-D input as the diagonal ``diagonal`` of a square matrix, or the diagonal of a
    2-D input."""
    _check_tensor(input, "diag")
    if input.ndim == 2:
        return globals()["diagonal"](input, diagonal)
    if input.ndim != 1:
        raise RuntimeError("diag(): Supports 1D or 2D tensors. Got " f"{input.ndim}D")
    n, k = input.shape[0], abs(diagonal)
    square = input.unsqueeze(1) * _constant(np.eye(n, dtype=input._data.dtype))
    if k == 0:
        return square
    dt = input._data.dtype
    side = _constant(np.zeros((n, k), dt))
    band = views.cat([side, square] if diagonal > 0 else [square, side], 1)
    end = _constant(np.zeros((k, n + k), dt))
    return views.cat([band, end] if diagonal > 0 else [end, band], 0)


def trace(input):
    _check_tensor(input, "trace")
    if input.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {input.ndim}")
    return reductions.sum(diagonal(input))


def meshgrid(*tensors, indexing="ij"):
    """Coordinate grids: tensor i expanded along every dim but its own (``ij``), or with
    the first two dims swapped (``xy``)."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f"torch.meshgrid: indexing must be one of \"xy\" or \"ij\", but "
                           f"received: {indexing}")
    for t in tensors:
        _check_tensor(t, "meshgrid")
        if t.ndim > 1:
            raise RuntimeError(f"torch.meshgrid: Expected 0D or 1D tensor in the tensor "
                               f"list but got: {t}")
    sizes = [t.numel() for t in tensors]
    order = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) >= 2:
        order[0], order[1] = 1, 0
    shape = [sizes[i] for i in order]
    grids = []
    for i, t in enumerate(tensors):
        view = [1] * len(tensors)
        view[order.index(i)] = -1
        grids.append(views.expand(t.reshape(*view), *shape))
    return tuple(grids)


def cdist(x1, x2, p=2.0, compute_mode=None):
    """p-norm distances between the rows of x1 (..., P, M) and x2 (..., R, M), computed
    from the differences (no matrix-product shortcut: exact near zero distance)."""
    _check_tensor(x1, "cdist")
    _check_tensor(x2, "cdist")
    if x1.ndim < 2 or x2.ndim < 2:
        raise RuntimeError(f"cdist only supports at least 2D tensors, X1 got: {x1.ndim}D")
    if x1.shape[-1] != x2.shape[-1]:
        raise RuntimeError(f"X1 and X2 must have the same number of columns. X1: "
                           f"{x1.shape[-1]} X2: {x2.shape[-1]}")
    if p < 0:
        raise RuntimeError("cdist only supports non-negative p values")
    d = arith.abs(x1.unsqueeze(-2) - x2.unsqueeze(-3))
    if p == 2:
        return reductions._sqrt_masked(reductions.sum(d * d, -1))
    if p == 1:
        return reductions.sum(d, -1)
    if p == math.inf:
        return reductions.amax(d, -1)
    if p == 0:
        return reductions.sum((d != 0).to(d.dtype), -1)
    s = reductions.sum(arith.where(d == 0, 0.0, arith.pow(arith.where(d == 0, 1.0, d), p)), -1)
    return arith.where(s == 0, 0.0, arith.pow(arith.where(s == 0, 1.0, s), 1.0 / p))


def diff(input, n=1, dim=-1, prepend=None, append=None):
    """n-th forward differences along dim, after concatenating prepend and append."""
    _check_tensor(input, "diff")
    if input.ndim == 0:
        raise RuntimeError("diff expects input to be at least one-dimensional")
    d = _dim(dim, input.ndim, "diff")
    parts = [t if isinstance(t, Tensor) else _constant(np.asarray(t, input._data.dtype))
             for t in (prepend, input, append) if t is not None]
    x = views.cat(parts, d) if len(parts) > 1 else input
    for _ in range(n):
        m = x.shape[d]
        if m == 0:
            break
        x = views.narrow(x, d, 1, m - 1) - views.narrow(x, d, 0, m - 1)
    return x


def cross(input, other, dim=None):
    """The cross product of 3-vectors along dim (the first dim of size 3 when None)."""
    _check_tensor(input, "cross")
    _check_tensor(other, "cross")
    if dim is None:
        dim = next((i for i, s in enumerate(input.shape) if s == 3), None)
        if dim is None:
            raise RuntimeError("no dimension of size 3 in input")
    d, e = _dim(dim, input.ndim, "cross"), _dim(dim, other.ndim, "cross")
    if input.shape[d] != 3 or other.shape[e] != 3:
        raise RuntimeError(f"linalg.cross: inputs dimension {dim} must have length 3. Got "
                           f"{input.shape[d]} and {other.shape[e]}")
    a = [views.narrow(input, d, i, 1) for i in range(3)]
    b = [views.narrow(other, e, i, 1) for i in range(3)]
    return views.cat([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                      a[0] * b[1] - a[1] * b[0]], d)
