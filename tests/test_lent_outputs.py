"""A compiled program's big buffers: outputs are handed out without a copy (a result
the caller still holds, or a view of it, is never overwritten by a later replay, and
buffers the caller dropped are reused), and values that only a fused run reads live in
block-sized scratch instead of buffers of their own."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import _kernels as K
from tapegrad._buffers import LEND_POOL

N = 50_000          # 400 KB of float64: over LEND_BYTES


def value_and_grad(x):
    f = (tg.tanh(x) * x + tg.exp(-x * x)).sum()
    return (f, *tg.autograd.grad(f, (x,)))


def inputs(k):
    rng = np.random.default_rng(k)
    return [rng.standard_normal(N) for _ in range(k)]


def eager(xs):
    return [value_and_grad(tg.from_numpy(x).requires_grad_())[1].numpy() for x in xs]


def test_held_results_and_views_keep_their_values():
    xs = inputs(6)
    want = eager(xs)
    c = tg.compile(value_and_grad)
    held, views = [], []
    for x in xs:
        _, g = c(tg.from_numpy(x).requires_grad_())
        held.append(g)
        views.append(g.numpy()[10:20])
    assert c.replays == 5
    for g, v, w in zip(held, views, want):
        np.testing.assert_array_equal(g.numpy(), w)
        np.testing.assert_array_equal(v, w[10:20])
    rec = next(iter(c.cache.values()))[0]
    assert rec.lend, "the gradient was expected to be handed out without a copy"


def test_dropped_results_give_their_buffers_back():
    xs = inputs(2)
    want = eager(xs)
    c = tg.compile(value_and_grad)
    g = None
    used = set()
    for i in range(12):
        f, g = c(tg.from_numpy(xs[i % 2]).requires_grad_())    # the last step's g is
        np.testing.assert_array_equal(g.numpy(), want[i % 2])    # held during the call
        if i:
            used.add(g.numpy().ctypes.data)
    assert len(used) == 2
    g = None
    addresses = set()
    for i in range(6):        # each result dropped at once: one buffer serves every call
        addresses.add(c(tg.from_numpy(xs[i % 2]).requires_grad_())[1].numpy().ctypes.data)
    assert len(addresses) == 1 and addresses <= used


def test_gradients_are_written_in_place_without_a_copy():
    """The backward writes a lent gradient straight into the buffer handed out (a slot
    of the arena); with every slot held, results get buffers of their own and stay
    right, at 1 and 2 threads, equal to eager to the bit."""
    n = 300_000
    xs = [np.random.default_rng(k).standard_normal(n) for k in range(7)]
    want = eager(xs)
    c = tg.compile(value_and_grad)
    before = tg.get_num_threads()
    try:
        for threads in (1, 2):
            tg.set_num_threads(threads)
            held = [c(tg.from_numpy(x).requires_grad_())[1] for x in xs]
            rec = next(iter(c.cache.values()))[0]
            (v,) = rec.inplace
            arena = rec.adj64
            inside = [np.shares_memory(g.numpy(), arena) for g in held]
            assert sum(inside) == LEND_POOL and not any(inside[-3:])
            for g, w in zip(held, want):
                np.testing.assert_array_equal(g.numpy(), w)
            held = None
            for x, w in zip(xs, want):
                g = c(tg.from_numpy(x).requires_grad_())[1]
                assert np.shares_memory(g.numpy(), arena)
                np.testing.assert_array_equal(g.numpy(), w)
            g = None
    finally:
        tg.set_num_threads(before)


def test_forward_output_lent_and_small_outputs_copied():
    x0 = np.linspace(-2.0, 2.0, N)
    c = tg.compile(lambda x: tg.sigmoid(x) * 3.0)
    outs = [c(tg.from_numpy(x0 + k)) for k in range(4)]
    for k, o in enumerate(outs):
        np.testing.assert_array_equal(o.numpy(), (tg.sigmoid(tg.from_numpy(x0 + k)) * 3.0).numpy())
    small = tg.compile(lambda x: x * 2.0)
    a = small(tg.ones(8))
    b = small(tg.ones(8) * 2)
    assert a.tolist() == [2.0] * 8 and b.tolist() == [4.0] * 8
    assert not next(iter(small.cache.values()))[0].lend


def test_recording_call_keeps_what_it_handed_out_or_kept():
    """Temporaries of the recording call become the program's buffers; what the call
    returned, or its Python kept, keeps that call's values through later replays."""
    kept = []

    def fn(x):
        h = tg.tanh(x) * 2.0
        kept.append(h)
        y = tg.exp(-h * h) + h        # temporaries: taken over by the program
        return y * 3.0

    x0 = np.linspace(-1.0, 1.0, N)
    c = tg.compile(fn)
    first = c(tg.from_numpy(x0))
    want_first = first.numpy().copy()
    want_kept = kept[0].numpy().copy()
    for k in range(1, 4):
        out = c(tg.from_numpy(x0 + k))
        np.testing.assert_array_equal(out.numpy(), fn(tg.from_numpy(x0 + k)).numpy())
    assert c.records == 1 and c.replays == 3
    np.testing.assert_array_equal(first.numpy(), want_first)
    np.testing.assert_array_equal(kept[0].numpy(), want_kept)


