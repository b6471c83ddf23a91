"""The compile corpus (compile_corpus.py): every step, run eagerly and compiled for
30 iterations with changing data, gives the same results and state bit for bit, and
the compiled one replays: no eager fallback, at most two recordings."""
import warnings

import numpy as np
import pytest

import tapegrad as tg
from compile_corpus import CORPUS

CALLS = 30


def snap(x):
    if isinstance(x, tg.Tensor):
        return ("tensor", x.dtype, np.array(x.detach().numpy(), copy=True))
    if isinstance(x, (tuple, list)):
        return type(x)(snap(i) for i in x)
    if isinstance(x, dict):
        return {k: snap(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return ("array", x.dtype, x.copy())
    return x


def same(a, b):
    if isinstance(a, tuple) and len(a) == 3 and a[0] in ("tensor", "array"):
        return isinstance(b, tuple) and len(b) == 3 and a[:2] == b[:2] and \
            a[2].shape == b[2].shape and a[2].tobytes() == b[2].tobytes()
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and (a == b or a != a and b != b)


def run(build, wrap):
    call, state, step = build(wrap)
    seen = []
    for i in range(CALLS):
        seen.append((snap(call(i)), snap(state())))
    return seen, step


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_step_replays_bit_identical(name):
    eager, _ = run(CORPUS[name], lambda f: f)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tg.CompileWarning)
        compiled, step = run(CORPUS[name], tg.compile)
    for i, (e, c) in enumerate(zip(eager, compiled)):
        assert same(c[0], e[0]), f"iteration {i}: result {c[0]} != eager {e[0]}"
        assert same(c[1], e[1]), f"iteration {i}: parameters or optimizer state differ"
    assert step.fallbacks == 0
    assert step.records <= 2, f"{step.records} recordings"
    assert step.replays == CALLS - step.records


# -- what the corpus relies on, one behaviour at a time ----------------------------------
def small_classifier():
    tg.manual_seed(0)
    model = tg.nn.Sequential(tg.nn.Linear(4, 8), tg.nn.Tanh(), tg.nn.Linear(8, 3))
    return model, tg.optim.SGD(model.parameters(), lr=0.1)


def test_label_out_of_range_in_a_replay_raises_as_eager():
    model, opt = small_classifier()

    @tg.compile
    def step(x, y):
        opt.zero_grad()
        loss = tg.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    x = tg.randn(5, 4)
    for _ in range(3):
        step(x, tg.tensor([0, 1, 2, 1, 0]))
    before = [p.detach().numpy().copy() for p in model.parameters()]
    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        step(x, tg.tensor([0, 1, 3, 1, 0]))
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.detach().numpy(), b)
    assert step.replays == 2


def test_a_rebound_number_records_again_with_its_value():
    """A global or closure number is part of the recording: rebinding it records again
    (never a replay with the old value)."""
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    scale = 2.0

    @tg.compile
    def f():
        return (w * scale).sum()
    assert f().item() == 6.0
    assert f().item() == 6.0
    scale = 3.0
    assert f().item() == 9.0
    assert f().item() == 9.0
    assert (f.records, f.replays) == (2, 2)


def test_same_tensor_twice_and_bool_arguments():
    @tg.compile
    def f(a, b, mask):
        return (a * b * mask.float()).sum()
    for i in range(3):
        x = tg.tensor([1.0, 2.0, 3.0]) + i
        m = tg.tensor([True, False, True])
        assert f(x, x, m).item() == float((x * x * m.float()).sum().item())
    assert f.replays == 2


def test_recompile_storm_warns_once_naming_the_read():
    @tg.compile
    def f(x):
        s = x.sum()
        return x * s.item()             # a value read that the program depends on
    with pytest.warns(tg.CompileWarning) as got:
        for i in range(8):
            f(tg.tensor([float(i), 1.0]))
    msgs = [str(w.message) for w in got]
    assert len(msgs) == 1
    assert "recorded 4 calls in a row" in msgs[0]
    assert f"test_compile_corpus.py:{f.__wrapped__.__code__.co_firstlineno + 3}" in msgs[0]
    assert f.records == 8


def test_fallback_warning_names_the_operation_and_the_line():
    @tg.compile
    def f(x):
        y = x * 1.0
        y[0] = 5.0
        return y.sum()
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.warns(tg.CompileWarning,
                      match=r"IndexPutBackward0.* \(at .*test_compile_corpus.py:\d+\)"):
        f(x)


