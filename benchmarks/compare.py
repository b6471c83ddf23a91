"""tapegrad eager and compiled against PyTorch, torch.compile, JAX, HIPS autograd and a
hand-written gradient, on the same workloads in one process.

    python benchmarks/compare.py [--quick] [--only NAME[,NAME]] [--out DIR]

Workloads (``WORKLOADS``): three training steps (forward, backward, SGD update) and six
value-and-gradient functions. Every library starts from the same NumPy inputs and
weights. Before timing, each library's losses, gradients and updated parameters over
its first three calls are checked against the hand-written reference (rtol 1e-4 for
float32, 1e-8 for float64, relative to the largest reference magnitude); a
disagreement prints a FAIL line and makes the exit status nonzero.

Time per step: the minimum over repeats of the mean time of a timed loop, each repeat
lasting at least 0.1 s (0.02 s with --quick) or one call; consecutive calls alternate
between two inputs. First call: the first call of a fresh function object, or for
tapegrad compiled the recording call plus the first replay. With the ``big`` workload, the
peak memory of each of MEMORY_COLS, each in a fresh process (Linux). Writes ``compare.md``
and ``compare.png`` to --out (default ``benchmarks/results``).
"""
import argparse
import math
import os
import platform
import sys
import time

import numpy as np
from numba import njit

import tapegrad as tg

HERE = os.path.dirname(os.path.abspath(__file__))
LR = 0.01
CHECK_CALLS = 3
CHAIN_STEPS = 100
ODE_STEPS = 200
ODE_DT = 0.01
ODE_SIN = [math.sin(i * ODE_DT) for i in range(ODE_STEPS)]
SKIP = {("ode", "torch.compile"):
        "inductor had not finished compiling the unrolled 200-step scalar loop and its "
        "backward after 20 minutes"}


# -- workloads: one source per function, run by every library -------------------------------
class Function:
    """A scalar function of float64 arrays; libraries return its value and gradients."""
    kind = "function"
    dtype = np.float64
    repeat = None               # a cap on the timing repeats (Big: 3 of ~0.3 s calls)

    def f(self, lib, *xs):
        raise NotImplementedError

    def inputs(self):
        """Two argument tuples; timed calls alternate between them."""
        raise NotImplementedError

    def reference(self):
        """The hand-written (value, *gradients) function."""
        raise NotImplementedError


class Rosen(Function):
    def __init__(self, n):
        self.n = n
        self.name = "rosen_" + {10: "10", 1000: "1k", 1_000_000: "1m"}[n]
        self.about = f"Rosenbrock value + gradient, n = {n:,}, float64"

    def f(self, lib, x):
        return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()

    def inputs(self):
        rng = np.random.default_rng(1)
        return [(rng.uniform(0.0, 2.0, self.n),) for _ in range(2)]

    def reference(self):
        return rosen_hand


@njit(cache=True)
def rosen_hand(x):
    f = 0.0
    g = np.zeros_like(x)
    for i in range(x.shape[0] - 1):
        t = x[i + 1] - x[i] * x[i]
        u = 1.0 - x[i]
        f += 100.0 * t * t + u * u
        g[i] += -400.0 * t * x[i] - 2.0 * u
        g[i + 1] += 200.0 * t
    return f, g


class Ode(Function):
    name = "ode"
    about = (f"explicit Euler, dy/dt = -k y + sin t, {ODE_STEPS} steps of {ODE_DT}; "
             "gradient of the final y w.r.t. k and y0 (0-d float64)")

    def f(self, lib, k, y0):
        y = y0
        for s in ODE_SIN:
            y = y + ODE_DT * (-k * y + s)
        return y

    def inputs(self):
        return [(np.array(0.7), np.array(1.3)), (np.array(0.8), np.array(1.2))]

    def reference(self):
        return lambda k, y0: ode_hand(float(k), float(y0))


@njit(cache=True)
def ode_hand(k, y0):
    """Forward Euler, then the adjoint: y[i+1] = (1 - dt k) y[i] + dt sin(t[i])."""
    ys = np.empty(ODE_STEPS)
    y = y0
    for i in range(ODE_STEPS):
        ys[i] = y
        y = y + ODE_DT * (-k * y + math.sin(i * ODE_DT))
    a = 1.0
    gk = 0.0
    for i in range(ODE_STEPS - 1, -1, -1):
        gk -= a * ODE_DT * ys[i]
        a *= 1.0 - ODE_DT * k
    return y, gk, a


