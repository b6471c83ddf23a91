"""Adam and AdamW, with PyTorch's update rule (torch/optim/adam.py, single-tensor path)."""
import math

import tapegrad as tg

from .. import _kernels as K
from ..ops.base import bump_version
from ..tape import TRACE
from .optimizer import Optimizer, check_betas, check_nonnegative, implementation

__all__ = ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"]


def _scalar_dtype():
    return tg.float64 if tg.get_default_dtype() == tg.float64 else tg.float32


def _lerp_(start, end, weight):
    """start += weight * (end - start), in place, with torch.lerp's two formulas."""
    if abs(weight) < 0.5:
        return start.add_((end - start).mul_(weight))
    # end - (end - start) * (1 - weight), written into start
    diff = end - start
    return start.copy_(end - diff.mul_(1.0 - weight))


def _moments(p, grad, group, exp_avg, exp_avg_sq):
    """Weight decay (decoupled: on p; else added to the gradient), then Adam's moving
    averages of the gradient and its square; returns the gradient used."""
    lr, weight_decay = group["lr"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            p.mul_(1 - lr * weight_decay)
        else:
            grad = grad.add(p, alpha=weight_decay)
    _lerp_(exp_avg, grad, 1 - beta1)
    # addcmul_(grad, grad, value=1 - beta2) evaluates (value * grad) * grad
    exp_avg_sq.mul_(beta2).add_(grad.mul(1 - beta2).mul_(grad))
    return grad


def _fusable(*ts):
    """Whether Adam's passes (_kernels.optim) can update these tensors: one float dtype,
    one shape, C order."""
    d = ts[0]._data
    return d.dtype.kind == "f" and d.dtype.itemsize in (4, 8) and all(
        t._data.dtype == d.dtype and t._data.shape == d.shape and t._data.flags.c_contiguous
        for t in ts)


def _flat(t):
    return t._data.reshape(-1)


def _fused_moments(p, grad, group, exp_avg, exp_avg_sq):
    """_moments (L2 decay only: AdamW's decay goes with the step) as two in-place
    passes, the gradient negated under maximize."""
    beta1, beta2 = group["betas"]
    wd = group["weight_decay"]
    l2 = wd != 0 and not group["decoupled_weight_decay"]
    maximize = group["maximize"]
    src = p if l2 else None
    for stage, out, beta in ((0, exp_avg, beta1), (1, exp_avg_sq, beta2)):
        if TRACE[0] is not None:
            TRACE[0].write(K.X_ADAM, out, [grad, src], beta, wd, (stage, int(maximize)))
        K.adam_moment(stage, _flat(out), _flat(grad), _flat(p)[:p.numel() if l2 else 0],
                      float(beta), float(wd), maximize)
        bump_version(out)


def _fused_step(p, exp_avg, v, step, root, group):
    """p += exp_avg * step / (sqrt(v) / root + eps), after AdamW's decay, in one pass;
    step and root are numbers, or one-element tensors while a replay is recorded."""
    lr, wd = group["lr"], group["weight_decay"]
    decoupled = wd != 0 and group["decoupled_weight_decay"]
    decay = 1 - lr * wd if decoupled else 1.0
    if TRACE[0] is not None:
        TRACE[0].write(K.X_ADAM, p, [exp_avg, v, step, root], group["eps"], decay,
                       (2, 2 * int(decoupled)))
        step, root = step._data, root._data
    rnd = p._data.dtype.type
    K.adam_step(_flat(p), _flat(exp_avg), _flat(v), rnd(step), rnd(root),
                float(group["eps"]), float(decay), decoupled)
    bump_version(p)


def _defaults(lr, betas, eps, weight_decay, settings, impl):
    """The param_group defaults of the Adam family, checked as PyTorch does (lr and eps,
    the betas, weight decay): lr, betas, eps, weight_decay, then ``settings`` of the
    optimizer's own, then the implementation entries ``impl``."""
    check_nonnegative(lr=lr, eps=eps)
    check_betas(betas)
    check_nonnegative(weight_decay=weight_decay)
    return {"lr": lr, "betas": (float(betas[0]), float(betas[1])), "eps": eps,
            "weight_decay": weight_decay, **settings, **impl}


class Adam(Optimizer):
    """Adam (Kingma & Ba), optionally AMSGrad; ``decoupled_weight_decay`` makes it AdamW.

    Per parameter, at step t (PyTorch's single-tensor path)::

        p = p * (1 - lr * wd) (decoupled)   |   g = g + wd * p (L2)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v) (amsgrad)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    State per parameter: ``step`` (a 0-d tensor), ``exp_avg``, ``exp_avg_sq`` and with
    amsgrad ``max_exp_avg_sq``.
    """

    _live = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        defaults = _defaults(lr, betas, eps, weight_decay,
                             {"amsgrad": amsgrad, "maximize": maximize,
                              "decoupled_weight_decay": decoupled_weight_decay},
                             implementation(differentiable, foreach=foreach,
                                            capturable=capturable, fused=fused))
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        amsgrad = group["amsgrad"]
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            state = self.state[p]
            if len(state) == 0:
                state["step"] = tg.tensor(0.0, dtype=_scalar_dtype())
                state["exp_avg"] = tg.zeros_like(p)
                state["exp_avg_sq"] = tg.zeros_like(p)
                if amsgrad:
                    state["max_exp_avg_sq"] = tg.zeros_like(p)
            exp_avg = state["exp_avg"]
            exp_avg_sq = state["exp_avg_sq"]
            step_t = state["step"]
            step_t.add_(1)
            fused = _fusable(p, grad, exp_avg, exp_avg_sq,
                             *([state["max_exp_avg_sq"]] if amsgrad else []))
            if fused:
                _fused_moments(p, grad, group, exp_avg, exp_avg_sq)
            else:
                _moments(p, -grad if group["maximize"] else grad, group, exp_avg, exp_avg_sq)
            if TRACE[0] is None:
                # PyTorch's Python-float math, rounded to p's dtype where it meets p
                step = float(step_t._data)
                rnd = p._data.dtype.type
                neg_step_size = float(rnd(-(lr / (1 - beta1 ** step))))
                bias_correction2_sqrt = float(rnd(math.sqrt(1 - beta2 ** step)))
            else:
                # the same as float64 tensor ops (the same bits), so that a compiled
                # replay computes them for each step
                step = step_t.to(tg.float64)
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                neg_step_size = (-(lr / bias_correction1)).to(p.dtype)
                bias_correction2_sqrt = (bias_correction2 ** 0.5).to(p.dtype)
            v = exp_avg_sq
            if amsgrad:
                v = state["max_exp_avg_sq"]
                v.copy_(tg.maximum(v, exp_avg_sq))
            if fused:
                _fused_step(p, exp_avg, v, neg_step_size, bias_correction2_sqrt, group)
                continue
            denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
            # addcdiv_(exp_avg, denom, value=-step_size) evaluates (value * exp_avg) / denom
            p.add_(exp_avg.mul(neg_step_size).div_(denom))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         foreach=foreach, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


class Adamax(Optimizer):
    """Adamax (Kingma & Ba), Adam with the infinity norm. Per parameter, at step t
    (PyTorch's single-tensor path)::

        g = g + wd * p
        m = lerp(m, g, 1 - beta1);  u = max(beta2 * u, |g| + eps)
        p = p - lr / (1 - beta1**t) * m / u

    State per parameter: ``step``, ``exp_avg``, ``exp_inf``.
    """

    _live = True

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        defaults = _defaults(lr, betas, eps, weight_decay, {"maximize": maximize},
                             implementation(differentiable, foreach=foreach,
                                            capturable=capturable))
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        eps, weight_decay = group["eps"], group["weight_decay"]
        for p, grad in self._with_grads(group):
            state = self.state[p]
            if len(state) == 0:
                state["step"] = tg.tensor(0.0, dtype=_scalar_dtype())
                state["exp_avg"] = tg.zeros_like(p)
                state["exp_inf"] = tg.zeros_like(p)
            exp_avg, exp_inf, step_t = state["exp_avg"], state["exp_inf"], state["step"]
            step_t.add_(1)
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            _lerp_(exp_avg, grad, 1 - beta1)
            exp_inf.copy_(tg.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps)))
            # lr / (1 - beta1**t) as float64 tensor ops (PyTorch's Python-float math), so
            # that a compiled replay computes it for each step
            clr = (lr / (1 - beta1 ** step_t.to(tg.float64))).to(p.dtype)
            # addcdiv_(exp_avg, exp_inf, value=-clr) evaluates (value * exp_avg) / exp_inf
            p.add_(exp_avg.mul(-clr).div_(exp_inf))


