"""The CUDA kernels compile (nvcc, no GPU, nothing linked or run): CI has no GPU, so without
this the CUDA path would only ever be compiled on a GPU machine. `scripts/cuda_compile_check.sh`."""
import os
import shutil
import subprocess
import sys

import pytest

from bench.registry import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "cuda_compile_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")


def _check(*files):
    return subprocess.run(["bash", str(SCRIPT), *map(str, files)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=1200)


def test_every_cuda_kernel_file_compiles():
    done = _check()
    assert done.returncode == 0, done.stdout + done.stderr
    kernels = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "csrc" / "cuda").glob("*.cu"))
    assert kernels and all(f"compiled {k}" in done.stdout for k in kernels)


def test_a_compile_error_fails_the_check_and_is_printed(tmp_path):
    broken = tmp_path / "broken.cu"
    broken.write_text("__global__ void kernel(float* x) { x[0] = undeclared_name; }\n")
    done = _check(broken)
    assert done.returncode == 1
    assert f"FAILED {broken}" in done.stdout and "undeclared_name" in done.stdout
