"""Elementwise ops: tensor (op) tensor with broadcasting, and ops of one tensor
(and a Python scalar).
"""

import math

import numpy as np

from .. import _kernels as K
from ..hyper import num
from ..tape import STATE, TRACE
from ..tensor import Tensor, _wrap
from .base import (Op, SAVE_A, SAVE_OUT, _FLOATS, _as_operand, _bcast_error, _check_arg,
                   _check_broadcast, _check_tensor, _flat, _float_input, _grad_needed,
                   _leaf_inplace_check, _np_float, _promote, _rebase, _shape_row,
                   bump_version, plain, proxy_copy, record)
from . import reductions


# ---------------------------------------------------------------------------
# Binary arithmetic, tensor with tensor
def _vjp_add(c, g):
    return reductions.sum_to(g, c.shape(K.A)), reductions.sum_to(g, c.shape(K.B))


def _vjp_sub(c, g):
    return reductions.sum_to(g, c.shape(K.A)), reductions.sum_to(-g, c.shape(K.B))


def _vjp_mul(c, g):
    return (reductions.sum_to(g * c.b, c.shape(K.A)) if c.wants(K.A) else None,
            reductions.sum_to(g * c.a, c.shape(K.B)) if c.wants(K.B) else None)


def _vjp_div(c, g):
    b = c.b
    return (reductions.sum_to(g / b, c.shape(K.A)) if c.wants(K.A) else None,
            reductions.sum_to(-g * (c.a / b / b), c.shape(K.B)) if c.wants(K.B) else None)


def _vjp_pow(c, g):
    """PyTorch's pow_backward_self / pow_backward_exponent (zero where they mask)."""
    a, b = c.a, c.b
    ga = reductions.sum_to(where(b == 0.0, 0.0, g * b * a ** (b - 1.0)), c.shape(K.A)) \
        if c.wants(K.A) else None
    zero = _wrap((a._data == 0.0) & (b._data >= 0.0))
    gb = reductions.sum_to(g * where(zero, 0.0, a ** b * log(where(zero, 1.0, a))),
                c.shape(K.B)) if c.wants(K.B) else None
    return ga, gb


def _vjp_mod(rounding):
    """fmod / remainder: gradient g for x, -g * rounding(x / y) for y (None: the floor
    division x // y), as PyTorch's."""
    def vjp(c, g):
        if not c.wants(K.B):
            return reductions.sum_to(g, c.shape(K.A)), None
        q = floor_divide(c.a, c.b) if rounding is None else rounding(c.a / c.b)
        return (reductions.sum_to(g, c.shape(K.A)) if c.wants(K.A) else None,
                reductions.sum_to(-g * q, c.shape(K.B)))
    return vjp


ADD = Op("AddBackward0", K.K_ADD, _vjp_add)
SUB = Op("SubBackward0", K.K_SUB, _vjp_sub)
MUL = Op("MulBackward0", K.K_MUL, _vjp_mul)
DIV = Op("DivBackward0", K.K_DIV, _vjp_div)
POW = Op("PowBackward1", K.K_POW, _vjp_pow)
FMOD = Op("FmodBackward1", K.K_FMOD, _vjp_mod(lambda q: trunc(q)))
REMAINDER = Op("RemainderBackward1", K.K_REMAINDER, _vjp_mod(None))
FMOD_S = Op("FmodBackward0", K.K_FMOD, _vjp_mod(lambda q: trunc(q)))
REMAINDER_S = Op("RemainderBackward0", K.K_REMAINDER, _vjp_mod(None))

# Values the backward of a tensor-tensor op reads: (when a needs grad, when b does).
_BIN_SAVES = {K.K_ADD: (0, 0), K.K_SUB: (0, 0), K.K_MUL: (2, 1), K.K_DIV: (2, 3),
              K.K_POW: (3, 3), K.K_FMOD: (0, 3), K.K_REMAINDER: (0, 3)}


_OWN_KERNEL = (K.K_POW, K.K_FMOD, K.K_REMAINDER)


def _broadcast_kernel(kernel, da, db):
    """A broadcasting binary op through the forward kernel a compiled replay runs."""
    out = np.empty(np.broadcast_shapes(da.shape, db.shape), da.dtype)
    rows = np.concatenate([_shape_row(out.shape), _shape_row(da.shape), _shape_row(db.shape)])
    K.binary_fwd(kernel, rows, 0, 1, 2, out.reshape(-1), _flat(da), _flat(db))
    return out


