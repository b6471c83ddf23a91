"""Adam's update as three in-place passes (first moment, second moment, step) where its
tensor ops make a dozen: the same formulas, in the same order and dtype, so the bits are
those of PyTorch's single-tensor Adam written op by op.
"""

import numpy as np
from numba import njit

from .cache import _JIT, _safe_caches
from .layout import _as


@njit(**_JIT)
def adam_moment(stage, out, g, p, beta, wd, maximize):
    """Adam's first (stage 0) or second (stage 1) moment ``out``, updated in place from
    the gradient g (negated under ``maximize``; plus p * wd when p is not empty, L2
    decay): m = lerp(m, g, 1 - beta) (torch.lerp's two forms); v = v * beta +
    g * (1 - beta) * g. Constants are rounded to out's dtype, as a tensor op does."""
    n = out.size
    if n == 0:
        return
    z = out[0]
    decay = _as(z, wd)
    l2 = p.size != 0
    w = 1.0 - beta
    near = abs(w) < 0.5
    c = _as(z, w if near or stage else 1.0 - w)
    b = _as(z, beta)
    for i in range(n):
        gi = -g[i] if maximize else g[i]
        if l2:
            gi = gi + p[i] * decay
        if stage:
            out[i] = out[i] * b + (gi * c) * gi
        elif near:
            out[i] = out[i] + (gi - out[i]) * c
        else:
            out[i] = gi - (gi - out[i]) * c


@njit(**_JIT)
def adam_step(p, m, v, step, root, eps, decay, decoupled):
    """p = p (* decay when decoupled) + m * step / (sqrt(v) / root + eps), in place; step
    (-lr / bias correction 1) and root (sqrt of bias correction 2) are of p's dtype."""
    n = p.size
    if n == 0:
        return
    z = p[0]
    e = _as(z, eps)
    c = _as(z, decay)
    for i in range(n):
        pi = p[i] * c if decoupled else p[i]
        p[i] = pi + (m[i] * step) / (np.sqrt(v[i]) / root + e)


_safe_caches(globals())
