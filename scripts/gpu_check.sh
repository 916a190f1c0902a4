#!/usr/bin/env bash
# On a CUDA machine (e.g. the H100 device): build the extension with the CUDA kernels, run the
# CUDA tests, and write leaderboard/kernels.md from `python -m bench profile --device cuda`.
# Uses the python on PATH (which must hold a CUDA torch); logs go to ${OUT:-/tmp}.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
python3 setup.py build_ext --inplace 2>&1 | tee "$LOG/build.log" | tail -n 5
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import bench; assert bench.EXTENSION_FLAVOUR == 'cuda', bench.EXTENSION_FLAVOUR"
python3 -m pytest -q -m cuda tests 2>&1 | tee "$LOG/cuda_tests.log" | tail -n 15
python3 -m bench profile --device cuda --write leaderboard/kernels.md 2>&1 | tee "$LOG/profile.log"
cp leaderboard/kernels.md "$LOG/" 2>/dev/null || true
