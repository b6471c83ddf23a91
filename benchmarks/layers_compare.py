"""One float32 training step of three layer stacks in tapegrad eager, tapegrad compiled
and PyTorch eager, side by side.

    python benchmarks/layers_compare.py [--quick] [--only NAME[,NAME]] [--out DIR]

Workloads (``WORKLOADS``), each a step of zero_grad, forward, loss, backward and
optimizer step, the same source for both libraries:

- ``cnn``: the model of ``examples/digits_cnn.py`` (its ``make_model``, mirrored in
  torch: a mirror that drifts fails the loss check) on batches of 32 8x8 images,
  cross-entropy, AdamW as in the example.
- ``gru``: ``nn.GRU(64, 64)``, sequence 32, batch 32, time first, a Linear head on every
  step, MSE, SGD with momentum.
- ``transformer``: ``nn.TransformerEncoderLayer(d_model=64, nhead=4,
  dim_feedforward=256, dropout=0.0, batch_first=True)`` (256 rather than PyTorch's
  default 2048, so that attention and not the feed-forward block sets the size), sequence
  64, batch 16, a Linear head with per-token cross-entropy, Adam.

Every implementation starts from the same weights (a seeded tapegrad model's state dict,
loaded into each). Checked first, on fresh models with every dropout probability set to
0 (PyTorch draws other masks): the losses of the first ``CHECK_STEPS`` steps agree with
tapegrad eager's within ``RTOL``, and the compiled step replays. Then the timed models,
dropout as defined: tapegrad eager and compiled, seeded alike, give the same losses (the
replay draws the eager masks). A disagreement or a compiled step that records more than
twice, never replays or falls back to eager calls prints a FAIL line and makes the exit
status nonzero.

Timing as ``compare.py``: time per step is the minimum over repeats of the mean time of
a timed loop, each repeat lasting at least 0.1 s (0.02 s with --quick) or one call;
consecutive calls alternate between two batches; the checked steps are the warm-up.
First call: the first step of a fresh step function (for tapegrad compiled, the
recording call plus the first replay). Thread pools stay at their defaults.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

# this checkout's tapegrad and examples/, also when run as a script
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tapegrad as tg  # noqa: E402
from benchmarks.compare import cpu_name, fmt, repeats, thread_pools  # noqa: E402
from examples.digits_cnn import make_model as digits_cnn_model  # noqa: E402

CHECK_STEPS = 3
RTOL = 1e-4             # float32 losses after a few optimizer steps, summed in other orders
SEED = 0


# -- workloads -----------------------------------------------------------------------------
class Workload:
    """A model, its loss and optimizer, written once for tapegrad and torch (``lib``)."""
    name = about = ""

    def build(self, lib):
        raise NotImplementedError

    def forward(self, model, x):
        return model(x)

    def loss(self, lib, out, y):
        raise NotImplementedError

    def optimizer(self, lib, params):
        raise NotImplementedError

    def inputs(self):
        """Two (x, y) NumPy batches; timed calls alternate between them."""
        raise NotImplementedError


class CNN(Workload):
    name = "cnn"
    about = ("examples/digits_cnn.py's model (3 Conv2d, 2 BatchNorm2d, MaxPool2d, "
             "AdaptiveAvgPool2d, Dropout 0.2, Linear), batch 32 of 1x8x8, "
             "cross-entropy, AdamW lr 0.01")

    def build(self, lib):
        if lib is tg:
            return digits_cnn_model()
        nn = lib.nn
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, 10))

    def loss(self, lib, out, y):
        return lib.nn.functional.cross_entropy(out, y)

    def optimizer(self, lib, params):
        return lib.optim.AdamW(params, lr=0.01, weight_decay=1e-4)

    def inputs(self):
        rng = np.random.default_rng(1)
        return [(rng.random((32, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 32))
                for _ in range(2)]


class GRU(Workload):
    name = "gru"
    about = ("GRU(64, 64), sequence 32, batch 32 (time first), Linear(64, 8) on every "
             "step, MSE, SGD lr 0.05 momentum 0.9")

    def build(self, lib):
        nn = lib.nn
        return nn.ModuleList([nn.GRU(64, 64), nn.Linear(64, 8)])

    def forward(self, model, x):
        return model[1](model[0](x)[0])

    def loss(self, lib, out, y):
        return lib.nn.functional.mse_loss(out, y)

    def optimizer(self, lib, params):
        return lib.optim.SGD(params, lr=0.05, momentum=0.9)

    def inputs(self):
        rng = np.random.default_rng(2)
        return [(rng.standard_normal((32, 32, 64), dtype=np.float32),
                 rng.standard_normal((32, 32, 8), dtype=np.float32)) for _ in range(2)]


class Transformer(Workload):
    name = "transformer"
    about = ("TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=256, "
             "dropout=0.0, batch_first=True), sequence 64, batch 16, Linear(64, 10) "
             "per token, cross-entropy, Adam lr 1e-3")

    def build(self, lib):
        nn = lib.nn
        return nn.ModuleList([
            nn.TransformerEncoderLayer(64, 4, dim_feedforward=256, dropout=0.0,
                                       batch_first=True),
            nn.Linear(64, 10)])

    def forward(self, model, x):
        return model[1](model[0](x)).reshape(-1, 10)

    def loss(self, lib, out, y):
        return lib.nn.functional.cross_entropy(out, y)

    def optimizer(self, lib, params):
        return lib.optim.Adam(params, lr=1e-3)

    def inputs(self):
        rng = np.random.default_rng(3)
        return [(rng.standard_normal((16, 64, 64), dtype=np.float32),
                 rng.integers(0, 10, 16 * 64)) for _ in range(2)]


WORKLOADS = {w.name: w for w in [CNN(), GRU(), Transformer()]}


# -- implementations: make(workload, init, inputs) -> (call(i), the compiled step or None) -----
class Impl:
    """tapegrad or PyTorch, optionally with the step wrapped by ``tg.compile``."""

    def __init__(self, lib, compiled=False):
        self.lib, self.compiled = lib, compiled

    def make(self, w, init, inputs, dropout=True):
        lib = self.lib
        model = w.build(lib)
        model.load_state_dict({k: lib.tensor(v) for k, v in init.items()})
        if not dropout:
            for m in model.modules():
                if isinstance(m, lib.nn.Dropout):
                    m.p = 0.0
        model.train()
        opt = w.optimizer(lib, model.parameters())

        def step(x, y):
            opt.zero_grad()
            loss = w.loss(lib, w.forward(model, x), y)
            loss.backward()
            opt.step()
            return loss
        if self.compiled:
            step = tg.compile(step)
        data = [[lib.from_numpy(a) for a in batch] for batch in inputs]
        return (lambda i: step(*data[i & 1])), (step if self.compiled else None)


def load_impls():
    """{column: implementation}; PyTorch's column is missing when it is not installed."""
    impls = {"tapegrad eager": Impl(tg), "tapegrad compiled": Impl(tg, compiled=True)}
    try:
        import torch
    except ImportError:
        return impls, ["PyTorch is not installed: its column is skipped."]
    impls["PyTorch eager"] = Impl(torch)
    return impls, []


