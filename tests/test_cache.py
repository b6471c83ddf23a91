"""Guards against stale Numba caches.

Numba's on-disk cache is keyed by the source file a jitted function is defined in, so a
kernel that inlines code from another file could keep running an old version after that
file is edited. tapegrad therefore keeps every jitted function in the ``_kernels``
package and stamps every cache entry with a hash of all its files; the first tests check
that, the subprocess test checks that editing a kernel formula in one file invalidates
the cached kernel of another file that inlines it (cold run, warm run with cache hits,
edited run).
"""
import ast
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tapegrad

PKG = Path(tapegrad.__file__).resolve().parent
KERNELS = PKG / "_kernels"
KERNEL_FILES = sorted(KERNELS.glob("*.py"))

# Names of numba's jit decorators. "vectorize"/"stencil" are left out of the attribute
# check because np.vectorize and parameters named so are common and harmless.
JIT_NAMES = {"njit", "jit", "intrinsic", "vectorize", "guvectorize", "cfunc", "generated_jit",
             "overload", "overload_method", "overload_attribute", "register_jitable",
             "stencil", "jitclass"}
JIT_ATTRS = JIT_NAMES - {"vectorize", "stencil"}


def package_sources():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def numba_uses(path):
    """(line, what) for every numba import, import of a jit decorator (from anywhere, e.g.
    re-exported by _kernels) or jit-decorator attribute (``K.njit``) in a source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "numba":
                    found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            if node.module and node.module.split(".")[0] == "numba":
                found.append((node.lineno, f"from {node.module} import ..."))
            for alias in node.names:
                if alias.name in JIT_NAMES or alias.name == "numba":
                    found.append((node.lineno, f"import of {alias.name}"))
        elif isinstance(node, ast.Attribute) and node.attr in JIT_ATTRS:
            found.append((node.lineno, f".{node.attr}"))
    return found


def test_kernels_package_is_where_numba_is_used():
    from tapegrad import _kernels as K

    assert len(KERNEL_FILES) > 2
    assert [Path(p) for p in K.KERNEL_SOURCES] == KERNEL_FILES, "the cache stamp's files"
    assert all(numba_uses(p) for p in KERNEL_FILES if p.name != "__init__.py")


def test_scanner_detects_jit_usage(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from .. import _kernels as K\n\n@K.njit(cache=True)\ndef f(x):\n"
                   "    return x\n")
    assert numba_uses(bad)
    bad.write_text("from numba import njit\n")
    assert numba_uses(bad)
    bad.write_text("from ._kernels import intrinsic\n")
    assert numba_uses(bad)
    ok = tmp_path / "ok.py"
    ok.write_text("import numpy as np\n\ndef f(x, vectorize=False):\n"
                  "    return np.vectorize(abs)(x) if vectorize else x\n")
    assert not numba_uses(ok)


def test_no_numba_outside_kernels_module():
    offenders = {}
    for path in package_sources():
        if path.parent == KERNELS:
            continue
        uses = numba_uses(path)
        if uses:
            offenders[str(path.relative_to(PKG))] = uses
    assert not offenders, f"numba used outside tapegrad/_kernels: {offenders}"


def _loaded_modules():
    mods = [tapegrad]
    for info in pkgutil.walk_packages(tapegrad.__path__, "tapegrad."):
        try:
            mods.append(importlib.import_module(info.name))
        except ImportError:      # a module being written right now; the AST scan covers it
            continue
    return mods


def test_every_jitted_object_is_defined_in_kernels_module():
    from numba.core.dispatcher import Dispatcher
    from numba.core.extending import _Intrinsic

    seen = 0
    for mod in _loaded_modules():
        for name, obj in vars(mod).items():
            if isinstance(obj, Dispatcher):
                src = obj.py_func.__code__.co_filename
            elif isinstance(obj, _Intrinsic):
                src = obj._defn.__code__.co_filename
            else:
                continue
            seen += 1
            assert Path(src).resolve().parent == KERNELS, \
                f"{mod.__name__}.{name} is jitted in {src}, not in tapegrad/_kernels"
    assert seen > 0


def test_every_kernel_is_cached():
    from numba.core.dispatcher import Dispatcher
    from tapegrad import _kernels as K

    if os.environ.get("TAPEGRAD_CACHE", "1") == "0":
        pytest.skip("caching disabled by TAPEGRAD_CACHE=0")
    found = {f"{m}.{name}": obj for m in ("layout", "vmath", "linalg", "elementwise",
                                          "reduce", "reverse", "program")
             for name, obj in vars(importlib.import_module(f"tapegrad._kernels.{m}")).items()}
    found.update({f"UNARY_FWD[{k}]": f for k, f in K.UNARY_FWD.items()})
    kernels = {n: o for n, o in found.items() if isinstance(o, Dispatcher)}
    assert len(kernels) > 100
    uncached = [n for n, o in kernels.items() if type(o._cache).__name__ == "NullCache"]
    assert all(type(o._cache).__name__ in ("_SafeCache", "NullCache") for o in kernels.values())
    assert not uncached, f"kernels without cache=True: {uncached}"


SCRIPT = r"""
import json, sys
import numpy as np
import tapegrad as tg
from tapegrad import _kernels as K
x = tg.tensor([0.5, -0.3, 1.2], dtype=tg.float64, requires_grad=True)
tg.tanh(x).sum().backward()
st = K.reverse_rows.stats
tanh = K._COMPILED[(K.K_TANH, 1)]      # the tanh VJP kernel, compiled on first use
hits = sum(st.cache_hits.values()) + tanh.cache_hits
print(json.dumps({"file": K.__file__, "grad64": x.grad.tolist(), "hits": hits,
                  "misses": sum(st.cache_misses.values()) + 1 - tanh.cache_hits}))