def _binary_tt(op, ufunc, opname, a, b):
    a, b = _promote(a, b, opname)
    da = a._data
    db = b._data
    try:
        if op.kernel in _OWN_KERNEL and da.dtype in _FLOATS:
            # NumPy's SIMD power may differ; its remainder signs zeros by the divisor
            out = _broadcast_kernel(op.kernel, da, db)
        else:
            out = ufunc(da, db, order="C")     # (results in C order, as programs keep them)
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
def _vjp_zero(c, g):
    """A zero gradient (sign and rounding, as PyTorch's)."""
    return (g * 0.0,)


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
    """fn(t's values, Python number c) in PyTorch's result dtype: a float c makes integers
    float, an int c makes bools int64, a bool c keeps bools bool (NumPy: int8)."""
    data = t._data
    if data.dtype not in _FLOATS and isinstance(c, (float, np.floating)):
        data = data.astype(_np_float())
    elif data.dtype == np.bool_ and not isinstance(c, (bool, np.bool_)):
        data = data.astype(np.int64)
    out = fn(data, c)
    if out.__class__ is not np.ndarray or out.dtype != data.dtype and data.dtype == np.bool_:
        out = np.asarray(out).astype(data.dtype)
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


def _no_bool_sub(a, b):
    """PyTorch's error for a subtraction with a bool operand (a tensor or Python bool)."""
    ab, bb = (isinstance(x, (bool, np.bool_)) or isinstance(x, Tensor) and
              x._data.dtype == np.bool_ for x in (a, b))
    if ab and bb:
        raise RuntimeError("Subtraction, the `-` operator, with two bool tensors is not "
                           "supported. Use the `^` or `logical_xor()` operator instead.")
    if ab or bb:
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not "
                           "supported. If you are trying to invert a mask, use the `~` or "
                           "`logical_not()` operator instead.")


def sub(input, other, *, alpha=1):
    """input - alpha * other."""
    if not isinstance(input, Tensor):
        return rsub(other, input, alpha=alpha)
    _no_bool_sub(input, other)
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
    _no_bool_sub(input, other)
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


def div(input, other, *, rounding_mode=None):
    if rounding_mode is not None:
        if rounding_mode == "floor":
            return floor_divide(input, other)
        if rounding_mode != "trunc":
            raise RuntimeError(f"div expected rounding_mode to be one of None, 'trunc', or "
                               f"'floor' but found '{rounding_mode}'")
        a, b, _ = _mod_operands(input, other, "div")
        if a._data.dtype.kind != "f":
            return _int_division(a, b, _trunc_div, "div")
        return trunc(div(a, b))             # zero gradient, as PyTorch's
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


def _int_division(a, b, ufunc, name):
    """An integer floor or truncating division or remainder (NumPy's, as PyTorch's), run
    eagerly (compiled replays keep to floats); a zero divisor raises as PyTorch."""
    if TRACE[0] is not None:
        TRACE[0].fail(f"{name} of integer tensors")
    if not np.all(b._data):
        raise RuntimeError("ZeroDivisionError")
    return plain(DIV, np.asarray(ufunc(a._data, b._data)), [a, b])


def _trunc_div(x, y):
    """Integer division rounded toward zero."""
    return x // y + ((x % y != 0) & ((x < 0) != (y < 0)))


def _mod_operands(input, other, name):
    """input and other as tensors of the result dtype (a number, either one, as a
    constant), and whether other was the number."""
    if not isinstance(input, Tensor) and isinstance(other, Tensor):
        b, a, _ = _mod_operands(other, input, name)
        return a, b, False
    _check_tensor(input, name)
    other = _as_operand(other, name)
    if input._data.dtype == np.bool_ and (not isinstance(other, Tensor) or
                                          other._data.dtype == np.bool_):
        if not isinstance(other, Tensor) and not isinstance(other, (bool, np.bool_)):
            input = input.to(np.int64 if isinstance(other, (int, np.integer)) else _np_float())
        else:
            raise NotImplementedError(f"\"{name}_cpu\" not implemented for 'Bool'")
    if isinstance(other, Tensor):
        return (*_promote(input, other, name), False)
    if input._data.dtype.kind != "f" and isinstance(other, (float, np.floating)):
        input = input.to(_np_float())
    return input, _constant(np.asarray(other, dtype=input._data.dtype)), True


def _modulo(ops, ufunc, name, input, other):
    """fmod or remainder: floats by the op-table entry ops[other was a number], integers
    eagerly by NumPy's ufunc."""
    a, b, number = _mod_operands(input, other, name)
    if a._data.dtype.kind != "f":
        return _int_division(a, b, ufunc, name)
    return _binary_tt(ops[number], ufunc, name, a, b)


def fmod(input, other):
    """C's fmod: the remainder of x / y truncated, with x's sign; exact."""
    _check_tensor(input, "fmod")            # (PyTorch has no fmod of a number by a tensor)
    return _modulo((FMOD, FMOD_S), np.fmod, "fmod", input, other)