class Chain(Function):
    name = "chain"
    about = f"{CHAIN_STEPS} x y = tanh(y*1.01 + 0.1) on 16 float64, then sum"

    def f(self, lib, x):
        y = x
        for _ in range(CHAIN_STEPS):
            y = lib.tanh(y * 1.01 + 0.1)
        return y.sum()

    def inputs(self):
        rng = np.random.default_rng(2)
        return [(rng.random(16),) for _ in range(2)]

    def reference(self):
        return chain_hand


@njit(cache=True)
def chain_hand(x):
    """Element by element: the chain is elementwise, so forward mode is the gradient."""
    s = 0.0
    g = np.empty_like(x)
    for j in range(x.shape[0]):
        y = x[j]
        d = 1.0
        for _ in range(CHAIN_STEPS):
            y = np.tanh(y * 1.01 + 0.1)
            d *= 1.01 * (1.0 - y * y)
        s += y
        g[j] = d
    return s, g


class Big(Function):
    name = "big"
    about = "sum(tanh(x)*x + exp(-x*x)) over 10 million float64"
    n = 10_000_000
    repeat = 3

    def f(self, lib, x):
        return (lib.tanh(x) * x + lib.exp(-x * x)).sum()

    def inputs(self):
        rng = np.random.default_rng(3)
        return [(rng.standard_normal(self.n),) for _ in range(2)]

    def reference(self):
        t, e, g = (np.empty(self.n) for _ in range(3))

        def big_hand(x):
            """g = t + x (1 - t^2) - 2 x e, t = tanh x, e = exp(-x^2): three buffers."""
            np.tanh(x, out=t)
            np.exp(np.negative(np.multiply(x, x, out=e), out=e), out=e)
            f = np.dot(t, x) + e.sum()
            np.subtract(1.0, np.multiply(t, t, out=g), out=g)
            np.add(np.multiply(g, x, out=g), t, out=g)
            np.multiply(np.multiply(e, x, out=e), 2.0, out=e)
            return f, np.subtract(g, e, out=g)
        return big_hand


class Training:
    """One SGD step on float32 data: libraries return the loss and the updated weights."""
    kind = "training"
    dtype = np.float32
    repeat = None

    def init(self):
        """Initial weights, a list of NumPy arrays in ``parameters()`` order."""
        raise NotImplementedError

    def inputs(self):
        raise NotImplementedError

    def tensor_step(self, lib, params):
        """(step(x, y) -> loss, the parameter tensors) in tapegrad or torch."""
        raise NotImplementedError

    def loss(self, xp, params, x, y):
        """The loss as a pure function, for JAX and HIPS autograd."""
        raise NotImplementedError

    def reference(self):
        """The hand-written step(params, x, y) -> loss, updating ``params`` in place."""
        raise NotImplementedError


class LinReg(Training):
    name = "linreg"
    about = "the linear-regression SGD step, 20 float32 points, y = 3x + 2 + noise"

    def init(self):
        rng = np.random.default_rng(4)
        return [rng.standard_normal((1, 1)).astype(np.float32), np.zeros(1, np.float32)]

    def inputs(self):
        rng = np.random.default_rng(5)
        out = []
        for _ in range(2):
            x = rng.random((20, 1), dtype=np.float32)
            out.append((x, (3 * x + 2 + 0.1 * rng.standard_normal((20, 1))).astype(np.float32)))
        return out

    def tensor_step(self, lib, params):
        w, b = (lib.tensor(p, requires_grad=True) for p in params)

        def step(x, y):
            y_pred = x.mm(w) + b
            loss = ((y_pred - y) ** 2).mean()
            loss.backward()
            with lib.no_grad():
                w.sub_(LR * w.grad)
                b.sub_(LR * b.grad)
                w.grad.zero_()
                b.grad.zero_()
            return loss
        return step, [w, b]

    def loss(self, xp, params, x, y):
        w, b = params
        return ((x @ w + b - y) ** 2).mean()

    def reference(self):
        return lambda params, x, y: linreg_hand(*params, x, y)


