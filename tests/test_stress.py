"""Stress: threads training at once, and Ctrl-C at random moments.

- Threads: 4 threads x 500 compiled steps of separate models, 20 times, with their
  first calls recording at the same moment: every result and parameter equals the same
  runs done one after another, bit for bit, with no eager fallback.
- Interrupts: 100 SIGINTs at random moments over four kinds of loop (eager training,
  backward of a 40 000-op graph, the same with hooks, a compiled training loop). Each
  one is delivered as KeyboardInterrupt (never swallowed by a destructor), nothing is
  left half-written (a backward's gradients are all there or none; a compiled step's
  parameters and optimizer state are those before or after it) and the next step is
  right.
"""
import os
import random
import signal
import sys
import threading
import time

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.optim as optim

pytestmark = [pytest.mark.stress, pytest.mark.usefixtures("python_sigint_handler")]


STEPS = 500
THREADS = 4
REPEATS = 20


def make_model(seed):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2))
    with tg.no_grad():
        for p in model.parameters():
            p.copy_(tg.tensor(rng.uniform(-0.3, 0.3, p.shape).astype(np.float32)))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


def batches(seed, n):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((n, 8, 6)).astype(np.float32)
    ys = rng.standard_normal((n, 8, 2)).astype(np.float32)
    return [(tg.tensor(x), tg.tensor(y)) for x, y in zip(xs, ys)]


def train(seed, data, compiled, start=None):
    model, _, step = make_model(seed)
    fn = tg.compile(step) if compiled else step
    if start is not None:
        start.wait()
    losses = np.array([fn(x, y).item() for x, y in data])
    return fn, losses, [p.detach().numpy().copy() for p in model.parameters()]


def test_threads_train_separate_compiled_models_as_if_one_after_another():
    data = [batches(100 + s, STEPS) for s in range(THREADS)]
    want = [train(s, data[s], compiled=False) for s in range(THREADS)]
    for rep in range(REPEATS):
        got = [None] * THREADS
        errors = []
        start = threading.Barrier(THREADS)

        def worker(s):
            try:
                got[s] = train(s, data[s], compiled=True, start=start)
            except BaseException as exc:     # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        for s in range(THREADS):
            fn, losses, params = got[s]
            np.testing.assert_array_equal(losses, want[s][1], err_msg=f"repeat {rep}")
            for p, q in zip(params, want[s][2]):
                np.testing.assert_array_equal(p, q, err_msg=f"repeat {rep}")
            assert fn.fallbacks == 0 and fn.records <= 2
            assert fn.replays == STEPS - fn.records


