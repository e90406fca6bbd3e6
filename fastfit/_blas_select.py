"""Choose OpenBLAS's AVX-512 kernels before SciPy's BLAS loads.

SciPy's bundled OpenBLAS picks its kernels once, when the library loads, from
the CPU it detects. On CPUs it does not know (new AMD families, for one) it
falls back to AVX2 kernels and runs sgemm at roughly half the speed the
hardware allows. Setting OPENBLAS_CORETYPE=SkylakeX before the load selects the
AVX-512 kernels. We do that only when the CPU reports AVX-512 *and* the OS
saves its register state (XCR0), never when the user set OPENBLAS_CORETYPE
themselves, and never when FASTFIT_BLAS_SELECT=0.

This module must be imported before anything imports SciPy's BLAS; fastfit's
__init__ imports it first. The decision is kept in ``DECISION`` for
``fastfit.show_config()``.
"""
import os
import sys

#: What happened at import: a short sentence for show_config().
DECISION = "not run"

_SCIPY_BLAS_MODULES = ("scipy.linalg.cython_blas", "scipy.linalg._fblas", "scipy.linalg")


def _scipy_blas_loaded():
    return any(name in sys.modules for name in _SCIPY_BLAS_MODULES)


def select_kernels():
    """Set OPENBLAS_CORETYPE for the coming BLAS load where that is safe; return the decision."""
    global DECISION
    if os.environ.get("FASTFIT_BLAS_SELECT", "1").strip().lower() in ("0", "no", "off", "false"):
        DECISION = "kernel selection turned off (FASTFIT_BLAS_SELECT=0); OpenBLAS chose itself"
        return DECISION
    if "OPENBLAS_CORETYPE" in os.environ:
        DECISION = f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} set by the user; left as it is"
        return DECISION
    if _scipy_blas_loaded():
        DECISION = ("SciPy's BLAS was loaded before fastfit, too early to choose its kernels; "
                    "import fastfit first (or set OPENBLAS_CORETYPE yourself) to get AVX-512 kernels")
        return DECISION
    from . import _cpu
    if not _cpu.cpu_has_avx512():
        DECISION = "the CPU has no AVX-512; OpenBLAS chose its own kernels"
        return DECISION
    if not _cpu.os_saves_avx512():
        DECISION = "the CPU has AVX-512 but the OS does not save its state; OpenBLAS chose its own kernels"
        return DECISION
    os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    DECISION = "selected OpenBLAS's AVX-512 (SkylakeX) kernels: the CPU and the OS support AVX-512"
    return DECISION


#: OpenBLAS kernel sets (threadpoolctl's "architecture") that bring the small-matrix
#: sgemm/dgemm kernels the core's forward product picks its operand layout for
#: (``_core.input_transposed``): the AVX-512 ones. Elsewhere both layouts take
#: the general path, and transposing the input would only cost time.
SMALL_MATRIX_KERNEL_SETS = ("skylakex", "cooperlake", "sapphirerapids")

_small_matrix_kernels = None


def small_matrix_kernels():
    """Whether SciPy's BLAS is OpenBLAS running kernels with small-matrix paths (asked once)."""
    global _small_matrix_kernels
    if _small_matrix_kernels is None:
        from . import _threads
        lib = _threads.scipy_blas_info() or {}
        _small_matrix_kernels = (lib.get("internal_api") == "openblas"
                                 and str(lib.get("architecture", "")).lower() in SMALL_MATRIX_KERNEL_SETS)
    return _small_matrix_kernels


def few_row_outputs_transposed():
    """Whether the core forms float32 forward products of few rows as (W H^T)^T
    (``_core.output_transposed``): measured faster with the same AVX-512 kernel sets only."""
    return small_matrix_kernels()



#: Values of FASTFIT_PRODUCTS that keep every product on SciPy's BLAS.
_BLAS_ONLY = ("blas", "scipy", "openblas")

_own_products = None


def own_products():
    """(used, reason): whether float32 products past BLAS's small-matrix range run on
    fastfit's own AVX-512 product (csrc/gemm.c) rather than SciPy's BLAS, and why (asked once).

    It is used wherever the CPU and the operating system run AVX-512, unless
    FASTFIT_PRODUCTS=blas asks for SciPy's BLAS for every product."""
    global _own_products
    if _own_products is None:
        from . import _core
        choice = os.environ.get("FASTFIT_PRODUCTS", "").strip().lower()
        if choice in _BLAS_ONLY:
            _own_products = (False, f"FASTFIT_PRODUCTS={choice} asks for SciPy's BLAS for every product")
        elif choice not in ("", "auto", "own", "fastfit"):
            _own_products = (False, f"FASTFIT_PRODUCTS={choice!r} is not one of auto, own, blas; "
                                    "SciPy's BLAS for every product")
        elif not _core.own_products_usable():
            _own_products = (False, "this build, CPU or operating system cannot run fastfit's AVX-512 "
                                    "product; SciPy's BLAS for every product")
        else:
            _own_products = (True, "the CPU and the operating system run AVX-512")
    return _own_products
