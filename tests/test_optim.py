"""tapegrad.optim against PyTorch: same MLP, same initial weights, 30 steps in float64."""
from collections import OrderedDict

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.nn.functional as F
import tapegrad.optim as optim

try:
    from .conftest import assert_compiled_equals_eager
except ImportError:
    from conftest import assert_compiled_equals_eager

STEPS = 30


@pytest.fixture
def th():
    return pytest.importorskip("torch")


def arr(t):
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def data(seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((16, 5)), r.standard_normal((16, 3)), r.integers(0, 3, 16)


def tg_mlp():
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3)).double()


def torch_mlp(th, seed=0):
    th.manual_seed(seed)
    tn = th.nn
    return tn.Sequential(tn.Linear(5, 8), tn.Tanh(), tn.Linear(8, 8), tn.ReLU(),
                         tn.Linear(8, 3)).double()


def twin_models(th, seed=0):
    ref = torch_mlp(th, seed)
    net = tg_mlp()
    net.load_state_dict(OrderedDict((k, tg.tensor(v.detach().numpy()))
                                    for k, v in ref.state_dict().items()))
    return net, ref


def groups(model, kind, opts):
    """The parameters as one list, or as two groups (first layer, rest) with lrs."""
    params = list(model.parameters())
    if kind == "one":
        return params
    return [{"params": params[:2], "lr": opts["lr"] * 10}, {"params": params[2:]}]


CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05, "nesterov": True}),
    ("SGD", {"lr": 0.001, "momentum": 0.5, "maximize": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adam", {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01,
              "amsgrad": True}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("Adam", {"lr": 0.01, "maximize": True}),
]


def run_pair(th, name, opts, kind="one", loss="mse", set_to_none=True, freeze=False):
    net, ref = twin_models(th)
    if freeze:
        for m in (net, ref):
            m[2].bias.requires_grad_(False)
    opt = getattr(optim, name)(groups(net, kind, opts), **opts)
    ref_opt = getattr(th.optim, name)(groups(ref, kind, opts), **opts)
    x, y, c = data()
    X, Y, C = tg.tensor(x), tg.tensor(y), tg.tensor(c)
    tX, tY, tC = th.tensor(x), th.tensor(y), th.tensor(c)
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=set_to_none)
        ref_opt.zero_grad(set_to_none=set_to_none)
        if loss == "mse":
            F.mse_loss(net(X), Y).backward()
            th.nn.functional.mse_loss(ref(tX), tY).backward()
        else:
            F.cross_entropy(net(X), C).backward()
            th.nn.functional.cross_entropy(ref(tX), tC).backward()
        opt.step()
        ref_opt.step()
    return net, ref, opt, ref_opt


def assert_same_params(net, ref, tol=1e-9):
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        err = np.max(np.abs(arr(p) - q.detach().numpy()))
        assert err <= tol, f"{name}: max abs difference {err:.3g} from PyTorch"


@pytest.mark.parametrize("name,opts", CONFIGS, ids=[f"{n}-{o}" for n, o in CONFIGS])
def test_matches_torch_after_30_steps(th, name, opts):
    net, ref, opt, ref_opt = run_pair(th, name, opts)
    assert_same_params(net, ref)
    start, _ = twin_models(th)
    moved = [not np.array_equal(arr(p), arr(q)) for p, q in zip(net.parameters(),
                                                                 start.parameters())]
    assert all(moved)
    # the optimizer state matches too
    sd, ref_sd = opt.state_dict(), ref_opt.state_dict()
    assert sorted(sd["state"].keys()) == sorted(ref_sd["state"].keys())
    for i, st in ref_sd["state"].items():
        assert set(sd["state"][i].keys()) == set(st.keys())
        for k, v in st.items():
            np.testing.assert_allclose(arr(sd["state"][i][k]), v.detach().numpy(),
                                       rtol=1e-8, atol=1e-10)
    for g, rg in zip(sd["param_groups"], ref_sd["param_groups"]):
        for k, v in g.items():
            assert rg[k] == v, k


