"""Time per call of every step of the compile corpus (``tests/compile_corpus.py``: training
steps and objectives written as PyTorch tutorials and SciPy users write them), eager and
through ``tg.compile``, with the compiled function's counters.

    python benchmarks/corpus_times.py [--calls N] [--out DIR]

Each case runs ``--calls`` iterations (default 200) of its own loop (new batches,
schedules, logging) after 30 warm-up iterations; the time is the best of 3 such runs,
divided by the calls. Writes ``corpus_times.md`` to --out (default
``benchmarks/results``).
"""
import argparse
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))


def per_call(call, start, n):
    t0 = time.perf_counter()
    for i in range(start, start + n):
        call(i)
    return (time.perf_counter() - t0) / n


def measure(build, wrap, calls, warmup=30):
    call, _, step = build(wrap)
    for i in range(warmup):
        call(i)
    best = min(per_call(call, warmup + r * calls, calls) for r in range(3))
    return best, step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import tapegrad as tg
    from compile_corpus import CORPUS
    rows = ["| case | eager µs | compiled µs | eager / compiled | records | replays | "
            "eager fallbacks |", "|---|---:|---:|---:|---:|---:|---:|"]
    replayed = 0
    for name in sorted(CORPUS):
        eager, _ = measure(CORPUS[name], lambda f: f, args.calls)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tg.CompileWarning)
            comp, step = measure(CORPUS[name], tg.compile, args.calls)
        ok = step.fallbacks == 0 and step.records <= 2
        replayed += ok
        rows.append(f"| {name} | {eager * 1e6:,.1f} | {comp * 1e6:,.1f} | "
                    f"{eager / comp:.1f}x | {step.records} | {step.replays} | "
                    f"{step.fallbacks} |")
        print(rows[-1], flush=True)
    summary = (f"{replayed} of {len(CORPUS)} steps replay with no eager fallback and at most "
               f"two recordings ({os.cpu_count()} CPUs, {args.calls} calls per run).")
    md = "\n".join(["# The compile corpus, eager and compiled", "", summary, ""] + rows) + "\n"
    print(summary)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "corpus_times.md"), "w") as f:
        f.write(md)
    return 0 if replayed == len(CORPUS) else 1


if __name__ == "__main__":
    sys.exit(main())
