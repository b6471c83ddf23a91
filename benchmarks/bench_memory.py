"""asv memory benchmarks: the linear-regression loop must not grow.

The issue's requirement (reported here, not asserted): over 100 000 SGD steps the
resident set stays within 10 MB of its value after 1 000 steps.

- ``peakmem_linreg_loop``: asv's peak RSS of the process, after 1 000 or 100 000 steps.
- ``track_rss_growth_mb``: RSS after 100 000 steps minus RSS after 1 000 (psutil).
- ``track_peak_rss_growth_mb``: the largest RSS sampled every 100 steps between step
  1 000 and 100 000, minus RSS after 1 000 steps.
"""
import tapegrad as tg

try:
    from .bench_engine import LinReg, linreg_data
except ImportError:  # run as a script from benchmarks/
    from bench_engine import LinReg, linreg_data

BASE_STEPS = 1_000
LONG_STEPS = 100_000
SAMPLE_EVERY = 100
MB = 1024 * 1024


def rss_profile(steps=LONG_STEPS, base=BASE_STEPS, every=SAMPLE_EVERY):
    """RSS (MB) after ``base`` steps, at the end, and the largest sample in between."""
    import psutil
    proc = psutil.Process()
    m = LinReg(tg, linreg_data())
    for _ in range(base):
        m.step()
    rss_base = proc.memory_info().rss / MB
    peak = rss_base
    for i in range(base, steps):
        m.step()
        if (i + 1) % every == 0:
            peak = max(peak, proc.memory_info().rss / MB)
    rss_end = proc.memory_info().rss / MB
    return {"base": rss_base, "end": rss_end, "peak": max(peak, rss_end),
            "w": float(m.w.detach().numpy()[0]), "b": float(m.b.detach().numpy()[0])}


class LinRegLoopPeakMem:
    """Peak RSS of a process that ran the loop (includes numba, numpy, tapegrad)."""
    params = [BASE_STEPS, LONG_STEPS]
    param_names = ["steps"]
    timeout = 1800

    def setup(self, steps):
        self.data = linreg_data()
        LinReg(tg, self.data).step()    # kernels loaded before the measurement

    def peakmem_linreg_loop(self, steps):
        m = LinReg(tg, self.data)
        for _ in range(steps):
            m.step()


class LinRegLoopRSS:
    """RSS growth between step 1 000 and step 100 000, in MB."""
    timeout = 1800
    unit = "MB"
    number = 1
    repeat = 1

    def setup_cache(self):
        try:
            import psutil  # noqa: F401
        except ImportError:
            return None
        return rss_profile()

    def setup(self, prof):
        if prof is None:
            raise NotImplementedError("psutil is not installed")

    def track_rss_growth_mb(self, prof):
        return prof["end"] - prof["base"]

    def track_peak_rss_growth_mb(self, prof):
        return prof["peak"] - prof["base"]

    def track_rss_after_base_mb(self, prof):
        return prof["base"]


if __name__ == "__main__":
    import time
    t0 = time.perf_counter()
    p = rss_profile()
    print(f"RSS after {BASE_STEPS} steps {p['base']:.1f} MB, after {LONG_STEPS} "
          f"{p['end']:.1f} MB (growth {p['end'] - p['base']:+.2f} MB), peak sample "
          f"{p['peak']:.1f} MB (growth {p['peak'] - p['base']:+.2f} MB); "
          f"w={p['w']:.4f} b={p['b']:.4f}; {time.perf_counter() - t0:.1f} s")
