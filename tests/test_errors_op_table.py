"""Bad inputs for every entry of the op table (``tapegrad.ops.ENTRIES``).

Each case names the Op entries whose public function it calls badly, the call (written
once, for ``L`` = tapegrad or torch), the exception type and a regex for the message
(naming the op). Two tests per case:

- ``test_table_matches_torch``: PyTorch 2.13 raises the declared type for the same call
  (an ``AttributeError`` there counts for ``TypeError``, API.md "Errors").
- ``test_bad_call_changes_nothing``: tapegrad raises that type with that message, the
  tape's row count and all inputs (values, flags, ``.grad``) are unchanged, and a
  backward of the graph recorded before the call gives PyTorch's gradients.

``test_every_op_entry_has_a_bad_input_case`` checks that the table covers the op table.
"""
import collections
import operator
import re

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import ops as O

try:
    from .conftest import tape_rows, to_np
except ImportError:
    from conftest import tape_rows, to_np

torch = pytest.importorskip("torch")

# Entries with no public function of their own: tape bookkeeping and user Functions.
BOOKKEEPING = (O.LEAF, O.EXT, O.PYFN, O.PYOUT)

Case = collections.namedtuple("Case", "cid ops bad exc msg prep")
CASES = []


def case(cid, ops, bad, exc, msg, prep=None):
    """``bad(L, e)`` makes the failing call; ``prep(L, e)`` -> dict of extra tensors the
    call needs, built (and recorded) before the row count is taken."""
    CASES.append(Case(cid, tuple(ops), bad, exc, msg, prep))


def F(L):
    return L.nn.functional


LEAF_MSG = re.escape("a leaf Variable that requires grad is being used in an in-place "
                     "operation.")
OOR = r"(?i)out of range|out of bounds|index"

# -- tensor-with-tensor arithmetic (broadcasting, dtypes, in-place result type) ---------
case("add_bcast", [O.ADD], lambda L, e: e["B1"] + e["m1"], RuntimeError,
     r"^add: .*\(4\).*\(3\)")
case("add_fn_bcast_nonleaf", [O.ADD], lambda L, e: L.add(e["h"], e["b"], alpha=2),
     RuntimeError, r"^add: ")
case("add__int_self_float_other", [O.ADD], lambda L, e: e["i"].add_(e["v"]), RuntimeError,
     r"add")
case("sub_bcast", [O.SUB], lambda L, e: e["h"] - e["b"], RuntimeError, r"^sub: ")
case("sub__bcast_nonleaf", [O.SUB], lambda L, e: e["h"].sub_(e["B1"]), RuntimeError, r"sub")
case("mul_bcast", [O.MUL], lambda L, e: L.mul(e["m1"], e["a"]), RuntimeError, r"^mul: ")
case("mul__result_shape", [O.MUL], lambda L, e: e["h"].mul_(e["big"]), RuntimeError,
     r"output with shape \[3, 2\] doesn't match the broadcast shape \[4, 3, 2\]",
     prep=lambda L, e: {"big": L.ones(4, 3, 2)})
case("div_bcast", [O.DIV], lambda L, e: e["a"] / e["b"], RuntimeError, r"^div: ")
case("div__int_self_float_other", [O.DIV], lambda L, e: e["i"].div_(e["v"]), RuntimeError,
     r"div")
case("pow_bcast", [O.POW], lambda L, e: e["a"] ** e["m1"], RuntimeError, r"^pow: ")
case("pow_fn_bcast", [O.POW], lambda L, e: L.pow(e["b"], e["v"]), RuntimeError, r"^pow: ")

# -- tensor-with-scalar arithmetic --------------------------------------------------------
case("add_none_number", [O.AFFINE_ADD], lambda L, e: L.add(None, 1.0), TypeError, r"add")
case("add_str", [O.AFFINE_ADD], lambda L, e: e["a"] + "x", TypeError, r"add|\+")
case("add_fn_list", [O.AFFINE_ADD], lambda L, e: L.add(e["h"], [1.0, 2.0]), TypeError, r"add")
case("sub_str", [O.AFFINE_SUB], lambda L, e: L.sub(e["a"], "x"), TypeError, r"sub")
case("sub_none", [O.AFFINE_SUB], lambda L, e: e["h"] - None, TypeError, r"sub|-")
case("rsub_str", [O.AFFINE_RSUB], lambda L, e: "x" - e["a"], TypeError, r"sub|-")
case("rsub_none", [O.AFFINE_RSUB], lambda L, e: None - e["h"], TypeError, r"sub|-")
case("rsub_fn_str", [O.AFFINE_RSUB], lambda L, e: L.rsub(e["a"], "x"), TypeError, r"sub")
case("mul_str", [O.AFFINE_MUL], lambda L, e: e["a"] * "x", TypeError, r"mul|\*")
case("mul_fn_list", [O.AFFINE_MUL], lambda L, e: L.mul(e["h"], [1.0, 2.0]), TypeError, r"mul")
case("fill__1d_value", [O.AFFINE_MUL, O.AFFINE_ADD], lambda L, e: e["h"].fill_(e["v"]),
     RuntimeError, r"fill_")
