"""The op table and the ops.

Each op is one ``Op`` entry: its PyTorch backward name, the kernel opcode whose
vector-Jacobian product the replay interpreter runs (``_kernels.py``), and the same
VJP written with tensor ops, which ``create_graph=True`` records so that gradients can
be differentiated again. Below each entry is the public function: it validates its
arguments, computes the forward with NumPy and, when grad is needed, records one row
saying which values its backward reads.
"""
import warnings

import numpy as np

from . import _kernels as K
from .dtypes import as_np_dtype, get_default_dtype
from .tape import EPOCH, STATE, current
from .tensor import Tensor, _dim, _node, _wrap, bind_methods

ENTRIES = []

# NumPy warns on overflow and domain errors; PyTorch yields inf/nan silently. A filter
# scoped to this module costs nothing until a warning is raised (np.errstate: ~1 us/op).
warnings.filterwarnings("ignore", category=RuntimeWarning, module=__name__)


class Op:
    """One row kind of the tape."""
    __slots__ = ("index", "name", "kernel", "vjp")

    def __init__(self, name, kernel, vjp):
        self.index = len(ENTRIES)
        self.name = name
        self.kernel = kernel
        self.vjp = vjp
        ENTRIES.append(self)

    def __repr__(self):
        return f"Op({self.name})"


class Ctx:
    """What a tensor-level VJP sees of its row: inputs, output, parameters."""
    __slots__ = ("tape", "r")

    def __init__(self, tape, r):
        self.tape, self.r = tape, r

    def _input(self, col, saved_col):
        tape, r = self.tape, self.r
        row = int(tape.T[r, col])
        held = tape.saved[r] or {}
        data = held.get(saved_col)
        return proxy(tape, row, data)

    @property
    def a(self):
        return self._input(K.A, K.SA)

    @property
    def b(self):
        return self._input(K.B, K.SB)

    @property
    def out(self):
        return _node(self.tape.saved[self.r][K.SO], self.tape, self.r)

    def shape(self, col=K.A):
        T = self.tape.T
        row = T[self.r, col] if col != K.OP else self.r
        return tuple(int(s) for s in T[row, K.S0:K.S0 + T[row, K.ND]])

    @property
    def f0(self):
        return float(self.tape.F[self.r, 0])

    @property
    def f1(self):
        return float(self.tape.F[self.r, 1])

    def p(self, i):
        return int(self.tape.T[self.r, K.P0 + i])


def proxy(tape, row, data):
    """A tensor standing for row ``row`` of ``tape`` (its value: ``data``)."""
    kernel = tape.T[row, K.OP]
    if kernel == K.K_LEAF:
        leaf = tape.leaves.get(row)
        return leaf if leaf is not None else _wrap(data)
    if kernel == K.K_EXT:
        return tape.ext[row]
    return _node(data, tape, row)


def _row_of(tape, t):
    """Row of tensor t on ``tape``; a LEAF or EXT row is added on first use."""
    if t._tape is tape:
        return t._row
    if not t._leaf:
        r = tape.row(K.K_EXT, EXT.index, t._data, True)
        tape.ext[r] = t
        return r
    r = tape.row(K.K_LEAF, LEAF.index, t._data, t._req, flags=K.LEAFF)
    if t._req:
        tape.leaves[r] = t
    t._tape = tape
    t._row = r
    return r


