"""tapegrad.optim.LBFGS against torch.optim.LBFGS: float64 trajectories, evaluation
counts, errors, state dicts and compiled closures.

The parameters after each step() must be within 1e-9 of PyTorch's. Kernels of the two
libraries round differently in the last bit (PyTorch fuses the multiply-add of
``add_(..., alpha=)`` where the CPU has FMA; sums and dot products may group their terms
differently), and L-BFGS on Rosenbrock's valley amplifies such differences along long
runs, so the Rosenbrock cases are ones whose trajectories do not amplify them past
1e-11 here.
"""
import numpy as np
import pytest

import tapegrad as tg


@pytest.fixture
def th():
    return pytest.importorskip("torch")


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def rosenbrock_problem(x0):
    def make(lib, dtype):
        x = lib.tensor(np.asarray(x0, dtype=np.float64), dtype=dtype, requires_grad=True)
        return [x], lambda: rosenbrock(x)
    return make


_rng = np.random.default_rng(0)
X = _rng.standard_normal((32, 5))
W_TRUE = _rng.standard_normal((5, 2))
Y_LS = X @ W_TRUE + 0.1 * _rng.standard_normal((32, 2))
Y_CLS = (X @ W_TRUE[:, :1] + 0.5 * _rng.standard_normal((32, 1)) > 0).astype(np.float64)
W0 = 0.3 * _rng.standard_normal((2, 5))
B0 = 0.3 * _rng.standard_normal(2)


def linear_problem(kind, unused=False):
    """Least squares (``ls``) or L2-regularised logistic regression (``logistic``) with an
    nn.Linear model; ``unused`` adds a parameter the loss ignores (its .grad stays None)."""
    def make(lib, dtype):
        out = 2 if kind == "ls" else 1
        model = lib.nn.Linear(5, out).to(dtype)
        with lib.no_grad():
            model.weight.copy_(lib.tensor(W0[:out]))
            model.bias.copy_(lib.tensor(B0[:out]))
        x = lib.tensor(X, dtype=dtype)
        y = lib.tensor(Y_LS if kind == "ls" else Y_CLS, dtype=dtype)
        params = list(model.parameters())
        if unused:
            params.append(lib.nn.Parameter(lib.zeros(3, dtype=dtype)))
        fn = lib.nn.functional

        def loss():
            if kind == "ls":
                return fn.mse_loss(model(x), y)
            return (fn.binary_cross_entropy_with_logits(model(x), y)
                    + 1e-3 * (model.weight ** 2).sum())
        return params, loss
    return make


def trajectory(lib, make, steps, dtype="float64", set_to_none=True, **opts):
    """(parameters, func_evals, n_iter, returned loss) after each step(), and the
    optimizer."""
    params, loss_fn = make(lib, getattr(lib, dtype))
    opt = lib.optim.LBFGS(params, **opts)

    def closure():
        opt.zero_grad(set_to_none=set_to_none)
        loss = loss_fn()
        loss.backward()
        return loss

    out = []
    for _ in range(steps):
        loss = opt.step(closure)
        state = opt.state[params[0]]
        flat = np.concatenate([np.asarray(p.detach().numpy(), np.float64).ravel()
                               for p in params])
        out.append((flat, state["func_evals"], state["n_iter"], float(loss.detach())))
    return out, opt


def assert_same_trajectory(got, want, atol=1e-9):
    assert len(got) == len(want)
    for i, ((p, fe, ni, loss), (q, tfe, tni, tloss)) in enumerate(zip(got, want)):
        assert (fe, ni) == (tfe, tni), f"step {i}: (func_evals, n_iter)"
        np.testing.assert_allclose(p, q, rtol=0, atol=atol, err_msg=f"step {i}")
        np.testing.assert_allclose(loss, tloss, rtol=1e-9, atol=1e-12, err_msg=f"step {i}")


ROSEN_2 = rosenbrock_problem([-1.2, 1.0])
ROSEN_10 = rosenbrock_problem(np.linspace(-1.5, 1.2, 10))
ROSEN_10B = rosenbrock_problem(np.full(10, -0.5))

