"""RMSprop, Adagrad, Adadelta, Rprop and ASGD, with PyTorch's update rules
(torch/optim/rmsprop.py, adagrad.py, adadelta.py, rprop.py, asgd.py, single-tensor
paths), written as tensor ops so that a compiled replay runs them."""
import tapegrad as tg

from .optimizer import Optimizer, check_nonnegative, implementation

__all__ = ["RMSprop", "Adagrad", "Adadelta", "Rprop", "ASGD"]


class RMSprop(Optimizer):
    """RMSprop (Hinton), optionally centered and with momentum. Per parameter::

        g = g + wd * p
        v = alpha * v + (1 - alpha) * g * g
        avg = sqrt(v - gm * gm) (centered: gm = lerp(gm, g, 1 - alpha)) | sqrt(v); += eps
        buf = momentum * buf + g / avg; p = p - lr * buf   |   p = p - lr * g / avg
    """

    _live = True

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        check_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay, momentum=momentum,
                          alpha=alpha)
        defaults = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                    "momentum": momentum, "centered": centered, "maximize": maximize,
                    **implementation(differentiable, foreach=foreach, capturable=capturable)}
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        for p, grad in self._with_grads(group):
            state = self.state[p]
            if len(state) == 0:
                state["step"] = tg.tensor(0.0)
                state["square_avg"] = tg.zeros_like(p)
                if momentum > 0:
                    state["momentum_buffer"] = tg.zeros_like(p)
                if group["centered"]:
                    state["grad_avg"] = tg.zeros_like(p)
            state["step"].add_(1)
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            square_avg = state["square_avg"]
            # addcmul_(grad, grad, value=1 - alpha) evaluates (value * grad) * grad
            square_avg.mul_(alpha).add_(grad.mul(1 - alpha).mul_(grad))
            if group["centered"]:
                grad_avg = state["grad_avg"]
                grad_avg.add_((grad - grad_avg).mul_(1 - alpha))
                # addcmul(grad_avg, grad_avg, value=-1)
                avg = (square_avg + grad_avg.mul(-1).mul_(grad_avg)).sqrt()
            else:
                avg = square_avg.sqrt()
            avg.add_(eps)
            if momentum > 0:
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(grad / avg)
                p.add_(buf, alpha=-lr)
            else:
                # addcdiv_(grad, avg, value=-lr) evaluates (value * grad) / avg
                p.add_(grad.mul(-lr).div_(avg))


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.). Per parameter, at step t::

        g = g + wd * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (sqrt(s) + eps)
    """

    _live = True

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None):
        check_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay, lr_decay=lr_decay,
                          initial_accumulator_value=initial_accumulator_value)
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value,
                    "maximize": maximize,
                    **implementation(differentiable, foreach=foreach, fused=fused)}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = tg.tensor(0.0)
                self.state[p]["sum"] = tg.full_like(p, initial_accumulator_value)

    def _update_group(self, group):
        lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
        weight_decay = group["weight_decay"]
        for p, grad in self._with_grads(group):
            state = self.state[p]
            step_t = state["step"]
            step_t.add_(1)
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            # PyTorch's Python-float step size, as a float64 tensor op (so that a compiled
            # replay computes it for each step)
            clr = (lr / ((step_t.to(tg.float64) - 1) * lr_decay + 1)).to(p.dtype)
            total = state["sum"]
            # addcmul_(grad, grad, value=1) and addcdiv_(grad, std, value=-clr)
            total.add_(grad * grad)
            std = total.sqrt().add_(eps)
            p.add_(grad.mul(-clr).div_(std))


class Adadelta(Optimizer):
    """Adadelta (Zeiler). Per parameter (PyTorch's single-tensor path)::

        g = g + wd * p
        v = rho * v + (1 - rho) * g * g
        d = sqrt(u + eps) / sqrt(v + eps) * g;  u = rho * u + (1 - rho) * d * d
        p = p - lr * d

    State per parameter: ``step``, ``square_avg``, ``acc_delta``.
    """

    _live = True

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        check_nonnegative(lr=lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        check_nonnegative(eps=eps, weight_decay=weight_decay)
        defaults = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay,
                    "maximize": maximize,
                    **implementation(differentiable, foreach=foreach, capturable=capturable)}
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr, rho, eps = group["lr"], group["rho"], group["eps"]
        weight_decay = group["weight_decay"]
        for p, grad in self._with_grads(group):
            state = self.state[p]
            if len(state) == 0:
                state["step"] = tg.tensor(0.0)
                state["square_avg"] = tg.zeros_like(p)
                state["acc_delta"] = tg.zeros_like(p)
            state["step"].add_(1)
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            square_avg, acc_delta = state["square_avg"], state["acc_delta"]
            # addcmul_(t, t, value=c) evaluates (c * t) * t
            square_avg.mul_(rho).add_(grad.mul(1 - rho).mul_(grad))
            std = square_avg.add(eps).sqrt_()
            delta = acc_delta.add(eps).sqrt_().div_(std).mul_(grad)
            acc_delta.mul_(rho).add_(delta.mul(1 - rho).mul_(delta))
            p.add_(delta, alpha=-lr)


class Rprop(Optimizer):
    """Resilient backpropagation. Per parameter and element::

        s = sign(g * prev)
        step_size = clamp(step_size * (etaplus if s > 0, etaminus if s < 0, 1 if s == 0),
                          *step_sizes)
        g = 0 where s < 0;  p = p - sign(g) * step_size;  prev = g

    State per parameter: ``step``, ``prev``, ``step_size`` (starting at ``lr``).
    """

    _live = True

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        check_nonnegative(lr=lr)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = {"lr": lr, "etas": etas, "step_sizes": step_sizes, "maximize": maximize,
                    **implementation(differentiable, foreach=foreach, capturable=capturable)}
        super().__init__(params, defaults)

    def _update_group(self, group):
        etaminus, etaplus = group["etas"]
        lo, hi = group["step_sizes"]
        for p, grad in self._with_grads(group):
            state = self.state[p]
            if len(state) == 0:
                state["step"] = tg.tensor(0.0)
                state["prev"] = tg.zeros_like(p)
                state["step_size"] = tg.full_like(grad, group["lr"])
            state["step"].add_(1)
            prev, step_size = state["prev"], state["step_size"]
            s = grad.mul(prev).sign()
            # selections, not masked writes: a NaN sign stays NaN, as PyTorch's
            factor = tg.where(s > 0, etaplus, tg.where(s < 0, etaminus, tg.where(s == 0, 1.0, s)))
            step_size.mul_(factor).clamp_(lo, hi)
            grad = tg.where(factor == etaminus, 0.0, grad)
            p.addcmul_(grad.sign(), step_size, value=-1)
            prev.copy_(grad)


class ASGD(Optimizer):
    """Averaged SGD (Polyak and Juditsky). Per parameter::

        g = g + wd * p
        p = p * (1 - lambd * eta) - eta * g
        ax = p if mu == 1 else ax + (p - ax) * mu
        eta = lr / (1 + lambd * lr * step) ** alpha;  mu = 1 / max(1, step - t0)

    State per parameter: ``step``, ``eta``, ``mu`` (float32 scalars, as PyTorch's) and
    ``ax``, the average. The scalar arithmetic is in float64, as PyTorch's Python floats.
    """

    _live = True

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0,
                 foreach=None, maximize=False, differentiable=False, capturable=False):
        check_nonnegative(lr=lr, weight_decay=weight_decay)
        defaults = {"lr": lr, "lambd": lambd, "alpha": alpha, "t0": t0,
                    "weight_decay": weight_decay, "maximize": maximize,
                    **implementation(differentiable, foreach=foreach, capturable=capturable)}
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr, lambd, alpha, t0 = group["lr"], group["lambd"], group["alpha"], group["t0"]
        weight_decay = group["weight_decay"]
        for p, grad in self._with_grads(group):
            state = self.state[p]
            if len(state) == 0:
                state["step"] = tg.tensor(0.0)
                state["eta"] = tg.tensor(float(lr))
                state["mu"] = tg.tensor(1.0)
                state["ax"] = tg.zeros_like(p)
            step, eta, mu, ax = state["step"], state["eta"], state["mu"], state["ax"]
            step.add_(1)
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            e = eta.double()
            p.mul_(1 - lambd * e)
            p.sub_(grad * e)
            ax.copy_(tg.where(mu == 1, p, ax + (p - ax) * mu))
            t = step.double()
            eta.copy_(lr / (1 + lambd * lr * t) ** alpha)
            mu.copy_(1 / tg.clamp(t - t0, min=1))
