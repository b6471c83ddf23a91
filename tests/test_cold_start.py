"""What a first run compiles: only the kernels its rows need. A binary op whose inputs
are the output's elements (or one value) and a sum over trailing dims use kernels
without the index maps of broadcasting; rows that broadcast use the general kernel."""
import json
import os
import subprocess
import sys
from pathlib import Path

import tapegrad

ROOT = Path(tapegrad.__file__).resolve().parent.parent

SCRIPT = r"""
import json
import numpy as np
import tapegrad as tg
from tapegrad import _kernels as K

def general_kernels():
    return sorted(k for k, d in K._COMPILED if K.GENERAL <= k < K.KCOLS)

rng = np.random.default_rng(0)
x = tg.tensor(rng.normal(size=(4, 3)), requires_grad=True)
y = tg.tensor(rng.normal(size=(4, 3)), requires_grad=True)
((x - y) ** 2).mean().backward()
(x * y).sum(dim=1).sum().backward()
common = general_kernels()
b = tg.tensor(rng.normal(size=3), requires_grad=True)
(x * b).sum(dim=0).sum().backward()
print(json.dumps({"common": common, "after": general_kernels(),
                  "GENERAL": K.GENERAL, "MUL": K.K_MUL, "SUM": K.K_SUM,
                  "gx": x.grad.tolist(), "gy": y.grad.tolist(), "gb": b.grad.tolist(),
                  "x": x.detach().numpy().tolist(), "y": y.detach().numpy().tolist(),
                  "b": b.detach().numpy().tolist()}))
"""


def test_general_kernels_compile_only_for_rows_that_need_them(tmp_path):
    import numpy as np

    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_DISABLE_JIT",)}
    env.update(PYTHONPATH=str(ROOT), NUMBA_CACHE_DIR=str(tmp_path / "nbc"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["common"] == []
    assert r["after"] == [r["GENERAL"] + r["MUL"], r["GENERAL"] + r["SUM"]]
    x, y, b = (np.array(r[k]) for k in ("x", "y", "b"))
    np.testing.assert_allclose(r["gx"], 2 * (x - y) / x.size + y + b, rtol=1e-12)
    np.testing.assert_allclose(r["gy"], -2 * (x - y) / x.size + x, rtol=1e-12)
    np.testing.assert_allclose(r["gb"], x.sum(axis=0), rtol=1e-12)


BLAS_SCRIPT = r"""
import json, sys
import numpy as np
import tapegrad as tg
rng = np.random.default_rng(1)
a, b = rng.normal(size=(40, 30)), rng.normal(size=(30, 50))
x = tg.tensor(a, requires_grad=True)
(x @ tg.tensor(b)).sum().backward()
lin = tg.nn.Linear(30, 7)
lin(tg.tensor(a.astype(np.float32))).sum().backward()
before = "scipy.linalg" in sys.modules
import numba
import scipy.linalg
from scipy.linalg import cython_blas
from scipy.linalg.blas import dgemm

@numba.njit
def dot(p, q):
    return np.dot(p, q)

print(json.dumps({"before": before, "one": cython_blas is sys.modules["scipy.linalg.cython_blas"],
                  "dx": bool(np.allclose(x.grad.numpy(), np.ones((40, 50)) @ b.T, rtol=1e-12)),
                  "njit_dot": bool(np.allclose(dot(a, b), a @ b, rtol=1e-12)),
                  "scipy_dgemm": bool(np.allclose(dgemm(1.0, a, b), a @ b, rtol=1e-12))}))
"""


def test_matrix_products_run_without_importing_scipy_linalg():
    """Loading and running the BLAS kernels leaves scipy.linalg unimported (its import is
    most of a warm start); SciPy's and Numba's own BLAS work afterwards."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_DISABLE_JIT",)}
    env.update(PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", BLAS_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r == {"before": False, "one": True, "dx": True, "njit_dot": True,
                 "scipy_dgemm": True}
