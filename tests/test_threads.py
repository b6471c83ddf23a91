"""tg.compile under threads: a recording holds only its own thread's operations, two
threads record and replay different compiled functions at once, and one compiled
function called from several threads stays correct."""
import threading

import numpy as np

import tapegrad as tg

try:
    from .test_stress import batches, make_model
except ImportError:
    from test_stress import batches, make_model


def run_threads(*targets):
    errors = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:     # reported by the main thread
                errors.append(exc)
        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_other_threads_work_is_not_recorded():
    """Another thread's in-place update, made while a compiled function records, runs
    once, and replays of the compiled function do not repeat it."""
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    counter = tg.zeros(())
    go, done = threading.Event(), threading.Event()

    def other():
        assert go.wait(10)
        with tg.no_grad():
            counter.add_(1.0)
        done.set()

    @tg.compile
    def f(x):
        y = (w * x).sum()
        if not go.is_set():
            go.set()
            assert done.wait(10)
        return y

    outs = []
    run_threads(other, lambda: outs.extend(f(tg.tensor([1.0, i])).item() for i in range(5)))
    assert counter.item() == 1.0
    assert outs == [1.0 + 2.0 * i for i in range(5)]
    assert (f.records, f.replays, f.fallbacks) == (1, 4, 0)


def test_other_threads_reads_do_not_become_guards():
    """``.item()`` in another thread while a recording runs is not a guard of it."""
    v = tg.tensor([3.0])
    go, done = threading.Event(), threading.Event()

    def other():
        assert go.wait(10)
        for _ in range(3):
            v.add_(1.0)
            v.item()
        done.set()

    @tg.compile
    def f(x):
        if not go.is_set():
            go.set()
            assert done.wait(10)
        return x * 2

    run_threads(other, lambda: [f(tg.tensor([float(i)])) for i in range(10)])
    assert (f.records, f.replays, f.fallbacks) == (1, 9, 0)


def test_two_functions_record_at_the_same_time():
    a_in, b_in = threading.Event(), threading.Event()

    @tg.compile
    def g(x):
        r = x * 2
        a_in.set()
        assert b_in.wait(10)
        return r

    @tg.compile
    def h(x):
        r = x + 1
        b_in.set()
        assert a_in.wait(10)
        return r

    res = {}
    run_threads(lambda: res.setdefault("g", g(tg.ones(3))),
                lambda: res.setdefault("h", h(tg.ones(3))))
    np.testing.assert_array_equal(res["g"].numpy(), [2.0] * 3)
    np.testing.assert_array_equal(res["h"].numpy(), [2.0] * 3)
    np.testing.assert_array_equal(g(tg.full((3,), 3.0)).numpy(), [6.0] * 3)
    np.testing.assert_array_equal(h(tg.full((3,), 3.0)).numpy(), [4.0] * 3)
    assert (g.records, g.replays, h.records, h.replays) == (1, 1, 1, 1)


def test_compiled_function_called_inside_a_recording_becomes_part_of_it():
    inner = tg.compile(lambda x: x * 3)

    @tg.compile
    def outer(x):
        return inner(x) + 1

    for i in range(4):
        np.testing.assert_array_equal(outer(tg.full((2,), float(i))).numpy(), [3.0 * i + 1] * 2)
    assert (outer.records, outer.replays, outer.fallbacks) == (1, 3, 0)
    assert inner.records == 0


def train(seed, data, compiled):
    model, _, step = make_model(seed)
    fn = tg.compile(step) if compiled else step
    losses = [fn(x, y).item() for x, y in data]
    return fn, losses, [p.detach().numpy().copy() for p in model.parameters()]


def test_threads_training_separate_models_match_sequential_runs():
    n_threads, steps = 4, 60
    data = [batches(s, steps) for s in range(n_threads)]
    want = [train(s, data[s], compiled=False) for s in range(n_threads)]
    got = [None] * n_threads

    def worker(s):
        return lambda: got.__setitem__(s, train(s, data[s], compiled=True))

    run_threads(*[worker(s) for s in range(n_threads)])
    for s in range(n_threads):
        fn, losses, params = got[s]
        assert losses == want[s][1]
        for p, q in zip(params, want[s][2]):
            np.testing.assert_array_equal(p, q)
        assert fn.fallbacks == 0 and fn.replays == steps - fn.records and fn.records <= 2


def test_one_compiled_function_from_several_threads():
    """Calls from several threads take turns: every result is the one its own
    arguments give."""
    f = tg.compile(lambda x: (x * x).sum())
    results = {}

    def worker(k):
        def run():
            for i in range(50):
                v = float(k * 100 + i)
                results[(k, i)] = (f(tg.full((4,), v)).item(), 4 * v * v)
        return run

    run_threads(*[worker(k) for k in range(4)])
    assert all(got == want for got, want in results.values())
    assert f.fallbacks == 0 and f.records == 1
