"""Learning-rate schedules give PyTorch's rates to the bit, step after step, and a
compiled training step replays under them with eager's parameters."""
import warnings

import numpy as np
import pytest

import tapegrad as tg

torch = pytest.importorskip("torch")

SCHEDULES = {
    "step": lambda L, o: L.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "multistep": lambda L, o: L.optim.lr_scheduler.MultiStepLR(o, [2, 5, 5, 9], gamma=0.3),
    "exponential": lambda L, o: L.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
    "cosine": lambda L, o: L.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=1e-3),
    "lambda": lambda L, o: L.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e)),
    "onecycle_sgd": lambda L, o: L.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5,
                                                                 total_steps=20),
    "onecycle_linear_3phase": lambda L, o: L.optim.lr_scheduler.OneCycleLR(
        o, max_lr=[0.4, 0.2], epochs=4, steps_per_epoch=5, anneal_strategy="linear",
        three_phase=True),
    "multiplicative": lambda L, o: L.optim.lr_scheduler.MultiplicativeLR(
        o, lambda e: 0.9 if e % 2 else 0.97),
    "constant": lambda L, o: L.optim.lr_scheduler.ConstantLR(o, factor=0.25, total_iters=4),
    "linear": lambda L, o: L.optim.lr_scheduler.LinearLR(o, start_factor=0.1,
                                                         end_factor=0.9, total_iters=6),
    "polynomial": lambda L, o: L.optim.lr_scheduler.PolynomialLR(o, total_iters=8,
                                                                 power=2.0),
    "warm_restarts": lambda L, o: L.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=3, T_mult=2, eta_min=1e-3),
    "warmup_then_cosine": lambda L, o: L.optim.lr_scheduler.SequentialLR(
        o, [L.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=4),
            L.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-4)],
        milestones=[4]),
    "sequential_three": lambda L, o: L.optim.lr_scheduler.SequentialLR(
        o, [L.optim.lr_scheduler.ConstantLR(o, factor=0.5, total_iters=2),
            L.optim.lr_scheduler.ExponentialLR(o, gamma=0.8),
            L.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)], milestones=[3, 9]),
    "chained": lambda L, o: L.optim.lr_scheduler.ChainedScheduler(
        [L.optim.lr_scheduler.ConstantLR(o, factor=0.2, total_iters=3),
         L.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)]),
}


def make(L, name, adam=False):
    w = L.tensor([1.0, -2.0], requires_grad=True)
    b = L.tensor([0.5], requires_grad=True)
    groups = [{"params": [w]}, {"params": [b], "lr": 0.05}]
    opt = L.optim.Adam(groups, lr=0.1) if adam else \
        L.optim.SGD(groups, lr=0.1, momentum=0.9)
    return w, b, opt, SCHEDULES[name](L, opt)


def run(L, name, adam=False, steps=19):
    w, b, opt, sched = make(L, name, adam)
    seen = []
    for _ in range(steps):
        opt.zero_grad()
        ((w * w).sum() + (b * 3).sum()).backward()
        opt.step()
        sched.step()
        g = opt.param_groups
        seen.append((sched.get_last_lr(), [x.get("momentum") for x in g],
                     [x.get("betas") for x in g]))
    return seen, w.detach().numpy().tolist() + b.detach().numpy().tolist()


@pytest.mark.parametrize("adam", [False, True])
@pytest.mark.parametrize("name", SCHEDULES)
def test_rates_equal_pytorch(name, adam):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, got_params = run(tg, name, adam)
        want, want_params = run(torch, name, adam)
    assert got == want
    np.testing.assert_allclose(got_params, want_params, rtol=1e-6)


@pytest.mark.parametrize("mode,threshold_mode", [("min", "rel"), ("max", "abs")])
def test_reduce_on_plateau_equals_pytorch(mode, threshold_mode):
    metrics = [1.0, 0.9, 0.95, 0.95, 0.96, 0.97, 0.5, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7]
    out = []
    for L in (tg, torch):
        opt = L.optim.SGD([L.tensor([1.0], requires_grad=True)], lr=1.0)
        s = L.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=2,
                                                   threshold=0.01,
                                                   threshold_mode=threshold_mode,
                                                   cooldown=1, min_lr=0.1)
        rates = []
        for m in metrics:
            s.step(m)
            rates.append(opt.param_groups[0]["lr"])
        out.append((rates, s.num_bad_epochs, s.best))
    assert out[0] == out[1]


