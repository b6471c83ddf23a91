"""A small MLP on scikit-learn's bundled 8x8 digits, trained with Adam (runs offline).

    python examples/digits_mlp.py     # ~97% test accuracy, plot in examples/out/digits_mlp.png
    python examples/digits_mlp.py --epochs 5 --out /tmp/plots

The training loop is PyTorch's, with ``torch`` renamed ``tapegrad``.
"""
import argparse
import contextlib
import os
import time

import numpy as np

import tapegrad as tg
from tapegrad import nn, optim

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--test-size", type=float, default=0.25)
    ap.add_argument("--limit", type=int, default=None,
                    help="use only the first N digits (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG plot")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return ap.parse_args(argv)


def load_data(test_size, seed, limit=None):
    """The 1797 digits of scikit-learn (bundled, no download), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def small_blas():
    """One BLAS thread: the matrices here are tiny, and on a busy 2-core machine
    OpenBLAS's spinning worker threads made each small matmul 100x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def evaluate(model, loss_fn, X, y):
    model.eval()
    with tg.no_grad():
        logits = model(X)
        loss = loss_fn(logits, y).item()
        acc = float(np.mean(logits.numpy().argmax(1) == y.numpy()))
    model.train()
    return loss, acc


def main(argv=None):
    args = parse_args(argv)
    from tqdm.auto import trange

    tg.manual_seed(args.seed)
    Xtr, Xte, ytr, yte = load_data(args.test_size, args.seed, args.limit)
    Xtr_t, ytr_t = tg.tensor(Xtr), tg.tensor(ytr)
    Xte_t, yte_t = tg.tensor(Xte), tg.tensor(yte)

    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(),
                          nn.Linear(args.hidden, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    order = np.random.default_rng(args.seed)

    history = {"train_loss": [], "test_loss": [], "train_acc": [], "test_acc": []}
    t0 = time.perf_counter()
    with small_blas():
        bar = trange(args.epochs, desc="digits", disable=True if args.no_progress else None,
                     mininterval=0.5)
        for _ in bar:
            perm = order.permutation(len(Xtr))
            for start in range(0, len(perm), args.batch_size):
                idx = perm[start:start + args.batch_size]
                xb, yb = tg.tensor(Xtr[idx]), tg.tensor(ytr[idx])
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
            tr_loss, tr_acc = evaluate(model, loss_fn, Xtr_t, ytr_t)
            te_loss, te_acc = evaluate(model, loss_fn, Xte_t, yte_t)
            for k, v in zip(history, (tr_loss, te_loss, tr_acc, te_acc)):
                history[k].append(v)
            bar.set_postfix(loss=f"{tr_loss:.4f}", test_acc=f"{te_acc:.3f}")
    seconds = time.perf_counter() - t0

    png = None if args.no_plot else plot(history, args.out)
    result = {"test_accuracy": history["test_acc"][-1],
              "train_accuracy": history["train_acc"][-1],
              "final_train_loss": history["train_loss"][-1],
              "history": history, "epochs": args.epochs, "n_train": len(Xtr),
              "n_test": len(Xte), "seconds": seconds, "png": png}
    print(f"digits MLP 64-{args.hidden}-10, Adam lr={args.lr}: {len(Xtr)} train / "
          f"{len(Xte)} test images, {args.epochs} epochs in {seconds:.1f} s")
    print(f"  train loss {result['final_train_loss']:.4f}, train accuracy "
          f"{result['train_accuracy']:.2%}, test accuracy {result['test_accuracy']:.2%}")
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
    ax1.plot(epochs, history["train_loss"], label="train")
    ax1.plot(epochs, history["test_loss"], label="test")
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    ax1.legend()
    ax2.plot(epochs, history["train_acc"], label="train")
    ax2.plot(epochs, history["test_acc"], label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax2.legend()
    fig.tight_layout()
    path = os.path.join(out, "digits_mlp.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