case("neg_bool", [O.NEG], lambda L, e: -e["mask"], RuntimeError, r"(?i)negation")
case("neg_str", [O.NEG], lambda L, e: L.neg("x"), TypeError, r"neg")
case("div_scalar_str", [O.DIVS], lambda L, e: e["a"] / "x", TypeError, r"div|/")
case("div_fn_none", [O.DIVS], lambda L, e: L.div(e["h"], None), TypeError, r"div")
case("pow_int_negative_int", [O.POWS], lambda L, e: e["i"] ** -1, RuntimeError,
     r"(?i)pow.*integers to negative integer powers")
case("pow_scalar_str", [O.POWS], lambda L, e: e["a"] ** "x", TypeError, r"pow|\*\*")
case("rpow_str", [O.RPOWS], lambda L, e: "x" ** e["a"], TypeError, r"pow|\*\*")
case("rpow_fn_str_base", [O.RPOWS], lambda L, e: L.pow("x", e["a"]), TypeError, r"pow")
case("rdiv_str", [O.RDIVS], lambda L, e: "x" / e["a"], TypeError, r"div|/")
case("rdiv_none", [O.RDIVS], lambda L, e: None / e["h"], TypeError, r"div|/")

case("remainder_bcast", [O.REMAINDER], lambda L, e: e["a"] % e["m1"], RuntimeError,
     r"remainder.*size|size.*match")
case("remainder_number_str", [O.REMAINDER_S], lambda L, e: e["a"] % "x", TypeError, r"%|remainder")
case("fmod_bcast", [O.FMOD], lambda L, e: L.fmod(e["a"], e["m1"]), RuntimeError,
     r"fmod.*size|size.*match")
case("fmod_none", [O.FMOD_S], lambda L, e: L.fmod(e["a"], None), TypeError, r"fmod")

# -- elementwise functions of one tensor ----------------------------------------------
for _name, _op in (("exp", O.EXP), ("log", O.LOG), ("sqrt", O.SQRT), ("tanh", O.TANH),
                   ("sigmoid", O.SIGMOID), ("relu", O.RELU), ("abs", O.ABS), ("sin", O.SIN),
                   ("cos", O.COS), ("tan", O.TAN), ("log1p", O.LOG1P), ("expm1", O.EXPM1),
                   ("erf", O.ERF), ("atan", O.ATAN), ("asin", O.ASIN), ("acos", O.ACOS),
                   ("sinh", O.SINH), ("cosh", O.COSH), ("asinh", O.ASINH),
                   ("acosh", O.ACOSH), ("atanh", O.ATANH),
                   ("reciprocal", O.RECIP), ("floor", O.FLOOR),
                   ("ceil", O.CEIL), ("round", O.ROUND), ("trunc", O.TRUNC)):
    case(f"{_name}_list", [_op], lambda L, e, n=_name: getattr(L, n)([1.0, 2.0]), TypeError,
         _name)
case("exp_two_args", [O.EXP], lambda L, e: L.exp(e["a"], e["a"]), TypeError, r"exp")
case("sqrt_str", [O.SQRT], lambda L, e: L.sqrt("x"), TypeError, r"sqrt")
case("F_relu_str", [O.RELU], lambda L, e: F(L).relu("x"), TypeError, r"relu")
case("F_tanh_none", [O.TANH], lambda L, e: F(L).tanh(None), TypeError, r"tanh")
case("F_sigmoid_list", [O.SIGMOID], lambda L, e: F(L).sigmoid([0.5]), TypeError, r"sigmoid")

# -- clamp, maximum/minimum, sign, where --------------------------------------------------
case("clamp_no_bounds", [O.CLAMP], lambda L, e: L.clamp(e["a"]), RuntimeError,
     r"clamp.*At least one of 'min' or 'max' must not be None")
case("clamp_str_min", [O.CLAMP], lambda L, e: e["a"].clamp(min="x"), TypeError, r"clamp")
case("clamp_tensor_min_bcast", [O.CLAMP, O.MAXIMUM], lambda L, e: L.clamp(e["a"], min=e["b"]),
     RuntimeError, r"clamp|maximum")
case("clamp_tensor_max_bcast", [O.CLAMP, O.MINIMUM],
     lambda L, e: L.clamp(e["a"], min=e["u2"], max=e["b"]), RuntimeError, r"clamp|minimum")
case("clamp__no_bounds_nonleaf", [O.CLAMP], lambda L, e: e["h"].clamp_(), RuntimeError,
     r"clamp")
case("clamp__leaf", [O.CLAMP], lambda L, e: e["a"].clamp_(0.0), RuntimeError, LEAF_MSG)
case("clip_no_bounds", [O.CLAMP], lambda L, e: L.clip(e["h"]), RuntimeError, r"clamp|clip")
case("maximum_bcast", [O.MAXIMUM], lambda L, e: L.maximum(e["a"], e["b"]), RuntimeError,
     r"^maximum: ")
case("maximum_float", [O.MAXIMUM], lambda L, e: L.maximum(e["a"], 1.0), TypeError, r"maximum")
case("max_other_bcast", [O.MAXIMUM], lambda L, e: e["a"].max(e["b"]), RuntimeError, r"max")
case("minimum_bcast", [O.MINIMUM], lambda L, e: L.minimum(e["m1"], e["a"]), RuntimeError,
     r"^minimum: ")
