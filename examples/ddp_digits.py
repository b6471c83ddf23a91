"""The digits MLP trained data-parallel: each process (rank) takes its share of every
batch, and DistributedDataParallel averages the gradients, so N ranks train the model
one process would.

    mpiexec -n 2 python examples/ddp_digits.py            # two ranks (pip install -e ".[mpi]")
    python examples/ddp_digits.py                         # one process: the same model
    mpiexec -n 2 python examples/ddp_digits.py --compile  # each rank replays its step

The loop is PyTorch's DistributedDataParallel recipe, with ``torch`` renamed
``tapegrad`` and the "mpi" backend: DistributedSampler shards each epoch's permutation,
so that at a global batch B the ranks' batches of B/N together are the batch one
process takes.
"""
import argparse
import os
import sys
import time

import numpy as np

import tapegrad as tg
import tapegrad.distributed as dist
from tapegrad import nn, optim
from tapegrad.nn.parallel import DistributedDataParallel as DDP
from tapegrad.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits_mlp import evaluate, load_data, small_blas  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64, help="global batch (all ranks)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="replay the step with tg.compile")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} is not a multiple of the "
                         f"{world} ranks")
    from tqdm.auto import trange

    Xtr, Xte, ytr, yte = load_data(0.25, args.seed)
    train = TensorDataset(tg.tensor(Xtr), tg.tensor(ytr))
    sampler = DistributedSampler(train, seed=args.seed)
    loader = DataLoader(train, batch_size=args.batch_size // world, sampler=sampler,
                        drop_last=True)

    tg.manual_seed(args.seed)
    model = DDP(nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(),
                              nn.Linear(args.hidden, 10)))
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=args.lr)

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if args.compile:
        step = tg.compile(step)
    t0 = time.perf_counter()
    with small_blas():
        bar = trange(args.epochs, desc=f"digits x{world}",
                     disable=True if args.no_progress or rank else None, mininterval=0.5)
        for epoch in bar:
            sampler.set_epoch(epoch)
            for xb, yb in loader:
                loss = step(xb, yb)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    seconds = time.perf_counter() - t0
    test_loss, test_acc = evaluate(model, loss_fn, tg.tensor(Xte), tg.tensor(yte))
    result = {"rank": rank, "world_size": world, "test_accuracy": test_acc,
              "test_loss": test_loss, "seconds": seconds,
              "params": np.concatenate([p.detach().numpy().ravel()
                                        for p in model.parameters()])}
    if rank == 0:
        print(f"digits MLP 64-{args.hidden}-10 on {world} rank(s), global batch "
              f"{args.batch_size}, Adam lr={args.lr}{', compiled' if args.compile else ''}: "
              f"{args.epochs} epochs in {seconds:.1f} s")
        print(f"  test loss {test_loss:.4f}, test accuracy {test_acc:.2%}")
        if args.compile:
            print(f"  compiled step: {step.records} recordings, {step.replays} replays, "
                  f"{step.fallbacks} fallbacks")
    dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