@njit(cache=True)
def linreg_hand(w, b, x, y):
    n = x.shape[0]
    loss = gw = gb = 0.0
    for i in range(n):
        r = x[i, 0] * w[0, 0] + b[0] - y[i, 0]
        loss += r * r
        gw += 2.0 * r * x[i, 0]
        gb += 2.0 * r
    w[0, 0] -= LR * gw / n
    b[0] -= LR * gb / n
    return loss / n


class MLP(Training):
    def __init__(self, name, sizes, act, batch):
        self.name, self.sizes, self.act, self.batch = name, sizes, act, batch
        self.about = f"MLP {'-'.join(map(str, sizes))}, {act}, batch {batch}, MSE, SGD"

    def init(self):
        rng = np.random.default_rng(6)
        params = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            params += [rng.uniform(-a ** -0.5, a ** -0.5, s).astype(np.float32)
                       for s in ((b, a), (b,))]
        return params

    def inputs(self):
        rng = np.random.default_rng(7)
        return [tuple(rng.standard_normal((self.batch, n)).astype(np.float32)
                      for n in (self.sizes[0], self.sizes[-1])) for _ in range(2)]

    def tensor_step(self, lib, params):
        nn = lib.nn
        layers = []
        for w, b in zip(params[::2], params[1::2]):
            lin = nn.Linear(w.shape[1], w.shape[0])
            with lib.no_grad():
                lin.weight.copy_(lib.tensor(w))
                lin.bias.copy_(lib.tensor(b))
            layers += [lin, nn.Tanh() if self.act == "tanh" else nn.ReLU()]
        model = nn.Sequential(*layers[:-1])
        opt = lib.optim.SGD(model.parameters(), lr=LR)

        def step(x, y):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return step, list(model.parameters())

    def loss(self, xp, params, x, y):
        h = x
        for i in range(0, len(params), 2):
            h = h @ params[i].T + params[i + 1]
            if i + 2 < len(params):
                h = xp.tanh(h) if self.act == "tanh" else xp.maximum(h, 0.0)
        return ((h - y) ** 2).mean()

    def reference(self):
        tanh = self.act == "tanh"

        def mlp_hand(params, x, y):
            hs = [x]
            for i in range(0, len(params), 2):
                h = hs[-1] @ params[i].T + params[i + 1]
                if i + 2 < len(params):
                    h = np.tanh(h, out=h) if tanh else np.maximum(h, 0, out=h)
                hs.append(h)
            d = hs.pop() - y
            loss = np.dot(d.ravel(), d.ravel()) / d.size
            g = d * (2.0 / d.size)
            for i in range(len(params) - 2, -1, -2):
                w, b = params[i], params[i + 1]
                h = hs.pop()
                gw = g.T @ h
                gb = g.sum(0)
                if i:
                    g = g @ w
                    g *= (1.0 - h * h) if tanh else (h > 0)
                w -= LR * gw
                b -= LR * gb
            return loss
        return mlp_hand


WORKLOADS = {w.name: w for w in [
    LinReg(), MLP("mlp_small", [64, 128, 128, 10], "tanh", 64),
    MLP("mlp_large", [784, 256, 10], "relu", 512),
    Rosen(10), Rosen(1000), Rosen(1_000_000), Ode(), Chain(), Big()]}


# -- libraries: make(workload, inputs) -> call(i), one step on inputs[i % 2] --------------------
class TensorLib:
    """tapegrad or PyTorch; ``wrap`` turns the step function into what is timed. With
    ``closure``, the wrapped function takes no arguments: it reads the batch from
    variables of the enclosing scope, which the loop rebinds before each call (the way
    scripts are written); without, the batch is passed as arguments."""

    def __init__(self, lib, wrap=None, first_calls=1, fresh=None, closure=False):
        self.lib, self.wrap, self.first_calls, self.fresh = lib, wrap, first_calls, fresh
        self.closure = closure
        self.wrapped = []           # the wrapped functions made, for their counters

    def make(self, w, inputs):
        if self.fresh:
            self.fresh()
        return getattr(self, w.kind)(w, inputs)

    def _wrap(self, fn):
        if self.wrap:
            fn = self.wrap(fn)
            self.wrapped.append(fn)
        return fn

    def function(self, w, inputs):
        lib = self.lib

        def fn(*xs):
            f = w.f(lib, *xs)
            return (f, *lib.autograd.grad(f, xs))
        if not self.closure:
            step = self._wrap(fn)
            return lambda i: step(*[lib.from_numpy(a).requires_grad_() for a in inputs[i & 1]])
        xs = ()

        def user_step():
            f = w.f(lib, *xs)
            return (f, *lib.autograd.grad(f, xs))
        step = self._wrap(user_step)

        def call(i):
            nonlocal xs
            xs = tuple(lib.from_numpy(a).requires_grad_() for a in inputs[i & 1])
            return step()
        return call

    def training(self, w, inputs):
        step, params = w.tensor_step(self.lib, w.init())
        data = [[self.lib.from_numpy(a) for a in batch] for batch in inputs]
        if not self.closure:
            step = self._wrap(step)
            return lambda i: (step(*data[i & 1]), *params)
        x, y = data[0]

        def user_step():
            return step(x, y)
        compiled = self._wrap(user_step)

        def call(i):
            nonlocal x, y
            x, y = data[i & 1]
            return (compiled(), *params)
        return call


