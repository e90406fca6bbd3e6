"""CPU-feature checks that run before any BLAS is loaded (see _blas_select.py)."""

cdef extern from "cpu_features.h":
    int fastfit_avx512_usable()
    int fastfit_cpu_has_avx512()
    int fastfit_os_saves_avx512()
    const char *fastfit_loop_clone()


def avx512_usable():
    """True when both the CPU and the operating system support AVX-512."""
    return bool(fastfit_avx512_usable())


def cpu_has_avx512():
    """True when the CPU reports AVX-512 F, CD, BW, DQ and VL."""
    return bool(fastfit_cpu_has_avx512())


def os_saves_avx512():
    """True when the OS saves the AVX-512 register state (XCR0)."""
    return bool(fastfit_os_saves_avx512())


def loop_clone():
    """The version of fastfit's element-wise loops and updates running here: "avx512f",
    "avx2", "default" (baseline x86-64) or "single" (built without versions)."""
    return fastfit_loop_clone().decode()