ROSENBROCK_CASES = [
    ("2d", ROSEN_2, {"lr": 0.5}),
    ("2d", ROSEN_2, {"line_search_fn": "strong_wolfe"}),
    ("2d", ROSEN_2, {"history_size": 2, "max_iter": 7, "line_search_fn": "strong_wolfe"}),
    ("2d", ROSEN_2, {"history_size": 5, "max_iter": 3}),
    ("10d", ROSEN_10, {"max_iter": 3}),
    ("10d", ROSEN_10, {"history_size": 5, "max_iter": 7, "line_search_fn": "strong_wolfe"}),
    ("10d", ROSEN_10, {"history_size": 2, "max_iter": 7, "line_search_fn": "strong_wolfe"}),
    ("10d", ROSEN_10B, {"max_iter": 7, "line_search_fn": "strong_wolfe"}),
    ("10d", ROSEN_10B, {"history_size": 2, "max_iter": 7, "lr": 0.5}),
    # the bracketing phase extrapolates, runs out of evaluations, takes the midpoint
    ("2d", ROSEN_2, {"line_search_fn": "strong_wolfe", "lr": 0.01, "history_size": 3,
                     "max_iter": 10}),
    ("2d", ROSEN_2, {"line_search_fn": "strong_wolfe", "history_size": 3, "max_iter": 6}),
    ("2d", ROSEN_2, {"lr": 1e-3, "tolerance_change": 1e-3}),
]


@pytest.mark.parametrize("name,make,opts", ROSENBROCK_CASES,
                         ids=[f"{n}-{o}" for n, _, o in ROSENBROCK_CASES])
def test_rosenbrock_matches_torch(th, name, make, opts):
    got, _ = trajectory(tg, make, 5, **opts)
    want, _ = trajectory(th, make, 5, **opts)
    assert_same_trajectory(got, want)
    assert want[-1][3] < want[0][3]          # the runs make progress


def l1_problem(x0):
    """A kink at every coordinate 0.3: line searches zoom in, make too little progress
    near the bracket's ends and shrink it below tolerance."""
    def make(lib, dtype):
        x = lib.tensor(np.asarray(x0, np.float64), dtype=dtype, requires_grad=True)
        return [x], lambda: (x - 0.3).abs().sum() + 0.5 * (x ** 2).sum()
    return make


L1_CASES = [
    {"line_search_fn": "strong_wolfe", "lr": 0.3},
    {"line_search_fn": "strong_wolfe", "lr": 0.3, "history_size": 3, "tolerance_change": 1e-3},
    {"line_search_fn": "strong_wolfe", "lr": 0.3, "history_size": 3},
    {"lr": 1e-3, "tolerance_change": 1e-3},
]


@pytest.mark.parametrize("opts", L1_CASES, ids=[str(o) for o in L1_CASES])
def test_nonsmooth_line_search_matches_torch(th, opts):
    make = l1_problem([1.7, -2.2, 0.9])
    got, _ = trajectory(tg, make, 4, **opts)
    want, _ = trajectory(th, make, 4, **opts)
    assert_same_trajectory(got, want)
    assert want[-1][3] < want[0][3]


def test_pairs_with_small_curvature_are_not_stored(th):
    """Steps so short that y.s <= 1e-10 leave the history (and H_diag = 1) alone."""
    def make(lib, dtype):
        x = lib.tensor([1.0, 1.0], dtype=dtype, requires_grad=True)
        return [x], lambda: 0.5 * (x[0] ** 2 + 10 * x[1] ** 2)
    got, opt = trajectory(tg, make, 3, lr=1e-7, max_iter=5)
    want, _ = trajectory(th, make, 3, lr=1e-7, max_iter=5)
    assert_same_trajectory(got, want, atol=1e-15)
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["old_dirs"] == [] and state["H_diag"] == 1 and state["n_iter"] == 15


def test_tensor_lr(th):
    make = linear_problem("logistic")
    got, opt = trajectory(tg, make, 3, lr=tg.tensor([0.5], dtype=tg.float64))
    want, _ = trajectory(th, make, 3, lr=th.tensor([0.5], dtype=th.float64))
    assert_same_trajectory(got, want)
    assert opt.state[opt.param_groups[0]["params"][0]]["t"].shape == ()


