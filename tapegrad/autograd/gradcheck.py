"""gradcheck and gradgradcheck: analytical Jacobians against central differences.

As ``torch.autograd.gradcheck`` (its default "slow mode"): for every input that requires
grad and every differentiable output, the numerical Jacobian (central differences, each
input element perturbed by ``eps`` in place) must equal the analytical one (one
``autograd.grad`` per output element, seeded with a one-hot ``grad_outputs``) within
``|analytical - numerical| <= atol + rtol * |numerical|``. Both Jacobians are laid out as
PyTorch does: shape ``(input.numel(), output.numel())``. The analytical Jacobian is
computed twice (a backward must be deterministic), and a backward seeded with zeros must
give zeros. ``gradgradcheck`` runs ``gradcheck`` on the function that maps
``(inputs, grad_outputs)`` to the first-order gradients, recorded with
``create_graph=True``.
"""
import warnings

import numpy as np

from ..creation import from_numpy
from ..tensor import Tensor
from .engine import grad as _grad

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError"]


class GradcheckError(RuntimeError):
    """Raised by gradcheck and gradgradcheck when a check fails."""


def _as_tuple(x):
    if isinstance(x, tuple):
        return x
    if isinstance(x, list):
        return tuple(x)
    return (x,)


def _is_float(t):
    return isinstance(t, Tensor) and t.detach().numpy().dtype.kind == "f"


def _differentiable_outputs(x):
    return tuple(o for o in _as_tuple(x) if isinstance(o, Tensor) and o.requires_grad)


def _check_inputs(tupled_inputs):
    any_requires_grad = False
    for idx, inp in enumerate(tupled_inputs):
        if isinstance(inp, Tensor) and inp.requires_grad:
            arr = inp.detach().numpy()
            if arr.dtype != np.float64:
                warnings.warn(
                    f"Input #{idx} requires gradient and is not a double precision floating "
                    "point. This check will likely fail if all the inputs are not of double "
                    "precision floating point. ", stacklevel=4)
            if not all(st > 0 or sz <= 1 for st, sz in zip(arr.strides, arr.shape)):
                raise RuntimeError(
                    f"The {idx}th input has a dimension with stride 0. gradcheck only supports "
                    "inputs that are non-overlapping to be able to compute the numerical "
                    "gradients correctly. You should call .contiguous on the input before "
                    "passing it to gradcheck.")
            any_requires_grad = True
    if not any_requires_grad:
        raise ValueError("gradcheck expects at least one input tensor to require gradient, "
                         "but none of them have requires_grad=True.")


def _float_outputs(out):
    """Flat float64 copies of the floating outputs (None for the others)."""
    return [o.detach().numpy().astype(np.float64).reshape(-1) if _is_float(o) else None
            for o in _as_tuple(out)]


def _numerical_jacobian(fn, tupled_inputs, func_out, eps):
    """[input j][output i] -> (inp_j.numel(), out_i.numel()) for the inputs that require
    grad (None for outputs that are not floating)."""
    sizes = [None if o is None else o.size for o in _float_outputs(func_out)]
    jacobians = []
    for inp in tupled_inputs:
        if not (isinstance(inp, Tensor) and inp.requires_grad):
            continue
        arr = inp.detach().numpy()       # shares the input's memory: perturbed in place
        per_output = [None if m is None else np.zeros((arr.size, m), arr.dtype)
                      for m in sizes]
        for k in range(arr.size):
            orig = arr.flat[k]
            arr.flat[k] = orig - eps
            outa = _float_outputs(fn(*tupled_inputs))
            arr.flat[k] = orig + eps
            outb = _float_outputs(fn(*tupled_inputs))
            arr.flat[k] = orig
            for i, (a, b) in enumerate(zip(outa, outb)):
                if per_output[i] is not None:
                    per_output[i][k] = (b - a) / (2 * eps)
        jacobians.append(per_output)
    return jacobians


def _analytical_rows(output, diff_inputs):
    """(inp.numel(), out.numel()) per input; sizes_ok; one backward per output element."""
    out_data = output.detach().numpy()
    n = out_data.size
    jac = [np.zeros((inp.numel(), n), inp.detach().numpy().dtype) for inp in diff_inputs]
    sizes_ok = True
    seed = np.zeros(n, out_data.dtype)
    for j in range(n):
        seed[:] = 0
        seed[j] = 1
        grads = _grad([output], list(diff_inputs),
                      [from_numpy(seed.reshape(out_data.shape).copy())],
                      retain_graph=True, allow_unused=True)
        for k, (g, inp) in enumerate(zip(grads, diff_inputs)):
            if g is None:
                continue
            if tuple(g.shape) != tuple(inp.shape):
                sizes_ok = False
                continue
            jac[k][:, j] = g.detach().numpy().reshape(-1)
    return jac, sizes_ok


def _allclose(a, n, rtol, atol):
    return bool(np.all(np.abs(a - n) <= atol + rtol * np.abs(n)))


