"""Kernels compiled one by one, on first use: a backward compiles the VJP kernels of
the ops it meets and no others, unknown opcodes are errors, and the warm-up compiles
every kernel."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import _kernels as K

SCRIPT = r"""
import json
import tapegrad as tg
from tapegrad import _kernels as K
x = tg.tensor([0.5, -0.3, 1.2], requires_grad=True)
(tg.tanh(x) * 2.0).sum().backward()
print(json.dumps({"vjp": sorted(k for k, _ in K._COMPILED), "fwd": len(K._FWD_COMPILED),
                  "grad": x.grad.tolist()}))
"""


def test_a_backward_compiles_only_the_kernels_of_its_ops(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TAPEGRAD_CACHE",
                                                            "NUMBA_DISABLE_JIT")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["vjp"] == sorted([K.K_SUM, K.K_AFFINE, K.K_TANH])
    assert res["fwd"] == 0          # no program recorded: no program kernels
    want = 2.0 * (1 - np.tanh(np.array([0.5, -0.3, 1.2], np.float32)) ** 2)
    np.testing.assert_allclose(res["grad"], want, rtol=1e-6)


@pytest.mark.parametrize("prepare", [K.prepare, K.prepare_forward])
def test_an_unknown_opcode_is_an_error(prepare):
    with pytest.raises(ValueError, match="opcode 200"):
        prepare(200, 0)


def test_every_op_kernel_has_a_table_entry_after_warmup():
    from tapegrad.warmup import warmup

    assert warmup(dtypes=("float64",), progress=False) > 0
    vjp_ops = (sorted(K._UNARY_VJPS) + sorted(K._BINARY_VJPS) + list(K._FAMILY_VJPS)
               + [K.K_CAST, K.REVERSE, K.FUSED])
    for f64 in (0, 1):
        missing = [k for k in vjp_ops if K.KTAB[f64, k] == 0]
        assert not missing, f"VJP kernels missing for dtype flag {f64}: {missing}"
        missing = [k for k in K.FORWARD_OPS if K.KFWD[f64, k] == 0]
        assert not missing, f"forward kernels missing for dtype flag {f64}: {missing}"
    x = tg.tensor([1.0, 2.0], dtype=tg.float64, requires_grad=True)
    (x.sin() * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.sin([1.0, 2.0]) + [1.0, 2.0] * np.cos([1.0, 2.0]))


@pytest.mark.parametrize("dtype", [tg.float32, tg.float64])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_rows_and_columns_agree_with_torch(dtype, log):
    """The last-dim path (contiguous rows, eight max lanes) and the strided path, on row
    lengths around the lane count, with nan and +-inf rows, values and gradients."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for d in (1, 2, 7, 8, 9, 16, 17, 33):
        x = rng.standard_normal((5, d)) * 4
        x[1, d // 2] = np.nan
        x[2, :] = -np.inf
        x[3, -1] = np.inf
        g = rng.standard_normal((5, d))
        for dim in (1, 0):
            t = tg.tensor(x, dtype=dtype, requires_grad=True)
            y = t.log_softmax(dim) if log else t.softmax(dim)
            y.backward(tg.tensor(g, dtype=dtype))
            tt = torch.tensor(x, dtype=getattr(torch, dtype.name), requires_grad=True)
            ty = tt.log_softmax(dim) if log else tt.softmax(dim)
            ty.backward(torch.tensor(g, dtype=tt.dtype))
            tol = 1e-5 if dtype == tg.float32 else 1e-12
            np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=tol,
                                       atol=tol, err_msg=f"d={d} dim={dim}")
            np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=tol, atol=tol,
                                       err_msg=f"d={d} dim={dim}")


def test_sums_of_long_runs_are_accurate_and_repeatable():
    """The vectorised block sum: float64 accumulation (a float32 sum of 1e6 ones and a
    tiny term stays exact), the same floats on every call, remainders of any length."""
    x = np.ones(1_000_003, np.float32)
    assert tg.tensor(x).sum().item() == 1_000_003.0
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 4095, 4096, 4097, 10_001):
        v = rng.standard_normal(n)
        a = tg.tensor(v).sum().item()
        assert a == tg.tensor(v).sum().item()
        assert abs(a - float(np.sum(v.astype(np.longdouble)))) <= 1e-12 * np.abs(v).sum()