LINEAR_CASES = [
    ("ls", {}),
    ("ls", {"line_search_fn": "strong_wolfe"}),
    ("ls", {"history_size": 2, "max_iter": 7}),
    ("ls", {"line_search_fn": "strong_wolfe", "history_size": 5, "max_iter": 7, "lr": 0.1}),
    ("logistic", {}),
    ("logistic", {"line_search_fn": "strong_wolfe", "history_size": 5}),
    ("logistic", {"max_iter": 3, "lr": 0.5}),
    ("logistic", {"history_size": 2, "max_iter": 20, "lr": 0.1}),
    ("logistic", {"line_search_fn": "strong_wolfe", "max_eval": 6}),
    ("logistic", {"line_search_fn": "strong_wolfe", "tolerance_change": 1e-4,
                  "tolerance_grad": 1e-3}),
    ("logistic", {"tolerance_change": 1e-3}),
]


@pytest.mark.parametrize("kind,opts", LINEAR_CASES,
                         ids=[f"{k}-{o}" for k, o in LINEAR_CASES])
def test_linear_model_matches_torch(th, kind, opts):
    make = linear_problem(kind)
    got, opt = trajectory(tg, make, 4, **opts)
    want, topt = trajectory(th, make, 4, **opts)
    assert_same_trajectory(got, want)
    assert sorted(opt.state_dict()["state"][0]) == sorted(topt.state_dict()["state"][0])


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_gradientless_parameter_and_zeroed_grads(th, line_search_fn):
    """A parameter the loss ignores (zeros in the flat gradient), and gradients zeroed in
    place between evaluations rather than set to None."""
    make = linear_problem("logistic", unused=True)
    opts = {"line_search_fn": line_search_fn, "history_size": 4}
    got, opt = trajectory(tg, make, 3, set_to_none=False, **opts)
    want, _ = trajectory(th, make, 3, set_to_none=False, **opts)
    assert_same_trajectory(got, want)
    assert np.all(got[-1][0][-3:] == 0)


def test_defaults_and_max_eval(th):
    p = tg.tensor([1.0], requires_grad=True)
    q = th.tensor([1.0], requires_grad=True)
    assert tg.optim.LBFGS([p]).defaults == th.optim.LBFGS([q]).defaults
    for kwargs in ({"max_iter": 7}, {"max_iter": 3, "max_eval": 11}):
        assert tg.optim.LBFGS([p], **kwargs).defaults == th.optim.LBFGS([q], **kwargs).defaults
    assert tg.optim.LBFGS([p], max_iter=7).defaults["max_eval"] == 8


def test_stops_at_once_where_the_gradient_is_small(th):
    make = rosenbrock_problem([1.0, 1.0, 1.0])
    got, opt = trajectory(tg, make, 2)
    want, topt = trajectory(th, make, 2)
    assert_same_trajectory(got, want)
    assert got[-1][1:3] == (2, 0)
    assert sorted(opt.state_dict()["state"][0]) == ["func_evals", "n_iter"]


def test_float32(th):
    for opts in ({}, {"line_search_fn": "strong_wolfe"}):
        got, opt = trajectory(tg, ROSEN_2, 4, dtype="float32", **opts)
        want, _ = trajectory(th, ROSEN_2, 4, dtype="float32", **opts)
        for (p, fe, ni, _), (q, tfe, tni, _) in zip(got, want):
            assert (fe, ni) == (tfe, tni)
            np.testing.assert_allclose(p, q, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got[-1][0], [1.0, 1.0], atol=1e-4)
        state = opt.state[opt.param_groups[0]["params"][0]]
        assert opt.param_groups[0]["params"][0].dtype == tg.float32
        assert state["d"].dtype == tg.float32
        assert state["prev_flat_grad"].dtype == tg.float32
        assert state["H_diag"].dtype == tg.float32


def torch_error(th, fn):
    with pytest.raises(Exception) as info:
        fn(th)
    return type(info.value), str(info.value)


def assert_same_error(th, fn):
    kind, msg = torch_error(th, fn)
    with pytest.raises(kind) as info:
        fn(tg)
    assert type(info.value) is kind and str(info.value) == msg


def _param(lib, n=2):
    return lib.nn.Parameter(lib.ones(n))


@pytest.mark.parametrize("build", [
    lambda lib: lib.optim.LBFGS([{"params": [_param(lib)]}, {"params": [_param(lib)]}]),
    lambda lib: lib.optim.LBFGS([_param(lib)], lr=-1.0),
    lambda lib: lib.optim.LBFGS([_param(lib)], lr=lib.tensor([0.1, 0.2])),
    lambda lib: lib.optim.LBFGS([]),
], ids=["param-groups", "negative-lr", "tensor-lr", "empty"])
def test_constructor_errors_as_torch(th, build):
    assert_same_error(th, build)