def record(op, out, a, b=None, save=0, f0=0.0, f1=0.0, params=None):
    """Appends op's row for result ``out`` of inputs a (and b); returns the result.

    ``save`` is a bitmask of values the backward reads: 1 = a, 2 = b, 4 = the result.
    """
    tape = STATE.tape
    if tape is None:
        tape = current()
    ra = a._row if a._tape is tape else _row_of(tape, a)
    rb = -1 if b is None else b._row if b._tape is tape else _row_of(tape, b)
    r = tape.row(op.kernel, op.index, out, True, ra, rb)
    if f0 or f1:
        MF = tape.MF
        MF[2 * r] = f0
        MF[2 * r + 1] = f1
    if params:
        tape.T[r, K.P0:K.P0 + len(params)] = params
    t = _new(Tensor)
    t._data = out
    t._req = True
    t._leaf = False
    t._tape = tape
    t._row = r
    t._base = t._ver = t._grad = t._hooks = None
    t._retains = False
    if save:
        if save & 1:
            tape.save(r, K.SA, a, a._data)
        if save & 2:
            tape.save(r, K.SB, b, b._data)
        if save & 4:
            tape.save(r, K.SO, t, out)
    return t


_new = object.__new__


def _grad_needed(*ts):
    if not STATE.grad_enabled:
        return False
    for t in ts:
        if t is not None and t._req:
            return True
    return False


# ---------------------------------------------------------------------------
# Tape bookkeeping entries
LEAF = Op("AccumulateGrad", K.K_LEAF, None)
EXT = Op("ExternalGrad", K.K_EXT, None)


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
    return reshape(g, shape)


# ---------------------------------------------------------------------------
# Operand handling
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _np_float():
    return as_np_dtype(get_default_dtype())


def _kind(arr):
    return "f" if arr.dtype.kind == "f" else "i"


def _as_operand(x, opname):
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor(x)
    if isinstance(x, (bool, int, float, np.number, np.bool_)):
        return x
    raise TypeError(f"{opname}(): argument 'other' must be Tensor or Number, not "
                    f"{type(x).__name__}")


def _promote(a, b, opname):
    """Brings two tensors to one dtype as PyTorch would; float32 with float64 is an error."""
    da, db = a._data.dtype, b._data.dtype
    if da is db or da == db:
        return a, b
    fa, fb = da.kind == "f", db.kind == "f"
    if fa and fb:
        raise RuntimeError(f"{opname}: expected both inputs to have the same dtype, "
                           f"but got {a.dtype} and {b.dtype}")
    if fa:
        return a, _wrap(b._data.astype(da))
    if fb:
        return _wrap(a._data.astype(db)), b
    return _wrap(a._data.astype(np.int64)), _wrap(b._data.astype(np.int64))


def _bcast_error(opname, a, b):
    sa, sb = a.shape, b.shape
    nd = max(len(sa), len(sb))
    pa = (1,) * (nd - len(sa)) + tuple(sa)
    pb = (1,) * (nd - len(sb)) + tuple(sb)
    for i in range(nd - 1, -1, -1):
        if pa[i] != pb[i] and pa[i] != 1 and pb[i] != 1:
            return RuntimeError(
                f"{opname}: The size of tensor a ({pa[i]}) must match the size of tensor b "
                f"({pb[i]}) at non-singleton dimension {i}")
    return RuntimeError(f"{opname}: shapes {list(sa)} and {list(sb)} cannot be broadcast")


# ---------------------------------------------------------------------------
# Binary arithmetic, tensor with tensor
def _vjp_add(c, g):
    return sum_to(g, c.shape(K.A)), sum_to(g, c.shape(K.B))


def _vjp_sub(c, g):
    return sum_to(g, c.shape(K.A)), sum_to(-g, c.shape(K.B))


def _vjp_mul(c, g):
    return sum_to(g * c.b, c.shape(K.A)), sum_to(g * c.a, c.shape(K.B))


def _vjp_div(c, g):
    a, b = c.a, c.b
    return sum_to(g / b, c.shape(K.A)), sum_to(-g * a / (b * b), c.shape(K.B))


def _vjp_pow(c, g):
    a, b = c.a, c.b
    ga = sum_to(g * b * a ** (b - 1.0), c.shape(K.A))
    gb = sum_to(g * where(a == 0.0, 0.0, a ** b * log(where(a == 0.0, 1.0, a))), c.shape(K.B))
    return ga, gb