case("minimum_list", [O.MINIMUM], lambda L, e: L.minimum([1.0], e["a"]), TypeError, r"minimum")
case("min_other_bcast", [O.MINIMUM], lambda L, e: L.min(e["h"], e["b"]), RuntimeError, r"min")
case("sign_list", [O.SIGN], lambda L, e: L.sign([1.0, -1.0]), TypeError, r"sign")
case("sign_str", [O.SIGN], lambda L, e: L.sign("x"), TypeError, r"sign")
case("where_bcast", [O.WHERE], lambda L, e: L.where(e["cond"], e["a"], e["b"]), RuntimeError,
     r"where", prep=lambda L, e: {"cond": e["a"] > 0})
case("where_int_condition", [O.WHERE], lambda L, e: L.where(e["ii"], e["a"], e["c"]),
     RuntimeError, r"where")
case("where_method_bcast", [O.WHERE], lambda L, e: e["h"].where(e["cond"], e["b"]),
     RuntimeError, r"where", prep=lambda L, e: {"cond": e["a"] > 0})

# -- reductions ---------------------------------------------------------------------
case("sum_str", [O.SUM], lambda L, e: L.sum("x"), TypeError, r"sum")
case("sum_list", [O.SUM], lambda L, e: L.sum([1.0, 2.0]), TypeError, r"sum")
case("sum_bad_dtype", [O.SUM, O.CAST], lambda L, e: L.sum(e["a"], dtype="x"), TypeError,
     r"sum|dtype")
case("sum_dim_oob", [O.SUM_DIM], lambda L, e: e["B1"].sum(3), IndexError,
     r"sum.*(?i:dimension out of range)")
case("sum_dim_duplicate", [O.SUM_DIM], lambda L, e: e["a"].sum((0, -2)), RuntimeError,
     r"sum.*appears multiple times")
case("sum_dim_float", [O.SUM_DIM], lambda L, e: e["a"].sum(0.5), TypeError, r"sum|dim")
case("sum_dim_oob_dtype", [O.SUM_DIM, O.CAST], lambda L, e: e["a"].sum(2, dtype=L.float64),
     IndexError, r"sum.*out of range")
case("mean_int", [O.MEAN], lambda L, e: e["i"].mean(), RuntimeError,
     r"mean.*could not infer output dtype")
case("mean_bool", [O.MEAN], lambda L, e: L.mean(e["mask"]), RuntimeError, r"mean")
case("mean_str", [O.MEAN], lambda L, e: L.mean("x"), TypeError, r"mean")
case("mean_int_dtype", [O.MEAN, O.CAST], lambda L, e: e["a"].mean(dtype=L.int64),
     RuntimeError, r"mean")
case("mean_bad_dtype", [O.MEAN, O.CAST], lambda L, e: L.mean(e["a"], dtype="x"), TypeError,
     r"mean|dtype")
case("mean_dim_oob", [O.MEAN_DIM], lambda L, e: e["a"].mean(-3), IndexError,
     r"mean.*out of range")
case("mean_dim_int", [O.MEAN_DIM], lambda L, e: e["ii"].mean(0), RuntimeError, r"mean")
case("mean_dim_oob_dtype", [O.MEAN_DIM, O.CAST],
     lambda L, e: e["a"].mean(5, dtype=L.float64), IndexError, r"mean.*out of range")
case("var_int", [O.MEAN], lambda L, e: e["ii"].var(), RuntimeError, r"var")
case("var_dim_oob", [O.MEAN_DIM, O.SUM_DIM], lambda L, e: e["a"].var(2), IndexError,
     r"var.*out of range")
case("std_dim_oob", [O.SQRT, O.MEAN_DIM], lambda L, e: e["h"].std(dim=-3), IndexError,
     r"std|var")
case("logsumexp_no_dim", [O.LOG, O.EXP], lambda L, e: L.logsumexp(e["a"]), TypeError,
     r"logsumexp")
case("logsumexp_dim_oob", [O.LOG, O.EXP, O.SUM_DIM], lambda L, e: e["a"].logsumexp(2),
     IndexError, r"logsumexp.*out of range")
case("norm_dim_oob", [O.SQRT, O.SUM_DIM], lambda L, e: e["a"].norm(dim=3), IndexError,
     r"norm|sum")
case("amax_dim_oob", [O.AMAX], lambda L, e: e["a"].amax(2), IndexError, r"amax.*out of range")
case("amax_dim_duplicate", [O.AMAX], lambda L, e: e["a"].amax((1, 1)), RuntimeError,
     r"amax.*multiple times")
case("amax_empty_dim", [O.AMAX], lambda L, e: e["e"].amax(0), IndexError,
     r"amax.*non-zero size")
case("amin_dim_oob", [O.AMIN], lambda L, e: L.amin(e["B1"], -4), IndexError,
     r"amin.*out of range")
case("amin_empty", [O.AMIN], lambda L, e: L.amin(e["e"]), RuntimeError, r"amin.*numel\(\) == 0")
case("max_all_empty", [O.MAX_ALL], lambda L, e: e["e"].max(), RuntimeError,
     r"max.*numel\(\) == 0")
case("max_all_str", [O.MAX_ALL], lambda L, e: L.max("x"), TypeError, r"max")
case("min_all_empty", [O.MIN_ALL], lambda L, e: L.min(e["e"]), RuntimeError,
     r"min.*numel\(\) == 0")
case("min_all_list", [O.MIN_ALL], lambda L, e: L.min([1.0]), TypeError, r"min")
case("max_dim_oob", [O.MAX_DIM], lambda L, e: e["a"].max(dim=5), IndexError,
     r"max.*out of range")