class NAdam(Optimizer):
    """Adam with Nesterov momentum (Dozat), momentum decaying by ``momentum_decay``. Per
    parameter, at step t (PyTorch's single-tensor path)::

        mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay));  prod *= mu_t
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        d = sqrt(v / (1 - beta2**t)) + eps
        p = p - lr (1 - mu_t) / (1 - prod) * g / d - lr mu_{t+1} / (1 - prod mu_{t+1}) * m / d

    State per parameter: ``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``.
    """

    _live = True

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        defaults = _defaults(lr, betas, eps, weight_decay,
                             {"momentum_decay": momentum_decay,
                              "decoupled_weight_decay": decoupled_weight_decay,
                              "maximize": maximize},
                             implementation(differentiable, foreach=foreach,
                                            capturable=capturable))
        check_nonnegative(momentum_decay=momentum_decay)
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        eps, decay = group["eps"], group["momentum_decay"]
        for p, grad in self._with_grads(group):
            state = self.state[p]
            if len(state) == 0:
                state["step"] = tg.tensor(0.0, dtype=_scalar_dtype())
                state["mu_product"] = tg.tensor(1.0, dtype=_scalar_dtype())
                state["exp_avg"] = tg.zeros_like(p)
                state["exp_avg_sq"] = tg.zeros_like(p)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            step_t, mu_product = state["step"], state["mu_product"]
            step_t.add_(1)
            # PyTorch's Python-float math as float64 tensor ops (a compiled replay computes
            # them for each step), rounded to the dtype of what they meet
            step = step_t.to(tg.float64)
            bias_correction2 = 1 - beta2 ** step
            grad = _moments(p, grad, group, exp_avg, exp_avg_sq)
            mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * decay)))
            mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * decay)))
            mu_product.mul_(mu.to(mu_product.dtype))
            denom = exp_avg_sq.div(bias_correction2.to(p.dtype)).sqrt().add_(eps)
            product = mu_product.to(tg.float64)
            value1 = (-lr * (1.0 - mu) / (1.0 - product)).to(p.dtype)
            value2 = ((-lr * mu_next) / (1.0 - product * mu_next)).to(p.dtype)
            # addcdiv_(t, denom, value=v) evaluates (v * t) / denom
            p.add_(grad.mul(value1).div_(denom))
            p.add_(exp_avg.mul(value2).div_(denom))


