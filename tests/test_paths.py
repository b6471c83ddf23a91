"""Execution paths as a test axis: every op-table case of ``test_op_grads.CASES`` gives
the same values and gradients whichever way it runs.

- compiled: a ``tg.compile``d step (forward, backward) replayed on the case's inputs,
  bit for bit equal to eager (index assignments, which a replay cannot run, run
  eagerly with a CompileWarning: equal too);
- one: elementwise cases on one-element inputs (the one-element paths of the reverse
  pass and of the program replay), equal to the element of the eager array result;
- block: elementwise cases on inputs above ``FUSE_MIN`` elements, in a compiled replay
  whose elementwise rows run block by block (fused runs), bit for bit equal to eager.
"""
import zlib

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import _kernels as K

try:
    from .test_op_grads import CASES
except ImportError:
    from test_op_grads import CASES

ELEMENTWISE_KERNELS = set(range(K.BINARY_FIRST, K.BINARY_LAST + 1)) | set(K.UNARY_OPS)
EAGER_ONLY = {K.K_SCATTER, K.K_SETIDX}


def _upstream(case, arrays):
    with tg.no_grad():
        probe = case.fn(tg, *[tg.tensor(a) for a in arrays])
    rng = np.random.default_rng(zlib.crc32(case.id.encode()) + 7)
    return rng.standard_normal(probe.shape).astype(probe.numpy().dtype)


def _step(case, scale):
    def step(up, *xs):
        out = case.fn(tg, *xs)
        if scale:               # a second elementwise row: the pair is a fused run
            out = out * scale
        out.backward(up)
        return (out.detach(),) + tuple(x.grad for x in xs if x.requires_grad)
    return step


def _eager(case, arrays, up, scale=0.0):
    xs = [tg.tensor(a.copy(), requires_grad=r) for a, r in zip(arrays, case.req)]
    return [t.numpy().copy() for t in _step(case, scale)(tg.tensor(up), *xs)]


def _compiled(case, arrays, up, scale=0.0):
    fn = tg.compile(_step(case, scale))
    for _ in range(3):          # record, record again (confirms), replay
        xs = [tg.tensor(a.copy(), requires_grad=r) for a, r in zip(arrays, case.req)]
        if case.op.kernel in EAGER_ONLY:
            with pytest.warns(tg.CompileWarning):
                got = fn(tg.tensor(up), *xs)
        else:
            got = fn(tg.tensor(up), *xs)
    if case.op.kernel in EAGER_ONLY:
        assert fn.replays == 0 and fn.fallbacks >= 1, (fn.records, fn.replays, fn.fallbacks)
    else:
        assert fn.replays >= 1 and fn.fallbacks == 0, (fn.records, fn.replays, fn.fallbacks)
    return [t.numpy().copy() for t in got]


def _same(got, want, what):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what} output {i}"
        assert np.array_equal(g, w, equal_nan=True), \
            f"{what} output {i}: max difference {np.nanmax(np.abs(g - w))}"


def _elementwise(case):
    if case.op.kernel not in ELEMENTWISE_KERNELS:
        return False
    shapes = {a.shape for a in case.inputs()}
    return len(shapes) == 1 and all(a.dtype.kind == "f" for a in case.inputs())


