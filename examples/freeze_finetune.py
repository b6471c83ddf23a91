"""Freeze a layer and train the rest.

    python examples/freeze_finetune.py          # writes examples/out/freeze_finetune.png

Sequential(Linear(1, 10), ReLU, Linear(10, 1)) fits y = x^2 + noise. The first layer's
parameters get ``requires_grad = False``; after 100 epochs of SGD over *all* parameters
they are bit-for-bit unchanged (they never get a gradient, so the optimizer skips them),
while the last layer moved. For comparison the same network, from the same initial
weights, is also trained with every layer free.
"""
import argparse
import os

import numpy as np

import tapegrad as tg
from tapegrad import nn, optim

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG plot")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ap.add_argument("--quiet", action="store_true", help="do not print the parameters")
    return ap.parse_args(argv)


def make_net():
    return nn.Sequential(nn.Linear(1, 10), nn.ReLU(), nn.Linear(10, 1))


def train(net, x, y, epochs, lr, progress, desc):
    from tqdm.auto import trange
    opt = optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    losses = []
    for _ in trange(epochs, desc=desc, disable=None if progress else True, mininterval=0.5):
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def snapshot(net):
    return [p.detach().numpy().copy() for p in net.parameters()]


def main(argv=None):
    args = parse_args(argv)
    tg.manual_seed(args.seed)
    x = tg.linspace(-1, 1, args.points).unsqueeze(1)
    y = x.pow(2) + 0.2 * tg.rand(*x.shape)

    net = make_net()
    free = make_net()
    free.load_state_dict(net.state_dict())          # same starting weights

    for p in net[0].parameters():                   # freeze the hidden layer
        p.requires_grad = False
    if not args.quiet:
        print("before training:")
        for name, p in net.named_parameters():
            print(f"{name} = {p}")
    before = snapshot(net)
    losses = train(net, x, y, args.epochs, args.lr, not args.no_progress, "first layer frozen")
    losses_free = train(free, x, y, args.epochs, args.lr, not args.no_progress, "all layers")
    after = snapshot(net)
    if not args.quiet:
        print(f"after {args.epochs} epochs:")
        for name, p in net.named_parameters():
            print(f"{name} = {p}")

    names = [n for n, _ in net.named_parameters()]
    frozen = [n.startswith("0.") for n in names]
    unchanged = {n: bool(np.array_equal(b, a)) for n, b, a in zip(names, before, after)}
    change = {n: float(np.max(np.abs(a - b))) for n, b, a in zip(names, before, after)}
    result = {
        "frozen_unchanged": all(unchanged[n] for n, f in zip(names, frozen) if f),
        "trained_changed": all(not unchanged[n] for n, f in zip(names, frozen) if not f),
        "max_change": change, "losses": losses, "losses_all_layers": losses_free,
        "final_loss": losses[-1], "final_loss_all_layers": losses_free[-1], "png": None,
    }
    if not args.no_plot:
        with tg.no_grad():
            fits = {"first layer frozen": net(x).numpy(), "all layers trained": free(x).numpy()}
        result["png"] = plot(x.numpy(), y.numpy(), fits, losses, losses_free, args.out)
    print(f"frozen first layer, {args.epochs} epochs of SGD(lr={args.lr}): loss "
          f"{losses[0]:.4f} -> {losses[-1]:.4f} (all layers trained: "
          f"{losses_free[-1]:.4f})")
    for n in names:
        state = "unchanged (bit for bit)" if unchanged[n] else f"moved, max |change| " \
                                                              f"{change[n]:.3g}"
        print(f"  {n:<9} {'frozen ' if n.startswith('0.') else 'trained'}: {state}")
    if result["png"]:
        print(f"  plot: {result['png']}")
    return result


def plot(x, y, fits, losses, losses_free, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.scatter(x[:, 0], y[:, 0], s=8, color="gray", label="data")
    for label, f in fits.items():
        ax1.plot(x[:, 0], f[:, 0], label=label)
    ax1.set(xlabel="x", ylabel="y", title="fit")
    ax1.legend()
    ax2.plot(losses, label="first layer frozen")
    ax2.plot(losses_free, label="all layers trained")
    ax2.set(xlabel="epoch", ylabel="MSE loss", yscale="log", title="loss")
    ax2.legend()
    fig.tight_layout()
    path = os.path.join(out, "freeze_finetune.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
