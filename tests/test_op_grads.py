"""Table-driven gradient tests: one or more cases for every entry of ``ops.ENTRIES``.

Each case builds random inputs (seeded), runs the op, checks which op-table entry
recorded the result and its ``grad_fn.name()``, checks the forward value against
PyTorch, then back-propagates a random upstream gradient and compares every input's
gradient with central finite differences (float64) and with PyTorch. Every case runs
through the Numba replay (``backward``) and through the tensor-level VJPs that
``create_graph=True`` records (``autograd.grad``), each with the op's inputs being the
leaves themselves and being non-leaf results (clones of the leaves).
"""
import zlib

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import _kernels as K
from tapegrad import ops

try:
    from .conftest import assert_close, has_torch, numeric_grads, to_np
except ImportError:
    from conftest import assert_close, has_torch, numeric_grads, to_np

BOOKKEEPING = {"AccumulateGrad", "ExternalGrad"}


# ---------------------------------------------------------------------------
# Input generators
def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape, lo=0.5, hi=2.0):
    return lambda rng: rng.uniform(lo, hi, shape)


def nonzero(*shape, lo=0.3, hi=2.0):
    """Values away from zero (and from the kinks of abs/relu)."""
    return lambda rng: rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


class Case:
    def __init__(self, op, cid, fn, gens, req=None, torch_fn=None, dtype=np.float64,
                 fd_eps=1e-6, name=None, fd_tracked=False):
        self.op = op
        self.id = cid
        self.fn = fn                  # fn(lib, *tensors), lib is tapegrad or torch
        self.gens = gens
        self.req = req if req is not None else [True] * len(gens)
        self.torch_fn = torch_fn or fn
        self.dtype = np.dtype(dtype)  # dtype of the inputs
        self.fd_eps = fd_eps          # larger when the output is float32 (FD runs through it)
        self.name = name or op.name   # the expected grad_fn.name()
        self.fd_tracked = fd_tracked  # evaluate finite differences on the recorded path

    def inputs(self):
        rng = np.random.default_rng(zlib.crc32(self.id.encode()))
        return [np.asarray(g(rng), dtype=np.float64).astype(self.dtype) for g in self.gens]


def C(op, cid, fn, *gens, **kw):
    return Case(op, cid, fn, list(gens), **kw)


F32 = dict(dtype=np.float32)