@pytest.mark.parametrize("name,opts", [("SGD", {"lr": 0.05, "momentum": 0.9}),
                                       ("Adam", {"lr": 0.01, "weight_decay": 0.01}),
                                       ("AdamW", {"lr": 0.01})])
def test_two_param_groups_match_torch(th, name, opts):
    net, ref, opt, _ = run_pair(th, name, opts, kind="two", loss="ce")
    assert_same_params(net, ref)
    assert [g["lr"] for g in opt.param_groups] == [opts["lr"] * 10, opts["lr"]]


def test_zero_grad_without_none_and_frozen_parameter(th):
    net, ref, opt, _ = run_pair(th, "Adam", {"lr": 0.01, "weight_decay": 0.1},
                                set_to_none=False, freeze=True)
    assert_same_params(net, ref)
    start, _ = twin_models(th)
    assert np.array_equal(arr(net[2].bias), arr(start[2].bias))     # bit for bit
    assert net[2].bias not in opt.state or not opt.state[net[2].bias]


def test_frozen_first_layer_stays_bit_for_bit():
    tg.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 10), nn.ReLU(), nn.Linear(10, 1))
    for p in net[0].parameters():
        p.requires_grad = False
    before = [arr(p).copy() for p in net.parameters()]
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x = tg.tensor(np.linspace(-1, 1, 50, dtype=np.float32).reshape(50, 1))
    y = x * x
    for _ in range(100):
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()
    after = [arr(p) for p in net.parameters()]
    assert all(np.array_equal(b, a) for b, a in zip(before[:2], after[:2]))
    assert all(not np.array_equal(b, a) for b, a in zip(before[2:], after[2:]))


def test_zero_grad_clears_parameters_only():
    w = nn.Parameter(tg.ones(3))
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (w * x).sum().backward()
    opt = optim.SGD([w], lr=0.1)
    g = w.grad
    opt.zero_grad(set_to_none=False)
    assert w.grad is g and arr(g).tolist() == [0.0, 0.0, 0.0]
    opt.zero_grad()
    assert w.grad is None
    assert arr(x.grad).tolist() == [1.0, 1.0, 1.0]


def test_step_updates_in_place_under_no_grad():
    w = nn.Parameter(tg.tensor([1.0, -2.0]))
    opt = optim.Adam([w], lr=0.1)
    (w * w).sum().backward()
    opt.step()
    assert w.is_leaf and w.requires_grad and w.grad_fn is None
    assert isinstance(w, nn.Parameter)
    state = opt.state[w]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
    assert all(isinstance(v, tg.Tensor) and not v.requires_grad for v in state.values())
    assert state["step"].item() == 1.0 and tuple(state["step"].shape) == ()
    assert arr(w).tolist() == pytest.approx([0.9, -1.9], abs=1e-6)
    # the update ran under no_grad: the next forward/backward works as usual
    (w * w).sum().backward()
    assert w.grad is not None


def test_closure(th):
    w = nn.Parameter(tg.tensor([3.0]))
    opt = optim.SGD([w], lr=0.25)
    calls = []

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    with tg.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 9.0 and calls == [9.0]
    assert arr(w).tolist() == [1.5]


