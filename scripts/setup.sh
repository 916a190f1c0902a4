#!/usr/bin/env bash
# Sets up .venv with torch (CPU wheel by default), the dependencies and the compiled extension.
#   TORCH_SPEC   pip requirement for torch (default torch==2.13.0; e.g. "torch==2.11.0" on a CUDA box)
#   PYTHON       interpreter used to create the venv (default python3)
#   USE_CUDA=0 / FORCE_CUDA=1   passed through to setup.py
#   WITH_BROWSER=0  do not install a headless Chromium (apt, as root) for the report test
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
# the torchcam parity tests' oracle, without its declared dependencies (they would pull torchvision)
"${PIP[@]}" --no-deps torchcam==0.5.0
# A headless Chromium for the report's rendering test and `bench report --screenshot` (Debian's
# package; playwright's own browser download is not used). Without one that test skips and
# says why. WITH_BROWSER=0 skips this step.
if [ "${WITH_BROWSER:-1}" = 1 ] && ! .venv/bin/python -c "import sys; from bench.browser import find_chromium; sys.exit(find_chromium() is None)" 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell) >/dev/null 2>&1 \
      || echo "warning: could not install chromium-headless-shell; the report's browser test will skip"
  else
    echo "note: no headless Chromium (as root: apt-get install chromium-headless-shell); the report's browser test will skip"
  fi
fi
.venv/bin/python -c "import bench; print('wsolbench ready: extension', bench.EXTENSION_FLAVOUR)"