# -- interrupts -----------------------------------------------------------------------------
class Interrupts:
    """Sends SIGINT to this process after a random delay; counts what was delivered and
    what Python only printed ("Exception ignored in ...")."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.delivered = 0
        self.sent = 0
        self.swallowed = []

    def __enter__(self):
        self.hook = sys.unraisablehook
        sys.unraisablehook = lambda u: self.swallowed.append(u.exc_type)
        return self

    def __exit__(self, *exc):
        sys.unraisablehook = self.hook

    def trial(self, loop, lo, hi, deadline=5.0):
        """Runs ``loop()`` (which never ends by itself) with a SIGINT after a delay
        in [lo, hi) seconds; returns once it was delivered."""
        timer = threading.Timer(self.rng.uniform(lo, hi),
                                lambda: os.kill(os.getpid(), signal.SIGINT))
        self.sent += 1
        try:
            timer.start()
            end = time.perf_counter() + deadline
            while time.perf_counter() < end:
                loop()
            pytest.fail("the interrupt was not delivered")
        except KeyboardInterrupt:
            self.delivered += 1
        finally:
            timer.cancel()
            timer.join()


def chain(n, hooks=False):
    x = tg.tensor([0.5], dtype=tg.float64, requires_grad=True)
    w = tg.tensor([2.0], dtype=tg.float64, requires_grad=True)
    y = x
    for i in range(n):
        y = y + w * 1e-3
        if hooks and i % 2000 == 0:
            y.register_hook(lambda g: float(np.sum(np.sqrt(np.arange(2000.0)))) and None)
    return x, w, y


N_CHAIN = 40_000


@pytest.mark.parametrize("hooks", [False, True], ids=["backward", "hooks"])
def test_interrupted_backward_leaves_every_gradient_or_none(hooks):
    t0 = time.perf_counter()
    x, w, y = chain(N_CHAIN, hooks)
    t1 = time.perf_counter()
    y.backward()
    t2 = time.perf_counter()
    assert x.grad.item() == 1.0 and abs(w.grad.item() - 40.0) < 1e-9
    build, back = t1 - t0, t2 - t1
    state = {}

    def loop():
        state["x"], state["w"], state["y"] = chain(N_CHAIN, hooks)
        state["y"].backward()

    with Interrupts(7 + hooks) as ints:
        for _ in range(25):
            state.clear()
            ints.trial(loop, 0.7 * build, build + 1.5 * back)
            if "y" in state:     # the graph was built: its backward ran fully or not at all
                gx, gw = state["x"].grad, state["w"].grad
                assert (gx is None and gw is None) or (
                    gx.item() == 1.0 and abs(gw.item() - 40.0) < 1e-9), (gx, gw)
            x, w, y = chain(2000, hooks)
            y.backward()
            assert x.grad.item() == 1.0 and abs(w.grad.item() - 2.0) < 1e-9
    assert ints.delivered == ints.sent == 25
    assert KeyboardInterrupt not in ints.swallowed


def test_interrupted_eager_training_is_delivered_and_the_next_step_right():
    model, opt, step = make_model(0)
    data = batches(1, 64)
    it = iter(range(10 ** 9))
    hist = []

    def loop():
        x, y = data[next(it) % len(data)]
        hist.append(step(x, y).item())

    with Interrupts(11) as ints:
        for _ in range(25):
            ints.trial(loop, 0.0, 0.03)
            # the next step from whatever state the interrupt left equals a fresh copy's
            twin, topt, tstep = make_model(0)
            twin.load_state_dict(model.state_dict())
            x, y = data[0]
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            tloss = ((twin(x) - y) ** 2).mean()
            tloss.backward()
            assert loss.item() == tloss.item()
            for p, q in zip(model.parameters(), twin.parameters()):
                np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
    assert ints.delivered == ints.sent == 25
    assert KeyboardInterrupt not in ints.swallowed


def snapshot(model, opt):
    out = [p.detach().numpy().copy() for p in model.parameters()]
    out += [opt.state[p]["momentum_buffer"].numpy().copy() for p in model.parameters()]
    return out


def test_interrupted_compiled_step_is_before_or_after_and_the_next_call_right():
    model, opt, step = make_model(3)
    data = batches(2, 64)
    comp = tg.compile(step)
    for x, y in data[:3]:
        comp(x, y)
    records = comp.records
    cur = {"pair": (snapshot(model, opt), 3)}
    counter = iter(range(4, 10 ** 9))

    def loop():
        i = next(counter)
        cur["pair"] = (snapshot(model, opt), i)
        x, y = data[i % len(data)]
        comp(x, y)

    def reference(state, i):
        """Eager step i (its batch) from parameters and momentum ``state``."""
        twin, topt, tstep = make_model(3)
        ps = list(twin.parameters())
        tstep(*data[0])                      # creates the momentum buffers
        with tg.no_grad():
            for p, v in zip(ps, state[:len(ps)]):
                p.copy_(tg.tensor(v))
            for p, v in zip(ps, state[len(ps):]):
                topt.state[p]["momentum_buffer"].copy_(tg.tensor(v))
        tstep(*data[i % len(data)])
        return snapshot(twin, topt)

    with Interrupts(13) as ints:
        for _ in range(25):
            ints.trial(loop, 0.0, 0.01)
            before, i = cur["pair"]
            now = snapshot(model, opt)
            after = reference(before, i)
            same_before = all(np.array_equal(a, b) for a, b in zip(now, before))
            same_after = all(np.array_equal(a, b) for a, b in zip(now, after))
            assert same_before or same_after
            # the next call replays and gives what eager code gives from this state
            x, y = data[(i + 1) % len(data)]
            want = reference(now, i + 1)
            comp(x, y)
            for a, b in zip(snapshot(model, opt), want):
                np.testing.assert_array_equal(a, b)
            cur["pair"] = (snapshot(model, opt), i + 1)
            counter = iter(range(i + 2, 10 ** 9))
    assert ints.delivered == ints.sent == 25
    assert KeyboardInterrupt not in ints.swallowed
    assert comp.fallbacks == 0 and comp.records == records
