"""Linear regression by hand-written gradient descent, run twice:
with the gradients zeroed after each step, and without, where they accumulate.

    python examples/linear_regression.py          # writes examples/out/linear_regression.png

Without ``w.grad.data.zero_()`` each step uses the sum of all gradients so far, which acts
like momentum with no friction: the loss oscillates (here between about 0.7 and 95)
instead of settling. A tutorial would stop as soon as the loss drops below 1; that stop
is off by default so that both curves cover the same iterations (``--stop-below 1``
turns it on; the non-zeroed run then stops at the bottom of its first swing).
"""
import argparse
import os

import numpy as np

import tapegrad as tg

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stop-below", type=float, default=None,
                    help="stop when the loss drops below this value (tutorials use 1)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG plot")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return ap.parse_args(argv)


def fit(zero_grad, iters, lr, seed, stop_below=None, progress=True):
    """The seed's loop; returns the loss per iteration and the final w and b."""
    from tqdm.auto import trange
    tg.manual_seed(seed)
    x = tg.rand(20, 1) * 10
    y = 2 * x + (5 + tg.randn(20, 1))
    w = tg.randn(1, requires_grad=True)
    b = tg.zeros(1, requires_grad=True)
    losses = []
    label = "zeroed" if zero_grad else "accumulated"
    for _ in trange(iters, desc=f"grads {label}", disable=None if progress else True,
                     mininterval=0.5):
        y_pred = tg.add(tg.mul(w, x), b)
        loss = (0.5 * (y - y_pred) ** 2).mean()
        loss.backward()
        b.data.sub_(lr * b.grad)
        w.data.sub_(lr * w.grad)
        if zero_grad:
            w.grad.data.zero_()
            b.grad.data.zero_()
        losses.append(loss.item())
        if stop_below is not None and loss.data.numpy() < stop_below:
            break
    return {"losses": losses, "w": w.item(), "b": b.item()}


def main(argv=None):
    args = parse_args(argv)
    runs = {zero: fit(zero, args.iters, args.lr, args.seed, args.stop_below,
                      not args.no_progress) for zero in (True, False)}
    zeroed, accumulated = runs[True], runs[False]
    tail = max(1, len(accumulated["losses"]) // 5)
    result = {
        "losses_zeroed": zeroed["losses"],
        "losses_accumulated": accumulated["losses"],
        "final_loss_zeroed": zeroed["losses"][-1],
        "final_loss_accumulated": accumulated["losses"][-1],
        "tail_range_zeroed": _range(zeroed["losses"][-tail:]),
        "tail_range_accumulated": _range(accumulated["losses"][-tail:]),
        "w_zeroed": zeroed["w"], "b_zeroed": zeroed["b"],
        "w_accumulated": accumulated["w"], "b_accumulated": accumulated["b"],
        "png": None,
    }
    if not args.no_plot:
        result["png"] = plot(zeroed["losses"], accumulated["losses"], args.out)
    print(f"linear regression y = 2x + 5 + noise, {args.iters} iterations, lr={args.lr}")
    for name, run in (("zeroed", zeroed), ("accumulated", accumulated)):
        lo, hi = result[f"tail_range_{name}"]
        print(f"  grads {name:<11}: w={run['w']:.3f} b={run['b']:.3f}, final loss "
              f"{run['losses'][-1]:.4f}, last {tail} losses within [{lo:.3f}, {hi:.3f}]")
    if result["png"]:
        print(f"  plot: {result['png']}")
    return result


def _range(values):
    return float(np.min(values)), float(np.max(values))


def plot(zeroed, accumulated, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(len(accumulated)), accumulated, color="tab:orange", linewidth=0.8,
            label="no zeroing: gradients accumulate")
    ax.plot(np.arange(len(zeroed)), zeroed, color="tab:blue", linewidth=2.5,
            label="grad.zero_() after each step")
    ax.set(xlabel="iteration", ylabel="loss  0.5 (y - wx - b)^2", yscale="log",
           title="Linear regression: zeroing the gradients matters")
    ax.legend(loc="upper right", framealpha=1.0)
    fig.tight_layout()
    path = os.path.join(out, "linear_regression.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
