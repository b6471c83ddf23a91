"""tg.set_num_threads / get_num_threads: PyTorch's errors, the environment variables,
and compiled replays whose large fused runs are split over threads giving the same bits
for every thread count, and the same bits as eager."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import _kernels as K


@pytest.fixture
def restore_threads():
    n = tg.get_num_threads()
    yield
    tg.set_num_threads(n)


@pytest.mark.parametrize("bad, kind", [(0, "positive"), (-2, "positive"), (1.5, "float"),
                                       ("2", "str"), (True, "bool")])
def test_bad_thread_counts_raise_as_torch(bad, kind, restore_threads, torch):
    before = tg.get_num_threads()
    with pytest.raises(RuntimeError) as ours:
        tg.set_num_threads(bad)
    assert tg.get_num_threads() == before
    if bad is True:             # torch takes a bool as the int 1
        assert kind in str(ours.value)
        return
    with pytest.raises(RuntimeError) as theirs:
        torch.set_num_threads(bad)
    assert str(ours.value) == str(theirs.value)


def test_set_then_get(restore_threads):
    tg.set_num_threads(3)
    assert tg.get_num_threads() == 3
    tg.set_num_threads(1)
    assert tg.get_num_threads() == 1


def _count_in(env):
    out = subprocess.run([sys.executable, "-W", "always", "-c",
                          "import tapegrad as tg; print(tg.get_num_threads())"],
                         env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip()), out.stderr


def test_environment_variables():
    clean = {"TAPEGRAD_NUM_THREADS": "", "OMP_NUM_THREADS": ""}
    assert _count_in({**clean, "OMP_NUM_THREADS": "3"})[0] == 3
    assert _count_in({**clean, "TAPEGRAD_NUM_THREADS": "1", "OMP_NUM_THREADS": "3"})[0] == 1
    default = _count_in(clean)[0]
    assert default >= 1
    n, err = _count_in({**clean, "TAPEGRAD_NUM_THREADS": "many"})
    assert n == default and "TAPEGRAD_NUM_THREADS='many'" in err


def _value_and_grad(x):
    f = (tg.tanh(x) * x + tg.exp(-x * x) * 0.5 - x / 3.0).sum()
    return (f, *tg.autograd.grad(f, (x,)))


def _forward(x):
    return tg.sigmoid(x) * x + tg.sin(x) * 2.0


def _rosenbrock(x):
    """Slices: their gradients go into x's over the threads (RUNADD)."""
    f = (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()
    return (f, *tg.autograd.grad(f, (x,)))


@pytest.mark.parametrize("fn", [_value_and_grad, _forward, _rosenbrock])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_counts_give_the_same_bits(fn, dtype, restore_threads):
    n = K.PAR_MIN * 2 + 1234          # chunks that end inside a block
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(n).astype(dtype) for _ in range(2)]

    def arg(i):
        t = tg.from_numpy(xs[i].copy())
        return t if fn is _forward else t.requires_grad_()

    def bits(res):
        res = res if isinstance(res, tuple) else (res,)
        return [r.detach().numpy().copy() for r in res]
    eager = [bits(fn(arg(i))) for i in range(2)]
    c = tg.compile(fn)
    policy = os.environ.get("OMP_WAIT_POLICY")
    c(arg(0))
    assert os.environ.get("OMP_WAIT_POLICY") == policy    # set for the pool's start only
    if K.SPLIT_MAX > 1:        # a multi-core machine compiled the split runs
        f64 = 1 if dtype == np.float64 else 0
        assert K.KFWD[f64, K.X_FUSED] != 0
        assert K.KFWD[0, K.X_MOVE] != 0           # the argument's copy
        if fn is not _forward:
            assert K.KTAB[f64, K.SPLIT] != 0
        if fn is _rosenbrock:
            assert K.KTAB[f64, K.RUNADD] != 0
    for threads in (1, 2, 3, 2):
        tg.set_num_threads(threads)
        for i in range(2):
            got = bits(c(arg(i)))
            for a, b in zip(got, eager[i]):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
    assert c.replays == 8 and c.records == 1


def _child(conn, c, x):
    conn.send((tg.get_num_threads(), c(x).numpy()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_child_after_split_runs_on_one_thread(restore_threads):
    import multiprocessing as mp
    tg.set_num_threads(2)
    x = tg.from_numpy(np.linspace(-3.0, 3.0, K.PAR_MIN + 99))
    c = tg.compile(_forward)
    want = c(x).numpy()
    c(x)
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    p = ctx.Process(target=_child, args=(there, c, x))
    p.start()
    threads, got = here.recv()
    p.join(60)
    assert p.exitcode == 0
    assert threads == (1 if K.KFWD[1, K.X_SPLIT] else 2)
    np.testing.assert_array_equal(got, want)
    assert tg.get_num_threads() == 2



def test_run_with_a_one_element_input_is_not_split(restore_threads):
    """Its gradient sums over the whole run: split, the sum's order would depend on the
    thread count."""
    n = K.PAR_MIN + 5000
    x0 = np.random.default_rng(2).standard_normal(n)

    def fn(x, s):
        f = (tg.tanh(x * s) * x + s).sum()
        return (f, *tg.autograd.grad(f, (x, s)))

    def args():
        return (tg.from_numpy(x0.copy()).requires_grad_(),
                tg.tensor([0.75], dtype=tg.float64, requires_grad=True))
    want = [r.detach().numpy() for r in fn(*args())]
    c = tg.compile(fn)
    c(*args())
    for threads in (1, 2):
        tg.set_num_threads(threads)
        for got, w in zip(c(*args()), want):
            np.testing.assert_array_equal(got.detach().numpy(), w)


_LIGHT_THEN_HEAVY = """
import numpy as np, tapegrad as tg
from tapegrad import _kernels as K
x = tg.from_numpy(np.linspace(-1.0, 1.0, K.PAR_MIN * 2))
tg.compile(lambda x: x * 3.0 + 1.0)(x)          # an add and a multiply: memory-bound
light = int(K.KFWD[1, K.X_FUSED])
tg.compile(lambda x: tg.tanh(x) * tg.exp(x))(x)   # transcendental work
print(light, int(K.KFWD[1, K.X_FUSED]))
"""


@pytest.mark.skipif(K.SPLIT_MAX < 2, reason="one core: nothing is split")
def test_only_runs_with_enough_work_are_split():
    """A split wakes the pool's threads: a run of a few additions stays on one thread,
    a run of the same length with transcendental ops goes over the threads."""
    out = subprocess.run([sys.executable, "-c", _LIGHT_THEN_HEAVY], capture_output=True,
                         text=True, check=True, env={**os.environ, "TAPEGRAD_NUM_THREADS": "2"})
    light, heavy = map(int, out.stdout.split())
    assert light == 0 and heavy != 0