"""

TANH_VJP = "g * (1.0 - o * o)"
K_REVERSE = "def _vjp_kernel("     # where the cached VJP kernels are compiled
TANH_VJP_EDITED = "g * (2.0 - o * o)"


def _run(root, cache):
    env = {k: v for k, v in os.environ.items() if k not in ("TAPEGRAD_CACHE", "NUMBA_DISABLE_JIT")}
    env["PYTHONPATH"] = str(root)
    env["NUMBA_CACHE_DIR"] = str(cache)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(res["file"]).resolve().is_relative_to(Path(root).resolve()), \
        f"the subprocess imported {res['file']}, not the copy"
    return res


def _expected(const):
    import numpy as np
    return const - np.tanh(np.array([0.5, -0.3, 1.2])) ** 2


@pytest.mark.slow
def test_editing_a_kernel_invalidates_the_numba_cache(tmp_path):
    import numpy as np

    root = tmp_path / "src"
    cache = tmp_path / "numba_cache"
    shutil.copytree(PKG, root / "tapegrad",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    kernels = root / "tapegrad" / "_kernels" / "elementwise.py"   # tanh's VJP, inlined
    assert K_REVERSE in (root / "tapegrad" / "_kernels" / "reverse.py").read_text()
    src = kernels.read_text()
    assert src.count(TANH_VJP) == 1, "the tanh VJP formula this test edits has moved"

    # cold: compiled and written to the cache
    cold = _run(root, cache)
    np.testing.assert_allclose(cold["grad64"], _expected(1.0), rtol=1e-12)
    assert cold["hits"] == 0 and cold["misses"] > 0, cold
    assert any(cache.rglob("*.nbi")), "nothing was written to NUMBA_CACHE_DIR"

    # warm: loaded from the cache
    warm = _run(root, cache)
    assert warm["hits"] > 0 and warm["misses"] == 0, warm
    assert warm["grad64"] == cold["grad64"]

    # edited: the cache must not serve the old formula
    kernels.write_text(src.replace(TANH_VJP, TANH_VJP_EDITED))
    st = kernels.stat()
    os.utime(kernels, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))  # coarse clocks
    edited = _run(root, cache)
    np.testing.assert_allclose(edited["grad64"], _expected(2.0), rtol=1e-12)
    assert edited["misses"] > 0, edited

    # and the edited version is what is cached now
    again = _run(root, cache)
    assert again["hits"] > 0 and again["misses"] == 0, again
    assert again["grad64"] == edited["grad64"]


# -- where the cache goes, damaged entries, processes starting together --------------------
EVENTS = r"""
import json, warnings
from numba.core import event
compiles = []
event.register("numba:compile", event.Listener.__subclasshook__ and type(
    "L", (event.Listener,), {"on_start": lambda s, ev: compiles.append(1),
                             "on_end": lambda s, ev: None})())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import tapegrad as tg
    from tapegrad import _kernels as K
    x = tg.tensor([0.5, -0.3, 1.2], dtype=tg.float64, requires_grad=True)
    (tg.tanh(x) * x).sum().backward()
print(json.dumps({"grad": x.grad.tolist(), "compiles": len(compiles), "dir": K._Locator._dir,
                  "warnings": [str(w.message) for w in caught]}))
