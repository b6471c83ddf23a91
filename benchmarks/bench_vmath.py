"""asv benchmarks of tapegrad's vectorisable math (``tapegrad._kernels``).

``TimeVMath`` times the array kernels (``exp_array(x, out)`` ...) on 1e6 elements, in
float64 and float32; ``TimeBaselines`` times the same functions as NumPy ufuncs and as
a Numba loop over ``math.*`` (scalar libm calls: PyPI's llvmlite has no SVML, so those
loops do not vectorise).

Run standalone for a table of ns/element (min of several warm runs) at 1e6 and 1e7
elements:

    python benchmarks/bench_vmath.py [--dtype float32] [--sizes 1e6,1e7]
"""
import math
import time

import numpy as np
from numba import njit

from tapegrad import _kernels as vm

N = 1_000_000
NAMES = ["exp", "expm1", "log", "log1p", "tanh", "sigmoid", "sin", "cos", "tan"]

OURS = {
    "exp": vm.exp_array, "expm1": vm.expm1_array, "log": vm.log_array,
    "log1p": vm.log1p_array, "tanh": vm.tanh_array, "sigmoid": vm.sigmoid_array,
    "sin": vm.sin_array, "cos": vm.cos_array, "tan": vm.tan_array,
}


def _np_sigmoid(x, out):
    try:
        from scipy.special import expit
    except ImportError:              # pragma: no cover
        np.negative(x, out=out)
        np.exp(out, out=out)
        out += 1
        return np.reciprocal(out, out=out)
    return expit(x, out=out)


NUMPY = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
    "sigmoid": _np_sigmoid, "sin": np.sin, "cos": np.cos, "tan": np.tan,
}


def _numba_loop(f):
    @njit(error_model="numpy")
    def k(x, out):
        for i in range(x.size):
            out[i] = f(x[i])
    return k


@njit
def _m_sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


NUMBA_MATH = {
    "exp": _numba_loop(math.exp), "expm1": _numba_loop(math.expm1),
    "log": _numba_loop(math.log), "log1p": _numba_loop(math.log1p),
    "tanh": _numba_loop(math.tanh), "sigmoid": _numba_loop(_m_sigmoid),
    "sin": _numba_loop(math.sin), "cos": _numba_loop(math.cos),
    "tan": _numba_loop(math.tan),
}


def inputs(n, dtype=np.float64, seed=0):
    """Typical arguments for each function (no special values)."""
    r = np.random.default_rng(seed)
    d = {
        "exp": r.uniform(-20, 20, n),
        "expm1": r.uniform(-2, 2, n),
        "log": np.exp(r.uniform(-10, 10, n)),
        "log1p": r.uniform(-0.9, 10, n),
        "tanh": r.uniform(-5, 5, n),
        "sigmoid": r.uniform(-10, 10, n),
        "sin": r.uniform(-100, 100, n),
        "cos": r.uniform(-100, 100, n),
        "tan": r.uniform(-100, 100, n),
    }
    return {k: v.astype(dtype) for k, v in d.items()}


class TimeVMath:
    """tapegrad._kernels array kernels, 1e6 elements."""
    params = ["float64", "float32"]
    param_names = ["dtype"]

    def setup(self, dtype):
        self.x = inputs(N, np.dtype(dtype))
        self.out = np.empty(N, dtype)
        for name, k in OURS.items():          # compile (or load from cache) first
            k(self.x[name][:8], self.out[:8])

    def time_exp(self, dtype):
        vm.exp_array(self.x["exp"], self.out)

    def time_expm1(self, dtype):
        vm.expm1_array(self.x["expm1"], self.out)

    def time_log(self, dtype):
        vm.log_array(self.x["log"], self.out)

    def time_log1p(self, dtype):
        vm.log1p_array(self.x["log1p"], self.out)

    def time_tanh(self, dtype):
        vm.tanh_array(self.x["tanh"], self.out)

    def time_sigmoid(self, dtype):
        vm.sigmoid_array(self.x["sigmoid"], self.out)

    def time_sin(self, dtype):
        vm.sin_array(self.x["sin"], self.out)

    def time_cos(self, dtype):
        vm.cos_array(self.x["cos"], self.out)

    def time_tan(self, dtype):
        vm.tan_array(self.x["tan"], self.out)


class TimeBaselines:
    """The same functions as NumPy ufuncs and as Numba loops over math.*, float64."""
    params = [NAMES, ["numpy", "numba_math"]]
    param_names = ["function", "impl"]

    def setup(self, name, impl):
        self.x = inputs(N)[name]
        self.out = np.empty(N)
        self.f = (NUMPY if impl == "numpy" else NUMBA_MATH)[name]
        self.f(self.x[:8], self.out[:8])

    def time_baseline(self, name, impl):
        self.f(self.x, self.out)


# -- standalone table -------------------------------------------------------------------
def _best(f, x, out, repeat):
    f(x, out)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        f(x, out)
        best = min(best, time.perf_counter() - t0)
    return best / x.size * 1e9


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--sizes", default="1e6,1e7")
    p.add_argument("--repeat", type=int, default=0, help="runs per timing (min taken)")
    a = p.parse_args(argv)
    dtype = np.dtype(a.dtype)
    for n in [int(float(s)) for s in a.sizes.split(",")]:
        rep = a.repeat or max(5, int(3e7 // n))
        x = inputs(n, dtype)
        out = np.empty(n, dtype)
        print(f"\n{n:.0e} {dtype} elements, ns/element (min of {rep}):")
        print(f"{'function':10s}{'ours':>8s}{'numba math':>12s}{'numpy':>8s}"
              f"{'vs numba':>10s}{'vs numpy':>10s}")
        for name in NAMES:
            t_ours = _best(OURS[name], x[name], out, rep)
            t_nb = _best(NUMBA_MATH[name], x[name], out, rep)
            t_np = _best(NUMPY[name], x[name], out, rep)
            print(f"{name:10s}{t_ours:8.2f}{t_nb:12.2f}{t_np:8.2f}"
                  f"{t_nb / t_ours:9.1f}x{t_np / t_ours:9.1f}x", flush=True)


if __name__ == "__main__":
    main()