class PureLib:
    """JAX or HIPS autograd: pure functions of the inputs and weights."""
    first_calls = 1

    def __init__(self, xp, value_and_grad, jit=None, block=None):
        self.xp, self.vg, self.jit, self.block = xp, value_and_grad, jit, block

    def make(self, w, inputs):
        return getattr(self, w.kind)(w, [tuple(map(self.xp.asarray, a)) for a in inputs])

    def _finish(self, fn):
        fn = self.jit(fn) if self.jit else fn
        return (lambda *a: self.block(fn(*a))) if self.block else fn

    def function(self, w, inputs):
        vg = self._finish(self.vg(lambda xs: w.f(self.xp, *xs)))

        def call(i):
            f, g = vg(inputs[i & 1])
            return (f, *g)
        return call

    def training(self, w, inputs):
        vg = self.vg(lambda p, x, y: w.loss(self.xp, p, x, y))

        def step(p, x, y):
            loss, g = vg(p, x, y)
            return loss, [a - LR * b for a, b in zip(p, g)]
        step = self._finish(step)
        state = [list(map(self.xp.asarray, w.init()))]

        def call(i):
            loss, state[0] = step(state[0], *inputs[i & 1])
            return (loss, *state[0])
        return call


class Hand:
    """The hand-written reference (Numba or NumPy)."""
    first_calls = 1

    def make(self, w, inputs):
        ref = w.reference()
        if w.kind == "function":
            return lambda i: ref(*inputs[i & 1])
        params = w.init()
        return lambda i: (ref(params, *inputs[i & 1]), *params)


def load_libraries(only=None):
    """{column: library}, and notes on the columns that are missing (``only``: just
    these columns; the others' libraries are not imported)."""
    def wanted(*cols):
        return only is None or any(c in only for c in cols)
    libs, notes = {"tapegrad eager": TensorLib(tg)}, []
    if hasattr(tg, "compile"):
        libs["tapegrad compiled"] = TensorLib(tg, tg.compile, first_calls=2)
        libs["tapegrad compiled, closure"] = TensorLib(tg, tg.compile, first_calls=2,
                                                       closure=True)
    else:
        notes.append("tapegrad compiled: `tg.compile` is not available in this tapegrad; "
                     "column skipped.")
    try:
        if not wanted("PyTorch eager", "torch.compile"):
            raise ImportError
        import torch
    except ImportError:
        notes.append("PyTorch is not installed: PyTorch and torch.compile skipped.")
    else:
        libs["PyTorch eager"] = TensorLib(torch)
        libs["torch.compile"] = TensorLib(torch, torch.compile, fresh=torch._dynamo.reset)
        if wanted("torch.compile"):
            notes.append(warm_torch_compile(torch))
    try:
        if not wanted("JAX jit"):
            raise ImportError
        import jax
    except ImportError:
        notes.append("JAX is not installed: column skipped.")
    else:
        jax.config.update("jax_enable_x64", True)
        libs["JAX jit"] = PureLib(jax.numpy, jax.value_and_grad, jax.jit,
                                  jax.block_until_ready)
    try:
        if not wanted("HIPS autograd"):
            raise ImportError
        import autograd
        import autograd.numpy as anp
    except ImportError:
        notes.append("HIPS autograd is not installed: column skipped.")
    else:
        libs["HIPS autograd"] = PureLib(anp, autograd.value_and_grad)
    libs["hand-written"] = Hand()
    return {c: lib for c, lib in libs.items() if only is None or c in only}, notes


