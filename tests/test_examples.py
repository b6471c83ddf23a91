"""The examples, run through their main() with small sizes (and one as a script)."""
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_linear_regression(tmp_path):
    from examples import linear_regression
    r = linear_regression.main(["--iters", "300", "--out", str(tmp_path), "--no-progress"])
    z, a = np.array(r["losses_zeroed"]), np.array(r["losses_accumulated"])
    assert len(z) == len(a) == 300
    # the first two steps see the same gradients; after that accumulation shows
    assert z[0] == a[0] and z[1] == a[1] and z[2] != a[2]
    assert z[-1] < 1.0 and np.all(np.diff(z[5:]) < 0)        # zeroed: decreases steadily
    lo, hi = r["tail_range_accumulated"]
    assert hi > 10 * lo and hi > 10.0                           # accumulated: oscillates
    assert abs(r["w_zeroed"] - 2.0) < 0.5
    assert r["png"] and is_png(r["png"])


def test_linear_regression_seed_stop():
    from examples import linear_regression
    r = linear_regression.main(["--iters", "1000", "--stop-below", "1", "--no-plot",
                                "--no-progress"])
    assert r["final_loss_zeroed"] < 1.0 and len(r["losses_zeroed"]) < 1000


def test_digits_mlp_full_size(tmp_path):
    pytest.importorskip("sklearn")
    from examples import digits_mlp
    r = digits_mlp.main(["--out", str(tmp_path), "--no-progress"])
    assert r["n_train"] + r["n_test"] == 1797 and r["epochs"] == 30
    assert r["test_accuracy"] >= 0.95
    assert r["history"]["train_loss"][-1] < r["history"]["train_loss"][0] / 5
    assert r["png"] and is_png(r["png"])


def test_rosenbrock(tmp_path):
    pytest.importorskip("scipy")
    from examples import rosenbrock
    r = rosenbrock.main(["--sizes", "100", "10000", "--out", str(tmp_path), "--no-progress"])
    for n in (100, 10000):
        run = r["runs"][n]
        assert run["success"], run["message"]
        assert run["max_abs_err"] < 1e-6 and run["fun"] < 1e-12
        assert run["nfev"] < run["grad_evals"] <= run["nfev"] + 2 * run["nhev"]
    assert r["png"] and is_png(r["png"])


def test_rosenbrock_gradient_and_hessp_match_scipy():
    from scipy.optimize import rosen, rosen_der, rosen_hess_prod
    from examples.rosenbrock import Objective
    x = np.random.default_rng(0).uniform(-2, 2, 50)
    p = np.random.default_rng(1).standard_normal(50)
    obj = Objective()
    f, g = obj.value_and_grad(x)
    assert f == pytest.approx(rosen(x), rel=1e-13)
    np.testing.assert_allclose(g, rosen_der(x), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(obj.hessp(x, p), rosen_hess_prod(x, p), rtol=1e-6, atol=1e-6)
    assert g.dtype == np.float64


def test_freeze_finetune(tmp_path):
    from examples import freeze_finetune
    r = freeze_finetune.main(["--out", str(tmp_path), "--no-progress", "--quiet"])
    assert r["frozen_unchanged"] and r["trained_changed"]
    assert r["max_change"]["0.weight"] == 0.0 and r["max_change"]["0.bias"] == 0.0
    assert r["max_change"]["2.weight"] > 0.0
    assert r["final_loss"] < r["losses"][0] / 5
    assert r["png"] and is_png(r["png"])


def test_digits_script_prints_summary(tmp_path):
    """The README's demo command, as a script (here with 2 epochs)."""
    pytest.importorskip("sklearn")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = subprocess.run([sys.executable, os.path.join("examples", "digits_mlp.py"),
                          "--epochs", "2", "--out", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and "digits MLP" in out.stdout
    assert is_png(tmp_path / "digits_mlp.png")


def test_digits_cnn_compiled(tmp_path):
    """Conv2d, BatchNorm, pooling, a DataLoader and a OneCycle schedule, trained through
    tg.compile: the replays reach the eager run's accuracy."""
    pytest.importorskip("sklearn")
    from examples import digits_cnn
    r = digits_cnn.main(["--compile", "--out", str(tmp_path), "--no-progress"])
    assert r["test_accuracy"] >= 0.98
    records, replays, fallbacks = r["counts"]
    assert fallbacks == 0 and records <= 3 and replays > 800
    assert r["png"] and is_png(r["png"])