case("max_dim_empty", [O.MAX_DIM], lambda L, e: e["e"].max(0), IndexError,
     r"max.*non-zero size")
case("max_dim_float", [O.MAX_DIM], lambda L, e: e["a"].max(dim=0.5), TypeError, r"max|dim")
case("sort_dim_oob", [O.SORT], lambda L, e: e["a"].sort(5), IndexError, r"out of range")
case("topk_k_too_big", [O.TOPK], lambda L, e: L.topk(e["a"], 9), RuntimeError,
     r"selected index k out of range")
case("min_dim_oob", [O.MIN_DIM], lambda L, e: L.min(e["a"], -3), IndexError,
     r"min.*out of range")
case("min_dim_keepdim_oob", [O.MIN_DIM], lambda L, e: e["B1"].min(3, keepdim=True),
     IndexError, r"min.*out of range")
case("min_dim_empty", [O.MIN_DIM], lambda L, e: e["e"].min(-2), IndexError,
     r"min.*non-zero size")
case("prod_str", [O.PROD], lambda L, e: L.prod("x"), TypeError, r"prod")
case("prod_bad_dtype", [O.PROD, O.CAST], lambda L, e: e["a"].prod(dtype="x"), TypeError,
     r"prod|dtype")
case("prod_dim_oob", [O.PROD_DIM], lambda L, e: e["a"].prod(2), IndexError,
     r"prod.*out of range")
case("prod_dim_float", [O.PROD_DIM], lambda L, e: e["a"].prod(0.5), TypeError, r"prod|dim")
case("prod_dim_oob_dtype", [O.PROD_DIM, O.CAST], lambda L, e: e["a"].prod(2, dtype=L.float64),
     IndexError, r"prod.*out of range")

# -- softmax, log_softmax -----------------------------------------------------------
case("softmax_dim_oob", [O.SOFTMAX], lambda L, e: L.softmax(e["a"], 2), IndexError,
     r"softmax.*out of range")
case("F_softmax_dim_oob", [O.SOFTMAX], lambda L, e: F(L).softmax(e["B1"], dim=-4), IndexError,
     r"softmax.*out of range")
case("layer_norm_shape", [O.LAYER_NORM],
     lambda L, e: F(L).layer_norm(e["a"], (7,)), RuntimeError, r"normalized_shape")
case("layer_norm_weight_shape", [O.LAYER_NORM],
     lambda L, e: F(L).layer_norm(e["a"], tuple(e["a"].shape[-1:]),
                                  L.ones(e["a"].shape[-1] + 1)), RuntimeError,
     r"Expected weight to be of same shape")
case("batch_norm_weight_size", [O.BATCH_NORM],
     lambda L, e: F(L).batch_norm(e["a"], None, None, L.ones(e["a"].shape[1] + 1),
                                  training=True), RuntimeError, r"weight should contain")
case("softmax_no_dim", [O.SOFTMAX], lambda L, e: L.softmax(e["a"]), TypeError, r"softmax")
case("softmax_dim_oob_dtype", [O.SOFTMAX, O.CAST],
     lambda L, e: L.softmax(e["a"], 5, dtype=L.float64), IndexError, r"softmax.*out of range")
case("F_softmax_int", [O.SOFTMAX], lambda L, e: F(L).softmax(e["ii"], dim=0), RuntimeError,
     r"softmax")
case("softmax_int", [O.SOFTMAX], lambda L, e: L.softmax(e["ii"], 0), RuntimeError, r"softmax")
case("log_softmax_dim_oob", [O.LOG_SOFTMAX], lambda L, e: e["a"].log_softmax(2), IndexError,
     r"log_softmax.*out of range")
case("F_log_softmax_dim_oob", [O.LOG_SOFTMAX], lambda L, e: F(L).log_softmax(e["h"], dim=-3),
     IndexError, r"log_softmax.*out of range")
case("log_softmax_str", [O.LOG_SOFTMAX], lambda L, e: L.log_softmax("x", 0), TypeError,
     r"log_softmax")
case("F_log_softmax_int", [O.LOG_SOFTMAX], lambda L, e: F(L).log_softmax(e["i"], dim=0),
     RuntimeError, r"log_softmax")

# -- reshape family -------------------------------------------------------------------
case("view_bad_size", [O.VIEW], lambda L, e: e["h"].view(4, 2), RuntimeError,
     r"view.*shape '\[4, 2\]' is invalid for input of size 6")
case("view_non_contiguous", [O.VIEW], lambda L, e: e["bt"].view(-1), RuntimeError,
     r"view.*(?i:not compatible)", prep=lambda L, e: {"bt": e["B1"].transpose(0, 2)})
case("view_str", [O.VIEW], lambda L, e: e["a"].view("x"), TypeError, r"view")
case("reshape_bad_size", [O.RESHAPE], lambda L, e: L.reshape(e["B1"], (5, -1)), RuntimeError,
     r"reshape.*shape '\[5, -1\]' is invalid for input of size 24")
case("reshape_negative_size", [O.RESHAPE], lambda L, e: e["a"].reshape(3, -2), RuntimeError,
     r"reshape.*invalid shape dimension -2")
case("reshape_two_inferred", [O.RESHAPE], lambda L, e: e["B1"].reshape(-1, 2, -1),
     RuntimeError, r"reshape.*only one dimension can be inferred")
case("reshape_float_size", [O.RESHAPE], lambda L, e: e["a"].reshape(2.0, 3), TypeError,
     r"reshape")
