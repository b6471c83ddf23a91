"""benchmarks/layers_compare.py --quick as a script: its checks pass and its table has the
three workloads (timings are not asserted: they depend on the machine)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_layers_compare_quick():
    out = subprocess.run([sys.executable, os.path.join("benchmarks", "layers_compare.py"),
                          "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "FAIL" not in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    for name in ("cnn", "gru", "transformer"):
        assert sum(line.startswith(f"| {name} |") for line in rows) == 2, out.stdout
