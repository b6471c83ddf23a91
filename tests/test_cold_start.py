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