case("unsqueeze_oob", [O.UNSQUEEZE], lambda L, e: e["a"].unsqueeze(-4), IndexError,
     r"unsqueeze.*out of range")
case("unsqueeze_str", [O.UNSQUEEZE], lambda L, e: L.unsqueeze(e["a"], "x"), TypeError,
     r"unsqueeze|dim")
case("squeeze_str", [O.SQUEEZE], lambda L, e: L.squeeze("x"), TypeError, r"squeeze")
case("squeeze_list", [O.SQUEEZE], lambda L, e: L.squeeze([[1.0]]), TypeError, r"squeeze")
case("squeeze_dim_oob", [O.SQUEEZE_DIM], lambda L, e: e["a"].squeeze(2), IndexError,
     r"squeeze.*out of range")
case("squeeze_dims_oob", [O.SQUEEZE_DIM], lambda L, e: e["B1"].squeeze((0, 5)), IndexError,
     r"squeeze.*out of range")
case("clone_list", [O.CLONE], lambda L, e: L.clone([1.0]), TypeError, r"clone")
case("clone_none", [O.CLONE], lambda L, e: L.clone(None), TypeError, r"clone")
case("flatten_dim_oob", [O.FLATTEN], lambda L, e: e["B1"].flatten(1, 3), IndexError,
     r"flatten.*out of range")
case("flatten_start_after_end", [O.FLATTEN], lambda L, e: e["B1"].flatten(2, 0), RuntimeError,
     r"flatten.*start_dim cannot come after end_dim")
case("flatten_str", [O.FLATTEN], lambda L, e: L.flatten("x"), TypeError, r"flatten")

# -- strided views ------------------------------------------------------------------
case("permute_wrong_length", [O.PERMUTE], lambda L, e: e["B1"].permute(0, 1), RuntimeError,
     r"permute")
case("permute_dim_oob", [O.PERMUTE], lambda L, e: e["B1"].permute(0, 1, 3), IndexError,
     r"permute.*out of range")
case("permute_duplicate", [O.PERMUTE], lambda L, e: L.permute(e["B1"], (2, 2, 0)),
     RuntimeError, r"permute.*duplicate")
case("permute_str", [O.PERMUTE], lambda L, e: e["a"].permute("x", 0), TypeError, r"permute")
case("transpose_dim_oob", [O.TRANSPOSE], lambda L, e: L.transpose(e["a"], -3, 0), IndexError,
     r"transpose.*out of range")
case("transpose_str", [O.TRANSPOSE], lambda L, e: e["a"].transpose(0, "x"), TypeError,
     r"transpose|dim")
case("t_3d", [O.T_OP], lambda L, e: L.t(e["B1"]), RuntimeError, r"t\(\) expects a tensor")
case("t_str", [O.T_OP], lambda L, e: L.t("x"), TypeError, r"\bt\(\)")
case("expand_bad_size", [O.EXPAND], lambda L, e: e["a"].expand(3, 4), RuntimeError,
     r"expand.*\(4\).*\(2\)")
case("expand_negative_leading", [O.EXPAND], lambda L, e: e["a"].expand(-1, 3, 2),
     RuntimeError, r"expand.*leading, non-existing dimension")
case("expand_negative_size", [O.EXPAND], lambda L, e: e["b"].expand(-2), RuntimeError,
     r"expand")
case("expand_too_few_sizes", [O.EXPAND], lambda L, e: e["B1"].expand(3, 4), RuntimeError,
     r"expand.*number of sizes")
case("broadcast_to_bad", [O.EXPAND], lambda L, e: L.broadcast_to(e["a"], (3, 3)), RuntimeError,
     r"expand|broadcast_to")
case("select_oob", [O.SELECT], lambda L, e: e["a"][3], IndexError, r"index.*3")
case("select_second_dim_oob", [O.SELECT], lambda L, e: e["B1"][1, 3], IndexError, r"index")
case("select_too_many", [O.SELECT], lambda L, e: e["v"][0, 0], IndexError, r"index")
case("slice_too_many", [O.SLICE], lambda L, e: e["a"][:, :, :], IndexError, r"index")
case("slice_then_int_oob", [O.SLICE], lambda L, e: e["B1"][:, 5], IndexError, r"index")
case("narrow_past_end", [O.SLICE], lambda L, e: e["a"].narrow(0, 2, 5), RuntimeError,
     r"narrow.*exceeds dimension size")
case("narrow_dim_oob", [O.SLICE], lambda L, e: L.narrow(e["a"], 2, 0, 1), IndexError,
     r"narrow.*out of range")

# -- advanced indexing (gather), its adjoint (scatter) and x[idx] = v -------------------
case("gather_tensor_index_oob", [O.GATHER], lambda L, e: e["a"][e["idx"]], IndexError,
     r"index.*5", prep=lambda L, e: {"idx": L.tensor([0, 5])})
case("gather_list_negative_oob", [O.GATHER], lambda L, e: e["h"][[0, -4]], IndexError,
     r"index.*-4")
case("gather_mask_shape", [O.GATHER], lambda L, e: e["a"][e["mask2"]], IndexError, r"index")
case("gather_float_index", [O.GATHER], lambda L, e: e["a"][e["fidx"]], IndexError, r"index",
     prep=lambda L, e: {"fidx": L.tensor([0.0, 1.0])})
