"""Minimise the n-dimensional Rosenbrock function with SciPy, gradients from tapegrad.

    python examples/rosenbrock.py                    # n = 100 and n = 10 000
    python examples/rosenbrock.py --sizes 1000 --x0 classic

f(x) = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 (SciPy's ``rosen``), minimum 0 at
x = (1, ..., 1). ``scipy.optimize.minimize(method="trust-ncg", jac=True, hessp=...)``
gets the value and the gradient from one tapegrad evaluation, and Hessian-vector products
as central differences of tapegrad gradients, (g(x + h p) - g(x - h p)) / (2 h).
Everything is float64.

The default start is uniform in [0, 2] (seeded). From the textbook start
(-1.2, 1, -1.2, 1, ...) (``--x0 classic``) this chained Rosenbrock needs a number of
Newton iterations that grows with n (about 4.5 n: the solution travels down the chain one
coordinate at a time), which is fine for n = 100 but not for n = 10 000.
"""
import argparse
import os
import time

import numpy as np

import tapegrad as tg

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    ap.add_argument("--x0", choices=["random", "classic"], default="random",
                    help="uniform in [0, 2] (seeded), or (-1.2, 1, -1.2, 1, ...)")
    ap.add_argument("--gtol", type=float, default=1e-8)
    ap.add_argument("--maxiter", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG plot")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return ap.parse_args(argv)


def rosenbrock(x):
    """SciPy's ``rosen``, written with tapegrad ops (slices, powers, sum)."""
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


class Objective:
    """Value and gradient (``jac=True``) and a finite-difference ``hessp`` for SciPy."""

    def __init__(self):
        self.grad_evals = 0

    def value_and_grad(self, x):
        self.grad_evals += 1
        xt = tg.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
        f = rosenbrock(xt)
        f.backward()
        return f.item(), np.array(xt.grad.numpy(), dtype=np.float64)

    def hessp(self, x, p):
        # Central differences of gradients; the step balances truncation (h^2) against
        # rounding (eps / h). An exact forward-over-reverse hvp can replace this.
        pn = np.linalg.norm(p)
        if pn == 0.0:
            return np.zeros_like(p)
        h = np.finfo(np.float64).eps ** (1 / 3) * max(1.0, np.linalg.norm(x)) / pn
        return (self.value_and_grad(x + h * p)[1] - self.value_and_grad(x - h * p)[1]) / (2 * h)


def start_point(n, kind, seed):
    if kind == "classic":
        x0 = np.ones(n)
        x0[::2] = -1.2
        return x0
    return np.random.default_rng(seed).uniform(0.0, 2.0, n)


def solve(n, x0_kind="random", seed=0, gtol=1e-8, maxiter=5000, progress=True):
    from scipy.optimize import minimize, rosen
    from tqdm.auto import tqdm
    obj = Objective()
    history = []
    bar = tqdm(total=maxiter, desc=f"n={n}", disable=None if progress else True,
               mininterval=0.5)

    def callback(xk):
        history.append(float(rosen(xk)))
        bar.update(1)
        if len(history) % 10 == 0:
            bar.set_postfix(f=f"{history[-1]:.3g}")

    x0 = start_point(n, x0_kind, seed)
    history.append(float(rosen(x0)))
    t0 = time.perf_counter()
    res = minimize(obj.value_and_grad, x0, jac=True, hessp=obj.hessp, method="trust-ncg",
                   callback=callback, options={"gtol": gtol, "maxiter": maxiter})
    seconds = time.perf_counter() - t0
    bar.close()
    return {"n": n, "success": bool(res.success), "message": str(res.message),
            "nit": int(res.nit), "nfev": int(res.nfev), "njev": int(res.njev),
            "nhev": int(res.nhev), "grad_evals": obj.grad_evals, "seconds": seconds,
            "fun": float(res.fun), "max_abs_err": float(np.max(np.abs(res.x - 1.0))),
            "x": res.x, "history": history}


def main(argv=None):
    args = parse_args(argv)
    runs = {}
    print(f"Rosenbrock, scipy trust-ncg (jac=True, finite-difference hessp), x0={args.x0}")
    for n in args.sizes:
        r = solve(n, args.x0, args.seed, args.gtol, args.maxiter, not args.no_progress)
        runs[n] = r
        print(f"  n={n:>6}: {'converged' if r['success'] else 'NOT converged'} in "
              f"{r['nit']} iterations, {r['nfev']} value+gradient evaluations, "
              f"{r['nhev']} Hessian-vector products ({r['grad_evals']} tapegrad gradients),"
              f" {r['seconds']:.2f} s; f = {r['fun']:.2e}, max|x - 1| = "
              f"{r['max_abs_err']:.1e}")
    png = None if args.no_plot else plot(runs, args.out)
    if png:
        print(f"  plot: {png}")
    return {"runs": runs, "png": png}


def plot(runs, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for n, r in runs.items():
        vals = np.maximum(np.asarray(r["history"]), 1e-30)
        ax.plot(np.arange(len(vals)), vals, label=f"n = {n} ({r['seconds']:.2f} s)")
    ax.set(xlabel="trust-ncg iteration", ylabel="f(x)", yscale="log",
           title="Rosenbrock: gradients and Hessian-vector products from tapegrad")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "rosenbrock.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