def test_random_stream_statistics_and_seeding():
    tg.manual_seed(123)
    u = tg.rand(200000, dtype=tg.float64).numpy()
    n = tg.randn(200000, dtype=tg.float64).numpy()
    k = tg.randint(-3, 5, (200000,)).numpy()
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.005
    assert abs(n.mean()) < 0.01 and abs(n.std() - 1.0) < 0.01
    assert abs(np.mean(np.abs(n) < 1.0) - 0.6827) < 0.005
    assert k.dtype == np.int64 and k.min() == -3 and k.max() == 4
    assert np.all(np.abs(np.bincount(k + 3) / k.size - 1 / 8) < 0.005)
    tg.manual_seed(123)
    np.testing.assert_array_equal(tg.rand(200000, dtype=tg.float64).numpy(), u)
    assert not np.array_equal(tg.rand(10).numpy(), tg.rand(10).numpy())


def test_compiled_draws_continue_the_eager_stream():
    """Replays draw new numbers each call, the ones eager calls would have drawn."""
    def draws(wrap):
        tg.manual_seed(5)
        f = wrap(lambda: tg.randn(3) + tg.rand(2).sum())
        return [f().numpy().copy() for _ in range(4)] + [tg.rand(2).numpy()], f
    want, _ = draws(lambda f: f)
    got, f = draws(tg.compile)
    assert f.replays == 3
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(got[0], got[1])


# -- values read inside the step: the Python re-runs around the replay -------------------
def test_branch_on_a_value_read_after_the_step_finishes_eagerly():
    """A branch that makes new ops after the last update: the calls that take the other
    branch than the recording finish eagerly, with eager's values."""
    def run(wrap):
        model, opt = small_classifier()
        flags = []

        @wrap
        def step(x, y):
            opt.zero_grad()
            loss = tg.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if loss.item() > 1.05:
                extra = loss * 2.0
                flags.append(extra.item())
            else:
                flags.append(loss.item())
            return loss
        rng = np.random.default_rng(3)
        out = [step(tg.tensor(rng.standard_normal((6, 4)), dtype=tg.float32),
                    tg.tensor(rng.integers(0, 3, 6))).item() for _ in range(20)]
        return out, flags, [p.detach().numpy().copy() for p in model.parameters()], step
    e_out, e_flags, e_params, _ = run(lambda f: f)
    c_out, c_flags, c_params, step = run(tg.compile)
    assert c_out == e_out and c_flags == e_flags
    for a, b in zip(c_params, e_params):
        np.testing.assert_array_equal(a, b)
    assert step.fallbacks == 0 and step.replays >= 15


def test_other_path_before_any_read_is_an_error():
    """Python that depends on something no guard sees, caught by the re-run."""
    seen = {"calls": 0}
    w = tg.tensor([1.0, 2.0], requires_grad=True)

    def calls():                # (a value a chain read in f itself would guard)
        seen["calls"] += 1
        return seen["calls"]

    @tg.compile
    def f(x):
        y = x * 2.0 if calls() < 4 else x * 3.0
        loss = (y * w).sum()
        log = loss.item()
        return loss, log
    for i in range(3):
        f(tg.tensor([float(i), 1.0]))
    with pytest.raises(RuntimeError, match="before reading any tensor value"):
        f(tg.tensor([5.0, 1.0]))
    assert f(tg.tensor([5.0, 1.0]))[1] == 3.0 * (5.0 + 2.0)


def test_tensors_kept_from_a_rerun_keep_their_values():
    kept, floats = [], []

    @tg.compile
    def f(x):
        y = (x * x).sum()
        kept.append(y.detach())
        floats.append(y.item())
        return y
    for i in range(6):
        f(tg.tensor([float(i)]))
    assert f.replays == 4
    assert [t.item() for t in kept] == floats == [float(i * i) for i in range(6)]


def test_logging_read_before_the_update_records_again():
    """A value read before the step's updates: not re-run (the storm warning says
    so), and every call still gives eager's results."""
    model, opt = small_classifier()
    hist = []

    @tg.compile
    def step(x, y):
        opt.zero_grad()
        loss = tg.nn.functional.cross_entropy(model(x), y)
        hist.append(loss.item())
        loss.backward()
        opt.step()
        return loss
    rng = np.random.default_rng(4)
    with pytest.warns(tg.CompileWarning, match="recorded 4 calls in a row"):
        for _ in range(5):
            step(tg.tensor(rng.standard_normal((6, 4)), dtype=tg.float32),
                 tg.tensor(rng.integers(0, 3, 6)))
    assert len(hist) == 5 and step.records == 5