CASES = [
    # -- tensor (op) tensor, with broadcasting ---------------------------------
    C(ops.ADD, "add_same", lambda L, a, b: a + b, normal(3, 4), normal(3, 4)),
    C(ops.ADD, "add_bcast_31_4", lambda L, a, b: a + b, normal(3, 1), normal(4)),
    C(ops.ADD, "add_fn_3d", lambda L, a, b: L.add(a, b), normal(2, 3, 4), normal(3, 1)),
    C(ops.ADD, "add_0d_left", lambda L, a, b: a + b, normal(), normal(2, 3)),
    C(ops.ADD, "add_alpha", lambda L, a, b: L.add(a, b, alpha=2.5), normal(3, 4), normal(4)),
    C(ops.ADD, "add_b_const", lambda L, a, b: a + b, normal(3, 4), normal(4), req=[True, False]),
    C(ops.ADD, "add_f32", lambda L, a, b: a + b, normal(3, 1), normal(4), **F32),
    C(ops.SUB, "sub_same", lambda L, a, b: a - b, normal(3, 4), normal(3, 4)),
    C(ops.SUB, "sub_bcast_31_4", lambda L, a, b: a - b, normal(3, 1), normal(4)),
    C(ops.SUB, "sub_0d_right", lambda L, a, b: L.sub(a, b), normal(2, 3), normal()),
    C(ops.SUB, "sub_alpha", lambda L, a, b: L.sub(a, b, alpha=0.5), normal(2, 3), normal(2, 3)),
    C(ops.SUB, "sub_a_const", lambda L, a, b: a - b, normal(4), normal(3, 4), req=[False, True]),
    C(ops.MUL, "mul_same", lambda L, a, b: a * b, normal(3, 4), normal(3, 4)),
    C(ops.MUL, "mul_bcast_31_4", lambda L, a, b: a * b, normal(3, 1), normal(4)),
    C(ops.MUL, "mul_bcast_both", lambda L, a, b: L.mul(a, b), normal(2, 1, 4), normal(3, 1)),
    C(ops.MUL, "mul_0d_0d", lambda L, a, b: a * b, normal(), normal()),
    C(ops.MUL, "mul_0d_right", lambda L, a, b: a * b, normal(2, 3), normal()),
    C(ops.MUL, "mul_self_like", lambda L, a, b: a * b, normal(5), normal(1)),
    C(ops.MUL, "mul_b_const", lambda L, a, b: a * b, normal(3, 4), normal(3, 1), req=[True, False]),
    C(ops.MUL, "mul_a_const", lambda L, a, b: a * b, normal(3, 1), normal(3, 4), req=[False, True]),
    C(ops.MUL, "mul_f32", lambda L, a, b: a * b, normal(3, 1), normal(4), **F32),
    C(ops.DIV, "div_same", lambda L, a, b: a / b, normal(3, 4), nonzero(3, 4)),
    C(ops.DIV, "div_bcast_31_4", lambda L, a, b: a / b, normal(3, 1), nonzero(4)),
    C(ops.DIV, "div_bcast_rev", lambda L, a, b: L.div(a, b), normal(4), nonzero(3, 1)),
    C(ops.DIV, "div_0d", lambda L, a, b: a / b, normal(2, 3), nonzero()),
    C(ops.DIV, "div_b_only", lambda L, a, b: a / b, normal(3, 4), nonzero(4), req=[False, True]),
    C(ops.DIV, "div_f32", lambda L, a, b: a / b, normal(3, 4), nonzero(4), **F32),
    C(ops.POW, "pow_same", lambda L, a, b: a ** b, positive(3, 4), normal(3, 4)),
    C(ops.POW, "pow_bcast_31_4", lambda L, a, b: L.pow(a, b), positive(3, 1), normal(4)),
    C(ops.POW, "pow_bcast_rev", lambda L, a, b: a ** b, positive(4), normal(3, 1)),
    C(ops.POW, "pow_0d_exp", lambda L, a, b: a ** b, positive(2, 3), normal()),
    C(ops.POW, "pow_exp_only", lambda L, a, b: a ** b, positive(3), normal(3), req=[False, True]),

    # -- tensor with a Python scalar -------------------------------------------
    C(ops.AFFINE_ADD, "x_plus_2", lambda L, x: x + 2, normal(3, 4)),
    C(ops.AFFINE_ADD, "2_plus_x", lambda L, x: 2 + x, normal(3, 4)),
    C(ops.AFFINE_ADD, "add_fn_scalar", lambda L, x: L.add(x, 2.5), normal(5)),
    C(ops.AFFINE_ADD, "0d_plus_scalar", lambda L, x: x + 1.5, normal()),
    C(ops.AFFINE_SUB, "x_minus_2", lambda L, x: x - 2, normal(3, 4)),
    C(ops.AFFINE_SUB, "sub_method_scalar", lambda L, x: x.sub(1.5), normal(2, 2)),
    C(ops.AFFINE_RSUB, "2_minus_x", lambda L, x: 2 - x, normal(3, 4)),
    C(ops.AFFINE_RSUB, "rsub_0d", lambda L, x: 0.5 - x, normal()),
    C(ops.AFFINE_MUL, "x_times_2", lambda L, x: x * 2, normal(3, 4)),
    C(ops.AFFINE_MUL, "2_times_x", lambda L, x: 2 * x, normal(3, 4)),
    C(ops.AFFINE_MUL, "mul_fn_neg_scalar", lambda L, x: L.mul(x, -0.75), normal(4)),
    C(ops.AFFINE_MUL, "x_times_2_f32", lambda L, x: x * 2, normal(3, 4), **F32),
    C(ops.NEG, "neg_op", lambda L, x: -x, normal(3, 4)),
    C(ops.NEG, "neg_method", lambda L, x: x.neg(), normal()),
    C(ops.NEG, "neg_fn", lambda L, x: L.neg(x), normal(2, 3)),
    C(ops.DIVS, "x_div_2", lambda L, x: x / 2, normal(3, 4)),
    C(ops.DIVS, "div_fn_scalar", lambda L, x: L.div(x, -0.4), normal(5)),
    C(ops.POWS, "x_pow_2", lambda L, x: x ** 2, normal(3, 4)),
    C(ops.POWS, "x_pow_3", lambda L, x: x ** 3, normal(5)),
    C(ops.POWS, "x_pow_half", lambda L, x: x ** 0.5, positive(3, 4)),
    C(ops.POWS, "x_pow_neg", lambda L, x: L.pow(x, -1.5), positive(4)),
    C(ops.POWS, "x_pow_0", lambda L, x: x ** 0, normal(3)),
    C(ops.POWS, "x_pow_2_f32", lambda L, x: x ** 2, normal(3, 4), **F32),
    C(ops.RPOWS, "2_pow_x", lambda L, x: 2 ** x, normal(3, 4)),
    C(ops.RPOWS, "half_pow_x", lambda L, x: 0.5 ** x, normal(5)),
    C(ops.RDIVS, "2_div_x", lambda L, x: 2 / x, nonzero(3, 4)),
    C(ops.RDIVS, "neg_div_x_0d", lambda L, x: -1.5 / x, nonzero()),

    # -- elementwise unary -----------------------------------------------------
    C(ops.EXP, "exp", lambda L, x: L.exp(x), normal(3, 4)),
    C(ops.EXP, "exp_method_0d", lambda L, x: x.exp(), normal()),
    C(ops.EXP, "exp_f32", lambda L, x: x.exp(), normal(3, 4), **F32),
    C(ops.LOG, "log", lambda L, x: L.log(x), positive(3, 4, lo=0.2, hi=3.0)),
    C(ops.LOG, "log_method", lambda L, x: x.log(), positive(5)),
    C(ops.SQRT, "sqrt", lambda L, x: L.sqrt(x), positive(3, 4, lo=0.2, hi=3.0)),
    C(ops.SQRT, "sqrt_method_0d", lambda L, x: x.sqrt(), positive()),
    C(ops.TANH, "tanh", lambda L, x: L.tanh(x), normal(3, 4)),
    C(ops.TANH, "tanh_method", lambda L, x: x.tanh(), normal(2, 3, 2)),
    C(ops.TANH, "tanh_f32", lambda L, x: x.tanh(), normal(3, 4), **F32),
    C(ops.SIGMOID, "sigmoid", lambda L, x: L.sigmoid(x), normal(3, 4)),
    C(ops.SIGMOID, "sigmoid_f32", lambda L, x: x.sigmoid(), normal(6), **F32),
    C(ops.RELU, "relu", lambda L, x: L.relu(x), nonzero(3, 4)),
    C(ops.RELU, "relu_method", lambda L, x: x.relu(), nonzero(7)),
    C(ops.ABS, "abs", lambda L, x: L.abs(x), nonzero(3, 4)),
    C(ops.ABS, "abs_builtin", lambda L, x: abs(x), nonzero(5)),
    C(ops.SIGN, "sign", lambda L, x: L.sign(x), nonzero(3, 4)),

    C(ops.SIN, "sin", lambda L, x: L.sin(x), normal(3, 4)),
    C(ops.SIN, "sin_method_0d", lambda L, x: x.sin(), normal()),
    C(ops.COS, "cos", lambda L, x: L.cos(x), normal(3, 4)),
    C(ops.COS, "cos_method_f32", lambda L, x: x.cos(), normal(5), **F32),
    C(ops.TAN, "tan", lambda L, x: L.tan(x), lambda rng: rng.uniform(-1.2, 1.2, (3, 4))),
    C(ops.LOG1P, "log1p", lambda L, x: L.log1p(x), positive(3, 4, lo=-0.5, hi=2.0)),
    C(ops.LOG1P, "log1p_method", lambda L, x: x.log1p(), positive(5, lo=0.0, hi=1.0)),
    C(ops.EXPM1, "expm1", lambda L, x: L.expm1(x), normal(3, 4)),
    C(ops.ERF, "erf", lambda L, x: L.erf(x), normal(3, 4)),
    C(ops.ATAN, "atan", lambda L, x: L.atan(x), normal(3, 4)),
    C(ops.ATAN, "arctan_f32", lambda L, x: x.arctan(), normal(5), **F32),
    C(ops.ASIN, "asin", lambda L, x: L.asin(x), lambda rng: rng.uniform(-0.9, 0.9, (3, 4))),
    C(ops.ACOS, "acos_method", lambda L, x: x.acos(), lambda rng: rng.uniform(-0.9, 0.9, 6)),
    C(ops.SINH, "sinh", lambda L, x: L.sinh(x), normal(3, 4)),
    C(ops.COSH, "cosh", lambda L, x: L.cosh(x), normal(3, 4)),
    C(ops.COSH, "cosh_f32", lambda L, x: x.cosh(), normal(5), **F32),
    C(ops.ASINH, "asinh", lambda L, x: L.asinh(x), normal(3, 4)),
    C(ops.ACOSH, "acosh", lambda L, x: L.acosh(x), positive(3, 4, lo=1.2, hi=4.0)),
    C(ops.ATANH, "atanh_method", lambda L, x: x.atanh(), lambda rng: rng.uniform(-0.9, 0.9, 7)),
    C(ops.FLOOR, "floor", lambda L, x: L.floor(x * 3.0), normal(3, 4)),
    C(ops.CEIL, "ceil_method", lambda L, x: x.ceil(), normal(3, 4)),
    C(ops.ROUND, "round", lambda L, x: L.round(x * 3.0), normal(3, 4)),
    C(ops.TRUNC, "trunc", lambda L, x: L.trunc(x * 3.0), normal(3, 4)),
    C(ops.RECIP, "reciprocal", lambda L, x: L.reciprocal(x), nonzero(3, 4)),
    C(ops.RECIP, "reciprocal_method", lambda L, x: x.reciprocal(), nonzero()),
    C(ops.CLAMP, "clamp_both", lambda L, x: L.clamp(x, -0.5, 0.5), normal(4, 5)),
    C(ops.CLAMP, "clamp_min", lambda L, x: x.clamp(min=0.1), normal(4, 5)),
    C(ops.CLAMP, "clip_max", lambda L, x: L.clip(x, max=0.2), normal(6)),
    C(ops.MAXIMUM, "maximum", lambda L, a, b: L.maximum(a, b), normal(3, 4), normal(3, 4)),
    C(ops.MAXIMUM, "maximum_bcast", lambda L, a, b: a.maximum(b), normal(3, 1), normal(4)),
    C(ops.MAXIMUM, "maximum_b_const", lambda L, a, b: L.maximum(a, b), normal(3, 4), normal(4),
      req=[True, False]),
    C(ops.MINIMUM, "minimum", lambda L, a, b: L.minimum(a, b), normal(3, 4), normal(3, 4)),
    C(ops.MINIMUM, "minimum_bcast", lambda L, a, b: L.minimum(a, b), normal(4), normal(3, 1)),
    C(ops.WHERE, "where", lambda L, a, b: L.where(a > 0, a, b), normal(3, 4), normal(3, 4)),
    C(ops.REMAINDER, "remainder", lambda L, a, b: a % b, lambda rng: rng.uniform(-5, 5, (3, 4)),
      nonzero(3, 4, lo=1.1)),
    C(ops.REMAINDER, "remainder_bcast_f32", lambda L, a, b: L.remainder(a, b),
      lambda rng: rng.uniform(-5, 5, (3, 4)), nonzero(4, lo=1.1), **F32),
    C(ops.REMAINDER_S, "remainder_number", lambda L, a: a % 1.5,
      lambda rng: rng.uniform(-5, 5, (3, 4))),
    C(ops.FMOD, "fmod", lambda L, a, b: L.fmod(a, b), lambda rng: rng.uniform(-5, 5, (3, 4)),
      nonzero(3, 1, lo=1.1)),
    C(ops.FMOD_S, "fmod_number_method", lambda L, a: a.fmod(-1.5),
      lambda rng: rng.uniform(-5, 5, 6)),
    C(ops.WHERE, "where_bcast", lambda L, a, b: L.where(b > 0.2, a, b), normal(3, 1),
      normal(4)),
    C(ops.WHERE, "where_scalar_other", lambda L, a, b: L.where(a > b, a, 0.0),
      normal(3, 4), normal(4), req=[True, False]),
    C(ops.WHERE, "where_method", lambda L, a, b: a.where(b < 0, b), normal(3, 4), normal(3, 4)),

    # -- reductions ------------------------------------------------------------
    C(ops.SUM, "sum_all", lambda L, x: x.sum(), normal(3, 4)),
    C(ops.SUM, "sum_fn_3d", lambda L, x: L.sum(x), normal(2, 3, 4)),
    C(ops.SUM, "sum_0d", lambda L, x: x.sum(), normal()),
    C(ops.SUM, "sum_all_f32", lambda L, x: x.sum(), normal(3, 4), **F32),
    C(ops.SUM_DIM, "sum_dim0", lambda L, x: x.sum(0), normal(3, 4)),
    C(ops.SUM_DIM, "sum_dim_neg", lambda L, x: x.sum(-1), normal(2, 3, 4)),
    C(ops.SUM_DIM, "sum_dim_mid", lambda L, x: L.sum(x, 1), normal(2, 3, 4)),
    C(ops.SUM_DIM, "sum_dims_tuple", lambda L, x: x.sum((0, 2)), normal(2, 3, 4)),
    C(ops.SUM_DIM, "sum_keepdim", lambda L, x: x.sum(1, keepdim=True), normal(3, 4)),
    C(ops.SUM_DIM, "sum_tuple_keepdim", lambda L, x: x.sum(dim=(0, 1), keepdim=True),
      normal(2, 3, 4)),
    C(ops.SUM_DIM, "sum_dim_f32", lambda L, x: x.sum(0), normal(3, 4), **F32),
    C(ops.MEAN, "mean_all", lambda L, x: x.mean(), normal(3, 4)),
    C(ops.MEAN, "mean_fn_0d", lambda L, x: L.mean(x), normal()),
    C(ops.MEAN_DIM, "mean_dim1", lambda L, x: x.mean(1), normal(3, 4)),
    C(ops.MEAN_DIM, "mean_dims_keepdim", lambda L, x: x.mean((0, 2), keepdim=True),
      normal(2, 3, 4)),
    C(ops.MEAN_DIM, "mean_dim_neg_keepdim", lambda L, x: L.mean(x, -1, keepdim=True),
      normal(2, 5)),

    C(ops.AMAX, "amax_dim", lambda L, x: L.amax(x, 1), normal(3, 4)),
    C(ops.AMAX, "amax_dims_keepdim", lambda L, x: x.amax((0, 2), keepdim=True),
      normal(2, 3, 4)),
    C(ops.AMAX, "amax_all", lambda L, x: L.amax(x), normal(3, 4)),
    C(ops.AMIN, "amin_dim", lambda L, x: L.amin(x, 0), normal(3, 4)),
    C(ops.AMIN, "amin_neg_dim", lambda L, x: x.amin(-1, keepdim=True), normal(2, 5)),
    C(ops.MAX_ALL, "max_all", lambda L, x: L.max(x), normal(3, 4)),
    C(ops.MAX_ALL, "max_all_method", lambda L, x: x.max(), normal(5)),
    C(ops.MIN_ALL, "min_all", lambda L, x: L.min(x), normal(3, 4)),
    C(ops.SORT, "sort_values", lambda L, x: L.sort(x, 1).values, normal(3, 4)),
    C(ops.SORT, "sort_descending_dim0", lambda L, x: x.sort(0, descending=True)[0],
      normal(4, 3)),
    # (PyTorch's topk leaves the order of ties open; tapegrad's keeps them in index
    # order, as the stable sort that PyTorch is compared through)
    C(ops.TOPK, "topk_values", lambda L, x: L.topk(x, 2).values, normal(3, 5),
      torch_fn=lambda L, x: L.sort(x, dim=1, descending=True, stable=True)[0][:, :2]),
    C(ops.TOPK, "topk_smallest", lambda L, x: x.topk(2, 0, largest=False)[0], normal(4, 3),
      torch_fn=lambda L, x: L.sort(x, dim=0, stable=True)[0][:2]),
    C(ops.MAX_DIM, "max_dim_values", lambda L, x: L.max(x, 1).values, normal(3, 4)),
    C(ops.MAX_DIM, "max_dim_keepdim", lambda L, x: x.max(dim=0, keepdim=True)[0],
      normal(3, 4)),
    C(ops.MAX_DIM, "max_dim_3d", lambda L, x: L.max(x, -1)[0], normal(2, 3, 4)),
    C(ops.MIN_DIM, "min_dim_values", lambda L, x: L.min(x, 0).values, normal(3, 4)),
    C(ops.MIN_DIM, "min_dim_keepdim", lambda L, x: x.min(1, keepdim=True)[0], normal(3, 4)),
    C(ops.PROD, "prod_all", lambda L, x: L.prod(x), nonzero(2, 3)),
    C(ops.PROD, "prod_all_method_0d", lambda L, x: x.prod(), nonzero()),
    C(ops.PROD_DIM, "prod_dim", lambda L, x: L.prod(x, 1), nonzero(3, 4)),
    C(ops.PROD_DIM, "prod_dim_keepdim", lambda L, x: x.prod(0, keepdim=True), nonzero(3, 4)),
    C(ops.SOFTMAX, "softmax_last", lambda L, x: L.softmax(x, -1), normal(3, 4)),
    C(ops.SOFTMAX, "softmax_dim0", lambda L, x: x.softmax(0), normal(3, 4)),
    C(ops.SOFTMAX, "softmax_mid_3d", lambda L, x: L.softmax(x, 1), normal(2, 3, 4)),
    C(ops.SOFTMAX, "softmax_f32", lambda L, x: L.softmax(x, 1), normal(3, 4), **F32),
    C(ops.LAYER_NORM, "layer_norm_affine",
      lambda L, x, w, b: L.nn.functional.layer_norm(x, (4,), w, b), normal(3, 4), normal(4),
      normal(4)),
    C(ops.LAYER_NORM, "layer_norm_2d_shape",
      lambda L, x: L.nn.functional.layer_norm(x, (3, 4)), normal(2, 3, 4)),
    C(ops.LAYER_NORM, "layer_norm_f32",
      lambda L, x, w: L.nn.functional.layer_norm(x, (4,), w), normal(3, 4), normal(4), **F32),
    C(ops.BATCH_NORM, "batch_norm_train_affine",
      lambda L, x, w, b: L.nn.functional.batch_norm(x, None, None, w, b, training=True),
      normal(4, 3, 5), normal(3), normal(3)),
    C(ops.BATCH_NORM, "batch_norm_train_2d",
      lambda L, x: L.nn.functional.batch_norm(x, None, None, training=True), normal(6, 3)),
    C(ops.BATCH_NORM, "batch_norm_train_f32",
      lambda L, x, w: L.nn.functional.batch_norm(x, None, None, w, training=True),
      normal(2, 3, 2, 2), normal(3), **F32),
    C(ops.LOG_SOFTMAX, "log_softmax_last", lambda L, x: L.log_softmax(x, -1), normal(3, 4)),
    C(ops.LOG_SOFTMAX, "log_softmax_dim0_3d", lambda L, x: x.log_softmax(0), normal(2, 3, 4)),

    # -- same-order shape ops --------------------------------------------------
    C(ops.VIEW, "view_2d", lambda L, x: x.view(4, 3), normal(3, 4)),
    C(ops.VIEW, "view_infer", lambda L, x: x.view(2, -1, 2), normal(3, 4)),
    C(ops.VIEW, "view_fn_flat", lambda L, x: L.view(x, -1) if L is tg else x.view(-1),
      normal(2, 3)),
    C(ops.RESHAPE, "reshape_method", lambda L, x: x.reshape(2, 6), normal(3, 4)),
    C(ops.RESHAPE, "reshape_fn_tuple", lambda L, x: L.reshape(x, (12,)), normal(3, 4)),
    C(ops.RESHAPE, "reshape_0d", lambda L, x: x.reshape(1, 1), normal()),
    C(ops.UNSQUEEZE, "unsqueeze0", lambda L, x: x.unsqueeze(0), normal(3, 4)),
    C(ops.UNSQUEEZE, "unsqueeze_neg", lambda L, x: L.unsqueeze(x, -1), normal(3, 4)),
    C(ops.UNSQUEEZE, "unsqueeze_0d", lambda L, x: x.unsqueeze(0), normal()),
    C(ops.SQUEEZE, "squeeze_all", lambda L, x: x.squeeze(), normal(3, 1, 4, 1)),
    C(ops.SQUEEZE, "squeeze_fn", lambda L, x: L.squeeze(x), normal(1, 5)),
    C(ops.SQUEEZE_DIM, "squeeze_dim", lambda L, x: x.squeeze(1), normal(3, 1, 4)),
    C(ops.SQUEEZE_DIM, "squeeze_dim_neg", lambda L, x: L.squeeze(x, -1), normal(3, 4, 1)),
    C(ops.CLONE, "clone", lambda L, x: x.clone(), normal(3, 4)),
    C(ops.CLONE, "clone_fn_0d", lambda L, x: L.clone(x), normal()),
    C(ops.FLATTEN, "flatten_all", lambda L, x: x.flatten(), normal(2, 3, 4)),
    C(ops.FLATTEN, "flatten_from1", lambda L, x: x.flatten(1), normal(2, 3, 4)),
    C(ops.FLATTEN, "flatten_fn_01", lambda L, x: L.flatten(x, 0, 1), normal(2, 3, 4)),

    # -- strided views ---------------------------------------------------------
    C(ops.PERMUTE, "permute_3d", lambda L, x: x.permute(2, 0, 1), normal(2, 3, 4)),
    C(ops.PERMUTE, "permute_fn_sq", lambda L, x: L.permute(x, (1, 0, 2)), normal(3, 3, 2)),
    C(ops.PERMUTE, "permute_ones", lambda L, x: x.permute(2, 1, 0), normal(2, 1, 3)),
    C(ops.PERMUTE, "dot_T_2d", lambda L, x: x.T, normal(3, 4)),
    C(ops.PERMUTE, "permute_f32", lambda L, x: x.permute(1, 0), normal(3, 4), **F32),
    C(ops.TRANSPOSE, "transpose_01", lambda L, x: x.transpose(0, 1), normal(3, 4)),
    C(ops.TRANSPOSE, "transpose_fn_3d", lambda L, x: L.transpose(x, -1, 0), normal(2, 3, 4)),
    C(ops.T_OP, "t_2d", lambda L, x: x.t(), normal(3, 4)),
    C(ops.T_OP, "t_fn_1d", lambda L, x: L.t(x), normal(4)),
    C(ops.EXPAND, "expand_31", lambda L, x: x.expand(3, 4), normal(3, 1)),
    C(ops.EXPAND, "expand_lead", lambda L, x: x.expand(2, 3, 4), normal(4)),
    C(ops.EXPAND, "expand_minus1", lambda L, x: x.expand(2, -1, 3), normal(4, 1)),
    C(ops.EXPAND, "expand_0d", lambda L, x: x.expand(2, 3), normal()),
    C(ops.EXPAND, "broadcast_to", lambda L, x: L.broadcast_to(x, (2, 3, 4)), normal(3, 1)),
    C(ops.SELECT, "index_1", lambda L, x: x[1], normal(3, 4)),
    C(ops.SELECT, "index_neg1", lambda L, x: x[-1], normal(3, 4)),
    C(ops.SELECT, "index_2ints", lambda L, x: x[1, 2], normal(3, 4)),
    C(ops.SELECT, "index_3d", lambda L, x: x[0, -1], normal(2, 3, 4)),
    C(ops.SLICE, "slice_cols", lambda L, x: x[:, 1:3], normal(3, 4)),
    C(ops.SLICE, "slice_none_ellipsis_step", lambda L, x: x[None, ..., ::2], normal(3, 4)),
    C(ops.SLICE, "slice_rows", lambda L, x: x[1:, :-1], normal(3, 4)),
    C(ops.SLICE, "slice_int_and_slice", lambda L, x: x[:, 1], normal(3, 4)),
    C(ops.SLICE, "slice_3d_step", lambda L, x: x[1:, ::2, 1::2], normal(3, 4, 5)),

    C(ops.GATHER, "index_list", lambda L, x: x[[0, 2]], normal(3, 4)),
    C(ops.GATHER, "index_tensor_repeated", lambda L, x: x[L.tensor([2, 0, 2, 2])], normal(4, 3)),
    C(ops.GATHER, "index_cols_list", lambda L, x: x[:, [1, 3, 1]], normal(3, 4)),
    C(ops.GATHER, "index_2_arrays", lambda L, x: x[[0, 1, 2], [3, 0, 3]], normal(3, 4)),
    C(ops.GATHER, "index_bool_mask", lambda L, x: x[x > 0.1], nonzero(3, 4)),
    C(ops.SCATTER, "scatter_flat",
      lambda L, x: ops.scatter_flat(x, np.array([4, 0, 4, 2, 5]), (2, 3)),
      normal(5),
      torch_fn=lambda L, x: L.zeros(6, dtype=x.dtype).index_add(
          0, L.tensor([4, 0, 4, 2, 5]), x).reshape(2, 3)),
    C(ops.SETIDX, "setitem_int", lambda L, a, b: _setitem(a * 1.0, 1, b), normal(3, 4),
      normal(4)),
    C(ops.SETIDX, "setitem_list_bcast", lambda L, a, b: _setitem(a * 1.0, [0, 2], b),
      normal(3, 4), normal(4)),
    C(ops.SETIDX, "setitem_slice_value_const",
      lambda L, a, b: _setitem(a * 2.0, (slice(None), slice(1, 3)), b), normal(3, 4),
      normal(3, 2), req=[True, False]),
    C(ops.SETIDX, "setitem_mask_scalar", lambda L, a: _setitem(a * 2.0, a < 0, 0.5),
      nonzero(3, 4)),
    C(ops.SETIDX, "setitem_only_value", lambda L, a, b: _setitem(a.clone(), [2, 0], b),
      normal(4), normal(2), req=[False, True]),

    # -- matrix products -------------------------------------------------------
    C(ops.MM, "matmul_2d_2d", lambda L, a, b: a @ b, normal(3, 4), normal(4, 5)),
    C(ops.LINEAR, "linear", lambda L, x, w, b: L.nn.functional.linear(x, w, b), normal(5, 3),
      normal(4, 3), normal(4)),
    C(ops.LINEAR, "linear_batched_no_bias", lambda L, x, w: L.nn.functional.linear(x, w),
      normal(2, 5, 3), normal(4, 3)),
    C(ops.LINEAR, "linear_bias_broadcast", lambda L, x, w, b: L.nn.functional.linear(x, w, b),
      normal(5, 3), normal(4, 3), normal(1)),
    C(ops.MM, "mm_fn", lambda L, a, b: L.mm(a, b), normal(2, 3), normal(3, 2)),
    C(ops.MM, "matmul_fn_b_const", lambda L, a, b: L.matmul(a, b), normal(3, 4), normal(4, 2),
      req=[True, False]),
    C(ops.MM, "matmul_a_const", lambda L, a, b: a.matmul(b), normal(3, 4), normal(4, 2),
      req=[False, True]),
    C(ops.MM, "outer", lambda L, a, b: L.outer(a, b), normal(3), normal(4)),
    C(ops.MM, "matmul_f32", lambda L, a, b: a @ b, normal(3, 4), normal(4, 5), **F32),
    C(ops.VM, "matmul_1d_2d", lambda L, a, b: a @ b, normal(4), normal(4, 3)),
    C(ops.VM, "matmul_1d_2d_a_const", lambda L, a, b: a @ b, normal(4), normal(4, 3),
      req=[False, True]),
    C(ops.MV, "matmul_2d_1d", lambda L, a, b: L.matmul(a, b), normal(3, 4), normal(4)),
    C(ops.MV, "matmul_2d_1d_b_const", lambda L, a, b: a @ b, normal(3, 4), normal(4),
      req=[True, False]),
    C(ops.DOT, "matmul_1d_1d", lambda L, a, b: a @ b, normal(5), normal(5)),
    C(ops.DOT, "matmul_fn_1d_1d", lambda L, a, b: L.matmul(a, b), normal(3), normal(3),
      req=[False, True]),

    C(ops.BMM, "bmm", lambda L, a, b: L.bmm(a, b), normal(2, 3, 4), normal(2, 4, 5)),
    C(ops.BMM, "matmul_3d_2d_bcast", lambda L, a, b: a @ b, normal(2, 3, 4), normal(4, 2)),
    C(ops.BMM, "matmul_2d_3d_bcast", lambda L, a, b: L.matmul(a, b), normal(3, 4),
      normal(2, 4, 2)),
    C(ops.BMM, "matmul_batch_bcast", lambda L, a, b: a @ b, normal(2, 1, 3, 4),
      normal(3, 4, 2)),
    C(ops.BMM, "bmm_b_const", lambda L, a, b: a.bmm(b), normal(2, 3, 4), normal(2, 4, 2),
      req=[True, False]),
    C(ops.BMM, "bmm_f32", lambda L, a, b: L.bmm(a, b), normal(2, 3, 4), normal(2, 4, 5), **F32),

    # -- joining and splitting -------------------------------------------------
    C(ops.CAT, "cat_dim0", lambda L, a, b: L.cat([a, b], 0), normal(2, 3), normal(4, 3)),
    C(ops.CAT, "cat_dim1_three", lambda L, a, b, c: L.cat((a, b, c), dim=1), normal(2, 3),
      normal(2, 1), normal(2, 2)),
    C(ops.CAT, "cat_one_const", lambda L, a, b: L.cat([a, b], -1), normal(2, 3), normal(2, 2),
      req=[False, True]),
    C(ops.CAT, "cat_same_tensor_twice", lambda L, a: L.cat([a, a * 2, a], 0), normal(2, 3)),
    C(ops.CAT, "stack", lambda L, a, b: L.stack([a, b]), normal(2, 3), normal(2, 3)),
    C(ops.CAT, "stack_dim_last", lambda L, a, b: L.stack([a, b], dim=-1), normal(3),
      normal(3)),
    C(ops.SPLIT, "split_size", lambda L, x: L.split(x, 2)[1], normal(5, 3)),
    C(ops.SPLIT, "split_sections_dim1", lambda L, x: x.split([1, 3], dim=1)[1], normal(3, 4)),
    C(ops.SPLIT, "chunk_first", lambda L, x: x.chunk(3, 1)[0], normal(3, 6)),
    C(ops.SPLIT, "chunk_last", lambda L, x: L.chunk(x, 2)[-1], normal(5, 2)),

    # -- user Functions (autograd.Function) -------------------------------------
    # (finite differences on the recorded path: see test_function_apply_without_grad)
    C(ops.PYFN, "function_one_output", lambda L, x, y: fn_classes(L)[0].apply(x, y),
      normal(3, 2), normal(3, 2), name="CubeBackward", fd_tracked=True),
    # backward returns a broadcast (3, 2) gradient for y (2,): PyTorch sums it to y's shape
    C(ops.PYFN, "function_broadcast_grad", lambda L, x, y: fn_classes(L)[0].apply(x, y),
      normal(3, 2), normal(2), name="CubeBackward", fd_tracked=True),
    C(ops.PYFN, "function_one_output_const", lambda L, x, y: fn_classes(L)[0].apply(x, y),
      normal(4), normal(4), req=[True, False], name="CubeBackward", fd_tracked=True),
    C(ops.PYFN, "function_first_of_two", lambda L, x: fn_classes(L)[1].apply(x)[0],
      normal(3, 2), name="TwoBackward", fd_tracked=True),
    C(ops.PYOUT, "function_second_of_two", lambda L, x: fn_classes(L)[1].apply(x)[1],
      normal(3, 2), name="TwoBackward", fd_tracked=True),

    # -- dtype conversion ------------------------------------------------------
    C(ops.CAST, "double_from_f32", lambda L, x: x.double(), normal(3, 4), **F32),
    C(ops.CAST, "to_float64_from_f32", lambda L, x: x.to(L.float64), normal(5), **F32),
    C(ops.CAST, "float_from_f64", lambda L, x: x.float(), normal(3, 4), fd_eps=1e-2),
]

