"""Long training loops keep memory bounded: the live tape does not grow with the number
of iterations, the scratch arena pool stays small, old tapes are garbage-collected,
saved values are released by a freeing backward, and RSS stays flat. No timing asserts.
"""
import gc
import weakref

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.tape as _tape

psutil = pytest.importorskip("psutil")

MB = 1 << 20


@pytest.fixture(autouse=True)
def fresh_tape():
    """Each test starts, and leaves, with no open tape (a leaking test must not make the
    next one fail)."""
    _tape.STATE.tape = None
    yield
    _tape.STATE.tape = None
    gc.collect()


def rss():
    return psutil.Process().memory_info().rss


def pool_shape():
    """(number of pooled arenas, largest arena) over all dtypes."""
    pools = list(_tape._ARENAS.values())
    return sum(len(p) for p in pools), max((len(a) for p in pools for a in p), default=0)


def test_seed_regression_loop_20000_iterations_is_bounded():
    """The seed-002 loop (SEMANTICS.md section 3), run far past convergence."""
    tg.manual_seed(6)
    x = tg.rand(20, 1) * 10
    y = 2 * x + (5 + tg.randn(20, 1))
    w = tg.randn(1, requires_grad=True)
    b = tg.zeros(1, requires_grad=True)

    n_iter = 20_000
    rows, capacity, pools = [], [], []
    ref10 = None
    sampled = []
    rss_1000 = None
    first_loss = None
    for it in range(n_iter):
        y_pred = tg.add(tg.mul(w, x), b)
        loss = (0.5 * (y - y_pred) ** 2).mean()
        tape = _tape.STATE.tape
        rows.append(tape.n)
        capacity.append(len(tape.T))
        if it == 10:
            ref10 = weakref.ref(tape)
        if it % 1000 == 0:
            sampled.append(weakref.ref(tape))
        del tape
        loss.backward()
        b.data.sub_(0.01 * b.grad)
        w.data.sub_(0.01 * w.grad)
        w.grad.data.zero_()
        b.grad.data.zero_()
        pools.append(pool_shape())
        if first_loss is None:
            first_loss = loss.item()
        if it == 1000:
            gc.collect()
            rss_1000 = rss()
    gc.collect()
    rss_end = rss()

    # the same program every iteration: the same number of rows on a fresh tape
    assert max(rows) == min(rows) == rows[0], (min(rows), max(rows))
    assert max(capacity) == capacity[0]
    # at most two arenas per dtype are pooled, and they do not grow
    assert max(p[0] for p in pools) <= 2 * 2
    assert max(p[1] for p in pools) == pools[100][1]
    # old tapes are gone
    assert ref10 is not None and ref10() is None
    assert all(r() is None for r in sampled), "tapes of finished iterations are alive"
    # flat memory between iteration 1000 and the end
    assert rss_end - rss_1000 < 20 * MB, f"RSS grew by {(rss_end - rss_1000) / MB:.1f} MB"
    assert loss.item() < first_loss / 10


def test_mlp_loop_with_hooks_retain_grad_and_grad_is_bounded():
    rng = np.random.default_rng(0)
    X = tg.tensor(rng.standard_normal((32, 8)))
    Y = tg.tensor(rng.standard_normal((32, 1)))
    W1 = tg.tensor(rng.standard_normal((8, 16)) * 0.3, requires_grad=True)
    b1 = tg.zeros(16, dtype=tg.float64, requires_grad=True)
    W2 = tg.tensor(rng.standard_normal((16, 1)) * 0.3, requires_grad=True)
    params = [W1, b1, W2]
    hook_calls = [0]

    def hook(g):
        hook_calls[0] += 1
        return g * 1.0

    rows, refs = [], []
    rss_start = None
    for it in range(3000):
        h = tg.tanh(X @ W1 + b1)
        h.retain_grad()
        h.register_hook(hook)
        out = h @ W2
        loss = ((out - Y) ** 2).mean()
        rows.append(_tape.STATE.tape.n)
        if it % 3 == 0:
            grads = tg.autograd.grad(loss, params)
        else:
            loss.backward()
            grads = [p.grad for p in params]
            assert h.grad is not None
        with tg.no_grad():
            for p, g in zip(params, grads):
                p -= 0.05 * g
        for p in params:
            p.grad = None
        if it % 500 == 0:
            refs.append(weakref.ref(loss.grad_fn._tape))
        if it == 500:
            gc.collect()
            rss_start = rss()
    gc.collect()
    assert hook_calls[0] == 3000
    assert max(rows) == min(rows)
    assert all(r() is None for r in refs[:-1]), "tapes of finished iterations are alive"
    assert rss() - rss_start < 20 * MB


def test_freeing_backward_releases_saved_values():
    x = tg.tensor(np.linspace(-1, 1, 1000), requires_grad=True)
    h = (x * 2).tanh()                 # tanh saves its output
    ref = weakref.ref(h._data)
    loss = (h * h).sum()               # mul saves h as well
    del h
    gc.collect()
    assert ref() is not None           # still held by the tape's saves
    loss.backward()
    gc.collect()
    assert ref() is None, "saved values outlive the backward that freed them"
    assert x.grad is not None


def test_retained_graph_releases_saved_values_when_dropped():
    x = tg.tensor(np.linspace(-1, 1, 1000), requires_grad=True)
    h = (x * 2).tanh()
    ref = weakref.ref(h._data)
    loss = (h * h).sum()
    del h
    loss.backward(retain_graph=True)
    loss.backward()
    del loss
    gc.collect()
    assert ref() is None


def test_forward_only_loop_in_grad_mode_is_bounded():
    """Evaluating a loss in grad mode without ever calling backward (a validation loop
    that forgot no_grad). In PyTorch each iteration's graph dies with its output."""
    rng = np.random.default_rng(1)
    w = tg.tensor(rng.standard_normal(2000), requires_grad=True)
    x = tg.tensor(rng.standard_normal(2000))
    gc.collect()
    start = rss()
    rows = []
    for it in range(3000):
        loss = ((w * x).tanh() ** 2).mean()
        rows.append(_tape.STATE.tape.n)
        del loss
    gc.collect()
    growth = rss() - start
    assert max(rows) <= 10 * rows[0], (
        f"the tape grows with iterations: {rows[0]} rows after 1, {max(rows)} after "
        f"{len(rows)}")
    assert growth < 20 * MB, f"RSS grew by {growth / MB:.1f} MB"


def test_retain_graph_loop_is_bounded():
    """backward(retain_graph=True) every iteration: each iteration's graph is dropped
    by the user, so memory must not grow (PyTorch frees it with its last reference)."""
    rng = np.random.default_rng(2)
    w = tg.tensor(rng.standard_normal(2000), requires_grad=True)
    x = tg.tensor(rng.standard_normal(2000))
    gc.collect()
    start = rss()
    rows = []
    for it in range(3000):
        loss = ((w * x).tanh() ** 2).mean()
        loss.backward(retain_graph=True)
        rows.append(_tape.STATE.tape.n if _tape.STATE.tape is not None else 0)
        w.grad = None
        del loss
    gc.collect()
    growth = rss() - start
    assert max(rows) <= 10 * max(rows[0], 1), (
        f"the tape grows with iterations: {rows[0]} rows after 1, {max(rows)} after "
        f"{len(rows)}")
    assert growth < 20 * MB, f"RSS grew by {growth / MB:.1f} MB"