def test_values_only_a_run_reads_live_in_scratch():
    n = 300_000                 # fused runs split over threads from 262,144
    x0 = np.random.default_rng(5).standard_normal(n)
    want = [r.detach().numpy() for r in value_and_grad(tg.from_numpy(x0).requires_grad_())]
    c = tg.compile(value_and_grad)
    for threads in (1, 2):
        before = tg.get_num_threads()
        tg.set_num_threads(threads)
        try:
            for _ in range(2):
                got = c(tg.from_numpy(x0).requires_grad_())
                for g, w in zip(got, want):
                    np.testing.assert_array_equal(g.detach().numpy(), w)
        finally:
            tg.set_num_threads(before)
    rec = next(iter(c.cache.values()))[0]
    # tanh(x) * x, -x * x and their sum's input: written and read inside the forward
    # run only (the sum ends the run, block by block)
    assert len(rec.scratch) == 3
    assert all(rec.arrays[v].size == 0 for v in rec.scratch)


def _sums(x, y):
    s = ((x * 1.5 - y) ** 2).mean()
    t = (tg.exp(-x * x) * y).sum()
    return (s, t, *tg.autograd.grad(s * t, (x, y)))


@pytest.mark.parametrize("n, dtype", [(16384, np.float32), (40001, np.float32),
                                      (300_001, np.float64), (1_000_003, np.float64)])
