"""A small CNN on scikit-learn's bundled 8x8 digits: Conv2d, BatchNorm, pooling, a
DataLoader and a OneCycle schedule (runs offline).

    python examples/digits_cnn.py              # ~98% test accuracy, examples/out/digits_cnn.png
    python examples/digits_cnn.py --compile    # the same steps through tg.compile

The training loop is PyTorch's, with ``torch`` renamed ``tapegrad``.
"""
import argparse
import os
import time

import numpy as np

import tapegrad as tg
from tapegrad import nn, optim
from tapegrad.utils.data import DataLoader, TensorDataset

try:
    from .digits_mlp import load_data, small_blas
except ImportError:         # run as a script
    from digits_mlp import load_data, small_blas

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--test-size", type=float, default=0.25)
    ap.add_argument("--limit", type=int, default=None,
                    help="use only the first N digits (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="train through tg.compile")
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG plot")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return ap.parse_args(argv)


def make_model():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),                                     # 32 x 4 x 4
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, 10))


def main(argv=None):
    args = parse_args(argv)
    from tqdm.auto import trange

    tg.manual_seed(args.seed)
    Xtr, Xte, ytr, yte = load_data(args.test_size, args.seed, args.limit)
    images = (lambda X: tg.tensor(X.reshape(-1, 1, 8, 8)))
    train = DataLoader(TensorDataset(images(Xtr), tg.tensor(ytr)),
                       batch_size=args.batch_size, shuffle=True, drop_last=True)
    Xte_t, yte_t = images(Xte), tg.tensor(yte)

    model = make_model()
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                          steps_per_epoch=len(train))

    def step(xb, yb):
        model.train()
        opt.zero_grad()
        logits = model(xb)
        loss = loss_fn(logits, yb)
        loss.backward()
        opt.step()
        return loss, (logits.argmax(1) == yb).sum()
    if args.compile:
        step = tg.compile(step)

    history = {"train_loss": [], "train_acc": [], "test_acc": []}
    t0 = time.perf_counter()
    with small_blas():
        bar = trange(args.epochs, desc="digits cnn",
                     disable=True if args.no_progress else None, mininterval=0.5)
        for _ in bar:
            total, correct, seen = 0.0, 0, 0
            for xb, yb in train:
                loss, hits = step(xb, yb)
                sched.step()
                total += loss.item() * len(yb)
                correct += hits.item()
                seen += len(yb)
            model.eval()
            with tg.no_grad():
                test_acc = (model(Xte_t).argmax(1) == yte_t).float().mean().item()
            history["train_loss"].append(total / seen)
            history["train_acc"].append(correct / seen)
            history["test_acc"].append(test_acc)
            bar.set_postfix(loss=f"{total / seen:.4f}", test_acc=f"{test_acc:.3f}")
    seconds = time.perf_counter() - t0

    png = None if args.no_plot else plot(history, args.out)
    result = {"test_accuracy": history["test_acc"][-1], "history": history,
              "epochs": args.epochs, "n_train": len(Xtr), "n_test": len(Xte),
              "seconds": seconds, "png": png,
              "counts": (step.records, step.replays, step.fallbacks) if args.compile
              else None}
    how = "compiled" if args.compile else "eager"
    print(f"digits CNN ({how}), AdamW + OneCycle lr={args.lr}: {len(Xtr)} train / "
          f"{len(Xte)} test images, {args.epochs} epochs in {seconds:.1f} s")
    print(f"  train loss {history['train_loss'][-1]:.4f}, test accuracy "
          f"{result['test_accuracy']:.2%}")
    if args.compile:
        print(f"  tg.compile: {step.records} recordings, {step.replays} replays, "
              f"{step.fallbacks} eager fallbacks")
    if png:
        print(f"  plot: {png}")
    return result


def plot(history, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out, exist_ok=True)
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, history["train_loss"])
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="train loss")
    ax2.plot(epochs, history["train_acc"], label="train")
    ax2.plot(epochs, history["test_acc"], label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax2.legend()
    fig.tight_layout()
    path = os.path.join(out, "digits_cnn.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
