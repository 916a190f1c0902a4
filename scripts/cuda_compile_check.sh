#!/usr/bin/env bash
# Compile every CUDA kernel file (csrc/cuda/*.cu) to an object file with nvcc, without linking
# and without a GPU: catches compile errors in the CUDA path on a machine that cannot build or
# run it (a CPU torch, CI). Nothing is run, so this says nothing about correctness or speed.
#
# A CPU torch wheel ships the ATen/c10 CUDA headers but not the CUDA libraries' headers those
# include (cuBLAS, cuSPARSE, cuSOLVER), nor c10's generated cuda_cmake_macros.h; the kernels use
# none of them, so missing ones are replaced by opaque stubs in a temporary folder.
# Usage: scripts/cuda_compile_check.sh [FILE.cu ...]   (default: csrc/cuda/*.cu)
# PYTHON: the python whose torch headers to use (default: .venv/bin/python, else python3).
# Exit status: 0 all compiled, 1 a file failed (its errors are printed), 2 no nvcc.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
FILES=("$@")
[ ${#FILES[@]} -gt 0 ] || FILES=(csrc/cuda/*.cu)
NVCC=${NVCC:-$(command -v nvcc || true)}
[ -n "$NVCC" ] || { echo "nvcc not found on PATH (set NVCC)"; exit 2; }
CUDA_INCLUDE=$(dirname "$(dirname "$(readlink -f "$NVCC")")")/include
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
stub() { [ -e "$CUDA_INCLUDE/$1" ] || printf '#pragma once\n%s\n' "$2" > "$TMP/$1"; }
stub cublas_v2.h 'typedef struct cublasContext* cublasHandle_t; typedef int cublasStatus_t;'
stub cublasLt.h 'typedef struct cublasLtContext* cublasLtHandle_t;'
stub cusparse.h 'typedef struct cusparseContext* cusparseHandle_t; typedef int cusparseStatus_t;'
stub cusolver_common.h 'typedef int cusolverStatus_t;'
stub cusolverDn.h '#include <cusolver_common.h>
typedef struct cusolverDnContext* cusolverDnHandle_t;'
read -r -a TORCH_INC < <("$PY" -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")
PY_INC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
DEFS=()
"$PY" -c "import pathlib, torch.utils.cpp_extension as c, sys; sys.exit(not any((pathlib.Path(p) / 'c10/cuda/impl/cuda_cmake_macros.h').exists() for p in c.include_paths()))" \
  || DEFS+=(-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)
# setup.py's nvcc flags, plus what torch.utils.cpp_extension adds for an extension
FLAGS=(-c -std=c++17 -arch=sm_90 -O3 --use_fast_math -lineinfo --expt-relaxed-constexpr -Xcompiler -fPIC
       -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H "${DEFS[@]}" -I"$TMP" "${TORCH_INC[@]}"
       -I"$PY_INC" -Icsrc -diag-suppress 3306 -Xcompiler -Wno-c++20-extensions)
status=0
pids=()
for f in "${FILES[@]}"; do
  ( "$NVCC" "${FLAGS[@]}" "$f" -o "$TMP/$(basename "$f").o" > "$TMP/$(basename "$f").log" 2>&1 ) &
  pids+=("$!:$f")
done
for entry in "${pids[@]}"; do
  pid=${entry%%:*} f=${entry#*:}
  if wait "$pid"; then echo "compiled $f"; else echo "FAILED $f"; cat "$TMP/$(basename "$f").log"; status=1; fi
done
exit $status
