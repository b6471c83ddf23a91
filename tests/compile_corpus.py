"""Training steps and objectives written the way PyTorch tutorials and SciPy users write
them, each runnable eagerly or through ``tg.compile``.

A case ``build(wrap)`` sets up its model, data and optimizer from fixed seeds, applies
``wrap`` (``tg.compile`` or nothing) to its step exactly where a user would put the
decorator, and returns ``(call, state, step)``: ``call(i)`` runs iteration i as the
user's loop would (new batch, schedule, logging) and returns what the loop observes;
``state()`` lists the parameters, gradients and optimizer state; ``step`` is the
wrapped function (its counters, when compiled).
"""
import math

import numpy as np

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.nn.functional as F
import tapegrad.optim as optim

CORPUS = {}


def case(build):
    CORPUS[build.__name__] = build
    return build


def batches(seed, n, shape, classes=3, dtype=np.float32, count=6):
    """``count`` (x, y) batches of class data (y int64 labels)."""
    rng = np.random.default_rng(seed)
    return [(tg.tensor(rng.standard_normal((n,) + shape).astype(dtype)),
             tg.tensor(rng.integers(0, classes, n)))
            for _ in range(count)]


def mlp(sizes, act=nn.Tanh, seed=0):
    tg.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def state_of(model, opt=None):
    out = []
    for name, p in model.named_parameters():
        out += [(name, p), (f"{name}.grad", p.grad)]
        if opt is not None:
            for k, v in sorted(opt.state.get(p, {}).items()):
                out.append((f"{name} {type(opt).__name__} state {k}", v))
    return out


def classifier_step(model, opt, wrap):
    """The tutorial's step, wrapped: zero_grad, cross entropy, backward, step."""
    @wrap
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


# -- closures over data -----------------------------------------------------------------
@case
def closure_fixed_data(wrap):
    """The data lives in the enclosing scope and never changes."""
    model = mlp([8, 16, 3])
    opt = optim.SGD(model.parameters(), lr=0.1)
    lossf = nn.CrossEntropyLoss()
    x, lab = batches(1, 32, (8,))[0]

    @wrap
    def step():
        opt.zero_grad()
        loss = lossf(model(x), lab)
        loss.backward()
        opt.step()
        return loss
    return lambda i: step(), lambda: state_of(model, opt), step


@case
def closure_rebound_batches(wrap):
    """The loop rebinds the variables the step reads (a dataloader loop in a script)."""
    model = mlp([8, 16, 3])
    opt = optim.Adam(model.parameters(), lr=0.01)
    data = batches(2, 32, (8,))
    x, y = data[0]

    @wrap
    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def call(i):
        nonlocal x, y
        x, y = data[i % len(data)]
        return step()
    return call, lambda: state_of(model, opt), step


def global_step():
    g_opt.zero_grad()                                                 # noqa: F821
    loss = F.mse_loss(g_model(g_x), g_y)                              # noqa: F821
    loss.backward()
    g_opt.step()                                                      # noqa: F821
    return loss


@case
def module_globals(wrap):
    """A script's step reading module globals that its loop rebinds."""
    g = globals()
    g["g_model"] = model = mlp([4, 8, 1], nn.ReLU)
    g["g_opt"] = opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(3)
    data = [(tg.tensor(rng.standard_normal((16, 4)).astype(np.float32)),
             tg.tensor(rng.standard_normal((16, 1)).astype(np.float32))) for _ in range(5)]
    step = wrap(global_step)

    def call(i):
        g["g_x"], g["g_y"] = data[i % len(data)]
        return step()
    return call, lambda: state_of(model, opt), step


@case
def linear_regression_by_hand(wrap):
    """The PyTorch tutorial's first model: leaves in a closure, updated by hand."""
    rng = np.random.default_rng(4)
    xs = tg.tensor(rng.standard_normal((64, 1)))
    ys = 3.0 * xs + 0.5 + 0.1 * tg.tensor(rng.standard_normal((64, 1)))
    w = tg.zeros(1, 1, dtype=tg.float64, requires_grad=True)
    b = tg.zeros(1, dtype=tg.float64, requires_grad=True)
    lr = 0.1

    @wrap
    def step():
        loss = ((xs @ w + b - ys) ** 2).mean()
        loss.backward()
        with tg.no_grad():
            w.sub_(lr * w.grad)
            b.sub_(lr * b.grad)
            w.grad.zero_()
            b.grad.zero_()
        return loss
    return lambda i: step(), lambda: [("w", w), ("b", b), ("w.grad", w.grad)], step


