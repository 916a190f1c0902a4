#!/usr/bin/env bash
# Sets up .venv with torch (CPU wheel by default), the dependencies and the compiled extension.
#   TORCH_SPEC   pip requirement for torch (default torch==2.13.0; e.g. "torch==2.11.0" on a CUDA box)
#   PYTHON       interpreter used to create the venv (default python3)
#   USE_CUDA=0 / FORCE_CUDA=1   passed through to setup.py
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip setuptools wheel ninja
"${PIP[@]}" "$TORCH_SPEC"
# --no-build-isolation: compile against the torch installed above (isolation would fetch another)
"${PIP[@]}" --no-build-isolation -e ".[test]"
.venv/bin/python -c "import bench; print('wsolbench ready: extension', bench.EXTENSION_FLAVOUR)"
