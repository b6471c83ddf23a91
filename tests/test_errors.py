"""Bad arguments raise PyTorch's exception types with messages naming the op and the
shapes, and a failed call changes nothing: the tape's row count, the inputs (values,
flags, gradients) and the gradients of a graph recorded before the failure."""
import re

import numpy as np
import pytest

import tapegrad as tg

try:
    from .conftest import assert_close, tape_rows, to_np
except ImportError:
    from conftest import assert_close, tape_rows, to_np


def bcast_msg(op):
    # API.md: "mul: the size of tensor a (2) must match the size of tensor b (4) at
    # non-singleton dimension 1" (PyTorch capitalises "The").
    return (rf"(?i)^{op}: the size of tensor a \(2\) must match the size of tensor b "
            rf"\(4\) at non-singleton dimension 1")


MM_MSG = re.escape("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")
LEAF_MSG = re.escape("a leaf Variable that requires grad is being used in an in-place "
                     "operation.")
INT_GRAD = "only Tensors of floating point and complex dtype can require gradients"
DTYPE = r"(?i)float32|float64|dtype"

# Each case: (id, prepare(env) -> the failing call, exception type, message regex).
# ``prepare`` may record ops (they are part of the state the failed call must not change).
CASES = [
    # -- broadcasting ----------------------------------------------------------
    ("add_bcast", lambda e: lambda: e["a"] + e["b"], RuntimeError, bcast_msg("add")),
    ("sub_bcast", lambda e: lambda: e["a"] - e["b"], RuntimeError, bcast_msg("sub")),
    ("mul_bcast", lambda e: lambda: e["a"] * e["b"], RuntimeError, bcast_msg("mul")),
    ("div_bcast", lambda e: lambda: e["a"] / e["b"], RuntimeError, bcast_msg("div")),
    ("pow_bcast", lambda e: lambda: e["a"] ** e["b"], RuntimeError, bcast_msg("pow")),
    ("mul_fn_bcast_nonleaf", lambda e: lambda: tg.mul(e["h"], e["b"]), RuntimeError,
     bcast_msg("mul")),
    ("add_alpha_bcast", lambda e: lambda: tg.add(e["a"], e["b"], alpha=2), RuntimeError,
     bcast_msg("add")),
    ("sub_alpha_bcast", lambda e: lambda: tg.sub(e["a"], e["b"], alpha=0.5), RuntimeError,
     bcast_msg("sub")),
    ("bcast_const_operand", lambda e: lambda: e["a"] * e["c4"], RuntimeError,
     bcast_msg("mul")),
    ("inplace_bcast_nonleaf", lambda e: lambda: e["h"].mul_(e["b"]), RuntimeError,
     r"\(2\).*\(4\)"),
    ("inplace_result_shape", lambda e: lambda: e["h"].add_(tg.ones(4, 3, 2)), RuntimeError,
     r"output with shape \[3, 2\] doesn't match the broadcast shape \[4, 3, 2\]"),
    ("inplace_result_shape_grad_other",
     lambda e: (lambda big: lambda: e["c32"].add_(big))(e["a"].unsqueeze(0).expand(4, 3, 2)),
     RuntimeError,
     r"output with shape \[3, 2\] doesn't match the broadcast shape \[4, 3, 2\]"),
    ("compare_bcast", lambda e: lambda: e["a"] < e["b"], RuntimeError, r"\(2\).*\(4\)"),
    # -- matrix products -------------------------------------------------------
    ("matmul_mismatch", lambda e: lambda: e["m1"] @ e["m2"], RuntimeError, MM_MSG),
    ("mm_mismatch", lambda e: lambda: tg.mm(e["m1"], e["m2"]), RuntimeError, MM_MSG),
    ("matmul_fn_mismatch", lambda e: lambda: tg.matmul(e["m1"], e["m2"]), RuntimeError,
     MM_MSG),
    ("matmul_vec_mismatch", lambda e: lambda: e["b"] @ e["a"], RuntimeError, r"matmul"),
    ("matmul_0d", lambda e: lambda: e["s"] @ e["a"], RuntimeError, r"1D"),
    ("mm_not_matrix", lambda e: lambda: tg.mm(e["b"], e["m2"]), RuntimeError, r"mm"),
    # -- reshape family --------------------------------------------------------
    ("reshape_bad_size", lambda e: lambda: e["a"].reshape(4, 2), RuntimeError,
     r"shape '\[4, 2\]' is invalid for input of size 6"),
    ("view_bad_size", lambda e: lambda: e["h"].view(5), RuntimeError, r"invalid"),
    ("reshape_two_infer", lambda e: lambda: e["a"].reshape(-1, -1), RuntimeError,
     r"only one dimension can be inferred"),
    ("view_non_contiguous", lambda e: (lambda v: lambda: v.view(6))(e["a"].t()), RuntimeError,
     r"view"),
    ("expand_bad", lambda e: lambda: e["a"].expand(3, 3), RuntimeError, r"expand"),
    ("expand_too_few", lambda e: lambda: e["a"].expand(6), RuntimeError, r"expand"),
    ("permute_wrong_len", lambda e: lambda: e["a"].permute(0), RuntimeError, r"permute"),
    ("permute_dup", lambda e: lambda: e["a"].permute(0, 0), RuntimeError, r"permute"),
    ("t_3d", lambda e: (lambda v: lambda: v.t())(e["a"].unsqueeze(0)), RuntimeError, r"t\(\)"),
    ("negative_size", lambda e: lambda: tg.zeros(2, -1), RuntimeError, r"negative"),
    # -- bad dims and indices --------------------------------------------------
    ("sum_bad_dim", lambda e: lambda: e["a"].sum(2), IndexError, r"(?i)dimension out of range"),
    ("sum_bad_neg_dim", lambda e: lambda: tg.sum(e["a"], -3), IndexError, r"out of range"),
    ("mean_bad_dims", lambda e: lambda: e["a"].mean((0, 5)), IndexError, r"out of range"),
    ("mean_dtype_bad_dim", lambda e: lambda: e["a"].mean(7, dtype=tg.float64), IndexError,
     r"out of range"),
    ("unsqueeze_bad_dim", lambda e: lambda: e["h"].unsqueeze(3), IndexError, r"out of range"),
    ("squeeze_bad_dim", lambda e: lambda: e["a"].squeeze(2), IndexError, r"out of range"),
    ("transpose_bad_dim", lambda e: lambda: e["a"].transpose(0, 2), IndexError,
     r"out of range"),
    ("flatten_bad_dim", lambda e: lambda: e["a"].flatten(0, 3), IndexError, r"out of range"),
    ("permute_bad_dim", lambda e: lambda: e["a"].permute(0, 2), IndexError, r"out of range"),
    ("size_bad_dim", lambda e: lambda: e["a"].size(2), IndexError, r"out of range"),
    ("index_out_of_range", lambda e: lambda: e["a"][5], IndexError, r"index"),
    ("index_neg_out_of_range", lambda e: lambda: e["h"][-4], IndexError, r"index"),
    ("index_too_many", lambda e: lambda: e["a"][0, 0, 0], IndexError, r"index"),
    # -- wrong kinds of argument -----------------------------------------------
    ("mul_str", lambda e: lambda: tg.mul(e["a"], "x"), TypeError, r"mul"),
    ("add_list", lambda e: lambda: tg.add(e["a"], [1.0, 2.0]), TypeError, r"add"),
    ("add_none", lambda e: lambda: e["a"] + None, TypeError, r"NoneType"),
    ("exp_list", lambda e: lambda: tg.exp([1.0, 2.0]), TypeError, r"exp"),
    ("tanh_number", lambda e: lambda: tg.tanh(1.0), TypeError, r"tanh"),
    ("matmul_list", lambda e: lambda: tg.matmul(e["a"], [[1.0]]), TypeError, r"matmul"),
    ("mm_number", lambda e: lambda: tg.mm(e["m1"], 3), TypeError, r"mm"),
    ("sum_str", lambda e: lambda: tg.sum("abc"), TypeError, r"sum"),
    ("reshape_str", lambda e: lambda: e["a"].reshape("a"), TypeError, r"reshape"),
    ("sum_float_dim", lambda e: lambda: e["a"].sum(dim=1.5), TypeError, r"dim"),
    ("grad_inputs_str", lambda e: (lambda out: lambda: tg.autograd.grad(out, "a"))(
        e["a"].sum()), TypeError, r"grad"),
    # -- dtypes ----------------------------------------------------------------
    ("matmul_mixed_float", lambda e: (lambda dt: lambda: e["a"] @ dt)(e["d"].t()),
     RuntimeError, DTYPE),
    ("int_requires_grad", lambda e: lambda: tg.tensor([1, 2], requires_grad=True),
     RuntimeError, INT_GRAD),
    ("int_requires_grad_", lambda e: lambda: e["i"].requires_grad_(), RuntimeError, INT_GRAD),
    ("int_zeros_requires_grad",
     lambda e: lambda: tg.zeros(2, dtype=tg.int64, requires_grad=True), RuntimeError,
     INT_GRAD),
    ("arange_requires_grad", lambda e: lambda: tg.arange(3, requires_grad=True),
     RuntimeError, INT_GRAD),
    ("ragged_list", lambda e: lambda: tg.tensor([[1.0, 2.0], [3.0]]), ValueError, None),
    ("ragged_ints", lambda e: lambda: tg.tensor([[1, 2], [3, 4, 5]]), ValueError, None),
    # -- autograd misuse -------------------------------------------------------
    ("backward_wrong_shape", lambda e: (lambda out: lambda: out.backward(tg.ones(2, 3)))(
        e["a"] * 2), RuntimeError, r"Mismatch in shape"),
    ("backward_wrong_shape_0d", lambda e: (lambda out: lambda: out.backward(tg.ones(2)))(
        e["a"].sum()), RuntimeError, r"Mismatch in shape"),
    ("grad_outputs_wrong_shape", lambda e: (lambda out: lambda: tg.autograd.grad(
        out, e["a"], grad_outputs=tg.ones(6)))(e["a"] * 3), RuntimeError,
     r"Mismatch in shape"),
    ("backward_non_scalar", lambda e: (lambda out: lambda: out.backward())(e["h"] * 2),
     RuntimeError, r"grad can be implicitly created only for scalar outputs"),
    ("backward_no_grad_fn", lambda e: lambda: (e["c32"] * 2).sum().backward(), RuntimeError,
     r"element 0 of tensors does not require grad and does not have a grad_fn"),
    ("leaf_inplace_add", lambda e: lambda: e["a"].add_(1.0), RuntimeError, LEAF_MSG),
    ("leaf_inplace_mul_tensor", lambda e: lambda: e["a"].mul_(e["h"]), RuntimeError, LEAF_MSG),
    ("leaf_inplace_zero", lambda e: lambda: e["d"].zero_(), RuntimeError, LEAF_MSG),
    ("leaf_inplace_copy", lambda e: lambda: e["a"].copy_(e["c32"]), RuntimeError, LEAF_MSG),
    ("nonleaf_requires_grad_flag", lambda e: lambda: setattr(e["h"], "requires_grad", False),
     RuntimeError, r"leaf"),
    # (found after the replay, as in PyTorch: retain_graph keeps the tape open)
    ("grad_unused_input", lambda e: (lambda out: lambda: tg.autograd.grad(
        out, [e["b"]], retain_graph=True))(e["a"].sum()), RuntimeError,
     r"appears to not have been used"),
    ("hook_on_constant", lambda e: lambda: e["c32"].register_hook(lambda g: g), RuntimeError,
     r"doesn't require"),
]