def _msg(analytical, numerical, output_idx, input_idx):
    return (f"Jacobian mismatch for output {output_idx:d} with respect to input "
            f"{input_idx:d},\nnumerical:{from_numpy(numerical)!r}\n"
            f"analytical:{from_numpy(analytical)!r}\n")


def _test_backward_mul_by_grad_output(outputs, diff_inputs):
    """A backward seeded with zeros must give zeros (of the input's size)."""
    grads = _grad(list(outputs), list(diff_inputs),
                  [from_numpy(np.zeros_like(o.detach().numpy())) for o in outputs],
                  retain_graph=True, allow_unused=True)
    for g, inp in zip(grads, diff_inputs):
        if g is None:
            continue
        if tuple(g.shape) != tuple(inp.shape):
            raise GradcheckError("grad is incorrect size")
        if g.dtype != inp.dtype:
            raise GradcheckError("grad is incorrect type")
        if np.any(g.detach().numpy() != 0):
            raise GradcheckError("backward not multiplied by grad_output")


def _gradcheck(fn, inputs, eps, atol, rtol, nondet_tol):
    tupled_inputs = _as_tuple(inputs)
    _check_inputs(tupled_inputs)
    func_out = fn(*tupled_inputs)
    outputs = _differentiable_outputs(func_out)
    diff_inputs = [t for t in tupled_inputs if isinstance(t, Tensor) and t.requires_grad]
    numerical = _numerical_jacobian(fn, tupled_inputs, func_out, eps)
    if not outputs:
        for per_output in numerical:
            for jac in per_output:
                if jac is not None and np.any(jac != 0):
                    raise GradcheckError("Numerical gradient for function expected to be "
                                         "zero")
        return True
    # numerical[input][output], restricted to the outputs that require grad
    keep = [i for i, o in enumerate(_as_tuple(func_out))
            if isinstance(o, Tensor) and o.requires_grad]
    for i, o in enumerate(outputs):
        jac1, sizes_ok = _analytical_rows(o, diff_inputs)
        jac2, _ = _analytical_rows(o, diff_inputs)
        if not sizes_ok:
            raise GradcheckError("Analytical gradient has incorrect size")
        for a1, a2 in zip(jac1, jac2):
            if a1.size and np.abs(a1 - a2).max() > nondet_tol:
                raise GradcheckError(
                    "Backward is not reentrant, i.e., running backward with same input and "
                    "grad_output multiple times gives different values, although analytical "
                    f"gradient matches numerical gradient.The tolerance for nondeterminism "
                    f"was {nondet_tol}.")
        for j, a in enumerate(jac1):
            n = numerical[j][keep[i]]
            if not _allclose(a, n, rtol, atol):
                raise GradcheckError(_msg(a, n, i, j))
    _test_backward_mul_by_grad_output(outputs, diff_inputs)
    return True


def gradcheck(fn, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              nondet_tol=0.0):
    """Checks ``fn``'s analytical gradients against central differences.

    Returns True; on a mismatch raises ``GradcheckError`` showing both Jacobians, or
    returns False when ``raise_exception=False``.
    """
    try:
        return _gradcheck(fn, inputs, eps, atol, rtol, nondet_tol)
    except GradcheckError:
        if raise_exception:
            raise
        return False


def gradgradcheck(fn, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, nondet_tol=0.0):
    """Checks the gradients of ``fn``'s gradients (with respect to the inputs and to the
    ``grad_outputs``, random in [-1, 1) when not given) against central differences."""
    tupled_inputs = _as_tuple(inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        outs = _differentiable_outputs(fn(*tupled_inputs))
        tupled_grad_outputs = []
        for o in outs:
            data = o.detach().numpy()
            dt = data.dtype if data.dtype.kind == "f" else np.float64
            g = from_numpy(rng.uniform(-1.0, 1.0, data.shape).astype(dt))
            tupled_grad_outputs.append(g.requires_grad_(True))
        tupled_grad_outputs = tuple(tupled_grad_outputs)
    else:
        tupled_grad_outputs = _as_tuple(grad_outputs)
    num_outputs = len(tupled_grad_outputs)
    diff_input_idx = {i for i, x in enumerate(tupled_inputs)
                      if isinstance(x, Tensor) and x.requires_grad}

    def new_fn(*args):
        input_args = args[:len(args) - num_outputs]
        gouts = args[len(args) - num_outputs:]
        outputs = _differentiable_outputs(fn(*input_args))
        diff_inputs = [x for i, x in enumerate(input_args) if i in diff_input_idx]
        grads = _grad(list(outputs), diff_inputs, list(gouts), create_graph=True,
                      allow_unused=True) if outputs else ()
        return tuple(g for g in grads if g is not None)

    return gradcheck(new_fn, tupled_inputs + tupled_grad_outputs, eps=eps, atol=atol,
                     rtol=rtol, raise_exception=raise_exception, nondet_tol=nondet_tol)
