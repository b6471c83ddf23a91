"""asv benchmarks of tapegrad compiled (``tg.compile``) on the workloads of ``compare.py``.

- ``time_step``: one replayed step; consecutive calls alternate between two inputs.
- ``peakmem_step``: peak RSS of a process that has recorded the step and replays it.
- ``track_record_ms``: the recording call of a fresh ``tg.compile(fn)``.
- ``track_first_call_ms``: the recording call plus the first replay (``compare.py``'s
  first-call column).
- ``CompiledThreads.time_step``: the large workloads per thread count.

The first-call figures are the best of three fresh function objects, after ``setup``
has compiled and replayed the same workload once, so Numba's cache is warm. When
``tg.compile`` is missing, ``setup`` raises NotImplementedError and asv reports skipped.
"""
import tapegrad as tg

try:
    from .compare import WORKLOADS, TensorLib, calls
except ImportError:  # run as a script from benchmarks/
    from compare import WORKLOADS, TensorLib, calls


class CompiledStep:
    params = list(WORKLOADS)
    param_names = ["workload"]
    timeout = 300

    def setup(self, name):
        if not hasattr(tg, "compile"):
            raise NotImplementedError("tg.compile is not available")
        self.w = WORKLOADS[name]
        self.inputs = self.w.inputs()
        self.lib = TensorLib(tg, tg.compile, first_calls=2)
        self.call = self.lib.make(self.w, self.inputs)
        self.i = 3
        calls(self.call, 0, self.i)

    def teardown(self, name):
        self.call = self.inputs = None

    def time_step(self, name):
        self.call(self.i)
        self.i += 1

    def peakmem_step(self, name):
        self.call(self.i)

    def _first_ms(self, n):
        best = float("inf")
        for _ in range(3):
            best = min(best, calls(self.lib.make(self.w, self.inputs), 0, n)[1])
        return best * 1e3

    def track_record_ms(self, name):
        return self._first_ms(1)

    track_record_ms.unit = "ms"

    def track_first_call_ms(self, name):
        return self._first_ms(2)

    track_first_call_ms.unit = "ms"


class CompiledThreads:
    """The large workloads' replayed step per thread count (``tg.set_num_threads``)."""
    params = (["rosen_1m", "big"], [1, 2])
    param_names = ["workload", "threads"]
    timeout = 300

    def setup(self, name, threads):
        if not hasattr(tg, "set_num_threads"):
            raise NotImplementedError("tg.set_num_threads is not available")
        self.before = tg.get_num_threads()
        tg.set_num_threads(threads)
        w = WORKLOADS[name]
        self.call = TensorLib(tg, tg.compile, first_calls=2).make(w, w.inputs())
        self.i = 3
        calls(self.call, 0, self.i)

    def teardown(self, name, threads):
        tg.set_num_threads(self.before)
        self.call = None

    def time_step(self, name, threads):
        self.call(self.i)
        self.i += 1