# -- hooks: the replay pauses at hooked rows and calls them --------------------------------
def test_tensor_hooks_run_on_every_replay():
    """A hook that scales a gradient and one that logs its size, registered inside the
    step: every replay pauses at their rows and calls them with that call's gradient."""
    def run(wrap):
        tg.manual_seed(0)
        model = tg.nn.Sequential(tg.nn.Linear(4, 8), tg.nn.Tanh(), tg.nn.Linear(8, 2))
        opt = tg.optim.SGD(model.parameters(), lr=0.1)
        sizes = []

        @wrap
        def step(x, y):
            opt.zero_grad()
            h = model[0](x)
            h.register_hook(lambda g: g * 0.5)
            a = model[1](h)
            a.register_hook(lambda g: sizes.append(float(np.abs(g.numpy()).sum())))
            loss = tg.nn.functional.mse_loss(model[2](a), y)
            loss.backward()
            opt.step()
            return loss
        rng = np.random.default_rng(1)
        out = [step(tg.tensor(rng.standard_normal((5, 4)), dtype=tg.float32),
                    tg.tensor(rng.standard_normal((5, 2)), dtype=tg.float32)).item()
               for _ in range(8)]
        return out, sizes, [p.detach().numpy().copy() for p in model.parameters()], step
    e_out, e_sizes, e_params, _ = run(lambda f: f)
    c_out, c_sizes, c_params, step = run(tg.compile)
    assert c_out == e_out and c_sizes == e_sizes and len(c_sizes) == 8
    for a, b in zip(c_params, e_params):
        np.testing.assert_array_equal(a, b)
    assert (step.records, step.replays, step.fallbacks) == (1, 7, 0)


def test_retain_grad_inside_the_function():
    def run(wrap):
        tg.manual_seed(0)
        w = tg.randn(4, 3, requires_grad=True)

        @wrap
        def f(x):
            h = x @ w
            h.retain_grad()
            loss = (h.tanh() ** 2).sum()
            loss.backward()
            return loss, h.grad, w.grad
        rng = np.random.default_rng(2)
        outs = []
        for _ in range(5):
            w.grad = None
            loss, hg, wg = f(tg.tensor(rng.standard_normal((2, 4)), dtype=tg.float32))
            outs.append((loss.item(), hg.numpy().copy(), wg.numpy().copy()))
        return outs, f
    want, _ = run(lambda f: f)
    got, f = run(tg.compile)
    for (l1, h1, w1), (l2, h2, w2) in zip(got, want):
        assert l1 == l2
        np.testing.assert_array_equal(h1, h2)
        np.testing.assert_array_equal(w1, w2)
    assert (f.records, f.replays, f.fallbacks) == (1, 4, 0)


class Cube(tg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x * x


class ExpAndSquare(tg.autograd.Function):
    """Two outputs, one of them saved; a gradient for a non-tensor argument (None)."""
    @staticmethod
    def forward(ctx, x, scale):
        e = (x * scale).exp()
        ctx.save_for_backward(x, e)
        ctx.scale = scale
        return e, x * x

    @staticmethod
    def backward(ctx, ge, gs):
        x, e = ctx.saved_tensors
        return ge * e * ctx.scale + gs * 2 * x, None


def test_autograd_functions_replay():
    """The forward's ops are recorded like any ops; the replay's backward pauses at the
    Function's row and runs its backward on that call's values."""
    def run(wrap):
        tg.manual_seed(0)
        w = tg.randn(4, 3, dtype=tg.float64, requires_grad=True)

        @wrap
        def f(x):
            h = Cube.apply(x @ w)
            e, s = ExpAndSquare.apply(h.tanh(), 0.5)
            loss = (e.sum() + s.mean()) * 0.1
            loss.backward()
            return loss, w.grad
        rng = np.random.default_rng(5)
        outs = []
        for _ in range(6):
            w.grad = None
            loss, g = f(tg.tensor(rng.standard_normal((2, 4))))
            outs.append((loss.item(), g.numpy().copy()))
        return outs, f
    want, _ = run(lambda f: f)
    got, f = run(tg.compile)
    for (l1, g1), (l2, g2) in zip(got, want):
        assert l1 == l2
        np.testing.assert_array_equal(g1, g2)
    assert (f.records, f.replays, f.fallbacks) == (1, 5, 0)
