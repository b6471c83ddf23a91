"""gradcheck / gradgradcheck: pass on correct gradients, fail (GradcheckError showing both
Jacobians, or False with raise_exception=False) on wrong ones, agree with PyTorch's
verdicts, and raise PyTorch's warnings and errors for bad inputs."""
import re
import warnings

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.autograd.gradcheck import GradcheckError, gradcheck, gradgradcheck

rng = np.random.default_rng(2024)


def leaf(*shape, requires_grad=True, low=-1.0, high=1.0):
    return tg.tensor(rng.uniform(low, high, shape), dtype=tg.float64,
                     requires_grad=requires_grad)


# ---------------------------------------------------------------------------
# Correct gradients pass
CORRECT = {
    "tanh": (lambda x: tg.tanh(x), lambda: (leaf(3, 2),)),
    "sigmoid_exp": (lambda x: tg.sigmoid(x) * tg.exp(x), lambda: (leaf(4),)),
    "log_sqrt": (lambda x: tg.log(x * x + 1.0) + tg.sqrt(x * x + 2.0), lambda: (leaf(2, 3),)),
    "div_pow": (lambda x, y: x / (y * y + 1.0) + (x * x + 1.0) ** y,
                lambda: (leaf(3), leaf(3))),
    "broadcast": (lambda x, y: x * y - y, lambda: (leaf(2, 3), leaf(3))),
    "matmul": (lambda a, b: a @ b, lambda: (leaf(2, 3), leaf(3, 4))),
    "reductions": (lambda x: (x.sum(0), x.mean(1, keepdim=True), x.sum()),
                   lambda: (leaf(3, 4),)),
    "shapes": (lambda x: x.permute(2, 0, 1).reshape(4, 6).transpose(0, 1)[1:, ::2],
               lambda: (leaf(2, 3, 4),)),
    "expand_unsqueeze": (lambda x: (x.unsqueeze(0).expand(3, 4) * x).sum(1),
                         lambda: (leaf(4),)),
    "relu_abs": (lambda x: tg.relu(x) + tg.abs(x) * 0.5, lambda: (leaf(5, low=0.1, high=1),)),
    "one_input_constant": (lambda x, c: x * c + c, lambda: (leaf(3), leaf(3,
                                                                           requires_grad=False))),
    "multi_output": (lambda x, y: (x * y, tg.tanh(x).sum() * y), lambda: (leaf(2), leaf(2))),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_gradcheck_passes_on_correct_ops(name):
    fn, make = CORRECT[name]
    assert gradcheck(fn, make()) is True


def test_gradcheck_accepts_a_single_tensor_and_a_list():
    x = leaf(3)
    assert gradcheck(tg.tanh, x) is True
    assert gradcheck(lambda a, b: a * b, [x, leaf(3)]) is True


def test_gradcheck_leaves_inputs_and_grads_untouched():
    x = leaf(2, 3)
    before = x.detach().numpy().copy()
    gradcheck(lambda a: tg.tanh(a) * a, x)
    np.testing.assert_array_equal(x.detach().numpy(), before)
    assert x.grad is None


# ---------------------------------------------------------------------------
# Wrong gradients fail
def doubled_grad(x):
    """3 * x whose backward is scaled by 2 through a hook on an intermediate."""
    h = x * 3.0
    h.register_hook(lambda g: g * 2)
    return h.sum(0)


def test_gradcheck_raises_on_wrong_gradient_showing_both_jacobians():
    x = tg.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=tg.float64, requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(doubled_grad, (x,))
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert msg.startswith("Jacobian mismatch for output 0 with respect to input 0,\n"
                          "numerical:tensor(")
    numerical, analytical = msg.split("\nanalytical:")
    # Jacobians are (input.numel(), output.numel()) = (4, 2), as in PyTorch
    assert numerical.count("[") == 5 and analytical.count("[") == 5
    assert "3.0" in numerical or "3." in numerical
    assert "6." in analytical and "6." not in numerical


def test_gradcheck_returns_false_without_raising():
    x = leaf(2, 2)
    assert gradcheck(doubled_grad, (x,), raise_exception=False) is False


def test_mismatch_reported_for_the_right_output_and_input():
    def fn(x, y):
        z = y * 1.0
        z.register_hook(lambda g: g * -1)
        return tg.tanh(x), (x * z).sum()
    with pytest.raises(GradcheckError, match="mismatch for output 1 with respect to input 1"):
        gradcheck(fn, (leaf(3), leaf(3)))


def test_gradcheck_wrong_function_backward():
    Function = getattr(tg.autograd, "Function", None)
    if Function is None:
        pytest.skip("tapegrad.autograd.Function not available")

    class BadSquare(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3.0 * x        # should be 2x

    with pytest.raises(GradcheckError, match="Jacobian mismatch"):
        gradcheck(BadSquare.apply, (leaf(3),))
    assert gradcheck(BadSquare.apply, (leaf(3),), raise_exception=False) is False


def test_gradgradcheck_detects_a_wrong_second_derivative():
    Function = getattr(tg.autograd, "Function", None)
    if Function is None:
        pytest.skip("tapegrad.autograd.Function not available")

    class DetachedSquare(Function):
        """Right first derivative, computed from a detached x: its own derivative in x
        is lost, so the second derivative is wrong (0 instead of 2 g)."""
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2.0 * x.detach()

    x = leaf(3)
    assert gradcheck(DetachedSquare.apply, (x,)) is True
    with pytest.raises(GradcheckError, match="Jacobian mismatch"):
        gradgradcheck(DetachedSquare.apply, (x,))
    assert gradgradcheck(DetachedSquare.apply, (x,), raise_exception=False) is False


# ---------------------------------------------------------------------------
# gradgradcheck on correct second derivatives
def mlp(x, w1, b1, w2):
    return tg.tanh(x @ w1 + b1) @ w2


@pytest.mark.parametrize("case", ["cube", "tanh", "mlp", "sigmoid_div", "two_outputs"])
def test_gradgradcheck_passes(case):
    if case == "cube":
        assert gradgradcheck(lambda x: x ** 3, (leaf(2, 3),))
    elif case == "tanh":
        assert gradgradcheck(tg.tanh, (leaf(4),))
    elif case == "mlp":
        assert gradgradcheck(mlp, (leaf(2, 3), leaf(3, 4), leaf(4), leaf(4, 2)))
    elif case == "sigmoid_div":
        assert gradgradcheck(lambda x, y: tg.sigmoid(x) / (y * y + 1.0), (leaf(3), leaf(3)))
    else:
        assert gradgradcheck(lambda x: (x * x, tg.exp(x).sum()), (leaf(3),))


def test_gradgradcheck_with_given_grad_outputs():
    x = leaf(3)
    go = tg.tensor(rng.uniform(-1, 1, 3), dtype=tg.float64, requires_grad=True)
    assert gradgradcheck(lambda t: tg.tanh(t) * t, (x,), (go,)) is True
    assert gradgradcheck(lambda t: tg.tanh(t) * t, x, go) is True


def test_gradgradcheck_differentiates_the_hooked_gradient_function():
    # gradgradcheck checks the function x, v -> grad(fn(x), x, v): the hook is part of
    # that function in both its numerical and its analytical derivative, so, as in
    # PyTorch, it passes; it is the first-order gradcheck that catches the hook.
    x = leaf(2, 2)
    assert gradgradcheck(doubled_grad, (x,), raise_exception=False) is True
    assert gradcheck(doubled_grad, (x,), raise_exception=False) is False


# ---------------------------------------------------------------------------
# Inputs: dtype warning and errors, as PyTorch
def test_float32_input_warns():
    x = tg.tensor([1.0, 2.0], dtype=tg.float32, requires_grad=True)
    with pytest.warns(UserWarning, match="Input #0 requires gradient and is not a double "
                                         "precision floating point"):
        gradcheck(lambda t: t * 2.0, (x,), eps=1e-2, atol=1e-2, raise_exception=False)


def test_float64_inputs_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(tg.tanh, (leaf(3),))


def test_no_input_requires_grad_is_a_value_error():
    with pytest.raises(ValueError, match="at least one input tensor to require gradient"):
        gradcheck(tg.tanh, (leaf(3, requires_grad=False),))


def test_stride_zero_input_is_rejected():
    base = tg.tensor([1.0], dtype=tg.float64, requires_grad=True)
    x = base.expand(3)
    with pytest.raises(RuntimeError, match="stride 0"):
        gradcheck(lambda t: t * 2.0, (x,))


def test_no_differentiable_outputs():
    x = leaf(3)
    assert gradcheck(lambda t: (t > 0), (x,)) is True          # bool output: nothing to check
    with pytest.raises(GradcheckError, match="Numerical gradient for function expected to "
                                             "be zero"):
        gradcheck(lambda t: t.detach() * 2.0, (x,))


# ---------------------------------------------------------------------------
# Same verdicts as torch.autograd.gradcheck
VERDICT_CASES = {
    "tanh": (lambda ns: (lambda x: ns.tanh(x)), [(3, 2)], True),
    "mlp_like": (lambda ns: (lambda x, w: ns.sigmoid(x @ w).sum(1)), [(2, 3), (3, 4)], True),
    "hook_scaled": (lambda ns: _hooked(ns, 2.0), [(2, 2)], False),
    "hook_identity": (lambda ns: _hooked(ns, 1.0), [(2, 2)], True),
    "detached_output": (lambda ns: (lambda x: x.detach() * 2.0), [(3,)], False),
}


def _hooked(ns, scale):
    def fn(x):
        h = ns.tanh(x) * 3.0
        h.register_hook(lambda g: None if g is None else g * scale)
        return h
    return fn


@pytest.mark.parametrize("name", list(VERDICT_CASES))
def test_same_verdict_as_torch(name):
    torch = pytest.importorskip("torch")
    make, shapes, expected = VERDICT_CASES[name]
    arrays = [rng.uniform(-1, 1, s) for s in shapes]
    tg_in = tuple(tg.tensor(a, dtype=tg.float64, requires_grad=True) for a in arrays)
    pt_in = tuple(torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays)
    got = gradcheck(make(tg), tg_in, raise_exception=False)
    want = torch.autograd.gradcheck(make(torch), pt_in, raise_exception=False)
    assert got == want == expected
    got2 = gradgradcheck(make(tg), tg_in, raise_exception=False) if expected else False
    want2 = torch.autograd.gradgradcheck(make(torch), pt_in, raise_exception=False) \
        if expected else False
    assert got2 == want2


def test_mismatch_message_matches_torch_layout():
    torch = pytest.importorskip("torch")
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(GradcheckError) as got:
        gradcheck(_hooked(tg, 2.0), (tg.tensor(a, requires_grad=True),))
    with pytest.raises(RuntimeError) as want:       # torch's GradcheckError
        torch.autograd.gradcheck(_hooked(torch, 2.0),
                                 (torch.tensor(a, requires_grad=True),))
    g, w = str(got.value), str(want.value)
    assert g.splitlines()[0] == w.splitlines()[0]
    # both Jacobians have PyTorch's layout and values (to the printed precision)
    def numbers(s):
        return [float(v) for v in re.findall(r"-?\d+\.\d*(?:e[-+]?\d+)?", s)]
    gn, ga = g.split("\nanalytical:")
    wn, wa = w.split("\nanalytical:")
    np.testing.assert_allclose(numbers(gn), numbers(wn), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(numbers(ga), numbers(wa), rtol=1e-3, atol=1e-3)