def make_env():
    rng = np.random.default_rng(0)
    env = {
        "a": tg.tensor(rng.standard_normal((3, 2)).astype(np.float32), requires_grad=True),
        "b": tg.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True),
        "m1": tg.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True),
        "m2": tg.tensor(rng.standard_normal((4, 5)).astype(np.float32), requires_grad=True),
        "d": tg.tensor(rng.standard_normal((3, 2)), requires_grad=True),   # float64
        "s": tg.tensor(1.5, requires_grad=True),
        "c4": tg.tensor(rng.standard_normal(4).astype(np.float32)),
        "c32": tg.tensor(rng.standard_normal((3, 2)).astype(np.float32)),
        "i": tg.tensor([1, 2, 3]),
    }
    env["h"] = env["a"] * 1.0          # a non-leaf on the current tape
    return env


def snapshot(env):
    return {k: (to_np(t).copy(), t.dtype, t.requires_grad, t.is_leaf, t._grad)
            for k, t in env.items()}


@pytest.mark.parametrize("cid,prepare,exc,pattern", CASES, ids=[c[0] for c in CASES])
def test_error_changes_nothing(cid, prepare, exc, pattern):
    env = make_env()
    a, b, m1, d, h, s = env["a"], env["b"], env["m1"], env["d"], env["h"], env["s"]
    # A graph recorded before the failure; its gradients must come out right after it.
    pre = ((h * h).sum() + (b * 3).sum() + (m1 @ tg.ones(3, 5)).sum()
           + (d ** 2).sum().float() + s * 2)
    call = prepare(env)
    rows = tape_rows()
    before = snapshot(env)
    with pytest.raises(exc, match=pattern):
        call()
    assert tape_rows() == rows, f"the failed call changed the tape: {rows} -> {tape_rows()} rows"
    after = snapshot(env)
    for k in env:
        v0, dt0, req0, leaf0, g0 = before[k]
        v1, dt1, req1, leaf1, g1 = after[k]
        assert np.array_equal(v0, v1), f"{k}'s values changed"
        assert (dt0, req0, leaf0) == (dt1, req1, leaf1), f"{k}'s flags changed"
        assert g1 is g0, f"{k}'s .grad changed"
    pre.backward()
    an, dn = to_np(a), to_np(d)
    assert_close(a.grad, 2 * an, rtol=1e-6)
    assert_close(b.grad, np.full(4, 3.0))
    assert_close(m1.grad, np.full((2, 3), 5.0))
    assert_close(d.grad, 2 * dn)
    assert d.grad.dtype == tg.float64
    assert_close(s.grad, 2.0)
    assert env["m2"].grad is None