ELEMENTWISE = [c for c in CASES if _elementwise(c)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_compiled_replay_equals_eager(case):
    arrays = case.inputs()
    up = _upstream(case, arrays)
    _same(_compiled(case, arrays, up), _eager(case, arrays, up), case.id)


@pytest.mark.parametrize("case", ELEMENTWISE, ids=[c.id for c in ELEMENTWISE])
def test_one_element_paths_equal_the_array_path(case):
    arrays = case.inputs()
    up = _upstream(case, arrays)
    full = _eager(case, arrays, up)
    for j in range(min(3, arrays[0].size)):
        ones = [a.reshape(-1)[j:j + 1] for a in arrays]
        u = up.reshape(-1)[j:j + 1]
        want = [f.reshape(-1)[j:j + 1] for f in full]
        _same(_eager(case, ones, u), want, f"{case.id} eager element {j}")
        _same(_compiled(case, ones, u), want, f"{case.id} compiled element {j}")


@pytest.mark.parametrize("case", ELEMENTWISE, ids=[c.id for c in ELEMENTWISE])
def test_fused_blocks_equal_eager(case):
    n = K.FUSE_MIN + 2 * K.FUSE_BLOCK + 123        # several blocks, a partial last one
    arrays = [np.resize(a.reshape(-1), n) for a in case.inputs()]
    up = np.resize(_upstream(case, case.inputs()).reshape(-1), n)
    want = _eager(case, arrays, up, scale=0.5)
    _same(_compiled(case, arrays, up, scale=0.5), want, f"{case.id} fused")
    small = _eager(case, case.inputs(), _upstream(case, case.inputs()), scale=0.5)
    m = small[0].size
    _same([w[:m] for w in want], [s.reshape(-1) for s in small], f"{case.id} first elements")


BIG = 50_000        # over FUSE_MIN: the elementwise rows run block by block


def _replays_equal_eager(fn, make):
    c = tg.compile(fn)
    for k in range(3):
        want, got = make(k), make(k)
        fn(want)
        c(got)
        np.testing.assert_array_equal(got.grad.numpy(), want.grad.numpy())
    assert c.replays == 2


def _aliased_rows(c):
    rec = next(r for recs in c.cache.values() for r in recs)
    return int((rec.PG[:rec.nt, K.FL] & K.ALIAS != 0).sum())


def test_reshapes_share_their_input_adjoint_in_replays():
    """A reshape whose input only it reads takes that input's adjoint (no copy back);
    one whose input is read twice, or whose gradient is kept, keeps its own."""
    seen = []

    def fn(x):
        h = (x * 2.0).reshape(4, 6)                 # shares
        p = h.t().reshape(2, 12)                    # permuted copy, then a reshape
        twice = x * 3.0                             # read by a reshape and a sum
        kept = (x - 1.0).reshape(6, 4)
        kept.retain_grad()
        kept.register_hook(lambda g: seen.append(g.shape) or g * 0.5)
        loss = (p * p).sum() + (twice.reshape(24) * x.reshape(24)).sum() + \
            twice.sum() + (kept ** 3).sum()
        loss.backward()
        return kept.grad

    c = tg.compile(fn)
    for k in range(3):
        want = tg.from_numpy(np.linspace(-1.0, 1.0, 24).reshape(2, 3, 4) + k).requires_grad_()
        got = tg.from_numpy(want.detach().numpy().copy()).requires_grad_()
        kw, kg = fn(want), c(got)
        np.testing.assert_array_equal(got.grad.numpy(), want.grad.numpy())
        np.testing.assert_array_equal(kg.numpy(), kw.numpy())
    assert c.replays == 2 and len(seen) == 6
    assert _aliased_rows(c) == 2


def test_hooks_on_values_of_a_fused_run_run_in_replays():
    """A hook on a value inside a run of elementwise rows changes the gradient of the
    rows below it: the run stops at the hooked row, whose hook the replay runs first."""
    calls = []

    def fn(x):
        y = (tg.tanh(x) * x).sum()
        y.register_hook(lambda g: calls.append(float(g)) or g * 2.0)
        z = tg.exp(-x * x) * 3.0
        z.register_hook(lambda g: g + 1.0)
        (y + (z * x).sum()).backward()

    _replays_equal_eager(fn, lambda k: tg.from_numpy(np.linspace(-1.0, 1.0, BIG) + k)
                         .requires_grad_())
    assert calls == [1.0] * 6


def test_run_of_the_other_dtype_below_a_cast():
    """A float32 run under a float64 loss: the replay switches arenas before the run."""
    def fn(x):
        y = (tg.tanh(x) * x * 2.0).double()
        (y * y).sum().backward()

    _replays_equal_eager(fn, lambda k: tg.from_numpy(
        (np.linspace(-1.0, 1.0, BIG) + k).astype(np.float32)).requires_grad_())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 37, BIG])
def test_in_place_updates_in_replays(dtype, n):
    """Updates in place (their output is an input) by a tensor, a 0-d tensor and a
    number, each arithmetic op: a replay equals eager and NumPy's in-place ufuncs."""
    rng = np.random.default_rng(n)
    y = tg.from_numpy(rng.uniform(0.5, 2.0, n).astype(dtype))
    s = tg.tensor(1.7, dtype=tg.float32 if dtype == np.float32 else tg.float64)
    buf = tg.zeros(n, dtype=y.dtype)

    def fn(x):
        buf.copy_(x)
        buf.add_(y).mul_(s).sub_(y).div_(y)
        buf.mul_(y).div_(s).add_(s).sub_(s)
        buf.mul_(0.75).div_(1.25).add_(0.5).sub_(0.25)
        return buf * 1.0

    def numpy_fn(b):
        yv, sv = y.numpy(), dtype(1.7)
        for op, v in [(np.add, yv), (np.multiply, sv), (np.subtract, yv), (np.divide, yv),
                      (np.multiply, yv), (np.divide, sv), (np.add, sv), (np.subtract, sv),
                      (np.multiply, 0.75), (np.divide, 1.25), (np.add, 0.5),
                      (np.subtract, 0.25)]:
            op(b, v, out=b, casting="same_kind")
        return b

    c = tg.compile(fn)
    for k in range(3):
        x = rng.standard_normal(n).astype(dtype)
        want = fn(tg.from_numpy(x)).numpy()
        np.testing.assert_array_equal(c(tg.from_numpy(x)).numpy(), want)
        np.testing.assert_array_equal(want, numpy_fn(x.copy()))
    assert c.replays == 2