_FN_CLASSES = {}


def fn_classes(L):
    """Two user Functions, written once for tapegrad and once for torch."""
    if L.__name__ not in _FN_CLASSES:
        class Cube(L.autograd.Function):
            @staticmethod
            def forward(ctx, x, y):
                ctx.save_for_backward(x, y)
                return x * x * y

            @staticmethod
            def backward(ctx, g):
                x, y = ctx.saved_tensors
                return g * 2 * x * y, g * x * x

        class Two(L.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x.exp(), x * 3

            @staticmethod
            def backward(ctx, ga, gb):
                (x,) = ctx.saved_tensors
                return ga * x.exp() + gb * 3

        _FN_CLASSES[L.__name__] = (Cube, Two)
    return _FN_CLASSES[L.__name__]


def _setitem(t, key, value):
    """``t[key] = value`` as an expression (works for tapegrad and torch tensors)."""
    t[key] = value
    return t


TESTED = [e for e in ops.ENTRIES if e.name not in BOOKKEEPING]


def test_every_op_entry_has_a_gradient_case():
    covered = {id(c.op) for c in CASES}
    missing = [f"{e.index}:{e.name}" for e in TESTED if id(e) not in covered]
    assert not missing, f"op-table entries without a gradient test case: {missing}"


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def entry_of(t):
    """The op-table entry of the tape row that holds tensor t (its grad_fn may be a node
    shared by several outputs, e.g. of a user Function)."""
    assert t.grad_fn is not None, "result has no grad_fn"
    return ops.ENTRIES[int(t._tape.T[t._row, K.NM])]


def _tolerances(case):
    if case.dtype == np.float32 or case.fd_eps > 1e-6:
        return dict(rtol=2e-4, atol=2e-5)
    return dict(rtol=1e-5, atol=1e-7)


def _run_tapegrad(case, arrays, up, mode):
    xs = [tg.tensor(a, requires_grad=r) for a, r in zip(arrays, case.req)]
    # "nonleaf" modes feed the op clones of the leaves, so that its inputs are op
    # results (rows whose values only the op's own saves keep), not user leaves.
    ins = [x.clone() if "nonleaf" in mode and x.requires_grad else x for x in xs]
    out = case.fn(tg, *ins)
    assert entry_of(out) is case.op, \
        f"recorded by {entry_of(out)!r} (index {entry_of(out).index}), expected {case.op!r}"
    assert out.grad_fn.name() == case.name
    assert out.requires_grad and not out.is_leaf
    upt = tg.tensor(up.astype(out._data.dtype))
    if mode.startswith("backward"):
        out.backward(upt)
        grads = [x.grad for x in xs]
    else:
        wanted = [x for x in xs if x.requires_grad]
        got = tg.autograd.grad(out, wanted, grad_outputs=upt, create_graph=True)
        assert len(got) == len(wanted)
        it = iter(got)
        grads = [next(it) if x.requires_grad else None for x in xs]
        for x in xs:
            assert x.grad is None, "autograd.grad must not touch .grad"
    return xs, out, grads


_FD = {}
MODES = ["backward", "create_graph", "backward_nonleaf", "create_graph_nonleaf"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_gradient(case, mode):
    arrays = case.inputs()
    # The upstream gradient: random, of the output's shape.
    if case.fd_tracked:
        probe = case.fn(tg, *[tg.tensor(a, requires_grad=True) for a in arrays])
    else:
        with tg.no_grad():
            probe = case.fn(tg, *[tg.tensor(a) for a in arrays])
    rng = np.random.default_rng(zlib.crc32(case.id.encode()) + 1)
    up = np.asarray(rng.standard_normal(probe.shape), dtype=np.float64)

    xs, out, grads = _run_tapegrad(case, arrays, up, mode)
    tol = _tolerances(case)

    # Finite differences, always in float64 (shared by the four modes of a case).
    if case.id not in _FD:
        _FD[case.id] = numeric_grads(lambda *t: case.fn(tg, *t),
                                     [a.astype(np.float64) for a in arrays], up,
                                     eps=case.fd_eps, tracked=case.fd_tracked)
    fd = _FD[case.id]
    for i, (x, g) in enumerate(zip(xs, grads)):
        if not case.req[i]:
            assert g is None, f"input {i} does not require grad but got a gradient"
            continue
        assert g is not None, f"input {i}: no gradient"
        assert tuple(g.shape) == tuple(x.shape), f"input {i}: grad shape {g.shape}"
        assert g.dtype == x.dtype, f"input {i}: grad dtype {g.dtype} != {x.dtype}"
        assert_close(g, fd[i], what=f"{case.id} input {i} vs finite differences", **tol)

    if has_torch():
        import torch
        ts = [torch.from_numpy(a.copy()).requires_grad_(r) for a, r in zip(arrays, case.req)]
        tout = case.torch_fn(torch, *ts)
        assert tuple(out.shape) == tuple(tout.shape), "forward shape differs from torch"
        assert str(out.dtype).split(".")[-1] == str(tout.dtype).split(".")[-1]
        assert_close(out, tout, what=f"{case.id} forward vs torch", **tol)
        tup = up.astype(np.float32 if tout.dtype == torch.float32 else np.float64)
        tout.backward(torch.from_numpy(tup))
        for i, (t, g) in enumerate(zip(ts, grads)):
            if case.req[i]:
                assert_close(g, t.grad, what=f"{case.id} input {i} vs torch", **tol)


@pytest.mark.parametrize("case", [c for c in CASES if c.op in (ops.MUL, ops.MM, ops.SUM_DIM)
                                  and c.dtype == np.float64][:4], ids=lambda c: c.id)
def test_op_gradient_retain_graph_twice_accumulates(case):
    """A retained graph replayed twice doubles every leaf gradient."""
    arrays = case.inputs()
    xs = [tg.tensor(a, requires_grad=r) for a, r in zip(arrays, case.req)]
    out = case.fn(tg, *xs)
    up = tg.ones(*out.shape, dtype=tg.float64)
    out.backward(up, retain_graph=True)
    first = [None if x.grad is None else to_np(x.grad).copy() for x in xs]
    out.backward(up)
    for x, g1 in zip(xs, first):
        if g1 is not None:
            assert_close(x.grad, 2 * g1, what="second backward accumulates")


# ---------------------------------------------------------------------------
# Kinks: compared with PyTorch's conventions (gradient 0 at 0 for relu and abs)
def test_function_apply_without_grad():
    """A user Function called where nothing is recorded (no_grad, or no input needing
    grad) returns its forward result, as in PyTorch."""
    Cube, Two = fn_classes(tg)
    x = tg.tensor([1.0, 2.0, 3.0])
    y = tg.tensor([2.0, 2.0, 2.0])
    assert_close(Cube.apply(x, y), [2.0, 8.0, 18.0])
    with tg.no_grad():
        out = Cube.apply(tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([1.0, 1.0]))
    assert_close(out, [1.0, 4.0])
    assert not out.requires_grad
    a, b = Two.apply(x)
    assert_close(b, [3.0, 6.0, 9.0])


def test_function_second_output_alone_carries_gradient(torch):
    """Only the second output of a two-output Function reaches the loss."""
    data = np.array([0.5, -1.0])
    for L, make in ((tg, lambda: tg.tensor(data, requires_grad=True)),
                    (torch, lambda: torch.from_numpy(data.copy()).requires_grad_())):
        x = make()
        a, b = fn_classes(L)[1].apply(x)
        (b * b).sum().backward()
        assert x.grad is not None, f"{L.__name__}: no gradient through the second output"
        assert_close(x.grad, 18 * data)


TIES = {
    "amax_all": lambda L, x: L.amax(x),
    "amax_dim": lambda L, x: L.amax(x, 1),
    "amin_dim_keepdim": lambda L, x: L.amin(x, 0, keepdim=True),
    "max_all": lambda L, x: L.max(x),
    "min_all": lambda L, x: L.min(x),
    "max_dim": lambda L, x: L.max(x, 1).values,
    "min_dim": lambda L, x: L.min(x, 0)[0],
    "maximum_self": lambda L, x: L.maximum(x, x.flip(1)),
    "minimum_const": lambda L, x: L.minimum(x, L.ones(4, dtype=x.dtype)),
    "clamp_at_bounds": lambda L, x: L.clamp(x, -1.0, 1.0),
    "prod_with_zero": lambda L, x: L.prod(x, 1),
    "prod_all_with_zero": lambda L, x: L.prod(x[0]),
    "prod_two_zeros": lambda L, x: L.prod(x[2]),
    "norm_inf": lambda L, x: L.amax(L.abs(x)),
}
TIE_DATA = np.array([[1.0, 3.0, 3.0, -1.0],
                     [2.0, 2.0, 0.0, 2.0],
                     [0.0, 1.0, 0.0, 3.0]])


@pytest.mark.parametrize("name", list(TIES))
@pytest.mark.parametrize("mode", ["backward", "create_graph"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # 0/0 inside NumPy
def test_ties_and_zeros_match_torch(name, mode, torch):
    """Ties split the gradient, and zeros in prod, exactly as PyTorch does."""
    fn = TIES[name]
    x = tg.tensor(TIE_DATA, requires_grad=True)
    tx = torch.from_numpy(TIE_DATA.copy()).requires_grad_()
    y = fn(tg, x)
    ty = fn(torch, tx)
    assert_close(y, ty)
    w = np.arange(1.0, 1.0 + ty.numel()).reshape(tuple(ty.shape))
    (tg_,) = torch.autograd.grad(ty, tx, grad_outputs=torch.from_numpy(w))
    if mode == "backward":
        y.backward(tg.tensor(w))
        g = x.grad
    else:
        (g,) = tg.autograd.grad(y, x, grad_outputs=tg.tensor(w), create_graph=True)
    assert_close(g, tg_, what=name)


def test_relu_abs_gradient_at_zero(torch):
    data = np.array([-1.0, 0.0, 2.0, 0.0])
    for name in ("relu", "abs"):
        x = tg.tensor(data, requires_grad=True)
        getattr(tg, name)(x).sum().backward()
        tx = torch.from_numpy(data.copy()).requires_grad_()
        getattr(torch, name)(tx).sum().backward()
        assert_close(x.grad, tx.grad, what=name)


def test_pow_gradient_at_zero_base(torch):
    data = np.array([0.0, 1.5, 2.0])
    for p in (2.0, 3.0, 0.5):
        x = tg.tensor(data, requires_grad=True)
        (x ** p).sum().backward()
        tx = torch.from_numpy(data.copy()).requires_grad_()
        (tx ** p).sum().backward()
        assert_close(x.grad, tx.grad, what=f"x**{p} at 0")


def test_sign_is_recorded_with_zero_gradient():
    x = tg.tensor([-2.0, 3.0], requires_grad=True)
    y = (tg.sign(x) * x).sum()
    y.backward()
    assert_close(x.grad, [-1.0, 1.0])


def test_same_tensor_used_twice_in_one_op():
    x = tg.tensor([1.0, -2.0, 3.0], dtype=tg.float64, requires_grad=True)
    (x * x).sum().backward()
    assert_close(x.grad, [2.0, -4.0, 6.0])
    x.grad = None
    (x @ x).backward()
    assert_close(x.grad, [2.0, -4.0, 6.0])
    x.grad = None
    (x / x).sum().backward()
    assert_close(x.grad, [0.0, 0.0, 0.0], atol=1e-12)


def test_cast_gradient_flows_into_float32_leaf(torch):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 2))
    x = tg.tensor(a, requires_grad=True)
    y = (x.double() @ tg.tensor(w)).tanh().sum()
    assert y.dtype == tg.float64
    y.backward()
    assert x.grad.dtype == tg.float32
    tx = torch.from_numpy(a.copy()).requires_grad_()
    (tx.double() @ torch.from_numpy(w)).tanh().sum().backward()
    assert_close(x.grad, tx.grad, rtol=1e-5, atol=1e-6)


def test_mixed_dtype_graph_with_both_arenas(torch):
    """float32 and float64 sub-graphs meeting through casts, several times."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal(5).astype(np.float32)
    b = rng.standard_normal(5)
    x = tg.tensor(a, requires_grad=True)
    y = tg.tensor(b, requires_grad=True)
    z = ((x * 2).double() * y).float().tanh() * x
    z = (z.double() + y.exp()).sum()
    z.backward()
    tx = torch.from_numpy(a.copy()).requires_grad_()
    ty = torch.from_numpy(b.copy()).requires_grad_()
    tz = ((tx * 2).double() * ty).float().tanh() * tx
    (tz.double() + ty.exp()).sum().backward()
    assert_close(x.grad, tx.grad, rtol=1e-5, atol=1e-6)
    assert_close(y.grad, ty.grad, rtol=1e-5, atol=1e-6)


def test_long_chain_matches_torch(torch):
    """Many ops on one tape, with reuse of intermediates (fan-out)."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 3))
    b = rng.standard_normal((3,))

    def f(L, x, w):
        h = x * w
        u = h.tanh() + h.sigmoid() * 2
        v = (u @ w.unsqueeze(1)).squeeze(1)
        s = v.exp().sum() / (1 + (x ** 2).mean()) - u.abs().mean(0).sum()
        return s + (h.T.reshape(-1)[::3] * 0.5).sum() + (x[1:, :2] ** 3).sum()

    x = tg.tensor(a, requires_grad=True)
    w = tg.tensor(b, requires_grad=True)
    out = f(tg, x, w)
    out.backward()
    tx = torch.from_numpy(a.copy()).requires_grad_()
    tw = torch.from_numpy(b.copy()).requires_grad_()
    tout = f(torch, tx, tw)
    tout.backward()
    assert_close(out, tout)
    assert_close(x.grad, tx.grad)
    assert_close(w.grad, tw.grad)


# ---------------------------------------------------------------------------
# Second (and third) derivatives through create_graph=True
SECOND = {
    "cube": (lambda L, x: x ** 3, normal(5)),
    "tanh": (lambda L, x: L.tanh(x), normal(5)),
    "sigmoid": (lambda L, x: L.sigmoid(x), normal(5)),
    "erf": (lambda L, x: L.erf(x), normal(5)),
    "atan_sinh_cosh": (lambda L, x: L.atan(x) * L.sinh(x) + L.cosh(x), normal(5)),
    "asin_acos_atanh": (lambda L, x: L.asin(x) * L.acos(x) + L.atanh(x),
                        lambda rng: rng.uniform(-0.8, 0.8, 5)),
    "asinh_acosh": (lambda L, x: L.asinh(x) * L.acosh(x * x + 1.5), normal(5)),
    "exp_times_tanh": (lambda L, x: L.exp(x) * L.tanh(x), normal(5)),
    "x_sigmoid_x": (lambda L, x: x * L.sigmoid(x), normal(2, 3)),
    "sqrt_log": (lambda L, x: L.sqrt(x) * L.log(x), positive(5)),
    "rational": (lambda L, x: x / (1 + x * x), normal(5)),
    "rdiv_rpow": (lambda L, x: 2 / (1.5 + x * x) + 2 ** x, normal(5)),
    "pow_tensor": (lambda L, x: x ** (x * 0.5 + 1), positive(5)),
    "reductions_views": (lambda L, x: (x.T.reshape(-1).exp() * 0.5).sum() * x.mean(0).sum(),
                         normal(3, 2)),
    "broadcast": (lambda L, x: (x.unsqueeze(1) * x).tanh().sum(0), normal(4)),
    "cast": (lambda L, x: (x.float() ** 3).double().sum(), normal(4)),
}


@pytest.mark.parametrize("name", list(SECOND))
def test_second_derivative_matches_torch(name, torch):
    fn, gen = SECOND[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    a = np.asarray(gen(rng), dtype=np.float64)
    x = tg.tensor(a, requires_grad=True)
    tx = torch.from_numpy(a.copy()).requires_grad_()
    y = fn(tg, x)
    ty = fn(torch, tx)
    v = rng.standard_normal(tuple(y.shape))
    w = rng.standard_normal(a.shape)
    tol = dict(rtol=1e-5, atol=1e-6) if name == "cast" else dict(rtol=1e-7, atol=1e-10)

    (g,) = tg.autograd.grad(y, x, grad_outputs=tg.tensor(v), create_graph=True)
    (tg_,) = torch.autograd.grad(ty, tx, grad_outputs=torch.from_numpy(v), create_graph=True)
    assert g.requires_grad, "create_graph=True must give a differentiable gradient"
    assert_close(g, tg_, what="first derivative", **tol)

    (h,) = tg.autograd.grad(g, x, grad_outputs=tg.tensor(w))
    (th,) = torch.autograd.grad(tg_, tx, grad_outputs=torch.from_numpy(w))
    assert_close(h, th, what="second derivative", **tol)
    assert x.grad is None


def test_cube_second_and_third_derivative_exact():
    x = tg.tensor([-1.5, 0.5, 2.0], dtype=tg.float64, requires_grad=True)
    (g,) = tg.autograd.grad((x ** 3).sum(), x, create_graph=True)
    assert_close(g, 3 * np.array([-1.5, 0.5, 2.0]) ** 2)
    (h,) = tg.autograd.grad(g.sum(), x, create_graph=True)
    assert_close(h, 6 * np.array([-1.5, 0.5, 2.0]))
    (k,) = tg.autograd.grad(h.sum(), x)
    assert_close(k, [6.0, 6.0, 6.0])


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_backward_create_graph_then_backward_again(torch):
    """x.grad from backward(create_graph=True) is differentiable; the second backward
    accumulates onto it, as in PyTorch."""
    a = np.array([0.3, -1.2, 2.0])
    x = tg.tensor(a, requires_grad=True)
    y = (x.tanh() * x ** 2).sum()
    y.backward(create_graph=True)
    assert x.grad.requires_grad
    g = x.grad
    (g ** 2).sum().backward()

    tx = torch.from_numpy(a.copy()).requires_grad_()
    ty = (tx.tanh() * tx ** 2).sum()
    ty.backward(create_graph=True)
    tgr = tx.grad
    (tgr ** 2).sum().backward()
    assert_close(x.grad, tx.grad)


def test_mlp_second_order_matches_torch(torch):
    """A 2-layer tanh MLP: gradient-norm penalty differentiated w.r.t. the weights."""
    rng = np.random.default_rng(11)
    arrays = dict(x=rng.standard_normal((5, 3)), w1=rng.standard_normal((3, 4)) * 0.5,
                  b1=rng.standard_normal(4) * 0.1, w2=rng.standard_normal((4, 2)) * 0.5,
                  b2=rng.standard_normal(2) * 0.1, y=rng.standard_normal((5, 2)))

    def run(L, make):
        p = {k: make(v, k not in ("x", "y")) for k, v in arrays.items()}
        h = L.tanh(p["x"] @ p["w1"] + p["b1"])
        out = h @ p["w2"] + p["b2"]
        loss = ((out - p["y"]) ** 2).mean()
        names = ["w1", "b1", "w2", "b2"]
        grads = (tg if L is tg else torch).autograd.grad(loss, [p[n] for n in names],
                                                         create_graph=True)
        penalty = sum((g * g).sum() for g in grads)
        total = loss + 0.1 * penalty
        total.backward()
        return loss, grads, {n: p[n].grad for n in names}

    loss, grads, pg = run(tg, lambda v, r: tg.tensor(v, requires_grad=r))
    tloss, tgrads, tpg = run(torch, lambda v, r: torch.from_numpy(v.copy()).requires_grad_(r))
    assert_close(loss, tloss)
    for g, tgr in zip(grads, tgrads):
        assert_close(g, tgr, what="first-order grads")
    for n in pg:
        assert_close(pg[n], tpg[n], what=f"second-order grad of {n}")


def test_second_derivative_through_matmul_modes(torch):
    rng = np.random.default_rng(12)
    A = rng.standard_normal((3, 4))
    u = rng.standard_normal(3)
    v = rng.standard_normal(4)

    def f(L, A, u, v):
        return ((u @ A).tanh() @ v) * (A @ v).sigmoid().sum() + L.outer(u, v).mul(A).sum() ** 2

    ts = [tg.tensor(a, requires_grad=True) for a in (A, u, v)]
    tts = [torch.from_numpy(a.copy()).requires_grad_() for a in (A, u, v)]
    gs = tg.autograd.grad(f(tg, *ts), ts, create_graph=True)
    tgs = torch.autograd.grad(f(torch, *tts), tts, create_graph=True)
    sum((g ** 2).sum() for g in gs).backward()
    sum((g ** 2).sum() for g in tgs).backward()
    for t, tt in zip(ts, tts):
        assert_close(t.grad, tt.grad, what="hessian-vector product")


def test_kernel_opcodes_are_unique_and_every_entry_names_one():
    """The interpreter dispatches on these constants: two kernels sharing a number, or an
    entry pointing past the table, would silently run the wrong backward."""
    from tapegrad import _kernels as K
    codes = {name: v for name, v in vars(K).items() if name.startswith("K_")}
    assert sorted(codes.values()) == list(range(K.NKERNELS)), codes
    assert all(0 <= e.kernel < K.NKERNELS for e in ops.ENTRIES)
    assert [e.index for e in ops.ENTRIES] == list(range(len(ops.ENTRIES)))


@pytest.mark.parametrize("shape, index, one_run", [((3,), np.s_[1:], True),
                                                   ((9,), np.s_[2:5], True),
                                                   ((5, 7), np.s_[1:3], True),
                                                   ((4, 3, 2), np.s_[1:, :, :], True),
                                                   ((5, 7), np.s_[:, 2:], False)])
def test_slice_gradients_written_first_then_added(torch, shape, index, one_run):
    """A view of consecutive elements writes its input's gradient when it contributes
    first (zeros around it; -0.0 stays, as PyTorch's slice backward; other views add
    to zeros), and later contributions add to it: equal to PyTorch, eager and compiled."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    g = rng.standard_normal(x[index].shape)
    g.reshape(-1)[::3] = -0.0

    def f(lib, t):
        y = t[index]
        return (y * (lib.tensor(g) if lib is tg else torch.from_numpy(g))).sum() + (t * t).sum()

    t = tg.tensor(x, requires_grad=True)
    t[index].backward(tg.tensor(g))
    tt = torch.from_numpy(x.copy()).requires_grad_()
    tt[index].backward(torch.from_numpy(g))
    got, want = t.grad.numpy(), tt.grad.numpy()
    assert np.array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want)) == one_run
    t2 = tg.tensor(x, requires_grad=True)
    f(tg, t2).backward()
    tt2 = torch.from_numpy(x.copy()).requires_grad_()
    f(torch, tt2).backward()
    np.testing.assert_array_equal(t2.grad.numpy(), tt2.grad.numpy())
    c = tg.compile(lambda a: tg.autograd.grad(f(tg, a), (a,))[0])
    for _ in range(3):
        np.testing.assert_array_equal(c(tg.tensor(x, requires_grad=True)).numpy(),
                                      t2.grad.numpy())
