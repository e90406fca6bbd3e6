"""Build the compiled core.

Two extension modules:
- fastfit._cpu: CPU-feature detection in plain C. It must not touch SciPy, because
  it runs before SciPy's BLAS loads (see fastfit/_blas_select.py).
- fastfit._core: forward, backward, losses, optimizer updates and the fused
  training loop, calling BLAS through scipy.linalg.cython_blas.
"""
import os
import sys
import tempfile
import subprocess

import sysconfig
from setuptools import Extension, setup
from Cython.Build import cythonize


def compiler_has_openmp():
    """True when the C compiler accepts -fopenmp and links a program that uses it."""
    if sys.platform == "win32":
        return False
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            r = subprocess.run(cc.split() + ["-fopenmp", path, "-o", os.path.join(tmp, "t")],
                               capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


openmp = compiler_has_openmp() and os.environ.get("FASTFIT_NO_OPENMP") != "1"
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
if openmp:
    extra_compile.append("-fopenmp")
    extra_link.append("-fopenmp")

extensions = [
    Extension("fastfit._cpu", ["fastfit/_cpu.pyx", "csrc/cpu_features.c"],
              include_dirs=["csrc"], extra_compile_args=["-O2"]),
    Extension("fastfit._core", ["fastfit/_core.pyx", "csrc/kernels.c"],
              include_dirs=["csrc"], extra_compile_args=extra_compile,
              extra_link_args=extra_link),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    ),
)