"""


def _copy(tmp_path):
    root = tmp_path / "src"
    shutil.copytree(PKG, root / "tapegrad",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    return root


def _env(root, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TAPEGRAD_CACHE", "NUMBA_DISABLE_JIT", "NUMBA_CACHE_DIR")}
    env["PYTHONPATH"] = str(root)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _start(root, env):
    return subprocess.Popen([sys.executable, "-c", EVENTS], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def _expected_grad():
    import numpy as np
    x = np.array([0.5, -0.3, 1.2])
    return np.tanh(x) + x * (1 - np.tanh(x) ** 2)


@pytest.mark.slow
def test_no_writable_cache_location_compiles_in_memory_with_one_warning(tmp_path):
    """A read-only install, no writable home: the kernels still compile (kept for the
    process, in a temporary directory) and one warning says how to keep them."""
    import numpy as np

    root = _copy(tmp_path)
    (root / "tapegrad" / "_kernels" / "__pycache__").write_text("not a directory")
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    res = _finish(_start(root, _env(root, HOME=blocked / "home",
                                    XDG_CACHE_HOME=blocked / "cache")))
    np.testing.assert_allclose(res["grad"], _expected_grad(), rtol=1e-12)
    assert [w for w in res["warnings"] if "NUMBA_CACHE_DIR" in w], res["warnings"]
    assert "tapegrad-kernels-" in res["dir"]


@pytest.mark.slow
def test_user_cache_directory_when_the_package_is_read_only(tmp_path):
    root = _copy(tmp_path)
    (root / "tapegrad" / "_kernels" / "__pycache__").write_text("not a directory")
    res = _finish(_start(root, _env(root, XDG_CACHE_HOME=tmp_path / "xdg")))
    assert res["dir"].startswith(str(tmp_path / "xdg" / "tapegrad"))
    assert not res["warnings"]
    again = _finish(_start(root, _env(root, XDG_CACHE_HOME=tmp_path / "xdg")))
    assert again["compiles"] < res["compiles"]


@pytest.mark.slow
def test_kernels_numba_cannot_cache_still_run_with_a_warning(tmp_path):
    """Under NUMBA_OPT=0 some kernels keep addresses Numba will not cache: they compile
    for the process, and Numba's warning names the file instead of failing."""
    import numpy as np

    root = _copy(tmp_path)
    res = _finish(_start(root, _env(root, NUMBA_OPT=0, NUMBA_CACHE_DIR=tmp_path / "nbc")))
    np.testing.assert_allclose(res["grad"], _expected_grad(), rtol=1e-12)
    assert any("Cannot cache" in w for w in res["warnings"]), res["warnings"]


@pytest.mark.slow
def test_damaged_cache_entries_are_compiled_again_and_replaced(tmp_path):
    import numpy as np

    root = _copy(tmp_path)
    cache = tmp_path / "nbc"
    env = _env(root, NUMBA_CACHE_DIR=cache)
    cold = _finish(_start(root, env))
    files = sorted(cache.rglob("*.nb[ic]"))
    assert files
    for i, f in enumerate(files):       # truncated, emptied, or junk
        data = f.read_bytes()
        f.write_bytes(data[:len(data) // 2] if i % 3 == 0 else b"" if i % 3 == 1
                      else b"\x80junk" * 7)
    damaged = _finish(_start(root, env))
    np.testing.assert_allclose(damaged["grad"], _expected_grad(), rtol=1e-12)
    assert [w for w in damaged["warnings"] if "damaged kernel cache entry" in w]
    assert damaged["compiles"] > 0
    healed = _finish(_start(root, env))
    assert not healed["warnings"] and healed["compiles"] < cold["compiles"]
    assert healed["grad"] == cold["grad"]


@pytest.mark.slow
def test_processes_starting_together_compile_each_kernel_once(tmp_path):
    """Two processes on one cold cache: a kernel one of them compiles, the other waits
    for and loads, so together they compile what one process alone compiles."""
    root = _copy(tmp_path)
    alone = _finish(_start(root, _env(root, NUMBA_CACHE_DIR=tmp_path / "alone")))
    env = _env(root, NUMBA_CACHE_DIR=tmp_path / "shared")
    procs = [_start(root, env), _start(root, env)]
    both = [_finish(p) for p in procs]
    assert both[0]["grad"] == both[1]["grad"] == alone["grad"]
    # the compile events of functions loaded from the cache are not counted; a few
    # helpers that Numba does not cache (overload implementations) compile in both
    assert both[0]["compiles"] + both[1]["compiles"] < 1.5 * alone["compiles"], (both, alone)


FACTORY = r"""
import json
import numpy as np
import tapegrad as tg
x = tg.tensor(np.linspace(0.1, 2.0, 7), requires_grad=True)

def f(x):
    return (tg.sqrt(tg.relu(x * 3.0 + 1.0)) ** 3).abs().sum()

eager = f(x).item()
step = tg.compile(f)
print(json.dumps({"eager": eager, "compiled": [step(x).item() for _ in range(3)],
                  "fallbacks": step.fallbacks}))
"""


def test_kernels_one_factory_makes_are_cached_apart(tmp_path):
    """The forward kernels of a program's unary ops come from one factory (same code,
    different op in the closure): each has its own cache entry, in the process that
    compiles them and in the next one that loads them."""
    root = _copy(tmp_path)
    env = _env(root, NUMBA_CACHE_DIR=tmp_path / "nbc")
    for _ in range(2):      # cold, then warm
        proc = subprocess.run([sys.executable, "-c", FACTORY], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        assert res["compiled"] == [res["eager"]] * 3 and res["fallbacks"] == 0, res
