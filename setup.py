"""Builds the `bench._C` extension from csrc/.

csrc/ops/*.cpp   schemas and dispatcher entries (always)
csrc/cpu/*.cpp   CPU kernels, OpenMP (always)
csrc/cuda/*.cu   CUDA kernels, only when a CUDA torch and nvcc are present

Environment overrides: FORCE_CUDA=1 builds the CUDA sources even when no GPU is visible (a
CUDA torch and nvcc are still required); USE_CUDA=0 never builds them.
"""
import glob
import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    value = os.environ.get(name)
    return None if value is None else value.strip() not in ("", "0", "false", "False", "no")


def _decide_cuda():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if _flag("USE_CUDA") is False:
        return False, "USE_CUDA=0"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU build"
    if CUDA_HOME is None:
        return False, "nvcc not found (set CUDA_HOME)"
    if _flag("FORCE_CUDA"):
        return True, "FORCE_CUDA=1"
    if torch.cuda.is_available():
        return True, f"CUDA torch {torch.version.cuda} with nvcc at {CUDA_HOME}"
    return False, "no visible GPU (set FORCE_CUDA=1 to build the CUDA kernels anyway)"


def _extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    with_cuda, why = _decide_cuda()
    rel = lambda pattern: sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/ops/*.cpp") + rel("csrc/cpu/*.cpp")
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    define_macros = [("Py_LIMITED_API", "0x03090000")]
    if with_cuda:
        sources += rel("csrc/cuda/*.cu")
        define_macros.append(("WSOL_WITH_CUDA", "1"))
        ext = CUDAExtension(
            "bench._C", sources, define_macros=define_macros, py_limited_api=True,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            "bench._C", sources, define_macros=define_macros, py_limited_api=True,
            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"],
        )
    print(f"[wsolbench setup] building bench._C with {'CPU + CUDA' if with_cuda else 'CPU only'} "
          f"kernels: {why}; {len(sources)} sources", file=sys.stderr)
    return [ext]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(ext_modules=_extensions(), cmdclass=_cmdclass(), options={"bdist_wheel": {"py_limited_api": "cp39"}})
