"""asv benchmarks of a training step with nn and optim, tapegrad against PyTorch eager.

Two MLPs, float32, mean-squared error, SGD: 64-128-128-10 with tanh at batch 64 (per-op
overhead dominates) and 784-256-10 with relu at batch 512 (matrix products dominate).
Both libraries start from the same weights. PyTorch runs when importable (else asv
reports it skipped), with its default thread count, as a user would run it.
"""
import numpy as np

import tapegrad as tg

CONFIGS = {"small": ([64, 128, 128, 10], "tanh", 64), "large": ([784, 256, 10], "relu", 512)}


def build(lib, name):
    """(model, optimizer, x, target) for config ``name`` in ``lib`` (tapegrad or torch)."""
    sizes, act, batch = CONFIGS[name]
    rng = np.random.default_rng(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = lib.nn.Linear(a, b)
        with lib.no_grad():
            lin.weight.copy_(lib.tensor(rng.uniform(-a ** -0.5, a ** -0.5, (b, a))
                                        .astype(np.float32)))
            lin.bias.zero_()
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(lib.nn.Tanh() if act == "tanh" else lib.nn.ReLU())
    model = lib.nn.Sequential(*layers)
    opt = lib.optim.SGD(model.parameters(), lr=0.01)
    x = lib.tensor(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = lib.tensor(rng.standard_normal((batch, sizes[-1])).astype(np.float32))
    return model, opt, x, y


def _library(name):
    """torch for "torch" (asv reports the case skipped where it is not installed), else
    tapegrad."""
    if name != "torch":
        return tg
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    return torch


def step(lib, model, opt, x, y):
    opt.zero_grad()
    loss = lib.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    return loss


class TrainStep:
    params = (["small", "large"], ["tapegrad", "torch"])
    param_names = ["mlp", "library"]
    timeout = 120

    def setup(self, mlp, library):
        self.lib = lib = _library(library)
        self.state = build(lib, mlp)
        for _ in range(3):
            step(lib, *self.state)

    def time_step(self, mlp, library):
        step(self.lib, *self.state)


# The parameter shapes of a TransformerEncoderLayer(64, 4 heads, feed-forward 256) and a
# Linear(64, 10) head: 14 tensors, 50k values
PARAM_SHAPES = [(192, 64), (192,), (64, 64), (64,), (256, 64), (256,), (64, 256), (64,),
                (64,), (64,), (64,), (64,), (10, 64), (10,)]
OPTIMIZERS = {"adam": ("Adam", {"lr": 1e-3}),
              "adamw": ("AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
              "sgd_momentum": ("SGD", {"lr": 1e-2, "momentum": 0.9})}


class OptimizerStep:
    """One optimizer step over fixed gradients: tapegrad eager and compiled, PyTorch
    eager (its default single-tensor path)."""
    params = (list(OPTIMIZERS), ["tapegrad", "tapegrad compiled", "torch"])
    param_names = ["optimizer", "library"]
    timeout = 120

    def setup(self, optimizer, library):
        lib = _library(library)
        rng = np.random.default_rng(0)
        ps = []
        for shape in PARAM_SHAPES:
            p = lib.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
            p.grad = lib.tensor(rng.standard_normal(shape).astype(np.float32))
            ps.append(p)
        name, opts = OPTIMIZERS[optimizer]
        opt = getattr(lib.optim, name)(ps, **opts)
        self.step = tg.compile(opt.step) if library == "tapegrad compiled" else opt.step
        for _ in range(3):
            self.step()

    def time_step(self, optimizer, library):
        self.step()
