"""asv benchmarks of the eager engine: recording (forward), replay (backward), both.

Workloads (also used by ``eager_compare.py``):

(a) chain: 16 float64 values through 100 x ``tanh(y * 1.01 + 0.1)`` (300 ops), then
    ``sum``; the tape is small, so this measures per-op and per-row overhead.
(b) linreg: one SGD step of the linear-regression example, ``0.5 * (y - (w x + b))**2`` averaged
    over 20 float32 points, backward, update, zero the grads.
(c) big: ``(tanh(x) * x).sum()`` over 10 million float64 values; this measures the
    kernels, against a hand-written NumPy forward + gradient.

Every workload has ``time_forward`` (eager recording), ``time_backward`` (the replay
of a tape recorded in ``setup``, with ``retain_graph=True`` so it can be replayed
again) and ``time_forward_backward`` (record + a freeing backward, what a training
loop does). PyTorch eager runs the same code when ``torch`` is importable; otherwise
its ``setup`` raises NotImplementedError, which asv reports as skipped. PyTorch is
pinned to one thread: tapegrad's kernels are single-threaded.
"""
import time

import numpy as np

import tapegrad as tg

CHAIN_N = 16
CHAIN_STEPS = 100
BIG_N = 10_000_000
LR = 0.01


# -- helpers ------------------------------------------------------------------------
def torch_or_skip(threads=1):
    """The torch module, pinned to ``threads`` threads; NotImplementedError if absent.

    Imported lazily, so that tapegrad-only benchmarks (peak memory above all) do not
    carry PyTorch in the process.
    """
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    torch.set_num_threads(threads)
    return torch


def tape_rows(t):
    """Number of rows on the tape that holds tensor ``t``."""
    return int(t._tape.n)


# -- (a) chain -----------------------------------------------------------------------
def chain_data(seed=0):
    return np.random.default_rng(seed).random(CHAIN_N)


def chain_forward(lib, x):
    """lib is ``tapegrad`` or ``torch``: the same source runs on both."""
    y = x
    for _ in range(CHAIN_STEPS):
        y = lib.tanh(y * 1.01 + 0.1)
    return y.sum()


def chain_numpy(x):
    """Hand-written forward and gradient of the chain: (sum, d sum / d x)."""
    outs = []
    y = x
    for _ in range(CHAIN_STEPS):
        y = np.tanh(y * 1.01 + 0.1)
        outs.append(y)
    s = y.sum()
    g = np.ones_like(x)
    for o in reversed(outs):
        g = g * (1.0 - o * o) * 1.01
    return s, g


# -- (b) linear regression -----------------------------------------------------------
def linreg_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((20, 1), dtype=np.float32)
    y = (2.0 * x + 5.0 + 0.1 * rng.standard_normal((20, 1))).astype(np.float32)
    w0 = rng.standard_normal(1).astype(np.float32)
    return x, y, w0


class LinReg:
    """The seed example's model and SGD step, on ``tapegrad`` or ``torch``."""

    def __init__(self, lib, data):
        x, y, w0 = data
        self.lib = lib
        self.x = lib.from_numpy(x.copy())
        self.y = lib.from_numpy(y.copy())
        self.w = lib.tensor(w0.copy(), requires_grad=True)
        self.b = lib.zeros(1, requires_grad=True)

    def loss(self):
        lib = self.lib
        return (0.5 * (self.y - lib.add(lib.mul(self.w, self.x), self.b)) ** 2).mean()

    def step(self):
        loss = self.loss()
        loss.backward()
        w, b = self.w, self.b
        w.data.sub_(LR * w.grad)
        b.data.sub_(LR * b.grad)
        w.grad.data.zero_()
        b.grad.data.zero_()
        return loss


def linreg_numpy(data):
    """Hand-written loss and gradients (dL/dw, dL/db) at the initial point."""
    x, y, w0 = data
    b = np.zeros(1, np.float32)
    r = y - (w0 * x + b)
    loss = (0.5 * r * r).mean()
    return loss, np.array([-(r * x).mean()]), np.array([-r.mean()])


# -- (c) big elementwise ---------------------------------------------------------------
def big_data(seed=0, n=BIG_N):
    return np.random.default_rng(seed).standard_normal(n)


def big_forward(lib, x):
    return (lib.tanh(x) * x).sum()


def big_numpy(x):
    """Hand-written forward and gradient: (sum, d sum / d x)."""
    t = np.tanh(x)
    s = (t * x).sum()
    g = x * (1 - t * t) + t
    return s, g


# -- capturing the interpreter call ----------------------------------------------------
def capture_reverse(out):
    """Backwards ``out`` (retain_graph=True) while recording the interpreter calls.

    Returns (reverse, calls): the jitted ``tapegrad._kernels.reverse_rows`` and, per
    call, (args with every array copied as it was on entry, result). The copies make a
    private replay possible: the tape's arrays are read-only to the interpreter except
    for the arena and the ``seen`` flags, which each replay gets afresh. A first
    backward compiles the kernels of the graph's ops, so that one call does it all.
    """
    from tapegrad import _kernels as K
    out.backward(retain_graph=True)
    orig = K.reverse_rows
    calls = []

    def recorder(*args):
        snap = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
        res = orig(*args)
        calls.append((snap, res))
        return res

    K.reverse_rows = recorder
    try:
        out.backward(retain_graph=True)
    finally:
        K.reverse_rows = orig
    return orig, calls