def test_error_messages_name_op_and_sizes_exactly():
    a = tg.ones(3, 2, requires_grad=True)
    b = tg.ones(4, requires_grad=True)
    with pytest.raises(RuntimeError) as info:
        tg.mul(a, b)
    msg = str(info.value)
    assert msg.lower().startswith("mul: the size of tensor a (2) must match the size of "
                                  "tensor b (4) at non-singleton dimension 1")
    with pytest.raises(RuntimeError) as info:
        tg.ones(2, 3) @ tg.ones(4, 5)
    assert str(info.value) == "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"


def test_backward_mismatch_message_names_both_shapes():
    x = tg.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError) as info:
        (x * 2).backward(tg.ones(3, 2))
    msg = str(info.value)
    assert "Mismatch in shape" in msg and "[3, 2]" in msg and "[2, 3]" in msg


def test_failed_call_inside_a_training_step_leaves_later_steps_right():
    """Errors raised mid-way through a step (caught by the user) do not leak into the
    following steps' gradients."""
    w = tg.tensor([0.1, 0.2], dtype=tg.float64, requires_grad=True)
    x = tg.tensor([3.0, 4.0], dtype=tg.float64)
    for step in range(3):
        y = (w * x).tanh()
        with pytest.raises(RuntimeError):
            y * tg.ones(3, dtype=tg.float64)
        with pytest.raises(IndexError):
            y.sum(1)
        with pytest.raises(RuntimeError):
            tg.add(y, tg.ones(5, dtype=tg.float64, requires_grad=True), alpha=3)
        loss = (y * y).sum()
        loss.backward()
        t = np.tanh(np.array([0.1, 0.2]) * [3.0, 4.0])
        assert_close(w.grad, 2 * t * (1 - t * t) * [3.0, 4.0], rtol=1e-10)
        w.grad = None