ADD = Op("AddBackward0", K.K_ADD, _vjp_add)
SUB = Op("SubBackward0", K.K_SUB, _vjp_sub)
MUL = Op("MulBackward0", K.K_MUL, _vjp_mul)
DIV = Op("DivBackward0", K.K_DIV, _vjp_div)
POW = Op("PowBackward1", K.K_POW, _vjp_pow)

# Values the backward of a tensor-tensor op reads: (when a needs grad, when b does).
_BIN_SAVES = {K.K_ADD: (0, 0), K.K_SUB: (0, 0), K.K_MUL: (2, 1), K.K_DIV: (2, 3),
              K.K_POW: (3, 3)}


def _binary_tt(op, ufunc, opname, a, b):
    a, b = _promote(a, b, opname)
    da = a._data
    db = b._data
    try:
        out = ufunc(da, db)
    except ValueError:
        raise _bcast_error(opname, a, b) from None
    if not isinstance(out, np.ndarray):
        out = np.asarray(out)
    if _grad_needed(a, b):
        sa, sb = _BIN_SAVES[op.kernel]
        save = (sa if a._req else 0) | (sb if b._req else 0)
        return record(op, out, a, b, save)
    return _wrap(out)


# ---------------------------------------------------------------------------
# Elementwise ops of one tensor (and a Python scalar)
def _vjp_affine(c, g):
    return (g * c.f0,)


def _vjp_divs(c, g):
    return (g / c.f0,)


def _vjp_pows(c, g):
    p = c.f0
    if p == 0.0:
        return (g * 0.0,)
    return (g * p * c.a ** (p - 1.0),)


def _vjp_rpows(c, g):
    return (g * c.out * float(np.log(c.f0)),)


def _vjp_rdivs(c, g):
    return (-g * c.out / c.a,)


AFFINE_ADD = Op("AddBackward0", K.K_AFFINE, _vjp_affine)
AFFINE_SUB = Op("SubBackward0", K.K_AFFINE, _vjp_affine)
AFFINE_RSUB = Op("RsubBackward1", K.K_AFFINE, _vjp_affine)
AFFINE_MUL = Op("MulBackward0", K.K_AFFINE, _vjp_affine)
NEG = Op("NegBackward0", K.K_AFFINE, _vjp_affine)
DIVS = Op("DivBackward0", K.K_DIVS, _vjp_divs)
POWS = Op("PowBackward0", K.K_POWS, _vjp_pows)
RPOWS = Op("PowBackward1", K.K_RPOWS, _vjp_rpows)
RDIVS = Op("DivBackward1", K.K_RDIVS, _vjp_rdivs)


def _affine(op, a, f0, f1, out):
    if STATE.grad_enabled and a._req:
        return record(op, out, a, f0=f0, f1=f1)
    return _wrap(out)


def _scalar_out(t, c, fn):
    data = t._data
    if data.dtype not in _FLOATS and isinstance(c, (float, np.floating)):
        data = data.astype(_np_float())
    out = fn(data, c)
    if out.__class__ is not np.ndarray:
        out = np.asarray(out, dtype=data.dtype)
    return out


def add(input, other, *, alpha=1):
    """input + alpha * other."""
    if other.__class__ is float and input.__class__ is Tensor and alpha == 1:
        return _affine(AFFINE_ADD, input, 1.0, other, _scalar_out(input, other, np.add))
    if not isinstance(input, Tensor):
        if isinstance(other, Tensor):
            return add(other, input) if alpha == 1 else add(other * alpha, input)
        raise TypeError(f"add(): argument 'input' must be Tensor, not {type(input).__name__}")
    other = _as_operand(other, "add")
    if alpha != 1:
        other = other * alpha
    if isinstance(other, Tensor):
        return _binary_tt(ADD, np.add, "add", input, other)
    return _affine(AFFINE_ADD, input, 1.0, float(other), _scalar_out(input, other, np.add))