def initial_weights(w):
    """The state dict of a seeded tapegrad model, as NumPy arrays."""
    tg.manual_seed(SEED)
    return {k: v.detach().numpy().copy() for k, v in w.build(tg).state_dict().items()}


# -- measuring -------------------------------------------------------------------------
def losses(call, start, n):
    """Losses of calls ``start`` .. ``start + n - 1`` and the seconds spent in the calls."""
    out, spent = [], 0.0
    for i in range(start, start + n):
        t0 = time.perf_counter()
        loss = call(i)
        spent += time.perf_counter() - t0
        out.append(float(loss.item()))
    return out, spent


def disagreement(got, want):
    """The largest relative difference of two loss lists."""
    return max(abs(g - r) / max(abs(r), 1e-30) for g, r in zip(got, want))


def replay_failure(step, replays_before):
    """Why the compiled step did not replay as it should since ``replays_before``
    replays, or None."""
    if step.fallbacks or step.records > 2 or step.replays <= replays_before:
        return (f"{step.records} recordings, {step.replays} replays, {step.fallbacks} "
                "eager fallbacks")
    return None


def run_workload(w, impls, args):
    """({column: (µs per step: min and median over repeats, first-call ms)}, lines saying
    what was checked); failures go to ``args.failures``."""
    inputs = w.inputs()
    init = initial_weights(w)

    def fail(col, why):
        args.failures.append(f"FAIL {w.name} / {col}: {why}")
        print(args.failures[-1], file=sys.stderr)

    checked = {}
    for col, impl in impls.items():
        call, step = impl.make(w, init, inputs, dropout=False)
        checked[col], _ = losses(call, 0, CHECK_STEPS)
        if step is not None and (why := replay_failure(step, 0)):
            fail(col, f"check steps: {why}")
    ref = checked["tapegrad eager"]
    errs = {col: disagreement(got, ref) for col, got in checked.items()
            if col != "tapegrad eager"}
    for col, err in errs.items():
        if err > RTOL:
            fail(col, f"losses {checked[col]} differ from tapegrad eager's {ref} (max "
                      f"relative error {err:.3g}, dropout off)")
    lines = [f"`{w.name}`, dropout off: tapegrad eager's losses "
             + ", ".join(f"{v:.6g}" for v in ref) + "; max relative difference "
             + ", ".join(f"{col} {err:.2g}" for col, err in errs.items())]
    row, timed = {}, {}
    for col, impl in impls.items():
        call, step = impl.make(w, init, inputs)
        tg.manual_seed(SEED + 1)
        timed[col], first = losses(call, 0, 1 if step is None else 2)
        timed[col] += losses(call, len(timed[col]), CHECK_STEPS - len(timed[col]))[0]
        before = 0 if step is None else step.replays
        reps = repeats(call, CHECK_STEPS, args.repeat, args.min_time)
        row[col] = (min(reps) * 1e6, statistics.median(reps) * 1e6, first * 1e3)
        if step is not None:
            if why := replay_failure(step, before):
                fail(col, why)
            lines.append(f"`{w.name}`, {col}: {step.records} recording(s), {step.replays} "
                         f"replays, {step.fallbacks} eager fallbacks")
        print(f"  {col}: {fmt(row[col][0], ' µs')}", file=sys.stderr)
    err = disagreement(timed["tapegrad compiled"], timed["tapegrad eager"])
    if err > RTOL:
        fail("tapegrad compiled", f"losses {timed['tapegrad compiled']} differ from "
                                  f"tapegrad eager's {timed['tapegrad eager']} (dropout on, "
                                  f"same seed; max relative error {err:.3g})")
    lines.append(f"`{w.name}`, dropout as defined, same seed: tapegrad compiled against "
                 f"eager, max relative difference {err:.2g}")
    return row, lines