def warm_torch_compile(torch):
    """Pays torch.compile's one-time start-up, so that no workload's first call carries it.

    Inductor's caches are disabled: every first call then compiles, on every run.
    """
    torch._inductor.config.force_disable_caches = True
    t0 = time.perf_counter()
    x = torch.ones(3, requires_grad=True)
    torch.compile(lambda x: (x * 2).sin().sum())(x).backward()
    torch._dynamo.reset()
    return (f"torch.compile: inductor caches disabled; its one-time start-up "
            f"({time.perf_counter() - t0:.1f} s) is paid before the first workload.")


# -- measuring ---------------------------------------------------------------------------
def to_numpy(v):
    if hasattr(v, "detach"):
        v = v.detach().numpy()
    return np.array(v, dtype=np.float64)


def calls(call, start, n):
    """Outputs of calls ``start`` .. ``start + n - 1``, as NumPy copies, and the seconds
    spent in the calls themselves."""
    spent, outs = 0.0, []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        out = call(i)
        spent += time.perf_counter() - t0
        outs.append([to_numpy(v) for v in out])
    return outs, spent


def cpu_name():
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def per_step(call, start, repeat, min_time):
    """Minimum over ``repeat`` timed loops of the mean seconds per call."""
    return min(repeats(call, start, repeat, min_time))


def repeats(call, start, repeat, min_time):
    """Mean seconds per call of each of ``repeat`` timed loops, each lasting at least
    ``min_time`` (calls ``start``, ``start + 1``, ...)."""
    i = start

    def loop(n):
        nonlocal i
        t0 = time.perf_counter()
        for k in range(i, i + n):
            call(k)
        i += n
        return time.perf_counter() - t0
    number = 1
    while (elapsed := loop(number)) < min_time:
        number = max(number * 2, int(number * min_time / max(elapsed, 1e-9) * 1.1))
    return [loop(number) / number for _ in range(repeat)]


def disagreement(outs, ref, rtol):
    """Max error relative to the largest reference magnitude, or None when within rtol."""
    worst = 0.0
    for got, want in zip(outs, ref):
        for g, r in zip(got, want):
            if g.size != r.size:
                return float("inf")
            scale = max(np.max(np.abs(r)), 1e-300)
            worst = max(worst, float(np.max(np.abs(g.reshape(r.shape) - r))) / scale)
    return worst if worst > rtol else None


def run_workload(w, libs, args):
    """{column: (µs per step, first-call ms)} for ``w``; failures in ``args.failures``."""
    inputs = w.inputs()
    rtol = 1e-4 if w.dtype == np.float32 else 1e-8
    ref, _ = calls(Hand().make(w, inputs), 0, CHECK_CALLS)
    repeat = min(w.repeat or args.repeat, args.repeat)
    row = {}
    for col, lib in libs.items():
        if (w.name, col) in SKIP:
            continue
        try:
            firsts = []
            for _ in range(1 if col == "torch.compile" else args.first_repeat):
                call = lib.make(w, inputs)
                outs, spent = calls(call, 0, lib.first_calls)
                firsts.append(spent)
            more, _ = calls(call, len(outs), CHECK_CALLS - len(outs))
            err = disagreement(outs + more, ref, rtol)
            if err is not None:
                args.failures.append(f"FAIL {w.name} / {col}: disagrees with the "
                                     f"hand-written reference, max error {err:.3g} "
                                     f"relative to the largest value (rtol {rtol:g})")
                print(args.failures[-1], file=sys.stderr)
            row[col] = (per_step(call, CHECK_CALLS, repeat, args.min_time) * 1e6,
                        min(firsts) * 1e3)
        except Exception as e:      # a library that cannot run a workload is a failure
            args.failures.append(f"FAIL {w.name} / {col}: {type(e).__name__}: {e}")
            print(args.failures[-1], file=sys.stderr)
        if col.startswith("tapegrad compiled") and lib.wrapped:
            f = lib.wrapped[-1]
            if f.fallbacks or f.records > 2 or f.replays < f.records:
                args.failures.append(f"FAIL {w.name} / {col}: {f.records} recordings, "
                                     f"{f.replays} replays, {f.fallbacks} eager fallbacks")
                print(args.failures[-1], file=sys.stderr)
            lib.wrapped.clear()
        print(f"  {col}: {fmt(row[col][0], ' µs') if col in row else 'error'}", file=sys.stderr)
    return row


