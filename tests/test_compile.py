"""tg.compile: a compiled function gives bit for bit what the eager function gives, call
after call (results, parameters, gradients, optimizer state), while its counters show the
recording being replayed; every guard makes it record again instead of replaying a stale
program; what cannot be replayed still gives correct results.

Each check builds the same set-up twice (same seed, same weights), calls one copy's
function eagerly and the other's through ``tg.compile``, with the same fresh arguments,
and compares the two after every call."""
import inspect
import math
import random
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.nn.functional as F
import tapegrad.optim as optim
from compile_corpus import state_of
from conftest import assert_compiled_equals_eager
from fuzzgen import generate

CALLS = 20
N_PROGRAMS = 200


# -- comparing two set-ups --------------------------------------------------------------
def snap(x):
    """``x`` with every tensor replaced by a copy of its array (containers kept)."""
    if isinstance(x, tg.Tensor):
        return np.array(x.detach().numpy(), copy=True)
    if isinstance(x, (tuple, list)):
        return type(x)(snap(i) for i in x)
    if isinstance(x, dict):
        return type(x)((k, snap(v)) for k, v in x.items())
    return x


def assert_same(got, want, what):
    """Equal structure, types, dtypes, shapes and values (no tolerance)."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), f"{what}: got {got!r}, expected a tensor"
        assert (got.dtype, got.shape) == (want.dtype, want.shape), \
            f"{what}: {got.dtype}{got.shape}, expected {want.dtype}{want.shape}"
        np.testing.assert_array_equal(got, want, err_msg=what)
    elif isinstance(want, (tuple, list, dict)):
        assert type(got) is type(want) and len(got) == len(want), \
            f"{what}: got {got!r}, expected {want!r}"
        if isinstance(want, dict):
            assert list(got) == list(want), f"{what}: keys {list(got)} != {list(want)}"
            for k in want:
                assert_same(got[k], want[k], f"{what}[{k!r}]")
        else:
            for k, (g, w) in enumerate(zip(got, want)):
                assert_same(g, w, f"{what}[{k}]")
    else:
        assert type(got) is type(want) and got == want, \
            f"{what}: got {got!r}, expected {want!r}"


class Twin:
    """An eager and a compiled copy of one set-up (``fn``, ``args(i)``, ``state()``),
    called in lockstep and compared after every call."""

    def __init__(self, make):
        self.eager, self.comp = make(), make()
        self.step = tg.compile(self.comp.fn)
        self.results = []
        self.compare_state("before the first call")

    def compare_state(self, what):
        e, c = self.eager.state(), self.comp.state()
        assert [n for n, _ in c] == [n for n, _ in e]
        for (name, g), (_, w) in zip(c, e):
            assert_same(snap(g), snap(w), f"{what}: {name}")

    def each(self, change):
        """Applies ``change`` to both copies' set-ups."""
        change(self.eager)
        change(self.comp)

    def call(self, i, grad_mode=True):
        ea, ca = self.eager.args(i), self.comp.args(i)
        with tg.set_grad_enabled(grad_mode):
            want = snap(self.eager.fn(*ea))
        with tg.set_grad_enabled(grad_mode):
            got = self.step(*ca)
        assert_same(snap(got), want, f"call {i}: result")
        for j, (c, e) in enumerate(zip(ca, ea)):
            if isinstance(e, tg.Tensor):
                assert_same(snap(c.grad), snap(e.grad), f"call {i}: .grad of argument {j}")
        self.compare_state(f"after call {i}")
        self.results.append((got, want))

    def check_results_kept(self):
        """Returned tensors keep their call's values after later calls."""
        for i, (got, want) in enumerate(self.results):
            assert_same(snap(got), want, f"result of call {i}, after the last call")

    def counts(self):
        return self.step.records, self.step.replays, self.step.fallbacks


def rand(i, shape, dtype=np.float64):
    return np.random.default_rng(1000 + i).standard_normal(shape).astype(dtype)


def leaf(i, shape, dtype=np.float64, requires_grad=True):
    return tg.tensor(rand(i, shape, dtype), requires_grad=requires_grad)


# -- workloads ------------------------------------------------------------------------------
def linreg():
    w = tg.tensor(np.array([[0.3]], np.float32), requires_grad=True)
    b = tg.zeros(1, requires_grad=True)
    lr = 0.01

    def fn(x, y):
        y_pred = x.mm(w) + b
        loss = ((y_pred - y) ** 2).mean()
        loss.backward()
        with tg.no_grad():
            w.sub_(lr * w.grad)
            b.sub_(lr * b.grad)
            w.grad.zero_()
            b.grad.zero_()
        return loss

    def args(i):
        r = np.random.default_rng(i)
        x = r.random((20, 1), dtype=np.float32) * 10
        y = (2 * x + 5 + r.standard_normal((20, 1))).astype(np.float32)
        return tg.tensor(x), tg.tensor(y)

    return SimpleNamespace(fn=fn, args=args, state=lambda: [
        ("w", w), ("w.grad", w.grad), ("b", b), ("b.grad", b.grad)])


