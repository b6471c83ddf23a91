"""Shared helpers for the tapegrad test suite.

- ``torch`` fixture: the installed PyTorch, or the test is skipped.
- ``python_sigint_handler`` fixture: Python's own SIGINT handler for the test.
- ``numeric_grads``: central finite differences of ``sum(f(*xs) * upstream)`` in float64.
- ``assert_close``: allclose with a readable failure message.
- ``tape_rows``: number of rows of the tape new ops go to (None when there is none).
"""
import signal

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.tape as _tape
from tapegrad import _interrupt


def pytest_configure(config):
    # pyproject registers the markers; again here so the suite also runs standalone.
    config.addinivalue_line("markers", "slow: long-running")
    config.addinivalue_line("markers", "stress: threads and interrupts at random moments")


@pytest.fixture
def python_sigint_handler():
    """Ctrl-C as an interactive program sees it: Python's handler for SIGINT (a job
    started in the background, as CI may start this suite, ignores SIGINT)."""
    old = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _interrupt._INSTALLED[0] = False          # so that tapegrad installs its own
    yield
    signal.signal(signal.SIGINT, old)
    _interrupt._INSTALLED[0] = False


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def to_np(t):
    """A tapegrad or torch tensor (or anything array-like) as a float64 NumPy array."""
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach()
    if hasattr(t, "numpy"):
        t = t.numpy()
    return np.asarray(t, dtype=np.float64)


def assert_close(got, expected, rtol=1e-6, atol=1e-8, what=""):
    g = to_np(got)
    e = to_np(expected)
    assert g is not None, f"{what}: got None, expected {e!r}"
    assert g.shape == e.shape, f"{what}: shape {g.shape} != expected {e.shape}"
    if not np.allclose(g, e, rtol=rtol, atol=atol, equal_nan=True):
        err = np.max(np.abs(g - e)) if g.size else 0.0
        raise AssertionError(f"{what}: max abs err {err:.3g}\n got      {g.tolist()}\n "
                             f"expected {e.tolist()}")


def numeric_grads(f, arrays, upstream, eps=1e-6, tracked=False):
    """Central differences of L(xs) = sum(f(*xs) * upstream) w.r.t. every array.

    ``f`` takes tapegrad tensors and returns a tapegrad tensor; it is evaluated under
    ``no_grad`` in the arrays' own dtype (float64 for the precise checks), or, with
    ``tracked=True``, on inputs that require grad (the recorded path).
    """
    arrays = [np.array(a, copy=True) for a in arrays]
    up = np.asarray(upstream, dtype=np.float64)

    def loss(xs):
        if tracked:
            out = f(*[tg.tensor(x, requires_grad=True) for x in xs])
        else:
            with tg.no_grad():
                out = f(*[tg.tensor(x) for x in xs])
        return float(np.sum(np.asarray(out._data, dtype=np.float64) * up))

    grads = []
    for i, a in enumerate(arrays):
        g = np.zeros(a.shape, dtype=np.float64)
        flat = a.reshape(-1)
        gflat = g.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            lp = loss(arrays)
            flat[j] = orig - eps
            lm = loss(arrays)
            flat[j] = orig
            gflat[j] = (lp - lm) / (2 * eps)
        grads.append(g)
    return grads


def tape_rows():
    t = _tape.STATE.tape
    return None if t is None else t.n


def assert_compiled_equals_eager(train, calls):
    """``train(wrap)`` runs ``calls`` steps of ``wrap(step)`` and returns (parameters,
    the wrapped step): compiled, the same floats as eager, every call after the
    recordings replayed. Returns the compiled step."""
    want, _ = train(lambda f: f)
    got, step = train(tg.compile)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert step.fallbacks == 0 and step.replays == calls - step.records
    return step
