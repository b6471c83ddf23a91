"""Guards against stale Numba caches.

Numba's on-disk cache is keyed by the source file a jitted function is defined in, so a
kernel that inlines code from another file could keep running an old version after that
file is edited. tapegrad therefore keeps every jitted function in ``_kernels.py``; the
first tests check that, the subprocess test checks that editing a kernel formula does
invalidate the cache (cold run, warm run with cache hits, edited run).
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
KERNELS = PKG / "_kernels.py"

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


def test_kernels_module_is_where_numba_is_used():
    assert KERNELS.exists()
    assert numba_uses(KERNELS), "_kernels.py should hold the jitted code"


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
        if path == KERNELS:
            continue
        uses = numba_uses(path)
        if uses:
            offenders[str(path.relative_to(PKG))] = uses
    assert not offenders, f"numba used outside _kernels.py: {offenders}"


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
            assert Path(src).resolve() == KERNELS, \
                f"{mod.__name__}.{name} is jitted in {src}, not in _kernels.py"
    assert seen > 0


def test_every_kernel_is_cached():
    from numba.core.dispatcher import Dispatcher
    from tapegrad import _kernels as K

    if os.environ.get("TAPEGRAD_CACHE", "1") == "0":
        pytest.skip("caching disabled by TAPEGRAD_CACHE=0")
    uncached = [name for name, obj in vars(K).items()
                if isinstance(obj, Dispatcher) and type(obj._cache).__name__ == "NullCache"]
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

TANH_VJP = "1.0 - o[i] * o[i]"
TANH_VJP_EDITED = "2.0 - o[i] * o[i]"


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
    kernels = root / "tapegrad" / "_kernels.py"
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