def sub(input, other, *, alpha=1):
    """input - alpha * other."""
    if not isinstance(input, Tensor):
        return rsub(other, input, alpha=alpha)
    other = _as_operand(other, "sub")
    if alpha != 1:
        other = other * alpha
    if isinstance(other, Tensor):
        return _binary_tt(SUB, np.subtract, "sub", input, other)
    return _affine(AFFINE_SUB, input, 1.0, -float(other),
                   _scalar_out(input, other, np.subtract))


def rsub(input, other, *, alpha=1):
    """other - alpha * input (the reflected subtraction)."""
    if isinstance(other, Tensor):
        return sub(other, input * alpha if alpha != 1 else input)
    _check_tensor(input, "rsub")
    if alpha != 1:
        input = input * alpha
    return _affine(AFFINE_RSUB, input, -1.0, float(other),
                   _scalar_out(input, other, lambda x, c: np.subtract(c, x)))


def mul(input, other):
    if other.__class__ is float and input.__class__ is Tensor:
        return _affine(AFFINE_MUL, input, other, 0.0, _scalar_out(input, other, np.multiply))
    if not isinstance(input, Tensor):
        if isinstance(other, Tensor):
            return mul(other, input)
        raise TypeError(f"mul(): argument 'input' must be Tensor, not {type(input).__name__}")
    other = _as_operand(other, "mul")
    if isinstance(other, Tensor):
        return _binary_tt(MUL, np.multiply, "mul", input, other)
    return _affine(AFFINE_MUL, input, float(other), 0.0,
                   _scalar_out(input, other, np.multiply))


def div(input, other):
    if not isinstance(input, Tensor):
        return rdiv(other, input)
    other = _as_operand(other, "div")
    if isinstance(other, Tensor):
        if input._data.dtype.kind != "f" and other._data.dtype.kind != "f":
            input = _wrap(input._data.astype(_np_float()))
        return _binary_tt(DIV, np.true_divide, "div", input, other)
    out = _scalar_out(input if input._data.dtype.kind == "f"
                      else _wrap(input._data.astype(_np_float())), other, np.true_divide)
    if _grad_needed(input):
        return record(DIVS, out, input, f0=float(other))
    return _wrap(out)


def rdiv(input, other):
    """other / input for a Python scalar ``other``."""
    if isinstance(other, Tensor):
        return div(other, input)
    _check_tensor(input, "div")
    if input._data.dtype.kind != "f":
        input = _wrap(input._data.astype(_np_float()))
    out = np.asarray(np.true_divide(other, input._data)).astype(input._data.dtype, copy=False)
    if _grad_needed(input):
        return record(RDIVS, out, input, save=5, f0=float(other))
    return _wrap(out)


def pow(input, exponent):
    if not isinstance(input, Tensor):
        if isinstance(exponent, Tensor):
            return rpow(exponent, input)
        raise TypeError(f"pow(): argument 'input' must be Tensor, not {type(input).__name__}")
    exponent = _as_operand(exponent, "pow")
    if isinstance(exponent, Tensor):
        return _binary_tt(POW, np.power, "pow", input, exponent)
    if input._data.dtype.kind != "f" and isinstance(exponent, (int, np.integer)) \
            and exponent < 0:
        raise RuntimeError("pow: Integers to negative integer powers are not allowed.")
    out = _scalar_out(input, exponent, np.power)
    if _grad_needed(input):
        return record(POWS, out, input, save=1, f0=float(exponent))
    return _wrap(out)


def rpow(input, base):
    """base ** input for a Python scalar ``base``."""
    _check_tensor(input, "pow")
    data = input._data if input._data.dtype.kind == "f" else \
        input._data.astype(_np_float()) if isinstance(base, float) else input._data
    out = np.asarray(np.power(base, data)).astype(data.dtype, copy=False)
    if _grad_needed(input):
        return record(RPOWS, out, input, save=4, f0=float(base))
    return _wrap(out)


