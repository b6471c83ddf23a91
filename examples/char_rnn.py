"""A character-level GRU language model on a small bundled text: Embedding, GRU and
Linear in float32, a DataLoader, Adam with a cosine schedule and gradient clipping
(runs offline).

    python examples/char_rnn.py            # val 3.0 bits/char (unigram 4.5), ~20 s
    python examples/char_rnn.py --compile  # the same steps through tg.compile

The text (examples/data/tiny.txt, 19 KB) is Shakespeare's sonnets and speeches, public
domain; ``--data`` trains on any other UTF-8 text file. The loss curves go to
examples/out/char_rnn.png. The training loop is PyTorch's, with ``torch`` renamed
``tapegrad``.
"""
import argparse
import math
import os
import time

import numpy as np

import tapegrad as tg
from tapegrad import nn, optim
from tapegrad.utils.data import DataLoader, TensorDataset

try:
    from .digits_mlp import small_blas
except ImportError:         # run as a script
    from digits_mlp import small_blas

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "out")
DEFAULT_DATA = os.path.join(HERE, "data", "tiny.txt")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="UTF-8 text file to train on")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64, help="characters per window")
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--clip", type=float, default=1.0, help="max gradient norm")
    ap.add_argument("--val-frac", type=float, default=0.1,
                    help="fraction of the text, from its end, held out for validation")
    ap.add_argument("--sample-every", type=int, default=4,
                    help="print a sample every N epochs (0: only at the end)")
    ap.add_argument("--sample-len", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.8,
                    help="sampling temperature (0: greedy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="train through tg.compile")
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG plot")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return ap.parse_args(argv)


def load_text(path, val_frac):
    """(train ids, val ids, vocabulary): the vocabulary covers the whole text, so every
    validation character has an id."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.array([index[c] for c in text], np.int64)
    cut = int(len(ids) * (1 - val_frac))
    return ids[:cut], ids[cut:], vocab


def windows(ids, seq_len, stride):
    """Inputs and next-character targets of every window of seq_len + 1 characters."""
    starts = np.arange(0, len(ids) - seq_len, stride)
    w = ids[starts[:, None] + np.arange(seq_len + 1)]
    return tg.tensor(w[:, :-1]), tg.tensor(w[:, 1:])


def unigram_loss(train, val, vocab_size):
    """Cross-entropy (nats/char) of the validation text under the training text's
    character frequencies (add-one smoothed): what a model without context achieves."""
    p = (np.bincount(train, minlength=vocab_size) + 1.0) / (len(train) + vocab_size)
    return float(-np.log(p[val]).mean())


class CharRNN(nn.Module):
    def __init__(self, vocab_size, embed, hidden):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x, h=None):
        y, h = self.gru(self.embed(x), h)
        return self.head(y), h


def evaluate(model, x, y):
    """Mean next-character cross-entropy over the windows (nats)."""
    model.eval()
    with tg.no_grad():
        logits, _ = model(x)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           y.reshape(-1)).item()


def sample(model, vocab, prompt, n, temperature, rng):
    """n characters after prompt, one at a time with the GRU state carried: the most
    likely one (temperature 0) or drawn from softmax(logits / temperature)."""
    model.eval()
    ids = [vocab.index(c) for c in prompt]
    out = []
    with tg.no_grad():
        logits, h = model(tg.tensor([ids]))
        for _ in range(n):
            last = logits[0, -1]
            if temperature == 0:
                nxt = int(last.argmax().item())
            else:
                p = (last / temperature).softmax(-1).numpy().astype(np.float64)
                nxt = int(rng.choice(len(vocab), p=p / p.sum()))
            out.append(vocab[nxt])
            logits, h = model(tg.tensor([[nxt]]), h)
    return "".join(out)


def main(argv=None):
    args = parse_args(argv)
    from tqdm.auto import trange

    tg.manual_seed(args.seed)
    train_ids, val_ids, vocab = load_text(args.data, args.val_frac)
    xtr, ytr = windows(train_ids, args.seq_len, max(args.seq_len // 2, 1))
    xva, yva = windows(val_ids, args.seq_len, args.seq_len)
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=args.batch_size, shuffle=True,
                       drop_last=True, generator=np.random.default_rng(args.seed))
    baseline = unigram_loss(train_ids, val_ids, len(vocab))

    model = CharRNN(len(vocab), args.embed, args.hidden)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * len(train)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=args.lr / 20)
    draws = np.random.default_rng(args.seed)
    prompt = "".join(vocab[i] for i in train_ids[:5])

    def continuation(temperature):
        return sample(model, vocab, prompt, args.sample_len, temperature, draws)

    def step(xb, yb):
        model.train()
        opt.zero_grad()
        logits, _ = model(xb)
        loss = loss_fn(logits.reshape(-1, len(vocab)), yb.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        return loss
    if args.compile:
        step = tg.compile(step)

    history = {"step_loss": [], "lr": [], "train_loss": [], "val_loss": [], "val_step": []}
    train_seconds = 0.0         # the steps alone, without evaluation and sampling
    t0 = time.perf_counter()
    with small_blas():
        bar = trange(args.epochs, desc="char rnn",
                     disable=True if args.no_progress else None, mininterval=0.5)
        for epoch in bar:
            losses = []
            t1 = time.perf_counter()
            for xb, yb in train:
                history["lr"].append(opt.param_groups[0]["lr"])
                losses.append(step(xb, yb).item())
                sched.step()
            train_seconds += time.perf_counter() - t1
            history["step_loss"] += losses
            history["train_loss"].append(float(np.mean(losses)))
            val = evaluate(model, xva, yva)
            history["val_loss"].append(val)
            history["val_step"].append(len(history["step_loss"]))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", val=f"{val:.3f}")
            if args.sample_every and (epoch + 1) % args.sample_every == 0 \
                    and epoch + 1 < args.epochs:
                text = continuation(args.temperature)
                bar.write(f"--- epoch {epoch + 1}, val loss {val:.3f}:\n{prompt}{text}")
    seconds = time.perf_counter() - t0
    samples = [(t, continuation(t)) for t in (0.0, args.temperature)]

    png = None if args.no_plot else plot(history, baseline, args.out)
    result = {"val_loss": val, "val_bits_per_char": val / math.log(2),
              "final_train_loss": history["train_loss"][-1], "unigram_loss": baseline,
              "history": history, "samples": samples, "epochs": args.epochs,
              "steps": steps, "steps_per_s": steps / train_seconds, "seconds": seconds,
              "n_train": len(train_ids), "n_val": len(val_ids), "vocab": len(vocab),
              "png": png,
              "counts": (step.records, step.replays, step.fallbacks) if args.compile
              else None}
    how = "compiled" if args.compile else "eager"
    print(f"char RNN, GRU {args.embed}-{args.hidden} ({how}), Adam + cosine lr={args.lr}: "
          f"{len(train_ids)} train / {len(val_ids)} val chars, vocabulary {len(vocab)}, "
          f"{args.epochs} epochs ({steps} steps) in {seconds:.1f} s, "
          f"{result['steps_per_s']:.1f} training steps/s")
    print(f"  train loss {result['final_train_loss']:.4f}, val loss {val:.4f} nats = "
          f"{result['val_bits_per_char']:.3f} bits/char (unigram {baseline:.4f} nats = "
          f"{baseline / math.log(2):.3f} bits/char)")
    if args.compile:
        print(f"  tg.compile: {step.records} recordings, {step.replays} replays, "
              f"{step.fallbacks} eager fallbacks")
    for t, text in samples:
        print(f"  sample, {'greedy' if t == 0 else f'temperature {t}'}:\n{prompt}{text}")
    if png:
        print(f"  plot: {png}")
    return result


def plot(history, baseline, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out, exist_ok=True)
    steps = np.arange(1, len(history["step_loss"]) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(steps, history["step_loss"], lw=0.5, alpha=0.6, label="train (per step)")
    ax1.plot(history["val_step"], history["val_loss"], "o-", label="validation")
    ax1.axhline(baseline, ls="--", color="gray", label="unigram")
    ax1.set(xlabel="step", ylabel="cross-entropy (nats/char)", title="loss")
    ax1.legend()
    ax2.plot(steps, history["lr"])
    ax2.set(xlabel="step", ylabel="learning rate", title="cosine schedule")
    fig.tight_layout()
    path = os.path.join(out, "char_rnn.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