# -- batches as arguments -----------------------------------------------------------------
def classifier_case(make_opt, seed, loss="ce", dtype=np.float32, act=nn.Tanh):
    def build(wrap):
        model = mlp([10, 24, 4], act, seed)
        if dtype == np.float64:
            model = model.double()
        opt = make_opt(model.parameters())
        data = batches(seed, 24, (10,), 4, dtype)

        @wrap
        def step(xb, yb):
            opt.zero_grad()
            out = model(xb)
            if loss == "ce":
                l = F.cross_entropy(out, yb)
            else:
                l = F.nll_loss(F.log_softmax(out, dim=1), yb)
            l.backward()
            opt.step()
            return l
        return lambda i: step(*data[i % len(data)]), lambda: state_of(model, opt), step
    return build


CORPUS["sgd_momentum_batches"] = classifier_case(
    lambda p: optim.SGD(p, lr=0.05, momentum=0.9), 5)
CORPUS["sgd_nesterov_weight_decay"] = classifier_case(
    lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4), 6)
CORPUS["adam_weight_decay"] = classifier_case(
    lambda p: optim.Adam(p, lr=0.01, weight_decay=1e-3), 7)
CORPUS["adamw_amsgrad"] = classifier_case(
    lambda p: optim.AdamW(p, lr=0.01, amsgrad=True), 8)
CORPUS["nll_of_log_softmax"] = classifier_case(lambda p: optim.SGD(p, lr=0.1), 9, "nll")
CORPUS["float64_relu_model"] = classifier_case(
    lambda p: optim.Adam(p, lr=0.01), 10, dtype=np.float64, act=nn.ReLU)


@case
def gradient_clipping(wrap):
    model = mlp([10, 24, 4], seed=11)
    opt = optim.SGD(model.parameters(), lr=0.5)
    data = batches(11, 24, (10,), 4)

    @wrap
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
        opt.step()
        return loss, norm
    return lambda i: step(*data[i % 6]), lambda: state_of(model, opt), step


def scheduled(seed, schedule):
    def build(wrap):
        model = mlp([10, 24, 4], seed=seed)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        data = batches(seed, 24, (10,), 4)
        step = classifier_step(model, opt, wrap)

        def call(i):
            for g in opt.param_groups:
                g["lr"] = schedule(i)
            return step(*data[i % 6])
        return call, lambda: state_of(model, opt), step
    return build


CORPUS["cosine_schedule"] = scheduled(
    12, lambda i: 0.05 * (1 + math.cos(math.pi * i / 30)))