def test_constructor_errors():
    p = nn.Parameter(tg.ones(2))
    with pytest.raises(ValueError, match="Invalid learning rate"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid momentum"):
        optim.SGD([p], lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Invalid epsilon"):
        optim.AdamW([p], eps=-1.0)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)


def test_add_param_group_and_named_parameters():
    net = nn.Linear(2, 2)
    opt = optim.SGD([net.weight], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": net.bias, "lr": 0.5})
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["lr"] == 0.5
    named = optim.Adam(net.named_parameters(), lr=0.1)
    assert named.param_groups[0]["param_names"] == ["weight", "bias"]
    assert named.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]


def test_state_dict_round_trip_continues_identically():
    x, y, _ = data()
    X, Y = tg.tensor(x), tg.tensor(y)

    def train(net, opt, n):
        for _ in range(n):
            opt.zero_grad()
            F.mse_loss(net(X), Y).backward()
            opt.step()

    tg.manual_seed(1)
    a = tg_mlp()
    b = tg_mlp()
    b.load_state_dict(a.state_dict())
    opt_a = optim.Adam(a.parameters(), lr=0.01, amsgrad=True)
    train(a, opt_a, 20)

    opt_b = optim.Adam(b.parameters(), lr=0.01, amsgrad=True)
    train(b, opt_b, 10)
    sd = opt_b.state_dict()
    c = tg_mlp()
    c.load_state_dict(b.state_dict())
    opt_c = optim.Adam(c.parameters(), lr=0.3)
    opt_c.load_state_dict(sd)
    assert opt_c.param_groups[0]["lr"] == 0.01
    state_c = opt_c.state[next(c.parameters())]
    state_b = opt_b.state[next(b.parameters())]
    assert state_c["exp_avg"] is not state_b["exp_avg"]          # copied, not shared
    train(c, opt_c, 10)
    for p, q in zip(a.parameters(), c.parameters()):
        assert np.array_equal(arr(p), arr(q))


def test_load_state_dict_errors_and_casts():
    net = nn.Linear(3, 2)
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    F.mse_loss(net(tg.ones(1, 3)), tg.zeros(1, 2)).backward()
    opt.step()
    sd = opt.state_dict()
    other = optim.SGD([net.weight], lr=0.2, momentum=0.9)
    with pytest.raises(ValueError, match="doesn't match the size"):
        other.load_state_dict(sd)
    two = optim.SGD([{"params": [net.weight]}, {"params": [net.bias]}], lr=0.2)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        two.load_state_dict(sd)
    assert two.param_groups[0]["lr"] == 0.2 and len(two.state) == 0
    net64 = nn.Linear(3, 2).double()
    opt64 = optim.SGD(net64.parameters(), lr=0.3, momentum=0.9)
    opt64.load_state_dict(sd)
    buf = opt64.state[net64.weight]["momentum_buffer"]
    assert buf.dtype == tg.float64
    np.testing.assert_allclose(arr(buf), arr(sd["state"][0]["momentum_buffer"]))


def test_matches_torch_float32(th):
    """float32 too, with a float32 tolerance."""
    ref = torch_mlp(th).float()
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    net.load_state_dict({k: tg.tensor(v.detach().numpy()) for k, v in ref.state_dict().items()})
    opt = optim.Adam(net.parameters(), lr=0.01)
    ref_opt = th.optim.Adam(ref.parameters(), lr=0.01)
    x, y, _ = data()
    X, Y = tg.tensor(x.astype(np.float32)), tg.tensor(y.astype(np.float32))
    tX, tY = th.tensor(x, dtype=th.float32), th.tensor(y, dtype=th.float32)
    for _ in range(STEPS):
        opt.zero_grad()
        ref_opt.zero_grad()
        F.mse_loss(net(X), Y).backward()
        th.nn.functional.mse_loss(ref(tX), tY).backward()
        opt.step()
        ref_opt.step()
    assert_same_params(net, ref, tol=1e-5)
    assert opt.state[net[0].weight]["step"].dtype == tg.float32


# -- RMSprop and Adagrad -------------------------------------------------------------------
MORE_OPTS = {
    "rmsprop": lambda L, p: L.optim.RMSprop(p, lr=0.01),
    "rmsprop_momentum_centered_wd": lambda L, p: L.optim.RMSprop(
        p, lr=0.01, momentum=0.9, centered=True, weight_decay=0.1),
    "rmsprop_maximize": lambda L, p: L.optim.RMSprop(p, lr=0.01, alpha=0.9, maximize=True),
    "adagrad": lambda L, p: L.optim.Adagrad(p, lr=0.1),
    "adagrad_decay_wd_init": lambda L, p: L.optim.Adagrad(
        p, lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
    "adamax": lambda L, p: L.optim.Adamax(p, lr=0.02),
    "adamax_wd_maximize": lambda L, p: L.optim.Adamax(p, lr=0.01, betas=(0.8, 0.99),
                                                      weight_decay=0.05, maximize=True),
    "nadam": lambda L, p: L.optim.NAdam(p, lr=0.02),
    "nadam_wd_decoupled": lambda L, p: L.optim.NAdam(p, lr=0.01, weight_decay=0.1,
                                                     momentum_decay=0.01,
                                                     decoupled_weight_decay=True),
    "nadam_wd_maximize": lambda L, p: L.optim.NAdam(p, lr=0.01, weight_decay=0.05,
                                                    maximize=True),
    "radam": lambda L, p: L.optim.RAdam(p, lr=0.02),
    "radam_wd_decoupled": lambda L, p: L.optim.RAdam(p, lr=0.01, betas=(0.8, 0.9),
                                                     weight_decay=0.1,
                                                     decoupled_weight_decay=True),
    "adadelta": lambda L, p: L.optim.Adadelta(p),
    "adadelta_wd_maximize": lambda L, p: L.optim.Adadelta(p, lr=0.5, rho=0.8, eps=1e-5,
                                                          weight_decay=0.1, maximize=True),
    "rprop": lambda L, p: L.optim.Rprop(p),
    "rprop_etas_sizes_maximize": lambda L, p: L.optim.Rprop(p, lr=0.05, etas=(0.3, 1.5),
                                                            step_sizes=(1e-3, 0.08),
                                                            maximize=True),
    "asgd": lambda L, p: L.optim.ASGD(p, lr=0.05),
    "asgd_averaging_wd_maximize": lambda L, p: L.optim.ASGD(p, lr=0.05, lambd=0.01,
                                                            alpha=0.5, t0=5,
                                                            weight_decay=0.1, maximize=True),
}


def _more_run(L, make, dt, steps=15):
    rng = np.random.default_rng(0)
    w = L.tensor(rng.standard_normal((3, 4)), dtype=getattr(L, dt), requires_grad=True)
    opt = make(L, [w])
    for _ in range(steps):
        opt.zero_grad()
        x = L.tensor(rng.standard_normal((5, 3)), dtype=getattr(L, dt))
        ((x @ w).tanh() ** 2).sum().backward()
        opt.step()
    return w.detach().numpy(), opt


@pytest.mark.parametrize("dt", ["float64", "float32"])
@pytest.mark.parametrize("name", MORE_OPTS)
def test_rmsprop_adagrad_match_pytorch(name, dt):
    torch = pytest.importorskip("torch")
    got, opt = _more_run(tg, MORE_OPTS[name], dt)
    want, topt = _more_run(torch, MORE_OPTS[name], dt)
    np.testing.assert_allclose(got, want, rtol=1e-12 if dt == "float64" else 2e-6,
                               atol=1e-15 if dt == "float64" else 1e-6)
    assert sorted(opt.state_dict()["state"][0]) == sorted(topt.state_dict()["state"][0])


@pytest.mark.parametrize("name", MORE_OPTS)
def test_rmsprop_adagrad_compiled_equal_eager(name):
    def train(wrap):
        tg.manual_seed(0)
        model = tg.nn.Sequential(tg.nn.Linear(4, 8), tg.nn.Tanh(), tg.nn.Linear(8, 2))
        opt = MORE_OPTS[name](tg, model.parameters())

        @wrap
        def step(x, y):
            opt.zero_grad()
            loss = tg.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss
        rng = np.random.default_rng(1)
        for _ in range(10):
            step(tg.tensor(rng.standard_normal((6, 4)), dtype=tg.float32),
                 tg.tensor(rng.standard_normal((6, 2)), dtype=tg.float32))
        return [p.detach().numpy().copy() for p in model.parameters()], step
    assert assert_compiled_equals_eager(train, 10).records <= 2


@pytest.mark.parametrize("make,msg", [
    (lambda p: tg.optim.RMSprop(p, lr=-1), "Invalid learning rate"),
    (lambda p: tg.optim.RMSprop(p, momentum=-0.1), "Invalid momentum value"),
    (lambda p: tg.optim.Adagrad(p, lr_decay=-1), "Invalid lr_decay value"),
    (lambda p: tg.optim.Adagrad(p, eps=-1), "Invalid epsilon value"),
    (lambda p: tg.optim.Adamax(p, betas=(1.0, 0.9)), "Invalid beta parameter at index 0"),
    (lambda p: tg.optim.Adamax(p, lr=-1), "Invalid learning rate"),
    (lambda p: tg.optim.Adadelta(p, rho=1.5), "Invalid rho value"),
    (lambda p: tg.optim.Rprop(p, etas=(1.2, 0.5)), "Invalid eta values: 1.2, 0.5"),
    (lambda p: tg.optim.Rprop(p, lr=-1), "Invalid learning rate"),
    (lambda p: tg.optim.ASGD(p, weight_decay=-1), "Invalid weight_decay value"),
])
def test_rmsprop_adagrad_invalid_settings(make, msg):
    with pytest.raises(ValueError, match=msg):
        make([tg.tensor([1.0], requires_grad=True)])


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax",
                                  "NAdam", "RAdam", "Adadelta", "Rprop", "ASGD"])