def remainder(input, other):
    """Python's %: the remainder with the divisor's sign, as PyTorch's."""
    return _modulo((REMAINDER, REMAINDER_S), np.remainder, "remainder", input, other)


def floor_divide(input, other):
    """floor(x / y) as PyTorch computes it, (x - fmod(x, y)) / y rounded, so that
    x == y * (x // y) + x % y; not differentiable (the result is detached)."""
    a, b, _ = _mod_operands(input, other, "floor_divide")
    if a._data.dtype.kind != "f":
        return _int_division(a, b, np.floor_divide, "floor_divide")
    a, b = a.detach(), b.detach()
    mod = fmod(a, b)
    q = (a - mod) / b
    q = where((mod != 0) & ((b < 0) != (mod < 0)), q - 1.0, q)
    f = floor(q)
    f = where(q - f > 0.5, f + 1.0, f)
    return where(b == 0, a / b, where(q == 0, a / b * 0.0, f))


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
        if input._data.dtype == exponent._data.dtype == np.bool_:
            raise NotImplementedError("\"pow\" not implemented for 'Bool'")
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
    data = input._data
    if data.dtype == np.bool_ and isinstance(base, (bool, np.bool_)):
        raise NotImplementedError("\"pow\" not implemented for 'Bool'")
    if data.dtype.kind != "f":
        data = data.astype(_np_float() if isinstance(base, float) else np.int64)
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


def _elementwise(kernel, d, f0=0.0, f1=0.0, p0=0):
    """A float array through the forward kernel of an elementwise op (the one a
    compiled replay runs), with scalars rounded to its dtype as NumPy would."""
    out = np.empty(d.shape, d.dtype)
    t = d.dtype.type
    K.UNARY_FWD[kernel](np.ascontiguousarray(d).reshape(-1), out.reshape(-1),
                        float(t(f0)), float(t(f1)), p0)
    return out


UNARY_FUNCTIONS = {}     # name -> function of one tensor; Tensor has each as a method


def _unary_op(op, npfn, save, vec=None, keep_int=False, int_fn=False):
    """An elementwise op. With ``vec`` (a kernel of _kernels, vectorised) it runs on
    tapegrad's own kernel, the one a compiled replay runs; else on NumPy's loop, which
    gives the same floats. Integer tensors: ``keep_int`` returns them as they are
    (rounding), ``int_fn`` applies npfn in their dtype (abs, relu), else they become
    floats (exp, sqrt, ...)."""
    name = op.name[:-len("Backward0")].lower()

    def fn(input):
        if input.__class__ is not Tensor:
            _check_tensor(input, name)
        d = input._data
        if keep_int and d.dtype.kind != "f":
            return input.clone()
        if int_fn and d.dtype.kind in "iu":
            return plain(op, np.asarray(npfn(d)), [input])
        if d.dtype.kind != "f":
            d = d.astype(_np_float())
        if vec is not None:
            out = np.empty(d.shape, d.dtype)
            # all arguments given: the types a compiled replay calls it with, one compile
            vec(np.ascontiguousarray(d).reshape(-1), out.reshape(-1), 0.0, 0.0, 0)
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
relu = _unary_op(RELU, _relu, SAVE_OUT, int_fn=True)
abs = _unary_op(ABS, np.abs, SAVE_A, int_fn=True)

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

# Inverse trigonometric and hyperbolic functions; derivatives as PyTorch writes them.
ATAN = Op("AtanBackward0", K.K_ATAN, lambda c, g: (g / (c.a * c.a + 1.0),))
ASIN = Op("AsinBackward0", K.K_ASIN, lambda c, g: (g * pow(1.0 - c.a * c.a, -0.5),))
ACOS = Op("AcosBackward0", K.K_ACOS, lambda c, g: (-g * pow(1.0 - c.a * c.a, -0.5),))
SINH = Op("SinhBackward0", K.K_SINH, lambda c, g: (g * cosh(c.a),))
COSH = Op("CoshBackward0", K.K_COSH, lambda c, g: (g * sinh(c.a),))
ASINH = Op("AsinhBackward0", K.K_ASINH, lambda c, g: (g * pow(c.a * c.a + 1.0, -0.5),))
ACOSH = Op("AcoshBackward0", K.K_ACOSH, lambda c, g: (g * pow(c.a * c.a - 1.0, -0.5),))
ATANH = Op("AtanhBackward0", K.K_ATANH, lambda c, g: (g / (1.0 - c.a * c.a),))
atan = _unary_op(ATAN, None, SAVE_A, K.UNARY_FWD[K.K_ATAN])
asin = _unary_op(ASIN, None, SAVE_A, K.UNARY_FWD[K.K_ASIN])
acos = _unary_op(ACOS, None, SAVE_A, K.UNARY_FWD[K.K_ACOS])
sinh = _unary_op(SINH, None, SAVE_A, K.UNARY_FWD[K.K_SINH])
cosh = _unary_op(COSH, None, SAVE_A, K.UNARY_FWD[K.K_COSH])
asinh = _unary_op(ASINH, None, SAVE_A, K.UNARY_FWD[K.K_ASINH])
acosh = _unary_op(ACOSH, None, SAVE_A, K.UNARY_FWD[K.K_ACOSH])
atanh = _unary_op(ATANH, None, SAVE_A, K.UNARY_FWD[K.K_ATANH])

