"""The op table and the ops.

Each op is one ``Op`` entry: its PyTorch backward name, the kernel opcode whose
vector-Jacobian product the replay interpreter runs (``_kernels``), and the same
VJP written with tensor ops, which ``create_graph=True`` records so that gradients can
be differentiated again. Below each entry is the public function: it validates its
arguments, computes the forward with NumPy and, when grad is needed, records one row
saying which values its backward reads.
"""
import builtins
import math
import warnings

import numpy as np

from . import _kernels as K
from .dtypes import as_np_dtype, get_default_dtype
from .hyper import num
from .tape import EPOCH, STATE, TRACE, current
from .tensor import Tensor, _dim, _node, _owned_node, _wrap, bind_methods, shape_arg

ENTRIES = []
builtins_sum, builtins_min = builtins.sum, builtins.min

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
        held = tape.held(r)
        data = held.get(saved_col)
        return proxy(tape, row, data)

    def input_rows(self):
        """Rows of all inputs: A and B, or the input list of a many-input row."""
        return input_rows(self.tape, self.r)

    def input_shapes(self):
        T = self.tape.T
        return [tuple(int(x) for x in T[row, K.S0:K.S0 + T[row, K.ND]])
                for row in self.input_rows()]

    @property
    def a(self):
        return self._input(K.A, K.SA)

    @property
    def b(self):
        return self._input(K.B, K.SB)

    @property
    def out(self):
        return _node(self.tape.held(self.r)[K.SO], self.tape, self.r)

    def shape(self, col=K.A):
        T = self.tape.T
        row = T[self.r, col] if col != K.OP else self.r
        return tuple(int(s) for s in T[row, K.S0:K.S0 + T[row, K.ND]])

    def wants(self, col):
        """Whether input ``col`` (K.A or K.B) needs a gradient."""
        row = self.tape.T[self.r, col]
        return row >= 0 and bool(self.tape.T[row, K.FL] & K.REQ)

    def dtype(self, col):
        T = self.tape.T
        row = T[self.r, col] if col != K.OP else self.r
        return np.float64 if T[row, K.FL] & K.F64 else np.float32

    @property
    def f0(self):
        return float(self.tape.F[self.r, 0])

    @property
    def f1(self):
        return float(self.tape.F[self.r, 1])

    def p(self, i):
        return int(self.tape.T[self.r, K.P0 + i])


def input_rows(tape, r):
    T = tape.T
    if T[r, K.OP] in (K.K_CAT, K.K_PYFN, K.K_LINEAR):
        start, count = int(T[r, K.P0]), int(T[r, K.P0 + 1])
        return [int(x) for x in tape.L[start:start + count]]
    return [int(T[r, c]) for c in (K.A, K.B) if T[r, c] >= 0]


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
        if TRACE[0] is not None:
            TRACE[0].fail("a tensor of a graph recorded outside the function")
        return r
    r = tape.row(K.K_LEAF, LEAF.index, t._data, t._req, flags=K.LEAFF)
    if TRACE[0] is not None:
        TRACE[0].leaf_row(tape, r, t)
    if t._req:
        tape.leaves[r] = t
    t._tape = tape
    t._row = r
    return r


SAVE_A, SAVE_B, SAVE_OUT = 1, 2, 4      # record(save=): the values a backward reads


def record(op, out, a, b=None, save=0, f0=0.0, f1=0.0, params=None):
    """Appends op's row for result ``out`` of inputs a (and b); returns the result.

    ``save`` is a bitmask of the values the backward reads: SAVE_A, SAVE_B, SAVE_OUT.
    """
    if out.__class__ is not np.ndarray:
        out = np.asarray(out)        # NumPy returns scalars for 0-d results
    tape = STATE.tape
    if tape is None:
        tape = current()
    ra = a._row if a._tape is tape else _row_of(tape, a)
    rb = -1 if b is None else b._row if b._tape is tape else _row_of(tape, b)
    r = tape.row(op.kernel, op.index, out, True, ra, rb, K.SAVES if save else 0)
    if TRACE[0] is not None:
        TRACE[0].op(op, out, [a] if b is None else [a, b], f0, f1, params or (), tape, r)
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
    t._own = True
    tape.live.add(r)
    if save:
        if save & SAVE_A:
            tape.save(r, K.SA, a, a._data, -1 if a._leaf else ra)
        if save & SAVE_B:
            tape.save(r, K.SB, b, b._data, -1 if b._leaf else rb)
        if save & SAVE_OUT:
            tape.save(r, K.SO, t, out, r)
    return t


_new = object.__new__


def plain(op, out, ins, f0=0.0, f1=0.0, params=()):
    """The result of op when it records no row; a tg.compile recording still sees it."""
    if TRACE[0] is not None:
        TRACE[0].op(op, out, ins, f0, f1, params)
    return _wrap(out)


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
_F64 = _FLOATS[1]


def _np_float():
    return as_np_dtype(get_default_dtype())


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