def _step_with(lib, opt, p):
    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss
    return opt.step(closure)


def test_unknown_line_search_fn_as_torch(th):
    states = []
    for lib in (th, tg):
        p = lib.nn.Parameter(lib.tensor([1.0, -2.0]))
        opt = lib.optim.LBFGS([p], line_search_fn="armijo")
        with pytest.raises(RuntimeError, match="^only 'strong_wolfe' is supported$"):
            _step_with(lib, opt, p)
        state = opt.state[p]
        states.append((state["func_evals"], state["n_iter"]))
    assert states[0] == states[1] == (1, 1)


def test_step_errors_as_torch(th):
    def added_group(lib):
        p = _param(lib)
        opt = lib.optim.LBFGS([p])
        opt.add_param_group({"params": [_param(lib)]})
        _step_with(lib, opt, p)

    def no_closure(lib):
        lib.optim.LBFGS([_param(lib)]).step()

    assert_same_error(th, added_group)
    assert_same_error(th, no_closure)


def test_closure_runs_with_grad_inside_no_grad():
    x = tg.tensor([3.0, -1.0], dtype=tg.float64, requires_grad=True)
    opt = tg.optim.LBFGS([x], max_iter=2)
    seen = []

    def closure():
        seen.append(tg.is_grad_enabled())
        opt.zero_grad()
        loss = (x * x).sum()
        loss.backward()
        return loss

    with tg.no_grad():
        loss = opt.step(closure)
        assert not tg.is_grad_enabled()
    assert loss.item() == 10.0 and seen == [True, True]
    assert opt.state[x]["d"].requires_grad is False


def test_state_dict_round_trip_continues_the_same_trajectory(th):
    opts = {"line_search_fn": "strong_wolfe", "history_size": 3, "max_iter": 4}
    whole, _ = trajectory(tg, ROSEN_10, 6, **opts)
    [x], loss_fn = ROSEN_10(tg, tg.float64)
    opt = tg.optim.LBFGS([x], **opts)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    sd = opt.state_dict()
    _, topt = trajectory(th, ROSEN_10, 3, **opts)
    assert sorted(sd["state"][0]) == sorted(topt.state_dict()["state"][0])
    assert sd["param_groups"][0].keys() == topt.state_dict()["param_groups"][0].keys()
    assert len(sd["state"][0]["old_dirs"]) == 3

    y = tg.tensor(x.detach().numpy().copy(), requires_grad=True)
    resumed = tg.optim.LBFGS([y], lr=0.25, max_iter=9)
    resumed.load_state_dict(sd)
    assert resumed.param_groups[0]["max_iter"] == 4 and resumed.param_groups[0]["lr"] == 1
    state = resumed.state[y]
    assert state["d"] is not sd["state"][0]["d"]
    assert state["old_dirs"][0] is not sd["state"][0]["old_dirs"][0]

    def closure_y():
        resumed.zero_grad()
        loss = rosenbrock(y)
        loss.backward()
        return loss

    for k in range(3, 6):
        resumed.step(closure_y)
        assert np.array_equal(y.detach().numpy(), whole[k][0])
        assert (state["func_evals"], state["n_iter"]) == whole[k][1:3]


@pytest.mark.parametrize("opts", [{}, {"line_search_fn": "strong_wolfe", "history_size": 4}])
def test_compiled_closure_gives_the_same_parameters(opts):
    def run(wrap):
        [x], loss_fn = ROSEN_10(tg, tg.float64)
        opt = tg.optim.LBFGS([x], **opts)

        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        compiled = wrap(closure)
        out = []
        for _ in range(4):
            opt.step(compiled)
            out.append((x.detach().numpy().copy(), opt.state[x]["func_evals"]))
        return out, compiled

    want, _ = run(lambda f: f)
    got, compiled = run(tg.compile)
    for (p, fe), (q, tfe) in zip(got, want):
        assert fe == tfe
        assert np.array_equal(p, q)
    evals = want[-1][1]
    assert compiled.fallbacks == 0
    assert compiled.records == 1 and compiled.replays == evals - 1