def neg(input):
    _check_tensor(input, "neg")
    if input._data.dtype.kind == "b":
        raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported.")
    return _affine(NEG, input, -1.0, 0.0, np.negative(input._data))


def _check_tensor(x, opname):
    if not isinstance(x, Tensor):
        raise TypeError(f"{opname}(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(x).__name__}")


def _float_input(x, opname):
    _check_tensor(x, opname)
    d = x._data
    return d if d.dtype.kind == "f" else d.astype(_np_float())


def _unary_op(op, npfn, save):
    name = op.name[:-len("Backward0")].lower()

    def fn(input):
        if input.__class__ is not Tensor:
            _check_tensor(input, name)
        d = input._data
        if d.dtype.kind != "f":
            d = d.astype(_np_float())
        out = npfn(d)
        if out.__class__ is not np.ndarray:
            out = np.asarray(out, dtype=d.dtype)
        if input._req and STATE.grad_enabled:
            return record(op, out, input, save=save)
        return _wrap(out)
    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name}, differentiable ({op.name})."
    return fn


EXP = Op("ExpBackward0", K.K_EXP, lambda c, g: (g * c.out,))
LOG = Op("LogBackward0", K.K_LOG, lambda c, g: (g / c.a,))
SQRT = Op("SqrtBackward0", K.K_SQRT, lambda c, g: (g / (2.0 * c.out),))
TANH = Op("TanhBackward0", K.K_TANH, lambda c, g: (g * (1.0 - c.out * c.out),))
SIGMOID = Op("SigmoidBackward0", K.K_SIGMOID, lambda c, g: (g * c.out * (1.0 - c.out),))
RELU = Op("ReluBackward0", K.K_RELU, lambda c, g: (g * (c.out > 0),))
ABS = Op("AbsBackward0", K.K_ABS, lambda c, g: (g * sign(c.a),))


def _sigmoid(d):
    # 0.5 * tanh(x / 2) + 0.5: stable for large |x| and vectorised by NumPy.
    out = np.tanh(d * 0.5)
    out *= 0.5
    out += 0.5
    return out


def _relu(d):
    return np.maximum(d, 0, dtype=d.dtype)


exp = _unary_op(EXP, np.exp, 4)
log = _unary_op(LOG, np.log, 1)
sqrt = _unary_op(SQRT, np.sqrt, 4)
tanh = _unary_op(TANH, np.tanh, 4)
sigmoid = _unary_op(SIGMOID, _sigmoid, 4)
relu = _unary_op(RELU, _relu, 4)
abs = _unary_op(ABS, np.abs, 1)


def sign(input):
    """Sign of each element; recorded as a constant (zero gradient), as in PyTorch."""
    _check_tensor(input, "sign")
    return _wrap(np.sign(input._data))


def where(condition, input, other):
    """Elementwise choice: input where condition holds, else other (composed from *)."""
    cond = condition._data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        raise RuntimeError(f"where: expected condition to be a bool tensor, got {cond.dtype}")
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        return _wrap(np.asarray(np.where(cond, input, other)))
    ref = input if isinstance(input, Tensor) else other
    dt = ref._data.dtype
    mf = _wrap(cond.astype(dt))
    nf = _wrap((~cond).astype(dt))
    if not _grad_needed(input if isinstance(input, Tensor) else None,
                        other if isinstance(other, Tensor) else None):
        a = input._data if isinstance(input, Tensor) else input
        b = other._data if isinstance(other, Tensor) else other
        return _wrap(np.asarray(np.where(cond, a, b)).astype(dt, copy=False))
    return input * mf + other * nf


