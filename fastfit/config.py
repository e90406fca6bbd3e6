"""What BLAS fastfit runs on: show_config() for people, blas_info() for programs."""
import sys

from . import _blas_select, _core, _cpu, _threads


def blas_info():
    """A dict: the kernel decision made at import, and every loaded BLAS (threadpoolctl's view).

    The library fastfit calls is SciPy's (``scipy_blas``); NumPy may load its own copy.
    """
    scipy_blas = _threads.scipy_blas_info()
    libs = _threads.controller().info()
    from ._version import __version__
    import numpy, scipy
    return {
        "fastfit": __version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "kernel_decision": _blas_select.DECISION,
        "own_threads": _core.team_size(),
        "cpu_count": _threads.cpu_count(),
        "auto_threads_max": _threads.allowed_threads(),
        "loop_clone": _cpu.loop_clone(),
        "own_products": _blas_select.own_products()[0],
        "own_products_reason": _blas_select.own_products()[1],
        "small_forward_transposed": _blas_select.small_matrix_kernels(),
        "few_row_forward_transposed": _blas_select.few_row_outputs_transposed(),
        "scipy_blas": scipy_blas,
        "all_blas": [lib for lib in libs if lib.get("user_api") == "blas"],
    }


def show_config(file=None):
    """Print the BLAS fastfit uses, its kernels and threads, and how they were chosen."""
    file = file or sys.stdout
    info = blas_info()
    print(f"fastfit {info['fastfit']}  (Python {info['python']}, NumPy {info['numpy']}, SciPy {info['scipy']})", file=file)
    print(f"cores available: {info['cpu_count']}; automatic thread count at most "
          f"{info['auto_threads_max']} (the cores, and never above SciPy's BLAS count before fastfit)", file=file)
    print(f"kernel choice at import: {info['kernel_decision']}", file=file)
    if info["own_products"]:
        print(f"matrix products past {_core.SMALL_PRODUCT_MAX_MULADDS:.0e} multiply-adds with no side "
              f"under {_core.OWN_PRODUCT_MIN_SIDE_LENGTH}: fastfit's own (csrc/gemm.c: AVX-512, packed, register "
              f"tiles of 8 x 32 floats or 8 x 16 doubles), because {info['own_products_reason']} "
              "(FASTFIT_PRODUCTS=blas keeps SciPy's BLAS); the others: SciPy's BLAS (sgemm/dgemm), whose "
              "small-matrix kernels skip packing", file=file)
    else:
        print(f"matrix products: SciPy's BLAS (sgemm/dgemm) for every one: {info['own_products_reason']}",
              file=file)
    print("products of a one-row batch: each weight gradient an outer product and each input gradient "
          "the weight matrix's rows summed, in fastfit's C loops (BLAS's kernels cost more than the "
          "work); the forward product as above", file=file)
    print(f"products of at least {_core.PRODUCT_SPLIT_MIN_FLOPS / 1e6:.1f} MFLOP are cut into shares of their "
          "output across fastfit's threads, one call each, along the output's longer side (a weight "
          f"gradient by rows up to {_core.WEIGHT_GRADIENT_ROWS_RATIO}x wider than tall); BLAS runs at one "
          "thread while fastfit works", file=file)
    if info["small_forward_transposed"]:
        print(f"small forward products (up to {_core.SMALL_PRODUCT_MAX_MULADDS:.0e} multiply-adds, over "
              f"{_core.SMALL_PRODUCT_TN_MAX_OUTPUTS} outputs): from the input transposed, the layout SciPy's "
              "OpenBLAS runs through its small-matrix kernels", file=file)
    else:
        print("small forward products: as they come (this BLAS has no small-matrix kernels to pick a "
              "layout for)", file=file)
    few_rows = (f"those of at most {_core.FEW_ROWS_PRODUCT_MAX_ROWS} rows, past that range, with outputs at "
                f"least {_core.FEW_ROWS_PRODUCT_OUTPUT_RATIO} times wider than the rows: formed as (W H^T)^T, "
                "the layout these kernels run faster there")
    if info["few_row_forward_transposed"] and info["own_products"]:
        print(f"float32 forward products of few rows: as H W^T on fastfit's own product from "
              f"{_core.OWN_PRODUCT_MIN_SIDE_LENGTH} rows (it runs that layout fast); below that, BLAS runs "
              f"them, {few_rows}", file=file)
    elif info["few_row_forward_transposed"]:
        print(f"float32 forward products: {few_rows}", file=file)
    else:
        print("forward products of few rows: as H W^T (the transposed form was measured faster only with "
              "OpenBLAS's AVX-512 kernels)", file=file)
    print(f"element-wise passes, losses and optimizer updates: fastfit's C loops, {info['loop_clone']} "
          "version (the loader's choice for this CPU)" + ("; a layer's bias and ReLU, and its ReLU gate and bias "
          "gradient, inside fastfit's own product where it runs" if info["own_products"] else ""), file=file)
    print(f"fastfit's own threads (large products and optimizer updates): {info['own_threads']} started "
          "so far; they sleep 50 us after their last job, and fastfit loads no OpenMP runtime", file=file)
    lib = info["scipy_blas"]
    if lib is None:
        print("BLAS used by fastfit (SciPy's): not identified by threadpoolctl", file=file)
    else:
        print(f"BLAS used by fastfit (SciPy's): {lib.get('internal_api')} {lib.get('version')}, "
              f"kernels {lib.get('architecture')}, {lib.get('num_threads')} threads, "
              f"threading {lib.get('threading_layer')}", file=file)
        print(f"  {lib.get('filepath')}", file=file)
    for other in info["all_blas"]:
        if lib is not None and other.get("filepath") == lib.get("filepath"):
            continue
        print(f"also loaded: {other.get('internal_api')} {other.get('version')}, kernels "
              f"{other.get('architecture')}, {other.get('num_threads')} threads ({other.get('filepath')})", file=file)