# -- report ------------------------------------------------------------------------------
def header(impls, notes, args, load):
    import numba
    versions = [f"tapegrad {tg.__version__}", f"NumPy {np.__version__}",
                f"Numba {numba.__version__}"]
    if "PyTorch eager" in impls:
        import torch
        versions.append(f"PyTorch {torch.__version__} (torch.get_num_threads() = "
                        f"{torch.get_num_threads()}, its default)")
    cpu = cpu_name()
    lines = [
        "# tapegrad layers against PyTorch eager: one float32 training step", "",
        f"- Machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; load average "
        f"{load[0]:.2f} before / {load[1]:.2f} after (wall-clock timings: load inflates "
        "them).",
        "- Libraries: " + ", ".join(versions) + ".",
        f"- Thread pools at their defaults{thread_pools()}.",
        f"- Time per step: minimum over {args.repeat} repeats of the mean of a timed loop, "
        f"each repeat at least {args.min_time} s or one call; calls alternate between two "
        "batches. The median over the repeats is in the second table, as a measure of "
        "the noise.",
        "- First call: the first step of a fresh step function; for tapegrad compiled "
        "the recording call plus the first replay.",
        f"- Checked first: with dropout off, the losses of the first {CHECK_STEPS} steps "
        f"agree with tapegrad eager's (relative {RTOL:g}); with dropout on and the same "
        "seed, tapegrad compiled's agree with tapegrad eager's; tapegrad compiled "
        "replays (at most two recordings, no eager fallback).",
    ]
    return lines + [f"- {n}" for n in notes]


def markdown(rows, cols, base, head, checks):
    peers = [c for c in cols if c != base]
    t1 = ["| workload | " + " | ".join(f"{c} µs" for c in cols) + " | "
          + " | ".join(f"{c} / {base}" for c in peers) + " |",
          "|---|" + "---:|" * (len(cols) + len(peers))]
    for name, row in rows.items():
        b = row[base][0] if base in row else None
        ratios = [fmt(row[c][0] / b, "x") if c in row and b else "n/a" for c in peers]
        t1.append(f"| {name} | " + " | ".join(fmt(row[c][0]) if c in row else "n/a"
                                             for c in cols)
                  + " | " + " | ".join(ratios) + " |")
    t2 = ["| workload | " + " | ".join(f"{c} median µs" for c in cols) + " | "
          + " | ".join(f"{c} first call ms" for c in cols) + " |",
          "|---|" + "---:|" * (2 * len(cols))]
    for name, row in rows.items():
        t2.append(f"| {name} | " + " | ".join(fmt(row[c][1]) if c in row else "n/a"
                                             for c in cols)
                  + " | " + " | ".join(fmt(row[c][2]) if c in row else "n/a"
                                       for c in cols) + " |")
    about = [f"- `{n}`: {WORKLOADS[n].about}" for n in rows]
    return "\n".join(head + ["", "## Time per step (µs)", ""] + t1 + [""] + about
                     + ["", "## Median per step and first call", ""] + t2
                     + ["", "## Checks", ""] + [f"- {c}" for c in checks]) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats of >= 0.02 s")
    ap.add_argument("--only", help="comma-separated workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--out", help="also write layers_compare.md to this folder")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(sorted(unknown))}")
    args.repeat, args.min_time = (3, 0.02) if args.quick else (5, 0.1)
    args.failures = []
    impls, notes = load_impls()
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    load0 = os.getloadavg()[0]
    rows, checks = {}, []
    for name in names:
        print(f"{name}:", file=sys.stderr)
        rows[name], lines = run_workload(WORKLOADS[name], impls, args)
        checks += lines
    cols = list(impls)
    md = markdown(rows, cols, "tapegrad compiled",
                  header(impls, notes, args, (load0, os.getloadavg()[0])), checks)
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "layers_compare.md"), "w") as f:
            f.write(md)
    for line in args.failures:
        print(line)
    return 1 if args.failures else 0


if __name__ == "__main__":
    sys.exit(main())
