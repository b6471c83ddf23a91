"""asv track benchmarks of start-up cost: import + the first backward of a small float32
MLP, in fresh processes.

Each number comes from ``python -c ...`` subprocesses with their own NUMBA_CACHE_DIR,
because the benchmark process itself has long imported tapegrad and loaded its kernels.

- warm: the cache directory was filled by one earlier run; median of 3 runs.
- cold: an empty cache directory, so every kernel the first backward needs is compiled.
- ``import numba`` (median of 3) is the floor that tapegrad cannot go below; the
  overheads are the tapegrad run minus that floor (interpreter start-up cancels).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

TAPEGRAD_CODE = (
    "import tapegrad as tg\n"
    "model = tg.nn.Sequential(tg.nn.Linear(64, 128), tg.nn.Tanh(), tg.nn.Linear(128, 10))\n"
    "loss = tg.nn.functional.mse_loss(model(tg.randn(32, 64)), tg.randn(32, 10))\n"
    "loss.backward()\n"
    "assert model[0].weight.grad is not None")
NUMBA_CODE = "import numba"


def run_seconds(code, cache_dir):
    """Wall-clock seconds of ``python -c code`` with NUMBA_CACHE_DIR=cache_dir."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env.pop("TAPEGRAD_CACHE", None)          # caching on, whatever the caller set
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as in a normal install
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{code!r} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def measure(warm_runs=3):
    """All start-up numbers, in seconds."""
    with tempfile.TemporaryDirectory(prefix="tapegrad-numba-") as d:
        numba_s = statistics.median(run_seconds(NUMBA_CODE, d) for _ in range(warm_runs))
    with tempfile.TemporaryDirectory(prefix="tapegrad-numba-") as d:
        cold = run_seconds(TAPEGRAD_CODE, d)              # empty cache: full compile
        warm = statistics.median(run_seconds(TAPEGRAD_CODE, d) for _ in range(warm_runs))
    return {"numba": numba_s, "warm": warm, "cold": cold}


class StartUp:
    """Start-up of ``import tapegrad`` + a first tiny backward, relative to ``import numba``.

    Targets (reported, not asserted): warm overhead <= 0.5 s, cold overhead <= 3 s.
    """
    timeout = 900
    unit = "seconds"
    number = 1
    repeat = 1

    def setup_cache(self):
        return measure()

    def track_warm_overhead(self, m):
        """Warm run minus ``import numba``."""
        return m["warm"] - m["numba"]

    def track_warm_total(self, m):
        return m["warm"]

    def track_import_numba(self, m):
        return m["numba"]

    def track_cold_total(self, m):
        return m["cold"]

    def track_cold_overhead(self, m):
        """Cold run minus ``import numba``: mostly compilation."""
        return m["cold"] - m["numba"]


if __name__ == "__main__":
    res = measure()
    for k, v in res.items():
        print(f"{k:6s} {v:7.3f} s")
    print(f"warm overhead {res['warm'] - res['numba']:.3f} s, "
          f"cold overhead {res['cold'] - res['numba']:.3f} s")