CORPUS["step_schedule"] = scheduled(13, lambda i: 0.1 * 0.5 ** (i // 10))


@case
def two_losses(wrap):
    """Regression with an extra L1 penalty; both losses returned for logging."""
    model = mlp([6, 12, 2], nn.ReLU, 14)
    opt = optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(14)
    data = [(tg.tensor(rng.standard_normal((20, 6)).astype(np.float32)),
             tg.tensor(rng.standard_normal((20, 2)).astype(np.float32))) for _ in range(6)]

    @wrap
    def step(x, y):
        opt.zero_grad()
        out = model(x)
        mse = F.mse_loss(out, y)
        l1 = F.l1_loss(out, y)
        (mse + 0.1 * l1).backward()
        opt.step()
        return mse, l1
    return lambda i: step(*data[i % 6]), lambda: state_of(model, opt), step


@case
def accuracy_in_the_step(wrap):
    model = mlp([10, 24, 4], seed=15)
    opt = optim.SGD(model.parameters(), lr=0.1)
    data = batches(15, 24, (10,), 4)

    @wrap
    def step(x, y):
        opt.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        opt.step()
        pred = out.argmax(dim=1)
        acc = (pred == y).float().mean()
        correct = (pred == y).sum()
        return loss, acc, correct
    return lambda i: step(*data[i % 6]), lambda: state_of(model, opt), step


@case
def evaluation_in_the_step(wrap):
    """model.eval() and a validation loss under no_grad inside the step."""
    model = mlp([10, 24, 4], seed=16)
    opt = optim.Adam(model.parameters(), lr=0.01)
    data = batches(16, 24, (10,), 4)
    xv, yv = batches(17, 40, (10,), 4, count=1)[0]

    @wrap
    def step(x, y):
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        model.eval()
        with tg.no_grad():
            val = F.cross_entropy(model(xv), yv)
        model.train()
        return {"loss": loss, "val_loss": val}
    return lambda i: step(*data[i % 6]), lambda: state_of(model, opt), step


@case
def binary_classifier(wrap):
    model = mlp([5, 10, 1], nn.ReLU, 18)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    lossf = nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(18)
    data = [(tg.tensor(rng.standard_normal((16, 5)).astype(np.float32)),
             tg.tensor(rng.integers(0, 2, (16, 1)).astype(np.float32))) for _ in range(6)]

    @wrap
    def step(x, y):
        opt.zero_grad()
        logits = model(x)
        loss = lossf(logits, y)
        loss.backward()
        opt.step()
        return loss, logits.detach()
    return lambda i: step(*data[i % 6]), lambda: state_of(model, opt), step


@case
def class_weights_and_ignored_labels(wrap):
    """Class weights, and labels of which some are ignore_index in some batches."""
    model = mlp([10, 24, 4], seed=19)
    opt = optim.SGD(model.parameters(), lr=0.1)
    weight = tg.tensor([1.0, 2.0, 0.5, 1.5])
    lossf = nn.CrossEntropyLoss(weight=weight, ignore_index=-100)
    data = batches(19, 24, (10,), 4)
    for j, (_, y) in enumerate(data):
        if j % 2:
            y.numpy()[::5] = -100

    @wrap
    def step(x, y):
        opt.zero_grad()
        loss = lossf(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return lambda i: step(*data[i % 6]), lambda: state_of(model, opt), step


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(10, 16)
        self.hidden = nn.Linear(16, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        h = F.relu(self.inp(x))
        h = h + torch_like_gelu(self.hidden(h))
        return self.out(h)


def torch_like_gelu(x):
    return 0.5 * x * (1.0 + (0.7978845608 * (x + 0.044715 * x ** 3)).tanh())


@case
def custom_module(wrap):
    tg.manual_seed(20)
    model = Residual()
    opt = optim.AdamW(model.parameters(), lr=0.005)
    data = batches(20, 24, (10,), 4)
    step = classifier_step(model, opt, wrap)
    return lambda i: step(*data[i % 6]), lambda: state_of(model, opt), step


@case
def zero_grad_in_place(wrap):
    """zero_grad(set_to_none=False): gradients zeroed in place and accumulated."""
    model = mlp([10, 24, 4], seed=21)
    opt = optim.SGD(model.parameters(), lr=0.1)
    data = batches(21, 24, (10,), 4)

    @wrap
    def step(x, y):
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return lambda i: step(*data[i % 6]), lambda: state_of(model, opt), step


@case
def freeze_after_warmup(wrap):
    """The first layer is frozen (requires_grad_(False)) from iteration 10 on."""
    model = mlp([10, 24, 4], seed=22)
    opt = optim.SGD(model.parameters(), lr=0.1)
    data = batches(22, 24, (10,), 4)
    step = classifier_step(model, opt, wrap)

    def call(i):
        if i == 10:
            model[0].requires_grad_(False)
        return step(*data[i % 6])
    return call, lambda: state_of(model, opt), step


@case
def eval_mode_toggled_outside(wrap):
    """model.eval() / model.train() and an evaluation between calls."""
    model = mlp([10, 24, 4], seed=23)
    opt = optim.SGD(model.parameters(), lr=0.1)
    data = batches(23, 24, (10,), 4)
    step = classifier_step(model, opt, wrap)

    def call(i):
        if i % 10 == 9:
            model.eval()
            with tg.no_grad():
                out = model(data[0][0])
            model.train()
            return step(*data[i % 6]), out
        return step(*data[i % 6])
    return call, lambda: state_of(model, opt), step


@case
def running_loss_outside(wrap):
    """The loop logs loss.item() and sums a running loss outside the step."""
    model = mlp([10, 24, 4], seed=24)
    opt = optim.SGD(model.parameters(), lr=0.1)
    data = batches(24, 24, (10,), 4)
    step = classifier_step(model, opt, wrap)
    log = []
    running = [0.0]

    def call(i):
        loss = step(*data[i % 6])
        running[0] += loss.item()
        log.append(f"{i}: {loss.item():.4f}")
        return running[0], list(log)
    return call, lambda: state_of(model, opt), step


@case
def rosenbrock_for_scipy(wrap):
    """A scipy.optimize objective: value and gradient of a numpy point."""
    def rosen(x):
        return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()

    @wrap
    def value_and_grad(x):
        f = rosen(x)
        f.backward()
        return f, x.grad

    def fun(xnp):
        x = tg.tensor(xnp, requires_grad=True)
        f, g = value_and_grad(x)
        return f.item(), g.numpy().copy()

    rng = np.random.default_rng(25)
    points = [rng.standard_normal(12) for _ in range(7)]
    return lambda i: fun(points[i % 7] + 0.01 * i), lambda: [], value_and_grad


@case
def dict_of_outputs(wrap):
    model = mlp([10, 24, 4], seed=26)
    opt = optim.Adam(model.parameters(), lr=0.01)
    data = batches(26, 24, (10,), 4)

    @wrap
    def step(batch):
        x, y = batch["x"], batch["y"]
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        return {"loss": loss, "probs": F.softmax(logits.detach(), dim=1)}

    def call(i):
        x, y = data[i % 6]
        return step({"x": x, "y": y})
    return call, lambda: state_of(model, opt), step


@case
def dropout_in_train_mode(wrap):
    """Dropout draws a new mask on every call, the same one eagerly and compiled."""
    tg.manual_seed(27)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
    opt = optim.Adam(model.parameters(), lr=0.01)
    data = batches(27, 24, (10,), 4)

    @wrap
    def step(x, y):
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return lambda i: step(*data[i % 6]), lambda: state_of(model, opt), step


@case
def noisy_inputs_and_random_batches(wrap):
    """Gaussian input noise and a random subset of the data drawn inside the step."""
    tg.manual_seed(28)
    model = mlp([10, 24, 4], seed=28)
    opt = optim.SGD(model.parameters(), lr=0.05)
    x_all, y_all = batches(28, 200, (10,), 4, count=1)[0]

    @wrap
    def step():
        idx = tg.randint(0, 200, (16,))
        x = x_all[idx] + 0.1 * tg.randn(16, 10)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y_all[idx])
        loss.backward()
        opt.step()
        return loss
    return lambda i: step(), lambda: state_of(model, opt), step


@case
def logging_inside_the_step(wrap):
    """The most common lines of a training loop, inside the step: loss.item() into a
    history, a running sum, a formatted line, and a progress bar's postfix."""
    model = mlp([10, 24, 4], seed=29)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = batches(29, 24, (10,), 4)
    hist, lines, postfix = [], [], []
    running = 0.0

    class Bar:
        def set_postfix(self, **kw):
            postfix.append(dict(kw))
    bar = Bar()

    @wrap
    def step(x, y):
        nonlocal running
        opt.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        opt.step()
        hist.append(loss.item())
        running += loss.item()
        acc = (out.argmax(1) == y).float().mean()
        lines.append(f"loss {loss.item():.4f} acc {acc.item():.3f}")
        bar.set_postfix(loss=float(loss), acc=acc.item())
        return loss

    def call(i):
        step(*data[i % 6])
        return list(hist), running, list(lines), list(postfix)
    return call, lambda: state_of(model, opt), step