# Rounding: a zero gradient, as PyTorch's; integer tensors come back unchanged.
FLOOR = Op("FloorBackward0", K.K_FLOOR, _vjp_zero)
CEIL = Op("CeilBackward0", K.K_CEIL, _vjp_zero)
ROUND = Op("RoundBackward0", K.K_ROUND, _vjp_zero)
TRUNC = Op("TruncBackward0", K.K_TRUNC, _vjp_zero)
floor = _unary_op(FLOOR, np.floor, 0, keep_int=True)
ceil = _unary_op(CEIL, np.ceil, 0, keep_int=True)
_round = _unary_op(ROUND, np.rint, 0, keep_int=True)
trunc = _unary_op(TRUNC, np.trunc, 0, keep_int=True)


def round(input, *, decimals=0):
    """Rounded to ``decimals`` places, halves to even (as round(x * 10**d) / 10**d)."""
    if decimals == 0:
        return _round(input)
    scale = 10.0 ** decimals
    return _round(input * scale) / scale


def frac(input):
    """The fractional part, x - trunc(x) (gradient 1)."""
    return input - trunc(input)


UNARY_FUNCTIONS["round"] = round


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


def _vjp_minmax(sign_):
    def vjp(c, g):
        # PyTorch: g / 2 at ties, 0 where the other input wins, else g (NaN included)
        a, b = c.a._data, c.b._data
        half = g * 0.5
        tie = _wrap(a == b)
        ga = where(_wrap(sign_ * a < sign_ * b), 0.0, where(tie, half, g))
        gb = where(_wrap(sign_ * b < sign_ * a), 0.0, where(tie, half, g))
        return reductions.sum_to(ga, c.shape(K.A)), reductions.sum_to(gb, c.shape(K.B))
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


SIGN = Op("SignBackward0", K.K_SIGN, _vjp_zero)


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
    return (reductions.sum_to(where(cond, g, zero), c.shape(K.A)),
            reductions.sum_to(where(cond, zero, g), c.shape(K.B)))


WHERE = Op("WhereBackward0", K.K_WHERE, _vjp_where)


def where(condition, input, other):
    """Elementwise choice: ``input`` where ``condition`` holds, else ``other``."""
    cond = condition._data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        raise RuntimeError(f"where: expected condition to be a bool tensor, got {cond.dtype}")
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        dt = (input if isinstance(input, Tensor) else other)._data.dtype
    else:       # two numbers: PyTorch's default float dtype, int64 or bool
        kinds = {np.asarray(v).dtype.kind for v in (input, other)}
        dt = _np_float() if "f" in kinds else np.dtype(np.int64) if "i" in kinds else \
            np.dtype(np.bool_)
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


def masked_fill(input, mask, value):
    """``value`` where ``mask`` (bool, broadcast to input) holds, else input."""
    _check_tensor(input, "masked_fill")
    if not isinstance(mask, Tensor) or mask._data.dtype != np.bool_:
        raise RuntimeError("masked_fill_ only supports boolean masks, but got mask with "
                           f"dtype {getattr(mask, 'dtype', type(mask).__name__)}")
    _check_broadcast("masked_fill", input, mask, input._data.shape)
    if isinstance(value, Tensor):
        value = value.to(input._data.dtype)
    return where(mask, value, input)


def _triangle(input, diagonal, upper, opname):
    _check_tensor(input, opname)
    if input.ndim < 2:
        raise RuntimeError(f"{opname}: input tensor must have at least 2 dimensions")
    n, m = input._data.shape[-2:]
    keep = np.triu(np.ones((n, m), bool), diagonal) if upper else \
        np.tril(np.ones((n, m), bool), diagonal)
    return where(_constant(keep), input, 0.0)


def tril(input, diagonal=0):
    return _triangle(input, diagonal, False, "tril")


def triu(input, diagonal=0):
    return _triangle(input, diagonal, True, "triu")
