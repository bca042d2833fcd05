"""benchmarks/gpu_check.py runs (tiny sizes, CPU) with only what the GPU machine has: MLflow, Optuna, SciPy,
scikit-learn, pandas and the plotting libraries made unimportable, as if not installed, so the check never rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
#: What the GPU machine lacks (it has Python, torch, timm, transformers and their dependencies).
ABSENT = ("mlflow", "optuna", "scipy", "sklearn", "pandas", "matplotlib", "plotly")


def test_gpu_check_runs_tiny_on_cpu_without_mlflow_optuna_scipy(tmp_path):
    # None in sys.modules: `import x` raises ModuleNotFoundError and importlib.util.find_spec("x") is None, as for a
    # package that is not installed
    code = (f"import runpy, sys\nfor m in {ABSENT!r}:\n    sys.modules[m] = None\n"
            f"sys.argv = [{str(SCRIPT)!r}, '--tiny', '--device', 'cpu']\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: on a shared 2-core machine, two wait on each other
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for needle in ("gpu_check: cpu", "[loop] resnet18_cifar", "fp32: ours", "bf16: ours", "(goal <= 1.1)",
                   "[paper recipe] 32 synthetic 3x8x8 images, 4 Gaussian poisons (eps 0.3), resnet18_cifar, 3 epochs",
                   "poisoned model: 3 epochs in", "gd unlearning", "gus_z", "[gus] input gradients of 4 poisons",
                   "(goal >= 50x); same gradients: True", "[memory] peak GPU memory: none (not on a GPU)"):
        assert needle in text, (needle, text)
    assert "example-passes): " in text and "(0 example-passes)" not in text  # GD did unlearn something
