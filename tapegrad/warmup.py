"""Compiles every kernel ahead of use: ``python -m tapegrad.warmup``.

Kernels compile on first use and are cached (see the README's start-up section). For
container images, CI caches and MPI jobs, this runs every op forward and backward in
both dtypes, eagerly and through a ``tg.compile`` replay, so that the cache holds
everything and later processes only load it. Set ``NUMBA_CACHE_DIR`` first to choose
where the cache goes.
"""
import sys
import time

import numpy as np

import tapegrad as tg
from tapegrad import _kernels as K

__all__ = ["warmup"]


def _ops(dt):
    """(name, function of fresh leaves) for every op family."""
    F = tg.nn.functional
    return [
        ("arithmetic", lambda a, b: ((a + b) * (a - b) / (b * b + 1.0)) ** 2.0
         + a ** b.abs() + 2.0 / (b * b + 1.0) + 3.0 ** a.tanh() - a.neg()),
        ("broadcasting", lambda a, b: a[:, :1] * b + a[0] - b.sum(0, keepdim=True)),
        ("exp log", lambda a, b: a.exp() + (b * b + 1.0).log() + (a * a).log1p()
         + a.expm1() + (b * b + 1.0).sqrt() + (b * b + 1.0).reciprocal()),
        ("tanh sigmoid relu", lambda a, b: a.tanh() + b.sigmoid() + a.relu() + b.abs()
         + a.sign()),
        ("trigonometry", lambda a, b: a.sin() + b.cos() + (a * 0.1).tan()),
        ("clamp minimum maximum where", lambda a, b: a.clamp(-0.5, 0.5)
         + tg.maximum(a, b) + tg.minimum(a, b) + tg.where(a > b, a, b)),
        ("reductions", lambda a, b: a.sum() + b.mean(1).sum() + a.amax(0).sum()
         + b.amin() + a.prod(1).sum() + a.max() + b.norm() + a.std()
         + a.logsumexp(1).sum()),
        ("max along a dim", lambda a, b: a.max(1).values.sum() + b.min(0).values.sum()),
        ("softmax", lambda a, b: F.softmax(a, 1) + F.log_softmax(b, 0)),
        ("matrix products", lambda a, b: a @ b.T + F.linear(a, b, b[:, 0])
         + (a[None] @ b.T[None])[0] + a.T.mm(b).sum() + (a[0] @ b[1])),
        ("views and indexing", lambda a, b: a.reshape(-1)[::2].sum() + a.T[1] @ b[:, 1]
         + a[[0, 2, 2]].sum() + b[b > 0].sum() + a.unsqueeze(0).expand(2, 3, 4).sum()),
        ("cat stack split", lambda a, b: tg.cat([a, b], 0).sum() + tg.stack([a, b]).sum()
         + sum(t.sum() for t in a.split(1, 0))),
        ("dtype casts", lambda a, b: a.to(tg.float64 if dt == tg.float32 else tg.float32)
         .to(dt) * b),
        ("losses", lambda a, b: F.mse_loss(a, b) + F.cross_entropy(a, tg.tensor([0, 3, 1]))
         + F.binary_cross_entropy_with_logits(a, b.sigmoid())),
        ("optimizer steps", _optimized),
        ("random draws", lambda a, b: a * tg.randn(*a.shape, dtype=a.dtype)
         + F.dropout(b, 0.5) + tg.rand(*a.shape, dtype=a.dtype)),
    ]


def _optimized(a, b):
    """Eager optimizer steps (their in-place kernels), then a product to differentiate."""
    w = tg.zeros_like(a, requires_grad=True)
    for opt in (tg.optim.SGD([w], lr=0.1, momentum=0.9), tg.optim.Adam([w], lr=0.1)):
        for _ in range(2):
            opt.zero_grad()
            (w * b).sum().backward()
            opt.step()
    return a * w.detach()


def _step():
    """A small training step through tg.compile (recorded, then replayed), in the
    default dtype."""
    model = tg.nn.Sequential(tg.nn.Linear(4, 8), tg.nn.Tanh(), tg.nn.Linear(8, 3))
    opt = tg.optim.Adam(model.parameters(), lr=1e-3)

    @tg.compile
    def step(x, y):
        opt.zero_grad()
        loss = tg.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return lambda a, b: [step(a.detach(), b.detach()[:, :3]) for _ in range(3)]


def warmup(dtypes=("float32", "float64"), progress=True):
    """Runs every op family forward and backward in each dtype, and a compiled step,
    so that their kernels are compiled into the cache. Returns the seconds taken."""
    t0 = time.perf_counter()
    tasks = []
    for name in dtypes:
        dt = getattr(tg, name)
        tasks += [(f"{op} ({name})", dt, fn) for op, fn in _ops(dt)]
        tasks.append((f"compiled step ({name})", dt, None))
    rng = np.random.default_rng(0)
    for i, (what, dt, fn) in enumerate(tasks):
        if progress:
            _bar(i, len(tasks), what, time.perf_counter() - t0)
        npdt = np.float64 if dt == tg.float64 else np.float32
        a = tg.tensor(rng.uniform(0.5, 1.5, (3, 4)).astype(npdt), requires_grad=True)
        b = tg.tensor(rng.uniform(0.5, 1.5, (3, 4)).astype(npdt), requires_grad=True)
        if fn is None:
            default = tg.get_default_dtype()
            tg.set_default_dtype(dt)
            try:
                _step()(a, b)
            finally:
                tg.set_default_dtype(default)
        else:
            fn(a, b).sum().backward()
    for f64 in (0, 1):
        for k in (sorted(K._UNARY_VJPS) + sorted(K._BINARY_VJPS) + list(K._FAMILY_VJPS)
                  + [K.K_CAST, K.REVERSE, K.REVERSE1, K.FUSED]):
            K.prepare(k, f64)
        for k in sorted(K._BINARY_VJPS) + [K.K_SUM]:
            K.prepare(k, f64, gen=True)
        for k in K.FORWARD_OPS:
            K.prepare_forward(k, f64)
    seconds = time.perf_counter() - t0
    if progress:
        _bar(len(tasks), len(tasks), "done", seconds)
        sys.stderr.write("\n")
    return seconds


def _bar(done, total, what, seconds):
    width = 30
    full = width * done // total
    sys.stderr.write(f"\r[{'#' * full}{'.' * (width - full)}] {done}/{total} "
                     f"{seconds:5.1f} s  {what[:40]:<40}")
    sys.stderr.flush()


if __name__ == "__main__":
    warmup()