class ReverseReplay:
    """Times the bare interpreter call on a recorded tape, with fresh ``seen`` flags."""

    def __init__(self, out, reps=2000):
        fn, calls = capture_reverse(out)
        if len(calls) != 1:
            raise NotImplementedError(f"expected one interpreter call, got {len(calls)}")
        args, self.expected = calls[0]
        flags = [i for i, a in enumerate(args)
                 if isinstance(a, np.ndarray) and a.dtype == np.uint8]
        if len(flags) != 1:
            raise NotImplementedError("cannot find the interpreter's 'seen' argument")
        i = self.i = flags[0]
        self.fn = fn
        self.seen0 = args[i]
        self.calls = [args[:i] + (self.seen0.copy(),) + args[i + 1:] for _ in range(reps)]
        res = fn(*self.calls[0])
        if tuple(res) != tuple(self.expected):
            raise RuntimeError(f"replay returned {res}, backward saw {self.expected}")

    def refresh(self):
        for a in self.calls:
            a[self.i][:] = self.seen0

    def seconds_per_call(self, repeat=5):
        fn = self.fn
        best = float("inf")
        for _ in range(repeat):
            self.refresh()
            t0 = time.perf_counter()
            for a in self.calls:
                fn(*a)
            best = min(best, time.perf_counter() - t0)
        return best / len(self.calls)


# -- asv: (a), (b), (c) in tapegrad and PyTorch eager -------------------------------------
def library(name):
    """tapegrad, or torch (NotImplementedError, so asv skips, when it is missing)."""
    return tg if name == "tapegrad" else torch_or_skip()


class _Eager:
    """Recording (forward), replay (backward) and both, for one workload and library."""
    params = ["tapegrad", "torch"]
    param_names = ["library"]

    def setup(self, name):
        lib = self.lib = library(name)
        self.x = lib.tensor(self.data(), requires_grad=True)
        self.forward(lib, self.x).backward()   # JIT / cache load outside the timings
        self.x.grad = None
        self.out = self.forward(lib, self.x)

    def teardown(self, name):
        self.x = self.out = None

    def time_forward(self, name):
        self.forward(self.lib, self.x)

    def time_backward(self, name):
        self.x.grad = None
        self.out.backward(retain_graph=True)

    def time_forward_backward(self, name):
        self.x.grad = None
        self.forward(self.lib, self.x).backward()


class Chain(_Eager):
    """(a) 300 recorded ops on 16 float64 values."""
    data = staticmethod(chain_data)
    forward = staticmethod(chain_forward)


class Big(_Eager):
    """(c) ``(tanh(x) * x).sum()`` on 10 million float64 values."""
    timeout = 600
    data = staticmethod(big_data)
    forward = staticmethod(big_forward)


class LinRegStep:
    """(b) One SGD step of the linear regression."""
    params = ["tapegrad", "torch"]
    param_names = ["library"]

    def setup(self, name):
        self.m = LinReg(library(name), linreg_data())
        self.m.step()
        self.out = self.m.loss()

    def time_forward(self, name):
        self.m.loss()

    def time_backward(self, name):
        self.m.w.grad = None
        self.m.b.grad = None
        self.out.backward(retain_graph=True)

    def time_step(self, name):
        """Forward, freeing backward, the SGD update and zeroing the grads."""
        self.m.step()

    def time_forward_backward(self, name):
        self.m.w.grad = None
        self.m.b.grad = None
        self.m.loss().backward()


# -- asv: (a) the interpreter alone, and the NumPy floors -------------------------------
class ChainReplay:
    """(a) The interpreter alone: ``tapegrad._kernels.reverse_rows`` on the 302-row tape.

    Falls back to ``backward()`` time / tape rows when the call cannot be captured.
    """
    timeout = 120

    def setup(self):
        self.x = tg.tensor(chain_data(), requires_grad=True)
        chain_forward(tg, self.x).backward()
        self.x.grad = None
        self.out = chain_forward(tg, self.x)
        self.rows = tape_rows(self.out)
        try:
            self.replay = ReverseReplay(self.out)
        except NotImplementedError:
            self.replay = None

    def _seconds(self):
        if self.replay is not None:
            return self.replay.seconds_per_call()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(200):
                self.x.grad = None
                self.out.backward(retain_graph=True)
            best = min(best, (time.perf_counter() - t0) / 200)
        return best

    def track_tape_rows(self):
        return self.rows

    track_tape_rows.unit = "rows"

    def track_backward_ns_per_row(self):
        return self._seconds() / self.rows * 1e9

    track_backward_ns_per_row.unit = "ns"

    def track_backward_replay_us(self):
        return self._seconds() * 1e6

    track_backward_replay_us.unit = "us"

    def track_backward_call_us(self):
        """The whole ``backward()`` call: replay plus the Python around it."""
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(200):
                self.x.grad = None
                self.out.backward(retain_graph=True)
            best = min(best, (time.perf_counter() - t0) / 200)
        return best * 1e6

    track_backward_call_us.unit = "us"


class ChainNumpy:
    """(a) Hand-written NumPy forward and gradient, a floor for the eager engines."""

    def setup(self):
        self.x = chain_data()

    def time_forward_backward(self):
        chain_numpy(self.x)


class BigNumpy:
    """(c) Hand-written NumPy: t = tanh(x); s = (t*x).sum(); g = x*(1-t*t) + t."""
    timeout = 600

    def setup(self):
        self.x = big_data()

    def time_forward_backward(self):
        big_numpy(self.x)
