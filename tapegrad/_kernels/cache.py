"""The on-disk cache of compiled kernels, and the options every kernel is compiled with."""
import contextlib
import glob
import hashlib
import os
import tempfile
import warnings

from numba.core import config as numba_config
from numba.core.caching import CacheImpl, FunctionCache, _CacheLocator
from numba.core.dispatcher import Dispatcher

try:
    import fcntl
except ImportError:      # no locking between processes on Windows: each one compiles
    fcntl = None

_CACHE = os.environ.get("TAPEGRAD_CACHE", "1") != "0"
# IEEE semantics (x / 0 is inf or nan, as in PyTorch), not Python's ZeroDivisionError.
_JIT = {"cache": _CACHE, "error_model": "numpy", "no_cfunc_wrapper": True}
# Kernels only other kernels call: no wrapper to call them from Python either (each
# wrapper is code to compile).
_SUB = {**_JIT, "no_cpython_wrapper": True}


# Numba stamps a cached function with its own source file only, so code inlined from
# another file could load stale machine code: every kernel of tapegrad is stamped with
# one hash of all KERNEL_SOURCES instead. The cache goes to NUMBA_CACHE_DIR when set,
# else next to the package, else to the user's cache directory, else to a temporary
# directory for this process (with a warning). A damaged entry is compiled again and
# replaced (with a warning naming it), and processes starting on a cold cache at once
# compile each kernel once: the first takes a lock per kernel, the others wait and load.

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
KERNEL_SOURCES = sorted(glob.glob(os.path.join(_PKG_DIR, "*.py")))


def _sources_hash():
    h = hashlib.sha256()
    for path in KERNEL_SOURCES:
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def _writable(path):
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _find_cache_dir():
    """The first writable place: NUMBA_CACHE_DIR, the package, the user's cache."""
    tag = "tapegrad_" + hashlib.sha1(_PKG_DIR.encode()).hexdigest()[:16]
    places = []
    if numba_config.CACHE_DIR:
        places.append(os.path.join(numba_config.CACHE_DIR, tag))
    places.append(os.path.join(_PKG_DIR, "__pycache__"))
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    places.append(os.path.join(home, "tapegrad", tag))
    for path in places:
        if _writable(path):
            return path
    path = tempfile.mkdtemp(prefix="tapegrad-kernels-")
    warnings.warn(f"tapegrad: no writable cache directory ({', '.join(places)}): kernels "
                  f"compiled now are kept in {path} for this process only. Set "
                  "NUMBA_CACHE_DIR to a writable directory to keep them.", stacklevel=2)
    return path


class _Locator(_CacheLocator):
    """Where a tapegrad kernel is cached, stamped with the hash of all kernel sources."""
    _dir = None
    _stamp = None

    def __init__(self, py_func, py_file):
        self._lineno = py_func.__code__.co_firstlineno
        self._py_file = py_file         # where Numba points its warnings

    def get_cache_path(self):
        return _Locator._dir

    def get_source_stamp(self):
        return _Locator._stamp

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.abspath(py_file) not in KERNEL_SOURCES:
            return None
        if cls._dir is None:
            cls._dir, cls._stamp = _find_cache_dir(), _sources_hash()
        return cls(py_func, py_file)


CacheImpl._locator_classes.insert(0, _Locator)


class _SafeCache(FunctionCache):
    """A function's cache entries: damaged ones are dropped (and compiled again), and a
    miss takes a lock on the function, so that one process compiles it at a time."""

    def __init__(self, py_func):
        super().__init__(py_func)
        self._lockfile = None

    def _index_key(self, sig, codegen):
        # A kernel made by a factory closes over constants and other kernels; those are
        # named (the sources hash covers their code), not pickled as Numba does, whose
        # bytes for a kernel differ from one process to the next.
        return (sig, codegen.magic_tuple(),
                (hashlib.sha256(self._py_func.__code__.co_code).hexdigest(),
                 hashlib.sha256(_cell_name(self._py_func).encode()).hexdigest()))

    def _load(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:        # truncated, junk, unreadable: compile again
            index = self._cache_file._index_path
            warnings.warn(f"tapegrad: damaged kernel cache entry {index} "
                          f"({type(exc).__name__}: {exc}); compiling it again",
                          stacklevel=3)
            with contextlib.suppress(OSError):
                os.remove(index)
            return None

    def load_overload(self, sig, target_context):
        data = self._load(sig, target_context)
        if data is None and self._enabled and self._lock():
            data = self._load(sig, target_context)    # another process may have saved it
            if data is not None:
                self._unlock()
        return data

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        finally:
            self._unlock()

    def _lock(self):
        if fcntl is None or self._lockfile is not None:
            return self._lockfile is not None
        try:
            f = open(self._cache_file._index_path + ".lock", "a")
        except OSError:
            return False
        fcntl.flock(f, fcntl.LOCK_EX)
        self._lockfile = f
        return True

    def _unlock(self):
        f, self._lockfile = self._lockfile, None
        if f is not None:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


def _cell_name(v):
    """A closure value as the cache key sees it: a function by its name, line and (for a
    kernel made by a factory) its own closure values; a constant by its repr."""
    if isinstance(v, Dispatcher):
        v = v.py_func
    code = getattr(v, "__code__", None)
    if code is None:
        return repr(v)
    cells = tuple(_cell_name(c.cell_contents) for c in v.__closure__ or ())
    return f"{v.__module__}.{v.__qualname__}:{code.co_firstlineno}{cells}"


def _safe_caches(namespace):
    """Gives every cached kernel defined so far in ``namespace`` a _SafeCache."""
    for obj in namespace.values():
        if isinstance(obj, Dispatcher) and isinstance(obj._cache, FunctionCache) \
                and not isinstance(obj._cache, _SafeCache):
            obj._cache = _SafeCache(obj.py_func)


_ARR = _JIT
_INL = {**_JIT, "inline": "always"}