class RAdam(Optimizer):
    """Rectified Adam (Liu et al.): plain momentum SGD until the variance estimate is
    reliable (rho_t > 5), then Adam scaled by the rectification term. Per parameter, at
    step t (PyTorch's single-tensor path)::

        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t),  rho_inf = 2 / (1 - beta2) - 1
        p = p - m / (1 - beta1**t) * lr * [sqrt(1 - beta2**t) / (sqrt(v) + eps) * r_t]

    (the bracket only when rho_t > 5). State per parameter: ``step``, ``exp_avg``,
    ``exp_avg_sq``.
    """

    _live = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        defaults = _defaults(lr, betas, eps, weight_decay,
                             {"decoupled_weight_decay": decoupled_weight_decay,
                              "maximize": maximize},
                             implementation(differentiable, foreach=foreach,
                                            capturable=capturable))
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        rho_inf = 2 / (1 - beta2) - 1
        for p, grad in self._with_grads(group):
            state = self.state[p]
            if len(state) == 0:
                state["step"] = tg.tensor(0.0, dtype=_scalar_dtype())
                state["exp_avg"] = tg.zeros_like(p)
                state["exp_avg_sq"] = tg.zeros_like(p)
            exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
            step_t.add_(1)
            _moments(p, grad, group, exp_avg, exp_avg_sq)
            # PyTorch's Python-float math as float64 tensor ops, and its branch on rho_t as
            # a selection, so that a compiled replay takes the right one at every step
            step = step_t.to(tg.float64)
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            corrected = exp_avg / bias_correction1.to(p.dtype)
            rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            adaptive = (bias_correction2 ** 0.5).to(p.dtype) / exp_avg_sq.sqrt().add_(eps)
            plain = corrected * lr
            p.sub_(tg.where(rho_t > 5.0, plain * adaptive * rect.to(p.dtype), plain))