def test_sum_that_ends_a_run_is_fused_and_bit_identical(n, dtype):
    """A sum or mean of a fused run's value adds the run's blocks as the eager sum adds
    its own, and its VJP tops the backward run (filling each block with g): the same
    bits for every size and thread count, and neither the summed values nor their
    adjoints get a buffer."""
    rng = np.random.default_rng(n)
    xs = [rng.standard_normal((2, n // 2)).astype(dtype) if n % 2 == 0 else
          rng.standard_normal(n).astype(dtype) for _ in range(3)]
    ys = [rng.uniform(0.5, 1.5, x.shape).astype(dtype) for x in xs]

    def args(k):
        return (tg.from_numpy(xs[k].copy()).requires_grad_(),
                tg.from_numpy(ys[k].copy()).requires_grad_())
    want = [[r.detach().numpy() for r in _sums(*args(k))] for k in range(3)]
    c = tg.compile(_sums)
    before = tg.get_num_threads()
    try:
        for threads in (1, 2):
            tg.set_num_threads(threads)
            for k in range(3):
                for g, w in zip(c(*args(k)), want[k]):
                    np.testing.assert_array_equal(g.detach().numpy(), w)
    finally:
        tg.set_num_threads(before)
    assert c.records == 1
    rec = next(iter(c.cache.values()))[0]
    INS = rec.PG[rec.nt + rec.nv:]
    totals = INS[(INS[:, K.I_OP] == K.X_SUMROWS) & (INS[:, K.I_A] < 0)]
    assert len(totals) == 2 and len(rec.partials) == 2
    assert len(rec.scratch) >= 2
    TT, runs = rec.PG[:rec.nt], rec.PL[len(rec.PL) - rec.nt:]
    tops = [r for r in range(rec.nt) if runs[r] > 1 and TT[r, K.OP] == K.K_SUM]
    assert len(tops) == 2
    assert all(runs[TT[r, K.A]] < 0 for r in tops)      # the summed rows' adjoints


total = 0.0


def test_python_re_run_around_replays_reads_run_values():
    """A function that assigns a global re-runs its Python around each replay, which
    may read any value: the run's values then get buffers again."""
    x0 = np.linspace(-2.0, 2.0, N)

    def fn(x):
        global total
        h = tg.tanh(x) * x             # only the run reads it, but Python sums it
        y = tg.exp(-h) + h
        total = float(h.sum())
        return y * 2.0

    c = tg.compile(fn)
    for k in range(4):
        x = tg.from_numpy(x0 + k)
        out = c(x)
        h = (tg.tanh(x) * x)
        np.testing.assert_array_equal(out.numpy(), ((tg.exp(-h) + h) * 2.0).numpy())
        assert total == float(h.sum())
    rec = next(iter(c.cache.values()))[0]
    assert rec.shadow and not rec.scratch and c.replays == 3


def test_program_buffers_skip_huge_pages_and_leave_numpy_as_it_was():
    from tapegrad import _alloc

    for shape, dtype in (((3, 5), np.float32), ((1 << 20,), np.float64), ((600, 1000), np.int64)):
        a = _alloc.empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    src = np.random.default_rng(2).standard_normal((700, 800))
    out = _alloc.copy(src[:, ::2])
    np.testing.assert_array_equal(out, src[:, ::2])
    assert out.flags.c_contiguous and not np.shares_memory(out, src)
    if _alloc._set_madvise_hugepage is not None:
        was = _alloc._set_madvise_hugepage(True)
        _alloc.empty((1 << 21,))
        assert _alloc._set_madvise_hugepage(was) is True


def rosen_value_and_grad(x):
    f = (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()
    return (f, *tg.autograd.grad(f, (x,)))


def test_big_arguments_are_read_where_the_caller_keeps_them():
    """A big argument is not copied into the program: its value, its views and what the
    backward saved of it point at the caller's array on each replay. The caller's
    array is left as it was; strided arguments, one array passed twice, an argument
    returned, and Python re-run around replays all stay equal to eager."""
    xs = [np.random.default_rng(k).uniform(0.0, 2.0, N) for k in range(4)]
    c = tg.compile(rosen_value_and_grad)
    for x in xs:
        before = x.copy()
        got = c(tg.from_numpy(x).requires_grad_())
        want = rosen_value_and_grad(tg.from_numpy(before).requires_grad_())
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.detach().numpy(), w.detach().numpy())
        np.testing.assert_array_equal(x, before)
    rec = next(iter(c.cache.values()))[0]
    ((_, at, *_),) = rec.relocs
    assert len(at) >= 3                  # the value, its two slices, what POWS saved
    wide = np.random.default_rng(7).uniform(0.0, 2.0, 2 * N)
    got = c(tg.from_numpy(wide[::2]).requires_grad_())
    want = rosen_value_and_grad(tg.from_numpy(wide[::2].copy()).requires_grad_())
    np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())

    def two(a, b):
        return (a * b + a).sum() + b.sum()
    c2 = tg.compile(two)
    for x in xs:
        assert c2(tg.from_numpy(x), tg.from_numpy(x)).item() == two(tg.from_numpy(x),
                                                                    tg.from_numpy(x)).item()
    same = tg.compile(lambda a: (a, a * 2.0))
    for x in xs:
        a, b = same(tg.from_numpy(x))
        np.testing.assert_array_equal(a.numpy(), x)
        np.testing.assert_array_equal(b.numpy(), x * 2.0)
    seen = []

    def logged(x):
        f, g = rosen_value_and_grad(x)
        seen.append(float(f))            # Python reads a value: re-run around replays
        return g
    c3 = tg.compile(logged)
    for x in xs:
        np.testing.assert_array_equal(c3(tg.from_numpy(x).requires_grad_()).numpy(),
                                      rosen_value_and_grad(tg.from_numpy(x).requires_grad_())[1].numpy())
    assert len(seen) == 4


def test_a_recording_does_not_keep_its_eager_arena():
    """The recording call's backward runs eagerly; the program replays on arenas of its
    own, so that arena is not kept in the pool (a big one would stay resident)."""
    from tapegrad import tape as _tape

    x0 = np.random.default_rng(4).standard_normal(N)
    _tape._ARENAS.clear()
    c = tg.compile(value_and_grad)
    c(tg.from_numpy(x0).requires_grad_())
    assert not any(a.size >= N for pool in _tape._ARENAS.values() for a in pool)
    got = c(tg.from_numpy(x0).requires_grad_())[1].numpy()
    want = value_and_grad(tg.from_numpy(x0).requires_grad_())[1].numpy()
    np.testing.assert_array_equal(got, want)
    assert any(a.size >= N for pool in _tape._ARENAS.values() for a in pool)   # eager's
