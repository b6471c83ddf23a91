"""Activation checkpointing, as ``torch.utils.checkpoint``: the forward runs without
keeping its intermediates, and the backward runs it again (with the same random numbers)
to get them, trading compute for memory."""
import tapegrad as tg

from ..autograd import Function
from ..tensor import Tensor

__all__ = ["checkpoint", "checkpoint_sequential"]


class _Checkpoint(Function):
    """Inputs: a scalar that requires grad (so that parameters inside ``run`` get their
    gradients even when no input requires grad), then the tensor arguments."""

    @staticmethod
    def forward(ctx, run, layout, rng, _, *tensors):
        ctx.run, ctx.layout, ctx.rng = run, layout, rng
        ctx.save_for_backward(*tensors)
        with tg.no_grad():
            return run(*_arguments(layout, tensors))

    @staticmethod
    def backward(ctx, *grads):
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        after = None
        if ctx.rng is not None:           # the forward's random numbers again
            after = tg.get_rng_state()
            tg.set_rng_state(ctx.rng)
        try:
            with tg.enable_grad():
                out = ctx.run(*_arguments(ctx.layout, inputs))
        finally:
            if after is not None:
                tg.set_rng_state(after)
        outs = out if isinstance(out, tuple) else (out,)
        pairs = [(o, g) for o, g in zip(outs, grads)
                 if isinstance(o, Tensor) and o.requires_grad and g is not None]
        if pairs:
            tg.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None, None, None, *[t.grad if t.requires_grad else None
                                          for t in inputs])


def _arguments(layout, tensors):
    it = iter(tensors)
    return [next(it) if kind else value for kind, value in layout]


def checkpoint(function, *args, use_reentrant=None, context_fn=None,
               determinism_check="default", debug=False, preserve_rng_state=True, **kwargs):
    """function(*args, **kwargs), its intermediates computed again during backward."""
    if use_reentrant and kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
    if context_fn is not None or determinism_check != "default" or debug:
        raise NotImplementedError("checkpoint: context_fn, determinism_check and debug are "
                                  "not supported")
    layout = [(True, None) if isinstance(a, Tensor) else (False, a) for a in args]
    tensors = [a for a in args if isinstance(a, Tensor)]
    run = (lambda *xs: function(*xs, **kwargs)) if kwargs else function
    rng = tg.get_rng_state() if preserve_rng_state else None
    anchor = tg.ones((), requires_grad=True)
    return _Checkpoint.apply(run, layout, rng, anchor, *tensors)


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """A Sequential (or list of modules) in ``segments`` checkpointed parts; the last part
    runs normally, as in PyTorch."""
    functions = list(functions.children()) if isinstance(functions, tg.nn.Sequential) \
        else list(functions)
    size = len(functions) // segments

    def part(start, end):
        def run(x):
            for f in functions[start:end + 1]:
                x = f(x)
            return x
        return run
    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(part(start, end), input, use_reentrant=use_reentrant, **kwargs)
    return part(end + 1, len(functions) - 1)(input)