# -- memory ------------------------------------------------------------------------------
MEMORY_WORKLOAD = "big"
MEMORY_COLS = ["tapegrad compiled", "tapegrad eager", "JAX jit", "PyTorch eager",
               "hand-written"]
MEMORY_CALLS = 6


def _status_mb(field):
    """VmRSS (now) or VmHWM (peak) of this process, in MB: the kernel's counts for its
    memory map, which exec starts afresh (``ru_maxrss`` keeps a forking parent's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024


def peak(name, col):
    """In this (fresh) process: ``col``'s first calls and MEMORY_CALLS more of workload
    ``name``; prints the peak RSS, the RSS before the first call and after the last, in
    MB."""
    libs, _ = load_libraries({col})
    w = WORKLOADS[name]
    call = libs[col].make(w, w.inputs())
    before = _status_mb("VmRSS")
    calls(call, 0, libs[col].first_calls + MEMORY_CALLS)
    print(_status_mb("VmHWM"), before, _status_mb("VmRSS"))


def memory_table():
    """Peak RSS of each MEMORY_COLS column on MEMORY_WORKLOAD, each in a fresh process."""
    import subprocess
    lines = [f"## Peak memory, `{MEMORY_WORKLOAD}` (MB)", "",
             "| column | peak RSS | peak above the process before its first call | "
             "RSS after the calls, above it |",
             "|---|---:|---:|---:|"]
    for col in MEMORY_COLS:
        run = subprocess.run([sys.executable, os.path.abspath(__file__), "--peak",
                              MEMORY_WORKLOAD, col], capture_output=True, text=True)
        if run.returncode:
            lines.append(f"| {col} | n/a | n/a | n/a |")
            continue
        top, before, after = map(float, run.stdout.split()[-3:])
        lines.append(f"| {col} | {top:,.0f} | {top - before:,.0f} | {after - before:,.0f} |")
    lines += ["", f"- Each column in a fresh process: its inputs made, then its first calls "
              f"and {MEMORY_CALLS} more; RSS from the kernel (`VmHWM`, `VmRSS` of "
              "`/proc/self/status`)."]
    return "\n".join(lines) + "\n"


# -- report ------------------------------------------------------------------------------
def fmt(v, unit=""):
    if v is None:
        return "n/a"
    return (f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2g}") + unit


def thread_pools():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ""
    pools = dict.fromkeys(f"{p['internal_api']} {p['num_threads']} threads"
                          for p in threadpool_info())
    return " (" + ", ".join(pools) + ")"


def header(libs, notes, args, load):
    import numba
    versions = [f"tapegrad {tg.__version__}", f"NumPy {np.__version__}",
                f"Numba {numba.__version__}"]
    if "PyTorch eager" in libs:
        import torch
        versions.append(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads, "
                        "its default, for every workload)")
    if "JAX jit" in libs:
        import jax
        versions.append(f"JAX {jax.__version__} (x64 enabled)")
    if "HIPS autograd" in libs:
        from importlib.metadata import version
        versions.append(f"HIPS autograd {version('autograd')}")
    cpu = cpu_name()
    lines = [
        "# tapegrad against other autograd libraries", "",
        f"- Machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; load average "
        f"{load[0]:.2f} before / {load[1]:.2f} after (wall-clock timings: load inflates "
        "them).",
        "- Libraries: " + ", ".join(versions) + ".",
        f"- Thread pools at their defaults{thread_pools()}: with this few cores, other "
        "load on the machine stalls multi-threaded BLAS calls (tens of ms per MLP step), "
        "so run it on an idle machine.",
        f"- Time per step: minimum over {args.repeat} repeats (`big`: "
        f"{min(args.repeat, Big.repeat)}) of the mean of a timed loop, each repeat at "
        f"least {args.min_time} s or one call; calls alternate between two inputs. "
        "Function workloads build fresh requires-grad leaves from NumPy (shared memory) "
        "each call in tapegrad and PyTorch; JAX gets device arrays built once.",
        f"- First call: minimum over {args.first_repeat} fresh function objects (torch."
        "compile: one, after `torch._dynamo.reset()`) of the first call, which for JAX "
        "and torch.compile includes tracing and compilation; for tapegrad compiled it "
        "is the recording call plus the first replay, with a warm Numba cache.",
        "- tapegrad compiled reads the batch from its arguments; tapegrad compiled, "
        "closure from variables of the enclosing scope that the loop rebinds before "
        "each call. Both must replay (at most two recordings, no eager fallback), or "
        "the run fails.",
        "- Checked first: losses, gradients and updated weights over the first "
        f"{CHECK_CALLS} calls agree with the hand-written reference (rtol 1e-4 float32, "
        "1e-8 float64, relative to the largest reference magnitude).",
    ]
    if "torch.compile" in libs:
        lines.append("- torch.compile compiles the same step function as tapegrad compiled; "
                     "dynamo breaks the graph at `backward()` / `autograd.grad`, so "
                     "PyTorch's autograd engine runs the AOT-compiled backward graph "
                     "between the compiled pieces.")
    return lines + [f"- {n}" for n in notes]


def markdown(rows, cols, base, head):
    peers = [c for c in cols if c != base]
    t1 = ["| workload | " + " | ".join(f"{c} µs" for c in cols) + " | "
          + " | ".join(f"{c} / {base}" for c in peers) + " |",
          "|---|" + "---:|" * (len(cols) + len(peers))]
    for name, row in rows.items():
        us = [row[c][0] if c in row else None for c in cols]
        b = row.get(base, (None,))[0]
        ratios = [fmt(row[c][0] / b, "x") if c in row and b else "n/a" for c in peers]
        t1.append(f"| {name} | " + " | ".join(map(fmt, us)) + " | " + " | ".join(ratios)
                  + " |")
    t2 = ["| workload | " + " | ".join(f"{c} ms" for c in cols) + " |",
          "|---|" + "---:|" * len(cols)]
    for name, row in rows.items():
        t2.append(f"| {name} | "
                  + " | ".join(fmt(row[c][1]) if c in row else "n/a" for c in cols) + " |")
    about = [f"- `{n}`: {WORKLOADS[n].about}" for n in rows]
    skips = [f"- `{n}` / {c}: skipped, {why}." for (n, c), why in SKIP.items() if n in rows]
    return "\n".join(head + ["", "## Time per step (µs)", ""] + t1 + [""] + about + skips
                     + ["", "## First call (ms)", ""] + t2) + "\n"


def chart(rows, cols, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(rows)
    width = 0.8 / len(cols)
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(names)), 5))
    for j, c in enumerate(cols):
        xs = [i + (j - (len(cols) - 1) / 2) * width for i, n in enumerate(names) if c in rows[n]]
        ax.bar(xs, [rows[n][c][0] for n in names if c in rows[n]], width, label=c)
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("µs per step (log scale)")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 repeats of >= 0.02 s, 2 first-call measurements")
    ap.add_argument("--only", help="comma-separated workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder")
    ap.add_argument("--peak", nargs=2, metavar=("WORKLOAD", "COLUMN"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peak:
        peak(*args.peak)
        return 0
    names = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(sorted(unknown))}")
    args.repeat, args.min_time, args.first_repeat = (3, 0.02, 2) if args.quick else (5, 0.1, 3)
    args.failures = []
    libs, notes = load_libraries()
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    load0 = os.getloadavg()[0]
    rows = {}
    for name in names:
        print(f"{name}:", file=sys.stderr)
        rows[name] = run_workload(WORKLOADS[name], libs, args)
    cols = list(libs)
    base = "tapegrad compiled" if "tapegrad compiled" in libs else "tapegrad eager"
    if base != "tapegrad compiled":
        notes.append("Ratios are against tapegrad eager, as tapegrad compiled is missing.")
    md = markdown(rows, cols, base, header(libs, notes, args, (load0, os.getloadavg()[0])))
    if MEMORY_WORKLOAD in rows and sys.platform.startswith("linux"):
        md += "\n" + memory_table()
    print(md)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(md)
    chart(rows, cols, os.path.join(args.out, "compare.png"))
    for line in args.failures:
        print(line)
    return 1 if args.failures else 0


if __name__ == "__main__":
    sys.exit(main())