# ---------------------------------------------------------------------------
# Reductions
def _vjp_sum(c, g):
    shape = c.shape(K.A)
    mask = c.p(0)
    kshape = tuple(1 if (mask >> i) & 1 else s for i, s in enumerate(shape))
    return (expand(reshape(g, kshape), shape) * c.f0,)


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
    out = npfn(d, axis=dims, keepdims=keepdim)
    if not isinstance(out, np.ndarray):
        out = np.asarray(out)
    if not mean_ and d.dtype.kind == "b":
        out = out.astype(np.int64)
    if _grad_needed(input):
        count = 1
        for k in dims:
            count *= d.shape[k]
        scale = 1.0 / count if mean_ and count else 1.0
        if mean_ and count == 0:
            scale = float("nan")
        op = op_all if dim is None else op_dim
        return record(op, out, input, f0=scale, params=(mask,))
    return _wrap(out)


def sum(input, dim=None, keepdim=False, *, dtype=None):
    res = _reduce(SUM, SUM_DIM, np.sum, input, dim, keepdim, "sum", False)
    return res if dtype is None else res.to(dtype)


def mean(input, dim=None, keepdim=False, *, dtype=None):
    if dtype is not None:
        input = input.to(dtype)
    return _reduce(MEAN, MEAN_DIM, np.mean, input, dim, keepdim, "mean", True)


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
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    out = []
    for s in shape:
        if isinstance(s, Tensor):
            s = int(s)
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool):
            raise TypeError(f"{opname}(): argument 'shape' must be tuple of ints, but found "
                            f"element of type {type(s).__name__}")
        out.append(int(s))
    return tuple(out)


def _infer(shape, size, opname):
    neg = [i for i, s in enumerate(shape) if s == -1]
    if len(neg) > 1:
        raise RuntimeError(f"{opname}: only one dimension can be inferred")
    if any(s < -1 for s in shape):
        raise RuntimeError(f"{opname}: invalid shape dimension {min(shape)}")
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
    if view and not d.flags.c_contiguous and d.size > 1:
        out = d.view()
        try:
            out.shape = shape
        except AttributeError:
            raise RuntimeError(
                f"{opname}: view size is not compatible with input tensor's size and stride "
                "(at least one dimension spans across two contiguous subspaces). Use "
                ".reshape(...) instead.") from None
    else:
        out = d.reshape(shape)
    return _view_result(op, out, input)


def _view_result(op, out, input, params=None):
    if _grad_needed(input):
        t = record(op, out, input, params=params)
    else:
        t = _wrap(out)
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
    return _wrap(out)


def _vjp_strided(c, g):
    """Scatter-add g back to the positions the view read."""
    shape = c.shape(K.A)
    oshape = c.shape(K.OP)
    idx = np.full(oshape, c.p(0), dtype=np.int64)
    for k in range(len(oshape)):
        ax = np.arange(oshape[k], dtype=np.int64) * c.p(1 + k)
        idx += ax.reshape((-1,) + (1,) * (len(oshape) - k - 1))
    return (index_add_flat(g, idx.reshape(-1), shape),)


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
EXPAND = Op("ExpandBackward0", K.K_STRIDED, lambda c, g: (sum_to(g, c.shape(K.A)),))
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
    """True when ``key`` uses only ints, slices, None and Ellipsis."""
    items = key if isinstance(key, tuple) else (key,)
    for k in items:
        if k is None or k is Ellipsis or isinstance(k, slice):
            continue
        if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            continue
        return False
    return True


def getitem(input, key):
    _check_tensor(input, "index")
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
def index_gather(input, key):
    raise IndexError(f"index: advanced indexing with {key!r} is not supported yet")


def index_add_flat(g, idx, shape):
    """A zero tensor of ``shape`` with g's elements added at flat positions ``idx``."""
    if _grad_needed(g):
        raise RuntimeError("index: create_graph=True through indexing is not supported yet")
    out = np.zeros(int(np.prod(shape)), dtype=g._data.dtype)
    np.add.at(out, idx, g._data.reshape(-1))
    return _wrap(out.reshape(shape))


# ---------------------------------------------------------------------------
# Matrix products
def _vjp_matmul(c, g):
    a, b = c.a, c.b
    mode = c.p(0)
    if mode == 0:
        return matmul(g, b.T), matmul(a.T, g)
    if mode == 1:
        return matmul(b, g), outer(a, g)
    if mode == 2:
        return outer(g, b), matmul(g, a)
    return g * b, g * a