def _check_broadcast(opname, a, b, into=None):
    """Raises before anything is recorded if a and b do not broadcast (to ``into``)."""
    if not isinstance(b, Tensor):
        return
    try:
        shape = np.broadcast_shapes(a._data.shape, b._data.shape)
    except ValueError:
        raise _bcast_error(opname, a, b) from None
    if into is not None and shape != into:
        raise RuntimeError(f"{opname}: output with shape {list(into)} doesn't match the "
                           f"broadcast shape {list(shape)}")


def _bcast_error(opname, a, b):
    sa, sb = a.shape, b.shape
    nd = builtins.max(len(sa), len(sb))
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
    return (sum_to(g * c.b, c.shape(K.A)) if c.wants(K.A) else None,
            sum_to(g * c.a, c.shape(K.B)) if c.wants(K.B) else None)


def _vjp_div(c, g):
    b = c.b
    return (sum_to(g / b, c.shape(K.A)) if c.wants(K.A) else None,
            sum_to(-g * (c.a / b / b), c.shape(K.B)) if c.wants(K.B) else None)


def _vjp_pow(c, g):
    """PyTorch's pow_backward_self / pow_backward_exponent (zero where they mask)."""
    a, b = c.a, c.b
    ga = sum_to(where(b == 0.0, 0.0, g * b * a ** (b - 1.0)), c.shape(K.A)) \
        if c.wants(K.A) else None
    zero = _wrap((a._data == 0.0) & (b._data >= 0.0))
    gb = sum_to(g * where(zero, 0.0, a ** b * log(where(zero, 1.0, a))),
                c.shape(K.B)) if c.wants(K.B) else None
    return ga, gb


ADD = Op("AddBackward0", K.K_ADD, _vjp_add)
SUB = Op("SubBackward0", K.K_SUB, _vjp_sub)
MUL = Op("MulBackward0", K.K_MUL, _vjp_mul)
DIV = Op("DivBackward0", K.K_DIV, _vjp_div)
POW = Op("PowBackward1", K.K_POW, _vjp_pow)

# Values the backward of a tensor-tensor op reads: (when a needs grad, when b does).
_BIN_SAVES = {K.K_ADD: (0, 0), K.K_SUB: (0, 0), K.K_MUL: (2, 1), K.K_DIV: (2, 3),
              K.K_POW: (3, 3)}


def _broadcast_kernel(kernel, da, db):
    """A broadcasting binary op through the forward kernel a compiled replay runs."""
    out = np.empty(np.broadcast_shapes(da.shape, db.shape), da.dtype)
    rows = np.concatenate([_shape_row(out.shape), _shape_row(da.shape), _shape_row(db.shape)])
    K.binary_fwd(kernel, rows, 0, 1, 2, out.reshape(-1), _flat(da), _flat(db), _NOIDX)
    return out


_NOIDX = np.zeros(0, np.int64)


def _binary_tt(op, ufunc, opname, a, b):
    a, b = _promote(a, b, opname)
    da = a._data
    db = b._data
    try:
        if op.kernel == K.K_POW and da.dtype in _FLOATS:
            out = _broadcast_kernel(K.K_POW, da, db)   # NumPy's SIMD power may differ
        else:
            out = ufunc(da, db)
    except ValueError:
        raise _bcast_error(opname, a, b) from None
    if not isinstance(out, np.ndarray):
        out = np.asarray(out)
    if _grad_needed(a, b):
        sa, sb = _BIN_SAVES[op.kernel]
        save = (sa if a._req else 0) | (sb if b._req else 0)
        return record(op, out, a, b, save)
    return plain(op, out, [a, b])


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
    if p == 2.0:
        return (g * (c.a * 2.0),)
    return (g * (c.a ** (p - 1.0) * p),)


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
    return plain(op, out, [a], f0, f1)


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
    if other.__class__ is float and input.__class__ is Tensor and alpha == 1 \
            and input._data.dtype in _FLOATS:
        if input._req and STATE.grad_enabled:
            return record(AFFINE_ADD, input._data + other, input, None, 0, 1.0, other)
        return plain(AFFINE_ADD, np.asarray(input._data + other), [input], 1.0, other)
    if not isinstance(input, Tensor):
        if isinstance(other, Tensor):
            return add(other, input) if alpha == 1 else add(other * alpha, input)
        raise TypeError(f"add(): argument 'input' must be Tensor, not {type(input).__name__}")
    other = _as_operand(other, "add")
    if alpha != 1:
        _check_broadcast("add", input, other)
        other = other * alpha
    if isinstance(other, Tensor):
        return _binary_tt(ADD, np.add, "add", input, other)
    return _affine(AFFINE_ADD, input, 1.0, num(other), _scalar_out(input, other, np.add))


def sub(input, other, *, alpha=1):
    """input - alpha * other."""
    if not isinstance(input, Tensor):
        return rsub(other, input, alpha=alpha)
    other = _as_operand(other, "sub")
    if alpha != 1:
        _check_broadcast("sub", input, other)
        other = other * alpha
    if isinstance(other, Tensor):
        return _binary_tt(SUB, np.subtract, "sub", input, other)
    return _affine(AFFINE_SUB, input, 1.0, -num(other),
                   _scalar_out(input, other, np.subtract))