def test_implementation_choices_are_accepted_as_torch(name):
    """foreach / fused / capturable pick PyTorch's implementation: the same param_group
    entries, the same updates; differentiable=True is not supported."""
    torch = pytest.importorskip("torch")
    flags = {"foreach": False, "fused": None}
    if name in ("Adam", "AdamW", "RMSprop", "Adamax", "NAdam", "RAdam", "Adadelta", "Rprop",
                "ASGD"):
        flags["capturable"] = False
    if name in ("RMSprop", "Adamax", "NAdam", "RAdam", "Adadelta", "Rprop", "ASGD"):
        flags.pop("fused")
    ours = getattr(tg.optim, name)([tg.nn.Parameter(tg.ones(2))], lr=0.1, **flags)
    theirs = getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(2))], lr=0.1, **flags)
    assert sorted(ours.param_groups[0]) == sorted(theirs.param_groups[0])
    plain = getattr(tg.optim, name)([tg.nn.Parameter(tg.ones(2))], lr=0.1)
    for opt in (ours, plain):
        p = opt.param_groups[0]["params"][0]
        p.grad = tg.tensor([0.5, -1.0])
        opt.step()
    assert np.array_equal(ours.param_groups[0]["params"][0].detach().numpy(),
                          plain.param_groups[0]["params"][0].detach().numpy())
    with pytest.raises(NotImplementedError, match="differentiable"):
        getattr(tg.optim, name)([tg.nn.Parameter(tg.ones(2))], lr=0.1, differentiable=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, opts", [
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "maximize": True}),
    ("Adam", {"lr": 0.02, "betas": (0.3, 0.99), "eps": 1e-6, "amsgrad": True}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True}),
])
def test_adam_passes_equal_its_tensor_ops(name, opts, dtype):
    """Adam's fused passes (C-order parameters) give the bits of its update written as
    tensor ops (taken for a parameter in another memory order), both lerp forms."""
    rng = np.random.default_rng(5)
    start = rng.standard_normal((6, 5)).astype(dtype)
    fused = tg.from_numpy(start.copy()).requires_grad_()
    ops = tg.from_numpy(np.asfortranarray(start)).requires_grad_()
    assert fused._data.flags.c_contiguous and not ops._data.flags.c_contiguous
    opt_f = getattr(optim, name)([fused], **opts)
    opt_o = getattr(optim, name)([ops], **opts)
    for _ in range(6):
        g = rng.standard_normal((6, 5)).astype(dtype)
        fused.grad, ops.grad = tg.from_numpy(g.copy()), tg.from_numpy(g.copy())
        opt_f.step()
        opt_o.step()
        np.testing.assert_array_equal(fused.detach().numpy(), ops.detach().numpy())
        for key, value in opt_f.state[fused].items():
            np.testing.assert_array_equal(value.numpy(), opt_o.state[ops][key].numpy())
