"""asv benchmarks of higher-order autograd: Hessian-vector products of Rosenbrock.

An exact hvp (reverse over reverse) should cost a small multiple of one gradient
evaluation; ``track_hvp_over_grad`` reports that multiple for n = 100 000.
"""
import time

import numpy as np

import tapegrad as tg
from tapegrad.autograd.functional import hvp


def rosen(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


class Rosenbrock:
    params = [1_000, 100_000]
    param_names = ["n"]

    def setup(self, n):
        rng = np.random.default_rng(0)
        self.x0 = rng.uniform(0.0, 2.0, n)
        self.p = tg.tensor(rng.standard_normal(n))
        self.time_grad(n)
        self.time_hvp(n)

    def time_grad(self, n):
        x = tg.tensor(self.x0, requires_grad=True)
        rosen(x).backward()
        return x.grad

    def time_hvp(self, n):
        return hvp(rosen, tg.tensor(self.x0), self.p)[1]

    def track_hvp_over_grad(self, n):
        def best(fn):
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                fn(n)
                times.append(time.perf_counter() - t0)
            return min(times)
        return best(self.time_hvp) / best(self.time_grad)

    track_hvp_over_grad.unit = "ratio"