case("gather_2d_column_oob", [O.GATHER], lambda L, e: e["a"][[0, 1], [0, 2]], IndexError,
     r"index")
case("gather_index_shapes", [O.GATHER], lambda L, e: e["a"][[0, 1, 2], [0, 1]], IndexError,
     r"index")
case("scatter_grad_outputs_shape", [O.SCATTER, O.GATHER],
     lambda L, e: L.autograd.grad(e["y"], e["a"], grad_outputs=e["g5"], create_graph=True),
     RuntimeError, r"Mismatch in shape",
     prep=lambda L, e: {"y": e["a"][[0, 2, 2]], "g5": L.ones(5)})
case("scatter_backward_shape", [O.SCATTER, O.SELECT],
     lambda L, e: e["y"].backward(e["g5"], create_graph=True), RuntimeError,
     r"Mismatch in shape", prep=lambda L, e: {"y": e["B1"][1], "g5": L.ones(5)})
case("setitem_value_shape", [O.SETIDX], lambda L, e: operator.setitem(e["h"], [0, 1], e["v"]),
     RuntimeError, r"index_put_.*shape mismatch|shape")
case("setitem_int_key_value_shape", [O.SETIDX],
     lambda L, e: operator.setitem(e["h"], 0, e["v"]), RuntimeError, r"index_put_|size")
case("setitem_index_oob", [O.SETIDX], lambda L, e: operator.setitem(e["h"], [0, 3], 1.0),
     IndexError, r"index")
case("setitem_int_oob", [O.SETIDX], lambda L, e: operator.setitem(e["h"], 5, e["u2"]),
     IndexError, r"index")
case("setitem_mask_shape", [O.SETIDX], lambda L, e: operator.setitem(e["h"], e["mask2"], 0.0),
     IndexError, r"index")
case("setitem_leaf", [O.SETIDX], lambda L, e: operator.setitem(e["a"], 0, 1.0), RuntimeError,
     re.escape("a view of a leaf Variable that requires grad is being used in an in-place "
               "operation."))
case("setitem_str_value", [O.SETIDX], lambda L, e: operator.setitem(e["h"], 0, "x"),
     TypeError, r"index_put_|assign")
case("setitem_mixed_float", [O.SETIDX],
     lambda L, e: operator.setitem(e["h"], [0], e["d0"]), RuntimeError, r"index_put_|dtype",
     prep=lambda L, e: {"d0": e["d"][0:1]})

# -- matrix products ----------------------------------------------------------------
case("mm_shapes", [O.MM], lambda L, e: L.mm(e["a"], e["a"]), RuntimeError,
     re.escape("mat1 and mat2 shapes cannot be multiplied (3x2 and 3x2)"))
case("mm_vector", [O.MM], lambda L, e: L.mm(e["v"], e["m1"]), RuntimeError, r"mm")
case("mm_float", [O.MM], lambda L, e: L.mm(e["a"], 2.0), TypeError, r"mm")
case("matmul_mixed_float", [O.MM], lambda L, e: e["a"] @ e["dT"], RuntimeError,
     r"matmul.*dtype", prep=lambda L, e: {"dT": e["d"].t()})
case("mm_mixed_float", [O.MM], lambda L, e: L.mm(e["a"], e["dT"]), RuntimeError,
     r"(mm|matmul).*dtype", prep=lambda L, e: {"dT": e["d"].t()})
case("outer_2d", [O.MM], lambda L, e: L.outer(e["a"], e["v"]), RuntimeError, r"outer")
case("outer_float", [O.MM], lambda L, e: L.outer(e["v"], 2.0), TypeError, r"outer")
case("mv_mismatch", [O.MV], lambda L, e: e["m1"] @ e["b"], RuntimeError, r"matmul|size")
case("mv_mixed_float", [O.MV], lambda L, e: e["m1"] @ e["dv"], RuntimeError,
     r"matmul.*dtype")
case("vm_mismatch", [O.VM], lambda L, e: e["b"] @ e["m1"], RuntimeError, r"matmul|size")
case("vm_str", [O.VM], lambda L, e: L.matmul(e["v"], "x"), TypeError, r"matmul")
case("dot_sizes", [O.DOT], lambda L, e: L.dot(e["v"], e["b"]), RuntimeError,
     r"dot.*inconsistent tensor size")
case("dot_2d", [O.DOT], lambda L, e: L.dot(e["a"], e["v"]), RuntimeError, r"dot.*1D")
case("dot_float", [O.DOT], lambda L, e: e["v"].dot(2.0), TypeError, r"dot")
case("dot_mixed_float", [O.DOT], lambda L, e: L.dot(e["v"], e["dv"]), RuntimeError,
     r"(dot|matmul).*dtype")
case("matmul_dot_sizes", [O.DOT], lambda L, e: e["v"] @ e["b"], RuntimeError, r"matmul|dot")
case("bmm_2d", [O.BMM], lambda L, e: L.bmm(e["m1"], e["B1"]), RuntimeError, r"bmm.*3D")
case("bmm_batch_sizes", [O.BMM], lambda L, e: L.bmm(e["B1"], e["B3"]), RuntimeError, r"bmm")
case("bmm_inner_sizes", [O.BMM], lambda L, e: e["B1"].bmm(e["B1"]), RuntimeError,
     r"bmm|matmul")
