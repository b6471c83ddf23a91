"""Data-parallel scaling: training steps per second of a 784-256-10 float32 MLP (SGD with
momentum, synthetic data) at one global batch on N = 1 and 2 ranks, for tapegrad's
DistributedDataParallel (eager and compiled, MPI) and PyTorch's (gloo), plus the time
of one all-reduce of the model's gradients.

    python benchmarks/ddp_scaling.py [--batch 256] [--steps 200] [--ranks 1,2]

Each configuration runs under ``mpiexec -n N`` (PyTorch's ranks take their rank from
the launcher's PMI_RANK and meet over TCP on localhost). Threads per rank: the
machine's cores divided by N (``--threads`` overrides), the same for BLAS and PyTorch,
so that every configuration uses the whole machine and no more.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

IN, HIDDEN, OUT = 784, 256, 10
HERE = os.path.abspath(__file__)


def _data(rank, world, batch, steps):
    """This rank's share of ``steps`` global batches (the same batches for every N)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, batch, IN)).astype(np.float32)
    Y = rng.integers(0, OUT, (8, batch))
    share = batch // world
    return [(X[i % 8, rank * share:(rank + 1) * share], Y[i % 8, rank * share:(rank + 1) * share])
            for i in range(steps)]


def _timed(step, batches, barrier, warmup=10):
    for x, y in batches[:warmup]:
        step(x, y)
    barrier()
    t0 = time.perf_counter()
    for x, y in batches[warmup:]:
        loss = step(x, y)
    barrier()
    return (len(batches) - warmup) / (time.perf_counter() - t0), float(loss)


def _allreduce_ms(allreduce, barrier, reps=50):
    allreduce()
    barrier()
    t0 = time.perf_counter()
    for _ in range(reps):
        allreduce()
    barrier()
    return (time.perf_counter() - t0) / reps * 1e3


def worker_tapegrad(args):
    import tapegrad as tg
    import tapegrad.distributed as dist
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:         # (the environment variables set by _launch still hold)
        pass
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    tg.manual_seed(0)
    model = tg.nn.parallel.DistributedDataParallel(tg.nn.Sequential(
        tg.nn.Linear(IN, HIDDEN), tg.nn.ReLU(), tg.nn.Linear(HIDDEN, OUT)))
    opt = tg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        loss = tg.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    run = tg.compile(step) if args.compile else step
    batches = [(tg.tensor(x), tg.tensor(y)) for x, y in
               _data(rank, world, args.batch, args.steps)]
    rate, loss = _timed(lambda x, y: run(x, y).item(), batches, dist.barrier)
    flat = tg.zeros(sum(p.numel() for p in model.parameters()))
    ms = _allreduce_ms(lambda: dist.all_reduce(flat), dist.barrier)
    if args.compile:
        assert run.fallbacks == 0 and run.replays > 0, (run.replays, run.fallbacks)
    dist.destroy_process_group()
    return rank, rate, ms, loss


def worker_torch(args):
    import torch
    import torch.distributed as tdist
    torch.set_num_threads(args.threads)
    rank, world = int(os.environ["PMI_RANK"]), int(os.environ["PMI_SIZE"])
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}",
                             rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, OUT)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in
               _data(rank, world, args.batch, args.steps)]
    rate, loss = _timed(step, batches, tdist.barrier)
    flat = torch.zeros(sum(p.numel() for p in model.parameters()))
    ms = _allreduce_ms(lambda: tdist.all_reduce(flat), tdist.barrier)
    tdist.destroy_process_group()
    return rank, rate, ms, loss


def _launch(n, framework, args, threads, port):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        mpiexec = shutil.which("mpiexec")
    cmd = [mpiexec, "-n", str(n), sys.executable, HERE, "--worker", framework,
           "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(threads),
           "--port", str(port)]
    if framework == "tapegrad compiled":
        cmd[cmd.index("--worker") + 1] = "tapegrad"
        cmd.append("--compile")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if p.returncode:
        return None, p.stderr.strip().splitlines()[-1:]
    return json.loads(p.stdout.strip().splitlines()[-1]), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="global batch")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--threads", type=int, default=None, help="threads per rank")
    ap.add_argument("--frameworks", default="tapegrad,tapegrad compiled,torch")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=29533, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        rank, rate, ms, loss = (worker_torch if args.worker == "torch"
                                else worker_tapegrad)(args)
        if rank == 0:
            print(json.dumps({"steps_per_s": rate, "allreduce_ms": ms, "loss": loss}))
        return
    cores = os.cpu_count()
    ranks = [int(n) for n in args.ranks.split(",")]
    print(f"784-{HIDDEN}-10 MLP, float32, SGD momentum, global batch {args.batch}, "
          f"{args.steps} steps; {cores} cores, threads per rank = "
          f"{'cores / N' if args.threads is None else args.threads}")
    print("| framework | N | threads/rank | steps/s | speed-up over N=1 | all-reduce of the "
          "gradients (ms) |")
    print("|---|---|---|---|---|---|")
    for port, fw in enumerate(args.frameworks.split(",")):
        base = None
        for n in ranks:
            threads = args.threads or max(1, cores // n)
            res, err = _launch(n, fw, args, threads, args.port + 10 * port + n)
            if res is None:
                print(f"| {fw} | {n} | {threads} | failed: {err} | | |")
                continue
            base = res["steps_per_s"] if base is None else base
            print(f"| {fw} | {n} | {threads} | {res['steps_per_s']:.0f} | "
                  f"{res['steps_per_s'] / base:.2f}x | {res['allreduce_ms']:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
