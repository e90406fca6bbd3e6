"""Build the compiled core.

Three extension modules:
- fastfit._cpu: CPU-feature detection in plain C. It must not touch SciPy, because
  it runs before SciPy's BLAS loads (see fastfit/_blas_select.py).
- fastfit._core: forward, backward, losses, optimizer updates and the training
  step, calling BLAS through scipy.linalg.cython_blas; csrc/ holds its C kernels,
  its own float32 and float64 matrix products for AVX-512 (gemm.c) and its thread team.
- fastfit._bfloat16: the compressed all-reduce's conversions (csrc/bfloat16.c).
"""
import glob
import os

import numpy
from setuptools import Extension, setup
from Cython.Build import cythonize


# -fno-math-errno lets sqrt vectorize; -ffp-contract=off keeps a*b+c two roundings,
# the same arithmetic as the NumPy reference (no silent FMA on some machines only).
extra_compile = ["-O3", "-fno-math-errno", "-ffp-contract=off"]
extra_link = []
if os.environ.get("FASTFIT_SANITIZE"):
    # e.g. FASTFIT_SANITIZE=address,undefined: a debug build for memory-safety runs.
    flag = "-fsanitize=" + os.environ["FASTFIT_SANITIZE"]
    # -fno-wrapv: CPython's own flags include -fwrapv, which makes signed overflow
    # defined and so hides it from UBSan.
    extra_compile = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-wrapv", flag]
    extra_link = [flag]
# fastfit's own thread team (csrc/team.c) uses POSIX threads; no OpenMP runtime is
# loaded, so nothing fastfit does changes how another library's threads behave.
extra_link.append("-pthread")

extensions = [
    Extension("fastfit._cpu", ["fastfit/_cpu.pyx", "csrc/cpu_features.c"],
              include_dirs=["csrc"], extra_compile_args=["-O2"]),
    Extension("fastfit._core", ["fastfit/_core.pyx", "csrc/kernels.c", "csrc/team.c", "csrc/gemm.c",
                                "csrc/cpu_features.c"],
              depends=sorted(glob.glob("csrc/*.h")),  # a changed header rebuilds the core
              include_dirs=["csrc", numpy.get_include()],
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
              extra_compile_args=extra_compile, extra_link_args=extra_link),
    Extension("fastfit._bfloat16", ["fastfit/_bfloat16.pyx", "csrc/bfloat16.c"],
              depends=["csrc/bfloat16.h", "csrc/clones.h"], include_dirs=["csrc"],
              extra_compile_args=extra_compile, extra_link_args=extra_link),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    ),
)
