#!/usr/bin/env bash
# On a CUDA machine (e.g. the H100 device): build the extension with the CUDA kernels, run the
# CUDA tests, and write leaderboard/kernels.md from `python -m bench profile --device cuda`.
# Uses the python on PATH (which must hold a CUDA torch); logs go to ${OUT:-/tmp}.
# A failing step is reported and the next one still runs, so one device call shows everything.
# PROFILE_OPS (comma list) limits the profiles; with PROFILE_APPEND=1 their tables are added
# (stamped) to the existing leaderboard/kernels.md instead of rewriting it; SKIP_TESTS=1 skips
# the CUDA tests; EXTRA (a shell command) runs last.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
status=0
step() { local name=$1; shift; local t0=$SECONDS; echo "== $name"; "$@"; local rc=$?; echo "== $name: rc=$rc in $((SECONDS - t0)) s"; [ $rc = 0 ] || status=1; return $rc; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
step build bash -c "python3 setup.py build_ext --inplace > '$LOG/build.log' 2>&1; rc=\$?; grep -E 'error|warning: ' '$LOG/build.log' | head -n 40; tail -n 3 '$LOG/build.log'; exit \$rc" || { echo "build failed"; exit 1; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
step flavour python3 -c "import bench; assert bench.EXTENSION_FLAVOUR == 'cuda', bench.EXTENSION_FLAVOUR; print('extension flavour: cuda')"
OUTFLAG=--write; [ -z "${PROFILE_APPEND:-}" ] || OUTFLAG=--append
[ -n "${SKIP_TESTS:-}" ] || step cuda-tests bash -c "python3 -m pytest -q --no-header -p no:cacheprovider -rfE -m cuda tests > '$LOG/cuda_tests.log' 2>&1; rc=\$?; tail -n 40 '$LOG/cuda_tests.log'; exit \$rc"
step profile bash -c "python3 -m bench profile --device cuda ${PROFILE_OPS:+--op $PROFILE_OPS} $OUTFLAG leaderboard/kernels.md > '$LOG/profile.log' 2>&1; rc=\$?; cat '$LOG/profile.log'; exit \$rc" || profile_failed=1
if [ -n "${profile_failed:-}" ] && [ -z "${PROFILE_OPS:-}" ]; then  # isolate which profile fails
  for op in $(python3 -c "from bench.profiling import load_profiles; print(' '.join(sorted(load_profiles())))"); do
    step "profile-$op" bash -c "python3 -m bench profile --device cuda --op $op >> '$LOG/profile_each.log' 2>&1 || { tail -n 20 '$LOG/profile_each.log'; exit 1; }"
  done
fi
cp leaderboard/kernels.md "$LOG/" 2>/dev/null || true
if [ -n "${EXTRA:-}" ]; then step extra bash -c "$EXTRA"; fi
exit $status