case("bmm_float", [O.BMM], lambda L, e: L.bmm(e["B1"], 1.0), TypeError, r"bmm")
case("bmm_mixed_float", [O.BMM], lambda L, e: L.bmm(e["B1d"], e["B2"]), RuntimeError,
     r"(bmm|matmul).*dtype", prep=lambda L, e: {"B1d": e["B1"].double()})
case("matmul_batch_bcast", [O.BMM], lambda L, e: e["B1"] @ e["B3"], RuntimeError,
     r"matmul.*\[2\].*\[3\]")
case("matmul_3d_inner", [O.BMM], lambda L, e: L.matmul(e["B1"], e["a"]), RuntimeError,
     r"matmul")
case("linear_in_features", [O.LINEAR], lambda L, e: F(L).linear(e["a"], e["wbad"]),
     RuntimeError, re.escape("mat1 and mat2 shapes cannot be multiplied (3x2 and 3x4)"))
case("linear_3d_in_features", [O.LINEAR], lambda L, e: F(L).linear(e["B1"], e["w"]),
     RuntimeError, r"mat1 and mat2 shapes cannot be multiplied|linear|matmul")
case("linear_bias_shape", [O.LINEAR], lambda L, e: F(L).linear(e["a"], e["w"], e["v"]),
     RuntimeError, r"linear|\(4\).*\(3\)")
case("linear_bias_float", [O.LINEAR], lambda L, e: F(L).linear(e["a"], e["w"], 1.0),
     TypeError, r"linear")
case("linear_weight_str", [O.LINEAR], lambda L, e: F(L).linear(e["a"], "w"), TypeError,
     r"linear")
case("linear_mixed_float", [O.LINEAR], lambda L, e: F(L).linear(e["d"], e["w"]),
     RuntimeError, r"linear|dtype")
case("linear_1d_weight_bias_shape", [O.LINEAR, O.MV],
     lambda L, e: F(L).linear(e["a"], e["u2"], e["b"]), RuntimeError, r"linear|add")
case("linear_0d_input", [O.LINEAR, O.T_OP], lambda L, e: F(L).linear(e["s"], e["w"]),
     RuntimeError, r"linear|matmul")

# -- cat, stack, split, chunk --------------------------------------------------------
case("cat_sizes", [O.CAT], lambda L, e: L.cat([e["a"], e["m1"]]), RuntimeError,
     r"cat.*Sizes of tensors must match except in dimension 0")
case("cat_dim_oob", [O.CAT], lambda L, e: L.cat([e["a"], e["h"]], dim=2), IndexError,
     r"cat.*out of range")
case("cat_ndim", [O.CAT], lambda L, e: L.cat([e["a"], e["v"]]), RuntimeError,
     r"cat.*same number of dimensions")
case("cat_list_element", [O.CAT], lambda L, e: L.cat([e["a"], [1.0, 2.0]]), TypeError,
     r"cat")
case("cat_empty", [O.CAT], lambda L, e: L.cat([]), ValueError, r"cat.*non-empty")
case("cat_0d", [O.CAT], lambda L, e: L.cat([e["s"], e["s"]]), RuntimeError,
     r"cat.*zero-dimensional")
case("cat_tensor_not_list", [O.CAT], lambda L, e: L.cat(e["a"]), TypeError, r"cat")
case("stack_sizes", [O.CAT, O.UNSQUEEZE], lambda L, e: L.stack([e["a"], e["m1"]]),
     RuntimeError, r"stack expects each tensor to be equal size")
case("stack_dim_oob", [O.CAT, O.UNSQUEEZE], lambda L, e: L.stack([e["a"], e["h"]], dim=4),
     IndexError, r"stack.*out of range")
case("stack_empty", [O.CAT], lambda L, e: L.stack([]), RuntimeError, r"stack")
case("stack_first_not_tensor", [O.CAT, O.UNSQUEEZE], lambda L, e: L.stack([[1.0], e["v"]]),
     TypeError, r"stack")
case("split_sizes_sum", [O.SPLIT], lambda L, e: e["a"].split([1, 1]), RuntimeError,
     r"split.*sum exactly to 3")
case("split_dim_oob", [O.SPLIT], lambda L, e: L.split(e["a"], 1, dim=2), IndexError,
     r"split.*out of range")
case("split_size_zero", [O.SPLIT], lambda L, e: e["a"].split(0), RuntimeError, r"split")
case("split_size_negative", [O.SPLIT], lambda L, e: e["h"].split(-1), RuntimeError, r"split")
case("split_negative_section", [O.SPLIT], lambda L, e: e["a"].split([4, -1]), RuntimeError,
     r"split.*non-negative")
case("split_float_size", [O.SPLIT], lambda L, e: e["a"].split(1.5), TypeError, r"split")
case("chunk_zero", [O.SPLIT], lambda L, e: e["a"].chunk(0), RuntimeError,
     r"chunk.*greater than 0")
case("chunk_dim_oob", [O.SPLIT], lambda L, e: L.chunk(e["a"], 2, dim=-3), IndexError,
     r"chunk.*out of range")