MM = Op("MmBackward0", K.K_MATMUL, _vjp_matmul)
MV = Op("MvBackward0", K.K_MATMUL, _vjp_matmul)
VM = Op("MmBackward0", K.K_MATMUL, _vjp_matmul)
DOT = Op("DotBackward0", K.K_MATMUL, _vjp_matmul)
_MATMUL_MODE = {(2, 2): (0, MM), (1, 2): (1, VM), (2, 1): (2, MV), (1, 1): (3, DOT)}


def matmul(input, other):
    _check_tensor(input, "matmul")
    if not isinstance(other, Tensor):
        raise TypeError(f"matmul(): argument 'other' (position 2) must be Tensor, not "
                        f"{type(other).__name__}")
    input, other = _promote(input, other, "matmul")
    na, nb = input.ndim, other.ndim
    if na == 0 or nb == 0:
        raise RuntimeError(f"matmul: both arguments to matmul need to be at least 1D, but "
                           f"they are {na}D and {nb}D")
    if (na, nb) not in _MATMUL_MODE:
        raise RuntimeError(f"matmul: batched operands ({na}D and {nb}D) are not supported "
                           "yet; use 1-D or 2-D tensors")
    sa, sb = input._data.shape, other._data.shape
    ka = sa[-1]
    kb = sb[0]
    if ka != kb:
        if na == 2 and nb == 2:
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied "
                               f"({sa[0]}x{sa[1]} and {sb[0]}x{sb[1]})")
        raise RuntimeError(f"matmul: size mismatch, got input {list(sa)} and other "
                           f"{list(sb)}: inner dimensions {ka} and {kb} differ")
    out = np.matmul(input._data, other._data)
    if not isinstance(out, np.ndarray):
        out = np.asarray(out)
    if _grad_needed(input, other):
        mode, op = _MATMUL_MODE[(na, nb)]
        save = (2 if input._req else 0) | (1 if other._req else 0)
        return record(op, out, input, other, save, params=(mode,))
    return _wrap(out)


def mm(input, mat2):
    _check_tensor(input, "mm")
    if not isinstance(mat2, Tensor):
        raise TypeError(f"mm(): argument 'mat2' (position 2) must be Tensor, not "
                        f"{type(mat2).__name__}")
    if input.ndim != 2:
        raise RuntimeError("mm: self must be a matrix")
    if mat2.ndim != 2:
        raise RuntimeError("mm: mat2 must be a matrix")
    return matmul(input, mat2)


def outer(input, vec2):
    _check_tensor(input, "outer")
    if input.ndim != 1 or not isinstance(vec2, Tensor) or vec2.ndim != 1:
        raise RuntimeError("outer: expected 1-D tensors")
    return matmul(reshape(input, (-1, 1)), reshape(vec2, (1, -1)))


# ---------------------------------------------------------------------------
# Dtype conversion
CAST = Op("ToCopyBackward0", K.K_CAST, lambda c, g: (g.to(c.a.dtype),))


def to_dtype(input, dtype):
    npdt = as_np_dtype(dtype)
    d = input._data
    if d.dtype == npdt:
        return input
    out = d.astype(npdt)
    if _grad_needed(input) and npdt.kind == "f":
        return record(CAST, out, input)
    return _wrap(out)


# ---------------------------------------------------------------------------
# In-place ops
def _leaf_inplace_check(t):
    if STATE.grad_enabled and t._req and t._leaf:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                           "operation.")


def bump_version(t):
    """An in-place write to t's storage: saved values of it go stale."""
    base = t._base if t._base is not None else t
    ver = base._ver
    if ver is not None:
        ver[0] += 1
        EPOCH[0] += 1