def test_warm_restarts_stepped_by_fractional_epochs_equal_pytorch():
    out = []
    for L in (tg, torch):
        opt = L.optim.SGD([L.tensor([1.0], requires_grad=True)], lr=0.3)
        s = L.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=3)
        rates = []
        for epoch in range(12):
            for i in range(4):
                opt.step()
                s.step(epoch + i / 4)
                rates.append(s.get_last_lr()[0])
        out.append(rates)
    assert out[0] == out[1]


@pytest.mark.parametrize("name", ["cosine", "warmup_then_cosine", "chained", "polynomial"])
def test_state_dict_resumes_the_schedule(name):
    w, b, opt, sched = make(tg, name)
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert "optimizer" not in state
    assert state.get("last_epoch", 5) == 5        # (a chain keeps its schedulers' only)
    w2, b2, opt2, sched2 = make(tg, name)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    for _ in range(8):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert sched.get_last_lr() == sched2.get_last_lr()


def test_schedule_stepped_before_the_optimizer_warns():
    opt = tg.optim.SGD([tg.tensor([1.0], requires_grad=True)], lr=1.0)
    sched = tg.optim.lr_scheduler.StepLR(opt, 2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()


def test_errors_as_pytorch():
    opt = tg.optim.SGD([tg.tensor([1.0], requires_grad=True)], lr=1.0)
    S = tg.optim.lr_scheduler
    with pytest.raises(ValueError, match="Factor should be < 1.0."):
        S.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="either total_steps OR"):
        S.OneCycleLR(opt, max_lr=1.0)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        S.StepLR(object(), 2)
    one = S.OneCycleLR(opt, max_lr=1.0, total_steps=2)
    one.step()
    one.step()
    with pytest.raises(ValueError, match="Tried to step 3 times"):
        one.step()


@pytest.mark.parametrize("build, exc, match", [
    (lambda S, o: S.LinearLR(o, start_factor=0.0), ValueError, "Starting multiplicative"),
    (lambda S, o: S.ConstantLR(o, factor=1.5), ValueError, "between 0 and 1"),
    (lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "positive integer T_0"),
    (lambda S, o: S.SequentialLR(o, [S.StepLR(o, 2), S.StepLR(o, 3)], milestones=[]),
     ValueError, "one more than the number of milestone points"),
    (lambda S, o: S.SequentialLR(o, [S.ReduceLROnPlateau(o)], milestones=[]), ValueError,
     "does not support `ReduceLROnPlateau`"),
    (lambda S, o: S.MultiplicativeLR(o, 0.5), TypeError, "lr_lambda should be a function"),
])
def test_errors_of_new_schedules_as_pytorch(build, exc, match):
    for L in (tg, torch):
        opt = L.optim.SGD([L.tensor([1.0], requires_grad=True)], lr=1.0)
        with pytest.raises(exc, match=match):
            build(L.optim.lr_scheduler, opt)


@pytest.mark.parametrize("name", ["cosine", "onecycle_sgd"])
def test_compiled_step_replays_under_a_schedule(name):
    """The schedule changes lr (and OneCycle the momentum) between calls: every call
    after the first two replays, with the eager run's parameters, bit for bit."""
    def train(wrap):
        tg.manual_seed(0)
        model = tg.nn.Sequential(tg.nn.Linear(4, 8), tg.nn.Tanh(), tg.nn.Linear(8, 2))
        opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = SCHEDULES[name](tg, opt)

        @wrap
        def step(x, y):
            opt.zero_grad()
            loss = tg.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss
        rng = np.random.default_rng(0)
        for _ in range(19):
            step(tg.tensor(rng.standard_normal((6, 4)), dtype=tg.float32),
                 tg.tensor(rng.standard_normal((6, 2)), dtype=tg.float32))
            sched.step()
        return [p.detach().numpy().copy() for p in model.parameters()], step
    want, _ = train(lambda f: f)
    got, step = train(tg.compile)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert step.fallbacks == 0 and step.records <= 2 and step.replays == 19 - step.records