def mlp(sizes, act, batch, make_opt):
    """The training benchmark's MLP: float32, weights from a seeded NumPy generator."""
    rng = np.random.default_rng(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        with tg.no_grad():
            lin.weight.copy_(tg.tensor(rng.uniform(-a ** -0.5, a ** -0.5, (b, a))
                                       .astype(np.float32)))
            lin.bias.copy_(tg.tensor(rng.uniform(-0.1, 0.1, b).astype(np.float32)))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(act())
    model = nn.Sequential(*layers)
    opt = make_opt(model.parameters())

    def fn(x, y):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def args(i):
        return (tg.tensor(rand(i, (batch, sizes[0]), np.float32)),
                tg.tensor(rand(i + 500, (batch, sizes[-1]), np.float32)))

    return SimpleNamespace(fn=fn, args=args, state=lambda: state_of(model, opt), opt=opt)


def mlp_sgd():
    return mlp([64, 128, 128, 10], nn.Tanh, 64,
               lambda p: optim.SGD(p, lr=0.01, momentum=0.9))


def mlp_adam():
    return mlp([784, 256, 10], nn.ReLU, 128, lambda p: optim.Adam(p, lr=1e-3))


def rosen(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def rosen_x(i):
    return tg.tensor(np.random.default_rng(i).uniform(0.0, 2.0, 1000), requires_grad=True)


def rosenbrock_backward():
    def fn(x):
        f = rosen(x)
        f.backward()
        return f, x.grad

    return SimpleNamespace(fn=fn, args=lambda i: (rosen_x(i),), state=list)


def rosenbrock_autograd_grad():
    def fn(x):
        f = rosen(x)
        (g,) = tg.autograd.grad(f, [x])
        return f, g

    return SimpleNamespace(fn=fn, args=lambda i: (rosen_x(i),), state=list)


def ode():
    dt = 0.01

    def fn(k, y0):
        y = y0
        for n in range(200):
            y = y + dt * (-k * y + math.sin(n * dt))
        y.backward()
        return y, k.grad, y0.grad

    def args(i):
        return (tg.tensor(0.5 + 0.1 * i, dtype=tg.float64, requires_grad=True),
                tg.tensor(1.0 - 0.05 * i, dtype=tg.float64, requires_grad=True))

    return SimpleNamespace(fn=fn, args=args, state=list)


def chain():
    def fn(x):
        y = x
        for _ in range(100):
            y = tg.tanh(y * 1.01 + 0.1)
        s = y.sum()
        s.backward()
        return s, x.grad

    return SimpleNamespace(fn=fn, args=lambda i: (leaf(i, 16),), state=list)


def big():
    def fn(x):
        s = (tg.tanh(x) * x + tg.exp(-x * x)).sum()
        s.backward()
        return s, x.grad

    return SimpleNamespace(fn=fn, args=lambda i: (leaf(i, 100_000),), state=list)


# name: (set-up, recordings expected over CALLS calls). The linear regression's first
# call starts with no .grad (the zero_ after backward then makes one) and the optimizers
# make their state on the first step, so those record a second time, on call 2.
WORKLOADS = {
    "linreg": (linreg, 2),
    "mlp_sgd_momentum": (mlp_sgd, 2),
    "mlp_adam": (mlp_adam, 2),
    "rosenbrock_backward": (rosenbrock_backward, 1),
    "rosenbrock_autograd_grad": (rosenbrock_autograd_grad, 1),
    "ode_euler": (ode, 1),
    "tanh_chain": (chain, 1),
    "elementwise_100k": (big, 1),
}


@pytest.mark.parametrize("name", WORKLOADS)
def test_workload_matches_eager_bit_for_bit(name):
    make, records = WORKLOADS[name]
    twin = Twin(make)
    for i in range(CALLS):
        twin.call(i)
        if i < records:
            assert twin.counts() == (i + 1, 0, 0), f"call {i}"
    assert twin.counts() == (records, CALLS - records, 0)
    twin.check_results_kept()


def test_linreg_records_with_and_then_without_grad_none():
    """The first recording sees .grad None, the second a .grad: both stay cached."""
    twin = Twin(linreg)
    grads = [dict(twin.comp.state())["w.grad"]]
    twin.call(0)
    grads.append(dict(twin.comp.state())["w.grad"])
    twin.call(1)
    assert grads[0] is None and grads[1] is not None
    assert twin.counts() == (2, 0, 0)
    twin.call(2)
    assert twin.counts() == (2, 1, 0)


def test_optimizer_state_is_updated_in_place():
    """The replay writes the optimizer's own state tensors (read by eager steps later)."""
    twin = Twin(mlp_sgd)
    for i in range(4):
        twin.call(i)
    opt_state = [v for n, v in twin.comp.state() if "state" in n]
    assert opt_state and all(isinstance(v, tg.Tensor) for v in opt_state)
    before = [snap(v) for v in opt_state]
    twin.call(4)
    assert twin.step.replays == 3
    after = [v for n, v in twin.comp.state() if "state" in n]
    assert all(a is b for a, b in zip(after, opt_state))
    assert any(not np.array_equal(b, snap(a)) for a, b in zip(after, before))
    # eager steps on the compiled copy continue from what the replays left
    for i in range(5, 8):
        want = snap(twin.eager.fn(*twin.eager.args(i)))
        got = snap(twin.comp.fn(*twin.comp.args(i)))
        assert_same(got, want, f"eager call {i} after replays")
        twin.compare_state(f"after eager call {i}")


# -- random programs ----------------------------------------------------------------------
def fuzz_setup(prog):
    def fn(*leaves):
        loss = prog.loss(tg, prog.run(tg, list(leaves)))
        if loss.requires_grad:
            loss.backward()
        return loss, [t.grad for t in leaves]

    def args(i):
        r = np.random.default_rng(prog.seed * 1000 + i)
        return tuple(tg.tensor(d + 0.01 * i * r.standard_normal(d.shape), dtype=tg.float64,
                               requires_grad=rg)
                     for d, rg in zip(prog.leaf_data, prog.leaf_requires_grad))

    return SimpleNamespace(fn=fn, args=args, state=list)


@pytest.mark.parametrize("seed", range(N_PROGRAMS))
def test_random_program_replays_bit_for_bit(seed):
    prog = generate(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", tg.CompileWarning)
        twin = Twin(lambda: fuzz_setup(prog))
        for i in range(CALLS):
            twin.call(i)
    why = sorted({str(w.message) for w in caught
                  if issubclass(w.category, tg.CompileWarning)})
    assert not why and twin.counts() == (1, CALLS - 1, 0), \
        f"(records, replays, fallbacks) = {twin.counts()}, warnings {why}\n{prog}"
    twin.check_results_kept()


# -- guards ---------------------------------------------------------------------------------
def tanh_x(sizes=None, dtypes=None):
    """fn(x) = sum(tanh(x) x) with backward; call i gets x of size sizes[i], dtypes[i]."""
    def fn(x):
        loss = (tg.tanh(x) * x).sum()
        loss.backward()
        return loss, x.grad

    def args(i):
        return (leaf(i, sizes[i] if sizes else 4, dtypes[i] if dtypes else np.float64),)

    return SimpleNamespace(fn=fn, args=args, state=list)


def requires_grad_guard():
    flags = [True, True, False, False, True, False]

    def fn(x, w):
        loss = (tg.tanh(x) * w).sum()
        loss.backward()
        return loss, x.grad, w.grad

    return SimpleNamespace(fn=fn, state=list, args=lambda i: (
        leaf(i, 4, requires_grad=flags[i]), leaf(i + 50, 4)))


def scalar_guard():
    cs = [0.5, 0.5, 2.0, 2.0, 0.5, 2]

    def fn(x, c):
        loss = tg.tanh(x * c).sum()
        loss.backward()
        return loss, x.grad, c + 1

    return SimpleNamespace(fn=fn, state=list, args=lambda i: (leaf(i, 4), cs[i]))


def linear_model():
    model = nn.Linear(3, 2).double()
    with tg.no_grad():
        model.weight.copy_(tg.tensor(rand(0, (2, 3))))
        model.bias.copy_(tg.tensor(rand(1, 2)))

    def fn(x):
        loss = (model(x) ** 2).sum()
        return (loss,) + tuple(tg.autograd.grad(loss, [model.weight, model.bias]))

    return SimpleNamespace(fn=fn, model=model, state=lambda: state_of(model),
                           args=lambda i: (leaf(i, (5, 3), requires_grad=False),))


def new_weight(s):
    s.model.weight = nn.Parameter(tg.tensor(rand(7, (2, 3))))


def new_bias_values(s):
    with tg.no_grad():
        s.model.bias.copy_(tg.tensor(rand(8, 2)))


def grad_mode_guard():
    def fn(x, w):
        out = (tg.tanh(x) * w).sum()
        return out, out.requires_grad

    return SimpleNamespace(fn=fn, state=list, args=lambda i: (leaf(i, 4), leaf(i + 50, 4)))


def accumulating():
    w = tg.tensor(rand(0, 4), requires_grad=True)

    def fn(x):
        loss = (tg.tanh(x) * w).sum()
        loss.backward()
        return loss

    return SimpleNamespace(fn=fn, w=w, state=lambda: [("w", w), ("w.grad", w.grad)],
                           args=lambda i: (leaf(i, 4, requires_grad=False),))


def drop_grad(s):
    s.w.grad = None


def branch(read, repeat=False):
    """fn(x) = 2x or 3x depending on the sign of sum(x), read through ``read``; calls
    0, 1, 4 take the first branch, 2, 3, 5 the other, with new values on every call or
    (``repeat``) the same values on every call of a branch."""
    signs = [1, 1, -1, -1, 1, -1]

    def fn(x):
        if read(x.sum()):
            return x * 2
        return x * 3

    def args(i):
        x = np.abs(rand(0 if repeat else i, 4)) + 0.1
        return (tg.tensor(signs[i] * x),)

    return SimpleNamespace(fn=fn, state=list, args=args)


F32, F64 = np.float32, np.float64

# name: (set-up, calls); a call is (change made to both copies before it or None, grad
# mode, (records, replays) expected after it).
GUARDS = {
    "shape": (lambda: tanh_x(sizes=[3, 3, 5, 5, 3, 3]), [
        (None, True, (1, 0)), (None, True, (1, 1)), (None, True, (2, 1)),
        (None, True, (2, 2)), (None, True, (2, 3)), (None, True, (2, 4))]),
    "dtype": (lambda: tanh_x(dtypes=[F64, F64, F32, F32, F64, F32]), [
        (None, True, (1, 0)), (None, True, (1, 1)), (None, True, (2, 1)),
        (None, True, (2, 2)), (None, True, (2, 3)), (None, True, (2, 4))]),
    "requires_grad": (requires_grad_guard, [
        (None, True, (1, 0)), (None, True, (1, 1)), (None, True, (2, 1)),
        (None, True, (2, 2)), (None, True, (2, 3)), (None, True, (2, 4))]),
    # the last call passes 2 instead of 2.0: fn returns c + 1 = 3, not 3.0
    "scalar_argument": (scalar_guard, [
        (None, True, (1, 0)), (None, True, (1, 1)), (None, True, (2, 1)),
        (None, True, (2, 2)), (None, True, (2, 3)), (None, True, (3, 3))]),
    # a new Parameter records again; new values in the same tensor are read by the replay
    "parameter_identity": (linear_model, [
        (None, True, (1, 0)), (None, True, (1, 1)), (new_weight, True, (2, 1)),
        (None, True, (2, 2)), (new_bias_values, True, (2, 3)), (None, True, (2, 4))]),
    "grad_mode": (grad_mode_guard, [
        (None, True, (1, 0)), (None, True, (1, 1)), (None, False, (2, 1)),
        (None, False, (2, 2)), (None, True, (2, 3)), (None, False, (2, 4))]),
    # without zero_grad: .grad None on the first call, accumulated after; then None again
    "grad_none_or_present": (accumulating, [
        (None, True, (1, 0)), (None, True, (2, 0)), (None, True, (2, 1)),
        (None, True, (2, 2)), (drop_grad, True, (2, 3)), (None, True, (2, 4))]),
    # .item() hands Python a number, whose later use cannot be seen: a new value
    # records again; two recordings alike but for the value read make later calls
    # replay and then re-run the Python with the replay's values, which finishes
    # eagerly where it takes the other branch
    "branch_on_item": (lambda: branch(lambda s: s.item() > 0), [
        (None, True, (1, 0)), (None, True, (2, 0)), (None, True, (2, 1)),
        (None, True, (2, 2)), (None, True, (2, 3)), (None, True, (2, 4))]),
    # the same values again: the value read matches exactly
    "branch_on_item_repeated_values": (lambda: branch(lambda s: s.item() > 0, repeat=True), [
        (None, True, (1, 0)), (None, True, (1, 1)), (None, True, (2, 1)),
        (None, True, (2, 2)), (None, True, (2, 3)), (None, True, (2, 4))]),
    "branch_on_bool": (lambda: branch(lambda s: bool(s > 0)), [
        (None, True, (1, 0)), (None, True, (1, 1)), (None, True, (2, 1)),
        (None, True, (2, 2)), (None, True, (2, 3)), (None, True, (2, 4))]),
    "cache_of_three": (lambda: tanh_x(sizes=[3, 5, 3, 3, 5, 3, 5],
                                      dtypes=[F64, F64, F32, F64, F64, F32, F64]), [
        (None, True, (1, 0)), (None, True, (2, 0)), (None, True, (3, 0)),
        (None, True, (3, 1)), (None, True, (3, 2)), (None, True, (3, 3)),
        (None, True, (3, 4))]),
}


@pytest.mark.parametrize("name", GUARDS)
def test_guard_records_again(name):
    make, calls = GUARDS[name]
    twin = Twin(make)
    for i, (change, grad_mode, expected) in enumerate(calls):
        if change is not None:
            twin.each(change)
        twin.call(i, grad_mode)
        assert twin.counts() == expected + (0,), f"call {i}: (records, replays, fallbacks)"
    twin.check_results_kept()


def test_replaced_storage_is_never_stale():
    """``.data = ...`` gives a parameter new storage: the next call reads it."""
    twin = Twin(linear_model)
    for i in range(6):
        if i in (2, 4):
            twin.each(lambda s: setattr(s.model.bias, "data", tg.tensor(rand(20 + i, 2))))
        twin.call(i)
    assert twin.step.fallbacks == 0 and twin.step.replays >= 3


# -- what cannot be replayed --------------------------------------------------------------
def via_numpy(x):
    y = tg.tensor(x.detach().numpy() ** 2)
    loss = (tg.tanh(x) * y).sum()
    loss.backward()
    return loss, x.grad


def via_float(x):
    s = float(x.sum())
    return x * math.exp(-s * s)


def via_tolist(x):
    return tg.tanh(x) * sum(x.tolist())


def via_numpy_mean(x):
    return tg.tanh(x - float(np.mean(x.detach().numpy())))


@pytest.mark.parametrize("fn", [via_numpy, via_float, via_tolist, via_numpy_mean])
def test_python_math_on_values_is_never_stale(fn):
    """Each call records again (the values it read changed) or runs eagerly with a
    warning; none replays a value computed outside the tensor ops."""
    assert issubclass(tg.CompileWarning, UserWarning)
    twin = Twin(lambda: SimpleNamespace(fn=fn, state=list, args=lambda i: (leaf(i, 6),)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", tg.CompileWarning)
        for i in range(5):
            twin.call(i)
    records, replays, fallbacks = twin.counts()
    assert records + replays + fallbacks == 5
    warned = sum(issubclass(w.category, tg.CompileWarning) for w in caught)
    assert warned >= fallbacks
    twin.check_results_kept()


def test_signature_and_counters():
    def fn(x, scale=2.0):
        return x * scale

    step = tg.compile(fn)
    assert inspect.signature(step) == inspect.signature(fn)
    assert (step.records, step.replays, step.fallbacks) == (0, 0, 0)
    x = tg.tensor([1.0, 2.0])
    assert step(x, 3.0).tolist() == [3.0, 6.0]
    assert step(x, 3.0).tolist() == [3.0, 6.0]
    assert (step.records, step.replays, step.fallbacks) == (1, 1, 0)


def test_containers_keep_their_structure():
    def fn(x):
        y = tg.tanh(x)
        return {"y": y, "pair": (y * 2, [y.sum(), 1.5]), "none": None}

    twin = Twin(lambda: SimpleNamespace(fn=fn, state=list, args=lambda i: (leaf(i, 3),)))
    for i in range(3):
        twin.call(i)
    assert twin.counts() == (1, 2, 0)


# -- no compilation for a new recording -----------------------------------------------------
@pytest.mark.parametrize("name", ["mlp_sgd_momentum", "rosenbrock_backward", "tanh_chain"])
def test_new_recording_compiles_nothing(name):
    """Recording and replaying a new compiled function reuses the compiled replay."""
    from numba.core import event

    make, records = WORKLOADS[name]
    calls = records + 1
    warm = make()
    step = tg.compile(warm.fn)
    for i in range(calls):
        step(*warm.args(i))
    assert step.replays == 1

    fresh = make()
    args = [fresh.args(i) for i in range(calls)]
    step = tg.compile(fresh.fn)
    durations = []
    with event.install_timer("numba:compile", durations.append):
        for a in args:
            step(*a)
    assert step.replays == 1
    assert sum(durations) == 0, f"{len(durations)} Numba compilations"


# -- optimizer settings are read at replay time -----------------------------------------
def settings_mlp(make_opt):
    """A float32 MLP step whose optimizer settings the caller changes between calls."""
    return mlp([8, 16, 3], nn.Tanh, 32, make_opt)


SETTINGS_OPTS = {
    "sgd": lambda p: optim.SGD(p, lr=0.1),
    "sgd_momentum_wd": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "sgd_nesterov_dampening": lambda p: optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True),
    "adam": lambda p: optim.Adam(p, lr=0.01),
    "adam_amsgrad_wd": lambda p: optim.Adam(p, lr=0.01, weight_decay=0.1, amsgrad=True),
    "adamw": lambda p: optim.AdamW(p, lr=0.01),
    "adamw_amsgrad_maximize": lambda p: optim.AdamW(p, lr=0.01, betas=(0.3, 0.9),
                                                    amsgrad=True, maximize=True),
}


@pytest.mark.parametrize("name", SETTINGS_OPTS)
def test_learning_rate_schedule_replays_every_call(name):
    """A cosine schedule sets lr before every call (as a scheduler would): every call
    after the optimizer state exists replays, with parameters equal to eager's."""
    twin = Twin(lambda: settings_mlp(SETTINGS_OPTS[name]))
    calls = 30
    for i in range(calls):
        lr = 0.05 * (1 + math.cos(math.pi * i / calls))
        twin.each(lambda ns: ns.opt.param_groups[0].__setitem__("lr", lr))
        twin.call(i)
    twin.check_results_kept()
    records, replays, fallbacks = twin.counts()
    # a second recording only where the first step creates optimizer state
    assert fallbacks == 0 and records == (1 if name == "sgd" else 2)
    assert replays == calls - records


def test_every_setting_is_read_at_replay_time():
    """momentum, weight decay, dampening and Adam's betas and eps change between calls
    too; a change that flips a branch of the update (weight decay 0 -> nonzero) records
    once more, and the old branch is replayed again when the value comes back."""
    sgd = Twin(lambda: settings_mlp(lambda p: optim.SGD(p, lr=0.1, momentum=0.9)))
    adam = Twin(lambda: settings_mlp(lambda p: optim.Adam(p, lr=0.01)))
    for i in range(12):
        def change(ns):
            g = ns.opt.param_groups[0]
            if "betas" in g:
                g["betas"] = (0.9 - 0.01 * i, 0.999 - 0.0001 * i)
                g["eps"] = 1e-8 * (i + 1)
                g["weight_decay"] = 0.0 if i < 6 or i >= 9 else 0.01 * i
            else:
                g["momentum"] = 0.9 - 0.05 * i
                g["dampening"] = 0.01 * i
                g["weight_decay"] = 0 if i < 6 else 1e-3 * i
        sgd.each(change)
        adam.each(change)
        sgd.call(i)
        adam.call(i)
    # state created by the first call, then one recording for weight decay on
    assert sgd.counts() == (3, 9, 0)
    assert adam.counts() == (3, 9, 0)


def test_scheduler_inside_the_function_runs_eagerly():
    """Settings changed inside the compiled function would not change on replays: that
    recording runs eagerly, with a warning that says so, and stays correct."""
    def make():
        ns = settings_mlp(lambda p: optim.SGD(p, lr=0.1))
        step = ns.fn

        def fn(x, y):
            loss = step(x, y)
            ns.opt.param_groups[0]["lr"] *= 0.9
            return loss
        ns.fn = fn
        return ns
    twin = Twin(make)
    with pytest.warns(tg.CompileWarning, match="param_groups after a step"):
        for i in range(4):
            twin.call(i)
    # the first call saw no gradients yet: the second records again, then runs eagerly
    assert twin.counts() == (2, 0, 2)


def test_optimizer_with_its_own_step_is_guarded_by_value():
    """An optimizer written by a user reads its settings its own way: a changed lr
    records again (never a stale replay), an unchanged one replays."""
    class PlainSGD(optim.Optimizer):
        def __init__(self, params, lr):
            super().__init__(params, {"lr": lr})

        def step(self):
            with tg.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.add_(p.grad, alpha=-group["lr"])

    twin = Twin(lambda: settings_mlp(lambda p: PlainSGD(p, lr=0.1)))
    lrs = [0.1, 0.1, 0.05, 0.05, 0.05, 0.1]
    for i, lr in enumerate(lrs):
        twin.each(lambda ns: ns.opt.param_groups[0].__setitem__("lr", lr))
        twin.call(i)
    # lr 0.1 (replayed once), then 0.05 (replayed twice); 0.1 is replayed again
    assert twin.counts() == (2, 4, 0)


def test_replaced_param_groups_record_again():
    """load_state_dict replaces the groups; an added parameter group is guarded too."""
    twin = Twin(lambda: settings_mlp(lambda p: optim.SGD(p, lr=0.1, momentum=0.9)))
    twin.call(0)
    twin.call(1)
    twin.each(lambda ns: ns.opt.load_state_dict(ns.opt.state_dict()))
    twin.call(2)
    twin.call(3)
    assert twin.counts() == (3, 1, 0)


@pytest.mark.parametrize("kw", [dict(label_smoothing=0.05),
                                dict(label_smoothing=0.2, ignore_index=1),
                                dict(label_smoothing=0.1, weight=[1.0, 0.0, 2.5],
                                     ignore_index=2)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_label_smoothing_replays_new_targets(kw, reduction, torch):
    """The smoothing term's mask and weight sum are ops on the targets: a step with new
    labels in every batch replays, bit for bit as eager and as PyTorch computes."""
    weight = kw.get("weight")
    opts = {**kw, "weight": None if weight is None else tg.tensor(weight)}
    crit = nn.CrossEntropyLoss(reduction=reduction, **opts)
    ref = torch.nn.CrossEntropyLoss(reduction=reduction, **{
        **kw, "weight": None if weight is None else torch.tensor(weight)})
    w = tg.randn(10, 3, requires_grad=True)
    wt = torch.tensor(w.detach().numpy(), requires_grad=True)

    def step(x, y):
        w.grad = None
        loss = crit(x @ w, y)
        loss.sum().backward()
        return loss, w.grad
    c = tg.compile(step)
    for _ in range(4):
        x, y = tg.randn(32, 10), tg.randint(0, 3, (32,))
        want, want_g = step(x, y)
        got, got_g = c(x, y)
        np.testing.assert_array_equal(got.detach().numpy(), want.detach().numpy())
        np.testing.assert_array_equal(got_g.numpy(), want_g.numpy())
        wt.grad = None
        theirs = ref(torch.tensor(x.numpy()) @ wt, torch.tensor(y.numpy()))
        theirs.sum().backward()
        np.testing.assert_allclose(got.detach().numpy(), theirs.detach().numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_g.numpy(), wt.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert c.records == 1 and c.replays == 3


def test_tensor_of_an_argument_is_copied_again_on_every_replay():
    """tg.tensor(x) of a traced tensor is a copy of its value at each call, not the
    value it had when recorded (which replays once returned)."""
    c = tg.compile(lambda x: tg.tensor(x) * 2.0 + tg.tensor(x, dtype=tg.float64))
    for i in range(4):
        x = tg.arange(3.0) * i
        np.testing.assert_array_equal(c(x).numpy(), x.numpy() * 3.0)
    assert c.records == 1 and c.replays == 3
    listed = tg.compile(lambda x: tg.tensor([x[0], x[1]]) * 2.0)   # values read: guarded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tg.CompileWarning)
        for i in range(5):
            np.testing.assert_array_equal(listed(tg.ones(3) * i).numpy(), [2.0 * i] * 2)


def test_update_of_an_argument_in_place_shows_from_the_first_call():
    """fn records on a private copy of each argument; an update in place (which runs
    eagerly from then on) still reaches the caller's tensor on the recording call."""
    step = tg.ones(3)

    def advance(buf, k):
        buf.add_(step).mul_(k)
        return buf.sum()

    c = tg.compile(advance)
    buf = tg.zeros(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tg.CompileWarning)
        sums = [c(buf, 2.0).item() for _ in range(3)]
    assert sums == [6.0, 18.0, 42.0]
    np.testing.assert_array_equal(buf.numpy(), [14.0] * 3)
    assert c.fallbacks == 2
    frozen = np.array([1.0, np.nan])
    frozen.flags.writeable = False                  # read, never written: left alone
    read = tg.compile(lambda t: t * 2.0)
    np.testing.assert_array_equal(read(tg.from_numpy(frozen)).numpy(), [2.0, np.nan])



def test_an_update_in_place_is_found_by_its_bytes():
    """The recording call compares each argument with its private copy byte by byte, a
    megabyte at a time: a change in the last element, or 0.0 written over -0.0, is an
    update; a NaN left alone is not."""
    from tapegrad._tracer import _same_bytes

    a = np.random.default_rng(0).standard_normal(300_000)
    b = a.copy()
    assert _same_bytes(a, b)
    b[-1] += 1.0
    assert not _same_bytes(a, b)
    b[-1], b[5], a[5] = a[-1], 0.0, -0.0
    assert not _same_bytes(a, b)
    n = np.array([1.0, np.nan])
    assert _same_bytes(n, n.copy())
    assert not _same_bytes(np.zeros(3), np.zeros(3, np.float32))
    m = np.arange(12.0).reshape(3, 4)
    assert _same_bytes(m[:, ::2], m[:, ::2].copy()) and not _same_bytes(m[:, ::2], m[:, 1::2])
    big = tg.zeros(300_000)
    c = tg.compile(lambda t: t.add_(1.0).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tg.CompileWarning)
        assert c(big).item() == 300_000.0
    assert big.numpy().min() == big.numpy().max() == 1.0

def _value_and_grad_leaf(xn):
    x = tg.tensor(xn, requires_grad=True)
    f = (x * x * x).sum()
    f.backward()
    return f, x.grad


def _value_and_grad_arg(x):
    x.requires_grad_()
    f = (tg.exp(x) * x).sum()
    f.backward()
    return f


def test_requires_grad_set_inside_the_function_replays():
    """Value-and-gradient functions as scipy.optimize users write them: a leaf made
    inside, or the argument itself made to require grad (each replay makes it so again
    and gives it its .grad, as eager does)."""
    c = tg.compile(_value_and_grad_leaf)
    for i in range(4):
        x = tg.arange(3.0, dtype=tg.float64) + i
        f, g = c(x)
        np.testing.assert_array_equal(g.numpy(), 3.0 * x.numpy() ** 2)
        assert f.item() == (x.numpy() ** 3).sum()
    assert c.records == 1 and c.replays == 3
    c = tg.compile(_value_and_grad_arg)
    for i in range(4):
        x = tg.arange(3.0, dtype=tg.float64) - i
        want = tg.arange(3.0, dtype=tg.float64) - i
        _value_and_grad_arg(want)
        f = c(x)
        assert x.requires_grad and x.is_leaf
        np.testing.assert_array_equal(x.grad.numpy(), want.grad.numpy())
        assert f.item() == (np.exp(x.detach().numpy()) * x.detach().numpy()).sum()
    assert c.records == 1 and c.replays == 3


def test_requires_grad_of_a_tensor_from_outside_runs_eagerly():
    w = tg.ones(3)

    def fn(x):
        w.requires_grad_(not w.requires_grad)     # state of the caller, flipped
        return x * w
    c = tg.compile(fn)
    with pytest.warns(tg.CompileWarning, match="requires_grad of a tensor from outside"):
        c(tg.ones(3))
    assert w.requires_grad and c.replays == 0


def test_two_backward_passes_over_one_graph_replay():
    """loss1.backward(retain_graph=True) then loss2.backward(): both passes replay, with
    the gradients each leaves, the same bits as eager."""
    tg.manual_seed(0)
    w = tg.randn(3, 3, requires_grad=True)
    v = tg.randn(3, requires_grad=True)

    def step(x):
        h = tg.tanh(x @ w)
        first = (h * v).sum()
        first.backward(retain_graph=True)
        g1 = w.grad.clone()
        second = (h ** 2).sum() + (v * v).sum()
        second.backward()
        out = (first + second, g1, w.grad.clone(), v.grad.clone())
        w.grad = v.grad = None
        return out
    c = tg.compile(step)
    for _ in range(4):
        x = tg.randn(2, 3)
        for a, b in zip(step(x), c(x)):
            np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    assert c.records == 1 and c.replays == 3


def test_int64_buffers_copied_in_place_replay_bit_for_bit():
    """An EMA model copying every buffer, BatchNorm's num_batches_tracked among them,
    replays; int64 copies keep every bit (values that are NaN patterns as doubles too)."""
    import copy

    def train(wrap):
        tg.manual_seed(0)
        net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
        ema = copy.deepcopy(net)
        counter = tg.tensor([0x7FF0000000000001, -5, 2 ** 62 + 3])   # a signalling NaN's bits
        mirror = tg.zeros(3, dtype=tg.int64)
        opt = optim.SGD(net.parameters(), lr=0.05)

        @wrap
        def step(x):
            opt.zero_grad()
            loss = net(x).pow(2).mean()
            loss.backward()
            opt.step()
            with tg.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, 0.1)
                for be, b in zip(ema.buffers(), net.buffers()):
                    be.copy_(b)
                mirror.copy_(counter)
                counter.add_(1)
            return loss
        for i in range(6):
            step(tg.randn(8, 3))
        return ([t.detach().numpy().copy() for t in ema.state_dict().values()],
                mirror.numpy().copy(), step)
    want, want_mirror, _ = train(lambda f: f)
    got, got_mirror, step = train(tg.compile)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert got_mirror.tolist() == want_mirror.tolist()
    assert step.replays >= 4 and step.fallbacks == 0


@pytest.mark.parametrize("op", ["mul_", "add_", "sub_", "div_"])
@pytest.mark.parametrize("other", [np.float64([0.1, 0.2, 0.3]), np.float64(0.1),
                                   np.int64([1, 2, 3]), np.int64(3)],
                         ids=["f64", "f64-0d", "i64", "i64-0d"])
def test_inplace_op_with_other_dtype_replays_its_values(op, other):
    """A float32 tensor updated in place by a tensor of another dtype (an optimizer
    scaling a parameter by a float64 0-d state) replays PyTorch's values; the replay
    once read the float64 operand as float32 and wrote zeros."""
    torch = pytest.importorskip("torch")
    a = np.float32([1.1, 2.3, 3.7])
    want = torch.tensor(a)
    getattr(want, op)(torch.tensor(other))
    p = tg.tensor(a)

    @tg.compile
    def f(o):
        with tg.no_grad():
            getattr(p, op)(o)
        return p
    for _ in range(3):
        p.copy_(tg.tensor(a))
        got = f(tg.tensor(other))
        assert np.array_equal(got.numpy(), want.numpy())
    assert f.replays == 2 and f.fallbacks == 0


def test_clamp_inplace_replays_clip_grad_value():
    """clamp_ under no_grad (clip_grad_value_, Rprop's step sizes) replays, where it
    used to make the step run eagerly."""
    def train(wrap):
        tg.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        opt = optim.SGD(model.parameters(), lr=0.1)

        @wrap
        def step(x, y):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            nn.utils.clip_grad_value_(model.parameters(), 0.05)
            opt.step()
            return loss
        rng = np.random.default_rng(2)
        for _ in range(6):
            step(tg.tensor(rng.standard_normal((5, 4)) * 3, dtype=tg.float32),
                 tg.tensor(rng.standard_normal((5, 2)), dtype=tg.float32))
        return [p.detach().numpy().copy() for p in model.parameters()], step
    assert_compiled_equals_eager(train, 6)


def test_numbers_read_through_attributes_and_subscripts_are_guarded():
    """Numbers a function reads from its globals' and closure's attributes and entries
    (``state["scale"]``, ``cfg.temp``, a list of numbers) and a bound method's
    ``self.beta``: a changed value records again; the replays used to keep the old."""
    state = {"scale": 2.0, "lst": [1.0, 2.0, 3.0]}
    cfg = SimpleNamespace(inner=SimpleNamespace(temp=1.0))

    def fn(x):
        return (x * state["scale"] + tg.tensor(state["lst"])) / cfg.inner.temp

    class Trainer:
        beta = 0.5

        def step(self, x):
            return x * self.beta

    trainer = Trainer()
    steps = [tg.compile(fn), tg.compile(trainer.step)]
    for k in range(6):
        if k % 2:
            state["scale"] += 1.0
            state["lst"][0] = float(k)
            cfg.inner.temp *= 2.0
            trainer.beta += 0.25
        x = tg.tensor([0.5, 1.5, -1.0])
        for step, f in zip(steps, (fn, trainer.step)):
            np.testing.assert_array_equal(step(x).numpy(), f(x).numpy())
    for step in steps:
        assert step.records == 4 and step.replays == 2


def test_module_number_attributes_are_guarded():
    """A module's number attributes (a temperature, a dropout's p) changed between calls
    record again."""
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.temperature = 1.0
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(self.lin(x)) / self.temperature

    tg.manual_seed(0)
    m = Scaled()

    @tg.compile
    def step(x):
        return m(x).detach()
    x = tg.randn(4, 3)
    for t, p in [(1.0, 0.0), (1.0, 0.0), (2.0, 0.0), (2.0, 1.0), (2.0, 1.0)]:
        m.temperature, m.drop.p = t, p          # (p = 0: no dropout, p = 1: all dropped)
        want = m(x).detach().numpy()
        np.testing.assert_array_equal(step(x).numpy(), want)
    assert step.records == 3 and step.replays == 2


def test_logging_into_containers_and_reading_optimizer_settings_still_replay():
    """Lists appended to (a global history, a dict's list) and optimizer settings read
    in the function are not guarded by value: the step keeps replaying."""
    tg.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = optim.SGD(model.parameters(), lr=0.1)
    sched = optim.lr_scheduler.StepLR(opt, 2, gamma=0.5)
    log = {"loss": [], "lr": []}
    history = []

    @tg.compile
    def step(x, y):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        history.append(loss.item())
        log["loss"].append(loss.item())
        log["lr"].append(opt.param_groups[0]["lr"])
        return loss
    for _ in range(6):
        step(tg.randn(5, 3), tg.randn(5, 1))
        sched.step()
    assert len(history) == 6 and log["lr"] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert step.records <= 2 and step.replays >= 4


_NP_RNG = np.random.default_rng(0)


@pytest.mark.parametrize("draw", [
    lambda x: x + tg.tensor(np.random.randn(3)),
    lambda x: x + tg.tensor(_NP_RNG.normal(size=3)),
    lambda x: x * random.random(),
    lambda x: x * float(np.random.rand()),
], ids=["np.random", "np-generator", "random", "np.random-scalar"])
def test_python_and_numpy_random_numbers_run_eagerly(draw):
    """Numbers Python or NumPy draw inside the function would be constants of the
    recording, the same on every replay: such a function runs eagerly, with a warning
    that points to tapegrad's own random functions."""
    step = tg.compile(draw)
    with pytest.warns(tg.CompileWarning, match="draws random numbers"):
        outs = [step(tg.ones(3)).numpy().copy() for _ in range(3)]
    assert step.replays == 0 and step.fallbacks == 2
    assert not np.array_equal(outs[0], outs[1])


HELPER_CFG = {"w": 1.0}
HELPER_SCALE = 2.0


def _helper_weight():
    return HELPER_CFG["w"]


def _helper_scaled(x):
    return x * HELPER_SCALE + _helper_weight()


@tg.compile
def _uses_helpers(x):
    return _helper_scaled(x) * LATER_GLOBAL


LATER_GLOBAL = 3.0        # (bound after the compiled function was made)


def test_globals_read_by_helper_functions_are_guarded():
    """Globals (and their entries) read by the module's functions that the compiled
    function calls, and globals bound after it was made, are its inputs too."""
    global HELPER_SCALE, LATER_GLOBAL
    for k in range(4):
        HELPER_CFG["w"], HELPER_SCALE = float(k // 2), 2.0 + k // 2
        LATER_GLOBAL = 3.0 if k < 3 else 4.0
        x = tg.ones(2)
        want = (2.0 + k // 2 + k // 2) * LATER_GLOBAL
        np.testing.assert_array_equal(_uses_helpers(x).numpy(), [want, want])
    assert _uses_helpers.records == 3 and _uses_helpers.replays == 1


FORWARD_CFG = {"scale": 1.0}
FORWARD_TEMP = 1.0


class _ReadsGlobals(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x) * FORWARD_CFG["scale"] / FORWARD_TEMP


def test_globals_read_by_a_module_forward_are_guarded():
    """Numbers a module's forward reads from its module's globals are guarded too."""
    global FORWARD_TEMP
    tg.manual_seed(0)
    net = _ReadsGlobals()
    step = tg.compile(lambda x: net(x).detach())
    for k in range(4):
        FORWARD_CFG["scale"], FORWARD_TEMP = 1.0 + k // 2, 1.0 + (k == 3)
        x = tg.ones(1, 2)
        np.testing.assert_array_equal(step(x).numpy(), net(x).detach().numpy())
    assert step.records == 3 and step.replays == 1


def test_numbers_read_by_methods_of_global_objects_are_guarded():
    """A method of the user's object called by the function (``loss.compute(x)``): the
    numbers it reads from ``self`` are guarded like the function's own."""
    class Loss:
        def __init__(self):
            self.weight = 1.0
            self.cfg = {"eps": 0.0}

        def compute(self, x):
            return (x * self.weight).sum() + self.cfg["eps"]

    loss = Loss()
    step = tg.compile(lambda x: loss.compute(x))
    for k in range(4):
        loss.weight, loss.cfg["eps"] = 1.0 + k // 2, float(k == 3)
        x = tg.ones(3)
        np.testing.assert_array_equal(step(x).numpy(), loss.compute(x).numpy())
    assert step.records == 3 and step.replays == 1


def test_numbers_read_by_a_compiled_callable_object_are_guarded():
    """tg.compile of an object with ``__call__``: what that method reads from ``self``
    is guarded, as a bound method's."""
    class Scale:
        k = 2.0

        def __call__(self, x):
            return x * self.k

    obj = Scale()
    step = tg.compile(obj)
    for k in (2.0, 3.0, 3.0):
        obj.k = k
        np.testing.assert_array_equal(step(tg.ones(2)).numpy(), [k, k])
    assert step.records == 2 and step.replays == 1