def _rebase(t, res):
    """t takes result ``res`` (same shape) in place and becomes its non-leaf."""
    if res._data.shape != t._data.shape:
        raise RuntimeError(f"output with shape {list(t.shape)} doesn't match the broadcast "
                           f"shape {list(res.shape)}")
    if t._base is not None and STATE.grad_enabled and (t._base._req or t._req):
        if t._base._leaf and t._base._req:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used "
                               "in an in-place operation.")
        raise RuntimeError("in-place operation on a view of a tensor that requires grad "
                           "is not supported; apply it to a clone()")
    np.copyto(t._data, res._data)
    bump_version(t)
    t._tape, t._row = res._tape, res._row
    t._leaf = False
    t._req = True
    return t


def _inplace_binary(t, other, outofplace, ufunc, opname):
    _check_tensor(t, opname)
    _leaf_inplace_check(t)
    other_t = _as_operand(other, opname)
    if _grad_needed(t, other_t if isinstance(other_t, Tensor) else None):
        src = t
        if isinstance(other_t, Tensor) and other_t._req and ufunc in (np.multiply, np.divide):
            src = proxy_copy(t)
        return _rebase(t, outofplace(src, other_t))
    o = other_t._data if isinstance(other_t, Tensor) else other_t
    try:
        ufunc(t._data, o, out=t._data, casting="same_kind")
    except ValueError:
        raise _bcast_error(opname, t, other_t if isinstance(other_t, Tensor)
                           else _wrap(np.asarray(o))) from None
    except TypeError as exc:
        raise RuntimeError(f"{opname}: {exc}") from None
    bump_version(t)
    return t


def proxy_copy(t):
    """t's graph position with a private copy of its value (for in-place ops that save it)."""
    c = _new_like(t)
    c._data = t._data.copy()
    return c


def _new_like(t):
    c = object.__new__(Tensor)
    c._data, c._req, c._leaf = t._data, t._req, t._leaf
    c._tape, c._row, c._base, c._ver = t._tape, t._row, None, None
    c._grad, c._hooks, c._retains = None, None, False
    return c


def add_(t, other, *, alpha=1):
    if alpha != 1:
        other = other * alpha
    return _inplace_binary(t, other, add, np.add, "add_")


def sub_(t, other, *, alpha=1):
    if alpha != 1:
        other = other * alpha
    return _inplace_binary(t, other, sub, np.subtract, "sub_")


def mul_(t, other):
    return _inplace_binary(t, other, mul, np.multiply, "mul_")


def div_(t, other):
    return _inplace_binary(t, other, div, np.divide, "div_")


def fill_(t, value):
    _check_tensor(t, "fill_")
    _leaf_inplace_check(t)
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                               f"with {value.ndim} dimensions.")
        if _grad_needed(value, t):
            return _rebase(t, expand(value.to(t.dtype), *t.shape) + t * 0.0)
        value = value.item()
    if _grad_needed(t):
        return _rebase(t, t * 0.0 + float(value))
    t._data.fill(value)
    bump_version(t)
    return t


def zero_(t):
    return fill_(t, 0)


def copy_(t, src):
    _check_tensor(t, "copy_")
    _leaf_inplace_check(t)
    if not isinstance(src, Tensor):
        src = Tensor(np.asarray(src))
    try:
        np.broadcast_shapes(src._data.shape, t._data.shape)
        if np.broadcast_shapes(src._data.shape, t._data.shape) != t._data.shape:
            raise ValueError
    except ValueError:
        raise RuntimeError(f"copy_: the size of src {list(src.shape)} cannot be broadcast "
                           f"to the size of self {list(t.shape)}") from None
    if _grad_needed(t, src):
        s = src.to(t.dtype) if src._data.dtype.kind == "f" else _wrap(
            src._data.astype(t._data.dtype))
        return _rebase(t, t * 0.0 + expand(s, *t.shape))
    np.copyto(t._data, src._data, casting="unsafe")
    bump_version(t)
    return t


bind_methods(__import__(__name__, fromlist=['_']))