# ---------------------------------------------------------------------------------------
def make_env(L):
    """The same leaves for tapegrad and torch (values from one seed), and a non-leaf."""
    rng = np.random.default_rng(7)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    grad = {"a": f32(3, 2), "b": f32(4), "v": f32(3), "u2": f32(2), "m1": f32(2, 3),
            "m2": f32(4, 5), "B1": f32(2, 3, 4), "B2": f32(2, 4, 5), "B3": f32(3, 4, 5),
            "w": f32(4, 2), "wbad": f32(4, 3), "s": np.float32(rng.standard_normal()),
            "e": np.zeros((0, 3), np.float32),
            "d": rng.standard_normal((3, 2)), "dv": rng.standard_normal(3)}   # float64
    env = {k: L.tensor(np.asarray(x), requires_grad=True) for k, x in grad.items()}
    env["c"] = L.tensor(f32(3, 2))
    env["i"] = L.tensor([1, 2, 3])
    env["ii"] = L.tensor([[1, 2], [3, 4], [5, 6]])
    env["mask"] = L.tensor([True, False, True])
    env["mask2"] = L.tensor([True, False])
    env["h"] = env["a"] * 1.5           # a non-leaf on the current tape
    return env


def build(L, c):
    """env + the case's prepared tensors, and a loss over all of them that need grad."""
    env = make_env(L)
    if c.prep is not None:
        env.update(c.prep(L, env))
    loss = None
    for k, (name, t) in enumerate(sorted(env.items())):
        if t.requires_grad:
            term = ((t * t).sum() * (k + 1)).double()
            loss = term if loss is None else loss + term
    return env, loss


def leaf_grads(env):
    return {k: t.grad for k, t in env.items() if t.is_leaf and t.requires_grad}


def snapshot(env):
    return {k: (to_np(t).copy(), str(t.dtype), t.requires_grad, t.is_leaf, t._grad)
            for k, t in env.items()}


def torch_outcome(c):
    env, _ = build(torch, c)
    try:
        c.bad(torch, env)
    except Exception as exc:    # noqa: BLE001 - any type is an answer
        return exc
    return None


IDS = [c.cid for c in CASES]


def test_case_ids_unique_and_ops_in_table():
    assert len(set(IDS)) == len(IDS)
    entries = {id(op) for op in O.ENTRIES}
    for c in CASES:
        assert c.ops and all(id(op) in entries for op in c.ops), c.cid
        assert not any(op in BOOKKEEPING for op in c.ops), c.cid


def test_every_op_entry_has_a_bad_input_case():
    names = {id(v): k for k, v in vars(O).items() if isinstance(v, O.Op)}
    covered = {id(op) for c in CASES for op in c.ops}
    missing = [f"{i}: {op.name} (ops.{names.get(id(op), '?')})"
               for i, op in enumerate(O.ENTRIES)
               if op not in BOOKKEEPING and id(op) not in covered]
    assert not missing, "op table entries without a bad-input case:\n" + "\n".join(missing)


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_table_matches_torch(c):
    got = torch_outcome(c)
    assert got is not None, f"torch does not raise (table expects {c.exc.__name__})"
    ok = isinstance(got, c.exc) or (c.exc is TypeError and isinstance(got, AttributeError))
    assert ok, f"torch raises {type(got).__name__}: {got}; table says {c.exc.__name__}"


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_bad_call_changes_nothing(c):
    env, loss = build(tg, c)
    rows = tape_rows()
    assert rows is not None
    before = snapshot(env)
    problems = []
    try:
        c.bad(tg, env)
    except Exception as exc:    # noqa: BLE001 - the type is checked below
        if not isinstance(exc, c.exc):
            problems.append(f"raised {type(exc).__name__}: {exc} (expected {c.exc.__name__})")
        elif c.msg and not re.search(c.msg, str(exc)):
            problems.append(f"message {str(exc)!r} does not match {c.msg!r}")
    else:
        problems.append(f"did not raise (expected {c.exc.__name__})")
    if tape_rows() != rows:
        problems.append(f"the failed call changed the tape: {rows} -> {tape_rows()} rows")
    after = snapshot(env)
    for k in env:
        v0, dt0, req0, leaf0, g0 = before[k]
        v1, dt1, req1, leaf1, g1 = after[k]
        if v0.shape != v1.shape or not np.array_equal(v0, v1, equal_nan=True):
            problems.append(f"{k}'s values changed")
        if (dt0, req0, leaf0) != (dt1, req1, leaf1):
            problems.append(f"{k}'s flags changed: {(dt0, req0, leaf0)} -> {(dt1, req1, leaf1)}")
        if g1 is not g0:
            problems.append(f"{k}'s .grad changed")
    # The graph recorded before the call still gives PyTorch's gradients.
    try:
        loss.backward()
    except Exception as exc:    # noqa: BLE001
        problems.append(f"backward after the failed call raised {type(exc).__name__}: {exc}")
    else:
        tenv, tloss = build(torch, c)
        tloss.backward()
        expected = leaf_grads(tenv)
        got = leaf_grads(env)
        assert set(got) == set(expected)
        for k, g in got.items():
            if g is None:
                problems.append(f"{k}.grad is None after backward")
                continue
            e = to_np(expected[k])
            gn = to_np(g)
            if gn.shape != e.shape or not np.allclose(gn, e, rtol=1e-5, atol=1e-6):
                problems.append(f"{k}.grad wrong after the failed call: {gn.tolist()} != "
                                f"{e.tolist()}")
            if str(g.dtype).split(".")[-1] != str(expected[k].dtype).split(".")[-1]:
                problems.append(f"{k}.grad dtype {g.dtype} != torch's {expected[k].dtype}")
    assert not problems, f"{c.cid}:\n  " + "\n  ".join(problems)