def rsub(input, other, *, alpha=1):
    """other - alpha * input (the reflected subtraction)."""
    if isinstance(other, Tensor):
        return sub(other, input * alpha if alpha != 1 else input)
    _check_tensor(input, "rsub")
    other = _as_operand(other, "sub")
    if alpha != 1:
        input = input * alpha
    return _affine(AFFINE_RSUB, input, -1.0, num(other),
                   _scalar_out(input, other, lambda x, c: np.subtract(c, x)))


def mul(input, other):
    if other.__class__ is float and input.__class__ is Tensor and input._data.dtype in _FLOATS:
        if input._req and STATE.grad_enabled:
            return record(AFFINE_MUL, input._data * other, input, None, 0, other)
        return plain(AFFINE_MUL, np.asarray(input._data * other), [input], other)
    if not isinstance(input, Tensor):
        if isinstance(other, Tensor):
            return mul(other, input)
        raise TypeError(f"mul(): argument 'input' must be Tensor, not {type(input).__name__}")
    other = _as_operand(other, "mul")
    if isinstance(other, Tensor):
        return _binary_tt(MUL, np.multiply, "mul", input, other)
    return _affine(AFFINE_MUL, input, num(other), 0.0,
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
        return record(DIVS, out, input, f0=num(other))
    return plain(DIVS, out, [input], num(other))


def rdiv(input, other):
    """other / input for a Python scalar ``other``."""
    if isinstance(other, Tensor):
        return div(other, input)
    _check_tensor(input, "div")
    if input._data.dtype.kind != "f":
        input = _wrap(input._data.astype(_np_float()))
    out = np.asarray(np.true_divide(other, input._data)).astype(input._data.dtype, copy=False)
    if _grad_needed(input):
        return record(RDIVS, out, input, save=SAVE_A | SAVE_OUT, f0=num(other))
    return plain(RDIVS, out, [input], num(other))


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
    if input._data.dtype in _FLOATS:
        out = _elementwise(K.K_POWS, input._data, exponent)
    else:
        out = _scalar_out(input, exponent, np.power)
    if _grad_needed(input):
        return record(POWS, out, input, save=SAVE_A, f0=num(exponent))
    return plain(POWS, out, [input], num(exponent))


def rpow(input, base):
    """base ** input for a Python scalar ``base``."""
    _check_tensor(input, "pow")
    data = input._data if input._data.dtype.kind == "f" else \
        input._data.astype(_np_float()) if isinstance(base, float) else input._data
    if data.dtype in _FLOATS and isinstance(base, (int, float, np.number)):
        out = _elementwise(K.K_RPOWS, data, base)
    else:
        out = np.asarray(np.power(base, data)).astype(data.dtype, copy=False)
    if _grad_needed(input):
        return record(RPOWS, out, input, save=SAVE_OUT, f0=num(base))
    return plain(RPOWS, out, [input], num(base))


def neg(input):
    _check_tensor(input, "neg")
    if input._data.dtype.kind == "b":
        raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported.")
    return _affine(NEG, input, -1.0, 0.0, np.asarray(np.negative(input._data)))


def _check_arg(x, opname, argname):
    """The second argument of a binary op must be a tensor (TypeError otherwise)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{opname}(): argument '{argname}' (position 2) must be Tensor, not "
                        f"{type(x).__name__}")


def _check_tensor(x, opname):
    if not isinstance(x, Tensor):
        raise TypeError(f"{opname}(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(x).__name__}")


def _float_input(x, opname):
    _check_tensor(x, opname)
    d = x._data
    return d if d.dtype.kind == "f" else d.astype(_np_float())


def _elementwise(kernel, d, f0=0.0, f1=0.0, p0=0):
    """A float array through the forward kernel of an elementwise op (the one a
    compiled replay runs), with scalars rounded to its dtype as NumPy would."""
    out = np.empty(d.shape, d.dtype)
    t = d.dtype.type
    K.UNARY_FWD[kernel](np.ascontiguousarray(d).reshape(-1), out.reshape(-1),
                        float(t(f0)), float(t(f1)), p0)
    return out


UNARY_FUNCTIONS = {}     # name -> function of one tensor; Tensor has each as a method


def _unary_op(op, npfn, save, vec=None):
    """An elementwise op. With ``vec`` (a kernel of _kernels, vectorised) it runs on
    tapegrad's own kernel, the one a compiled replay runs; else on NumPy's loop, which
    gives the same floats."""
    name = op.name[:-len("Backward0")].lower()

    def fn(input):
        if input.__class__ is not Tensor:
            _check_tensor(input, name)
        d = input._data
        if d.dtype.kind != "f":
            d = d.astype(_np_float())
        if vec is not None:
            out = np.empty(d.shape, d.dtype)
            vec(np.ascontiguousarray(d).reshape(-1), out.reshape(-1))
        else:
            out = npfn(d)
            if out.__class__ is not np.ndarray:
                out = np.asarray(out, dtype=d.dtype)
        if input._req and STATE.grad_enabled:
            return record(op, out, input, save=save)
        return plain(op, out, [input])
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise {name}, differentiable ({op.name})."
    UNARY_FUNCTIONS[name] = fn
    return fn


EXP = Op("ExpBackward0", K.K_EXP, lambda c, g: (g * c.out,))
LOG = Op("LogBackward0", K.K_LOG, lambda c, g: (g / c.a,))
SQRT = Op("SqrtBackward0", K.K_SQRT, lambda c, g: (g / (2.0 * c.out),))
TANH = Op("TanhBackward0", K.K_TANH, lambda c, g: (g * (1.0 - c.out * c.out),))
SIGMOID = Op("SigmoidBackward0", K.K_SIGMOID, lambda c, g: (g * c.out * (1.0 - c.out),))
RELU = Op("ReluBackward0", K.K_RELU, lambda c, g: (where(c.out <= 0, 0.0, g),))
ABS = Op("AbsBackward0", K.K_ABS, lambda c, g: (g * sign(c.a),))


def _relu(d):
    return np.maximum(d, 0, dtype=d.dtype)


exp = _unary_op(EXP, np.exp, SAVE_OUT, K.exp_array)
log = _unary_op(LOG, np.log, SAVE_A, K.log_array)
sqrt = _unary_op(SQRT, np.sqrt, SAVE_OUT)
tanh = _unary_op(TANH, np.tanh, SAVE_OUT, K.tanh_array)
sigmoid = _unary_op(SIGMOID, None, SAVE_OUT, K.sigmoid_array)
relu = _unary_op(RELU, _relu, SAVE_OUT)
abs = _unary_op(ABS, np.abs, SAVE_A)

SIN = Op("SinBackward0", K.K_SIN, lambda c, g: (g * cos(c.a),))
COS = Op("CosBackward0", K.K_COS, lambda c, g: (-g * sin(c.a),))
TAN = Op("TanBackward0", K.K_TAN, lambda c, g: (g * (1.0 + c.out * c.out),))
LOG1P = Op("Log1PBackward0", K.K_LOG1P, lambda c, g: (g / (1.0 + c.a),))
EXPM1 = Op("Expm1Backward0", K.K_EXPM1, lambda c, g: (g * (c.out + 1.0),))
RECIP = Op("ReciprocalBackward0", K.K_RECIP, lambda c, g: (-g * c.out * c.out,))

sin = _unary_op(SIN, np.sin, SAVE_A, K.sin_array)
cos = _unary_op(COS, np.cos, SAVE_A, K.cos_array)
tan = _unary_op(TAN, np.tan, SAVE_OUT, K.tan_array)
log1p = _unary_op(LOG1P, np.log1p, SAVE_A, K.log1p_array)
expm1 = _unary_op(EXPM1, np.expm1, SAVE_OUT, K.expm1_array)
reciprocal = _unary_op(RECIP, np.reciprocal, SAVE_OUT)
ERF = Op("ErfBackward0", K.K_ERF,
         lambda c, g: (g * (2.0 / math.sqrt(math.pi) * exp(-(c.a * c.a))),))
erf = _unary_op(ERF, None, SAVE_A, K.UNARY_FWD[K.K_ERF])


def square(input):
    return pow(input, 2)


def _vjp_clamp(c, g):
    x = c.a._data
    ok = np.ones(x.shape, bool)
    if c.p(0) & 1:
        ok &= x >= c.f0
    if c.p(0) & 2:
        ok &= x <= c.f1
    return (g * _wrap(ok.astype(x.dtype)),)


CLAMP = Op("ClampBackward1", K.K_CLAMP, _vjp_clamp)


def clamp(input, min=None, max=None):
    _check_tensor(input, "clamp")
    if min is None and max is None:
        raise RuntimeError("clamp: At least one of 'min' or 'max' must not be None")
    for name, bound in (("min", min), ("max", max)):
        if bound is not None and not isinstance(bound, (Tensor, int, float, np.number)):
            raise TypeError(f"clamp(): argument '{name}' must be Number or Tensor, not "
                            f"{type(bound).__name__}")
        if isinstance(bound, Tensor):
            _check_broadcast("clamp", input, bound, input._data.shape)
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = input
        if min is not None:
            out = maximum(out, min if isinstance(min, Tensor) else full_like_const(input, min))
        if max is not None:
            out = minimum(out, max if isinstance(max, Tensor) else full_like_const(input, max))
        return out
    d = _float_input(input, "clamp") if isinstance(min, float) or isinstance(max, float) \
        else input._data
    out = np.clip(d, min, max)
    if out.__class__ is not np.ndarray:
        out = np.asarray(out, dtype=d.dtype)
    has = (1 if min is not None else 0) | (2 if max is not None else 0)
    lo, hi = 0.0 if min is None else num(min), 0.0 if max is None else num(max)
    if _grad_needed(input):
        return record(CLAMP, out, input, save=SAVE_A, f0=lo, f1=hi, params=(has,))
    return plain(CLAMP, out, [input], lo, hi, (has,))


clip = clamp


def full_like_const(t, value):
    return _constant(np.full((), value, dtype=t._data.dtype))


def _constant(arr):
    """A tensor of a value fixed by the op's arguments (a constant of a recording)."""
    if TRACE[0] is not None:
        TRACE[0].constant(arr)
    return _wrap(arr)


def clamp_(t, min=None, max=None):
    _check_tensor(t, "clamp_")
    _leaf_inplace_check(t)
    if _grad_needed(t):
        return _rebase(t, clamp(t, min, max))
    if TRACE[0] is not None:
        TRACE[0].fail("clamp_")
    np.clip(t._data, min, max, out=t._data)
    bump_version(t)
    return t


def _vjp_minmax(sign_):
    def vjp(c, g):
        # PyTorch: g / 2 at ties, 0 where the other input wins, else g (NaN included)
        a, b = c.a._data, c.b._data
        half = g * 0.5
        tie = _wrap(a == b)
        ga = where(_wrap(sign_ * a < sign_ * b), 0.0, where(tie, half, g))
        gb = where(_wrap(sign_ * b < sign_ * a), 0.0, where(tie, half, g))
        return sum_to(ga, c.shape(K.A)), sum_to(gb, c.shape(K.B))
    return vjp


MAXIMUM = Op("MaximumBackward0", K.K_MAXIMUM, _vjp_minmax(1.0))
MINIMUM = Op("MinimumBackward0", K.K_MINIMUM, _vjp_minmax(-1.0))
_BIN_SAVES[K.K_MAXIMUM] = (3, 3)
_BIN_SAVES[K.K_MINIMUM] = (3, 3)


def maximum(input, other):
    _check_tensor(input, "maximum")
    _check_arg(other, "maximum", "other")
    return _binary_tt(MAXIMUM, np.maximum, "maximum", input, other)


def minimum(input, other):
    _check_tensor(input, "minimum")
    _check_arg(other, "minimum", "other")
    return _binary_tt(MINIMUM, np.minimum, "minimum", input, other)


SIGN = Op("SignBackward0", K.K_SIGN, lambda c, g: (g * 0.0,))


def sign(input):
    """Sign of each element; recorded with a zero gradient, as in PyTorch."""
    _check_tensor(input, "sign")
    d = input._data
    out = np.asarray(np.sign(d))
    if d.dtype.kind == "f":
        out[np.isnan(d)] = 0     # PyTorch: sign(nan) = 0
    if _grad_needed(input):
        return record(SIGN, out, input)
    return plain(SIGN, out, [input])


def _vjp_where(c, g):
    cond = c.tape.held(c.r)[K.SO].astype(bool)
    zero = g * 0.0
    return (sum_to(where(cond, g, zero), c.shape(K.A)),
            sum_to(where(cond, zero, g), c.shape(K.B)))


WHERE = Op("WhereBackward0", K.K_WHERE, _vjp_where)


def where(condition, input, other):
    """Elementwise choice: ``input`` where ``condition`` holds, else ``other``."""
    cond = condition._data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        raise RuntimeError(f"where: expected condition to be a bool tensor, got {cond.dtype}")
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        return _wrap(np.asarray(np.where(cond, input, other)))
    ref = input if isinstance(input, Tensor) else other
    dt = ref._data.dtype
    if not isinstance(input, Tensor):
        input = _constant(np.asarray(input, dtype=dt))
    if not isinstance(other, Tensor):
        other = _constant(np.asarray(other, dtype=dt))
    input, other = _promote(input, other, "where")
    try:
        out = np.asarray(np.where(cond, input._data, other._data))
    except ValueError:
        raise RuntimeError(f"where: shapes {list(cond.shape)}, {list(input.shape)} and "
                           f"{list(other.shape)} cannot be broadcast") from None
    c = np.ascontiguousarray(np.broadcast_to(cond, out.shape), dtype=np.uint8)
    if not _grad_needed(input, other):
        t = plain(WHERE, out, [input, other])
        if TRACE[0] is not None:
            TRACE[0].where(out, c.view(np.bool_), condition, None, -1)
        return t
    t = record(WHERE, out, input, other)
    if TRACE[0] is not None:
        TRACE[0].where(out, c, condition, t._tape, t._row)
    t._tape.keep(t._row, K.SO, c)
    return t


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
    count = 1
    for k in dims:
        count *= d.shape[k]
    if d.dtype in _FLOATS:
        out = np.empty(_reduced_shape(d.shape, dims, keepdim), d.dtype)
        K.sum_fwd(_shape_row(d.shape), 0, mask, count if mean_ else 0,
                  np.ascontiguousarray(d).reshape(-1), out.reshape(-1))
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


def _shape_row(shape):
    """A one-row table holding ``shape`` in the tape's layout, for shape-reading kernels."""
    row = np.zeros((1, K.NCOL), np.int64)
    row[0, K.ND] = len(shape)
    row[0, K.S0:K.S0 + len(shape)] = shape
    n = 1
    for s in shape:
        n *= s
    row[0, K.N] = n
    return row


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
    share = expand(reshape(g, kshape), shape) / _wrap(
        hit.sum(axis=axes, keepdims=True).astype(x.dtype))
    if everything:          # PyTorch's evenly_distribute_backward: a select
        return (where(_wrap(hit), share, 0.0),)
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


MAX_DIM = Op("MaxBackward0", K.K_GATHER, None)
MIN_DIM = Op("MinBackward0", K.K_GATHER, None)


def _max_min(input, dim, keepdim, other, largest):
    opname = "max" if largest else "min"
    _check_tensor(input, opname)
    if isinstance(dim, Tensor):
        other, dim = dim, None
    if other is not None:
        return maximum(input, other) if largest else minimum(input, other)
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
    vt = gather_flat(input, flat, values.shape, MAX_DIM if largest else MIN_DIM,
                     extreme=(d.shape[k] if nd else 1, inner, largest))
    return _ValuesIndices(vt, indices)


def _flat_positions(shape, k, arg, keepdim):
    """Flat index into an array of ``shape`` of the elements picked by ``arg`` along k."""
    if not keepdim:
        arg = np.expand_dims(arg, k)
    grids = np.indices(arg.shape, sparse=True)
    coords = [grids[i] if i != k else arg for i in range(len(shape))]
    return np.ravel_multi_index(coords, shape).reshape(-1).astype(np.int64)


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
        out = np.asarray(fn(d))
        return _wrap(out.reshape((1,) * d.ndim if keepdim else ()).astype(np.int64))
    k = _dim(dim, d.ndim, opname)
    if d.ndim == 0:
        return _wrap(np.zeros((), np.int64))
    return _wrap(np.asarray(fn(d, axis=k, keepdims=keepdim)).astype(np.int64))


def _vjp_prod(c, g):
    shape = c.shape(K.A)
    mask = c.p(0)
    kshape = _kshape(shape, mask)
    a = c.a
    if not np.any(a._data == 0):
        return (expand(reshape(g, kshape), shape) * (expand(reshape(c.out, kshape), shape) / a),)
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
    xp = reshape(permute(a, *(kept + red)), (m, 1, n))
    eye = _wrap(np.broadcast_to(np.eye(n, dtype=bool), (m, n, n)).copy())
    others = prod(where(eye, 1.0, expand(xp, m, n, n)), 2)
    res = reshape(reshape(g, (m, 1)) * others, tuple(shape[i] for i in kept + red))
    inv = [0] * len(shape)
    for k, i in enumerate(kept + red):
        inv[i] = k
    return (permute(res, *inv),)


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
    return where(zero, 0.0, sqrt(where(zero, 1.0, s)))


def logsumexp(input, dim, keepdim=False):
    """log(sum(exp(x))) along ``dim``, shifted by the (constant) max for stability."""
    _check_tensor(input, "logsumexp")
    d = _float_input(input, "logsumexp")
    dims, _ = _dims(dim, d.ndim, "logsumexp")
    x = input if input._data.dtype.kind == "f" else _wrap(d)
    if d.size:
        m = amax(x.detach(), dims, keepdim=True)
        m = where(abs(m) < float("inf"), m, 0.0)      # an infinite max shifts by 0
    else:
        m = _wrap(np.zeros(tuple(1 if i in dims else s for i, s in enumerate(d.shape)),
                           d.dtype))
    out = log(sum(exp(x - m), dims, keepdim=True)) + m
    return out if keepdim else squeeze(out, dims) if dims else out


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    _check_tensor(input, "norm")
    _dims(dim, input.ndim, "norm")
    x = input if dtype is None else input.to(dtype)
    if p in ("fro", 2, 2.0):
        return _sqrt_masked(sum(x * x, dim, keepdim=keepdim))
    if p in (1, 1.0):
        return sum(abs(x), dim, keepdim=keepdim)
    if p in (float("inf"), "inf"):
        return amax(abs(x), () if dim is None else dim, keepdim=keepdim)
    if p in (float("-inf"), "-inf"):
        return amin(abs(x), () if dim is None else dim, keepdim=keepdim)
    if p == 0:
        return sum(_wrap((x._data != 0).astype(x._data.dtype)), dim, keepdim=keepdim)
    if not isinstance(p, (int, float)):
        raise RuntimeError(f"norm: unsupported p={p!r}")
    return sum(abs(x) ** float(p), dim, keepdim=keepdim) ** (1.0 / p)


def _vjp_softmax(c, g):
    y = c.out
    d = c.p(2)
    return (y * (g - sum(g * y, d, keepdim=True)),)


def _vjp_log_softmax(c, g):
    y = c.out
    d = c.p(2)
    return (g - exp(y) * sum(g, d, keepdim=True),)


SOFTMAX = Op("SoftmaxBackward0", K.K_SOFTMAX, _vjp_softmax)
LOG_SOFTMAX = Op("LogSoftmaxBackward0", K.K_LOGSOFTMAX, _vjp_log_softmax)


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
    return (scatter_flat(g, idx, c.shape(K.A)),)


def _vjp_scatter(c, g):
    idx = c.tape.held(c.r)[K.SB]
    return (gather_flat(g, idx, c.shape(K.A)),)


GATHER = Op("IndexBackward0", K.K_GATHER, _vjp_gather)
SCATTER = Op("IndexPutBackward0", K.K_SCATTER, _vjp_scatter)
MAX_DIM.vjp = _vjp_gather
MIN_DIM.vjp = _vjp_gather


def gather_flat(input, idx, shape, op=GATHER, fixed=False, extreme=None):
    """out (of ``shape``) = input.flatten()[idx]; differentiable (scatter-add back).
    For a compiled replay, idx is ``fixed`` (it does not depend on tensor values) or
    the positions of the max/min along a dim, ``extreme`` = (size, inner, largest)."""
    idx = idx.astype(np.int64, copy=False)
    out = input._data.reshape(-1)[idx].reshape(shape)
    if _grad_needed(input):
        t = record(op, out, input)
    else:
        t = plain(op, out, [input])
    if TRACE[0] is not None:
        if fixed:
            TRACE[0].gather(out, idx)
        elif extreme is not None:
            TRACE[0].argext(out, idx, input, *extreme)
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
            v = _wrap(np.asarray(value, t._data.dtype))
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
    return (matmul(g, transpose(b, -1, -2)) if wa else None,
            matmul(transpose(a, -1, -2), g) if wb else None)


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
    input, other = _promote(input, other, "matmul")
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


def _flat(d):
    return np.ascontiguousarray(d).reshape(-1)


def _batched(a, b, op=BMM):
    """Batched product: vectors become matrices, batch dims broadcast by expand."""
    va, vb = a.ndim == 1, b.ndim == 1
    if va:
        a = unsqueeze(a, 0)
    if vb:
        b = unsqueeze(b, -1)
    sa, sb = a._data.shape, b._data.shape
    try:
        batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise RuntimeError(f"matmul: batch dimensions {list(sa[:-2])} and {list(sb[:-2])} "
                           "cannot be broadcast") from None
    if sa[:-2] != batch:
        a = expand(a, *(batch + sa[-2:]))
    if sb[:-2] != batch:
        b = expand(b, *(batch + sb[-2:]))
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
        res = squeeze(res, -2)
    if vb:
        res = squeeze(res, -1)
    return res


def _vjp_linear(c, g):
    rows = c.input_rows()
    x, w = proxy(c.tape, rows[0], c.tape.held(c.r).get(K.SA)), \
        proxy(c.tape, rows[1], c.tape.held(c.r).get(K.SB))
    shapes = c.input_shapes()
    g2 = reshape(g, (-1, shapes[1][0]))
    gx = reshape(matmul(g2, w), shapes[0]) if _wants_row(c.tape, rows[0]) else None
    gw = matmul(g2.T, reshape(x, (-1, shapes[1][1]))) if _wants_row(c.tape, rows[1]) \
        else None
    if len(rows) < 3:
        return gx, gw
    return gx, gw, sum_to(sum(g2, 0), shapes[2]) if _wants_row(c.tape, rows[2]) else None


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
    input, weight = _promote(input, weight, "linear")
    if input.shape[-1] != weight.shape[1]:
        raise _mismatch(tuple(input.shape[:-1]) + (input.shape[-1],), tuple(weight.shape[::-1]))
    if bias is not None:
        input, bias = _promote(input, bias, "linear")
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
    tape = STATE.tape or current()
    rows = [_row_of(tape, t) for t in ins]
    start = tape.input_list(rows)
    flags = K.SAVES if weight._req or input._req else 0
    r = tape.row(LINEAR.kernel, LINEAR.index, out, True, rows[0], -1, flags)
    tape.T[r, K.P0:K.P0 + 2] = (start, len(rows))
    if TRACE[0] is not None:
        TRACE[0].op(LINEAR, out, ins, tape=tape, row=r)
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
    return matmul(reshape(input, (-1, 1)), reshape(vec2, (1, -1)))


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
        if t._data.dtype != ref._data.dtype:
            raise RuntimeError(f"cat(): expected all tensors to have the same dtype, got "
                               f"{ref.dtype} and {t.dtype}")
    out = np.concatenate([t._data for t in tensors], axis=d)
    inner = 1
    for n in out.shape[d + 1:]:
        inner *= n
    outer = 1
    for n in out.shape[:d]:
        outer *= n
    if not _grad_needed(*tensors):
        return plain(CAT, out, tensors, params=(0, len(tensors), inner, outer))
    tape = STATE.tape or current()
    rows = [_row_of(tape, t) for t in tensors]
    start = tape.input_list(rows)
    r = tape.row(CAT.kernel, CAT.index, out, True, rows[0], -1)
    if TRACE[0] is not None:
        TRACE[0].op(CAT, out, tensors, params=(0, len(tensors), inner, outer), tape=tape, row=r)
    tape.T[r, K.P0:K.P0 + 5] = (start, len(rows), inner, outer, d)
    return _owned_node(out, tape, r)


def stack(tensors, dim=0):
    tensors = _tensor_list(tensors, "stack", RuntimeError)
    shape = tensors[0].shape
    for i, t in enumerate(tensors):
        if t._data.dtype != tensors[0]._data.dtype:
            raise RuntimeError(f"stack(): expected all tensors to have the same dtype, got "
                               f"{tensors[0].dtype} and {t.dtype}")
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
# User Functions (autograd.Function): their backward runs in Python
PYFN = Op("FunctionBackward", K.K_PYFN, None)
PYOUT = Op("FunctionBackward", K.K_PYOUT, None)


# ---------------------------------------------------------------------------
# Dtype conversion
CAST = Op("ToCopyBackward0", K.K_CAST, lambda c, g: (g.to(c.dtype(K.A)),))


def to_dtype(input, dtype):
    npdt = as_np_dtype(dtype)
    d = input._data
    if d.dtype == npdt:
        return input
    out = d.astype(npdt)
    if _grad_needed(input) and npdt.kind == "f":
        return record(CAST, out, input)
    return plain(CAST, out, [input])


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
    if TRACE[0] is not None:
        TRACE[0].write("copy", t, [res])
    np.copyto(t._data, res._data)
    bump_version(t)
    if t._own:
        t._own = False
        t._tape.drop(t._row)
    t._tape, t._row = res._tape, res._row
    t._own, res._own = res._own, False    # t now keeps the row alive, not res
    t._leaf = False
    t._req = True
    return t


def _inplace_binary(t, other, outofplace, ufunc, opname):
    _check_tensor(t, opname)
    _leaf_inplace_check(t)
    other_t = _as_operand(other, opname)
    _check_broadcast(opname, t, other_t, t._data.shape)
    okind = other_t._data.dtype.kind if isinstance(other_t, Tensor) else \
        "f" if isinstance(other_t, (float, np.floating)) else "i"
    if t._data.dtype.kind in "iub" and (okind == "f" or ufunc is np.divide):
        raise RuntimeError(f"{opname}: result type Float can't be cast to the desired output "
                           f"type {t.dtype.name.capitalize()}")
    if _grad_needed(t, other_t if isinstance(other_t, Tensor) else None):
        src = t
        if isinstance(other_t, Tensor) and other_t._req and ufunc in (np.multiply, np.divide):
            src = proxy_copy(t)
        return _rebase(t, outofplace(src, other_t))
    o = other_t._data if isinstance(other_t, Tensor) else other_t
    if TRACE[0] is not None:
        _trace_inplace(t, other_t, ufunc)
    try:
        ufunc(t._data, o, out=t._data, casting="same_kind")
    except ValueError:
        raise _bcast_error(opname, t, other_t if isinstance(other_t, Tensor)
                           else _wrap(np.asarray(o))) from None
    except TypeError as exc:
        raise RuntimeError(f"{opname}: {exc}") from None
    bump_version(t)
    return t


_INPLACE = {np.add: (K.K_ADD, 1.0, 0.0), np.subtract: (K.K_SUB, 1.0, -1.0),
            np.multiply: (K.K_MUL, 0.0, 0.0), np.divide: (K.K_DIV, 0.0, 0.0)}


def _trace_inplace(t, other, ufunc):
    """Tells the recording about ``ufunc(t, other, out=t)``."""
    kernel, f0, sign = _INPLACE[ufunc]
    if isinstance(other, Tensor):
        TRACE[0].write(kernel, t, [t, other])
    elif kernel == K.K_ADD or kernel == K.K_SUB:
        TRACE[0].write("affine", t, [t], sign * num(other) if sign else num(other))
    elif kernel == K.K_MUL:
        TRACE[0].write("scale", t, [t], num(other))
    else:
        TRACE[0].write("divs", t, [t], num(other))


def proxy_copy(t):
    """t's graph position with a private copy of its value (for in-place ops that save it)."""
    c = _new_like(t)
    c._data = t._data.copy()
    return c


def _new_like(t):
    c = object.__new__(Tensor)
    c._data, c._req, c._leaf = t._data, t._req, t._leaf
    c._tape, c._row, c._base, c._ver = t._tape, t._row, None, None
    c._grad, c._hooks, c._retains, c._own = None, None, False, False
    return c


def add_(t, other, *, alpha=1):
    if alpha != 1:
        if _axpy(t, other, alpha):
            return t
        other = other * alpha
    return _inplace_binary(t, other, add, np.add, "add_")


def _axpy(t, other, alpha):
    """t += alpha * other without a temporary, when nothing is recorded: True if done."""
    if not isinstance(t, Tensor) or not isinstance(other, Tensor):
        return False
    d, o = t._data, other._data
    if _grad_needed(t, other) or d.shape != o.shape or d.dtype != o.dtype \
            or d.dtype not in _FLOATS or not d.flags.c_contiguous or not o.flags.c_contiguous:
        return False
    if TRACE[0] is not None:
        TRACE[0].write("axpy", t, [other], num(alpha))
    K.axpy(d.reshape(-1), float(alpha), o.reshape(-1))
    bump_version(t)
    return True


def sub_(t, other, *, alpha=1):
    if alpha != 1:
        if _axpy(t, other, -alpha):
            return t
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
    if TRACE[0] is not None:
        TRACE[0].write("fill", t, [], value)
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
    if TRACE[0] is not None:
        TRACE[0].write("copy", t, [src])
    np.copyto(t._data, src._data, casting="unsafe")
    bump_version(t)
    return t


bind_methods(__import__(__name__, fromlist=['_']))
