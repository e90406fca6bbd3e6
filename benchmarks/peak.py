"""The machine's measured peak: the best GEMM rate any backend in the process reaches.

A large square product (``n`` x ``n`` x ``n``, 3072 in the full run) in float32
and float64, with SciPy's BLAS (``sgemm``/``dgemm``, OpenBLAS, the kernels fastfit
chose), fastfit's own product where the CPU runs it (``_core.product``, the
core's ``gemm`` cut across fastfit's threads) and, where PyTorch is installed,
``torch.mm`` (MKL or oneDNN), at each of the run's thread counts. Each is warmed up once and the fastest of ``repeats``
calls is kept. The best float32 rate and the best float64 rate over backends and
thread counts are the peaks each workload's throughput is set against:
samples/s x the matrix products' flops per sample (workloads.Workload.flops_per_sample)
/ peak. Square products this large are the most favourable case a GEMM
has, so no training loop reaches 100%.
"""
import time

import numpy as np


def _best_time(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _scipy(n, dtype, threads, repeats):
    import threadpoolctl
    from scipy.linalg import blas
    gemm = blas.sgemm if dtype == "float32" else blas.dgemm
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n)).astype(dtype))
    b = np.asfortranarray(rng.standard_normal((n, n)).astype(dtype))
    c = np.zeros((n, n), dtype=dtype, order="F")
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        return _best_time(lambda: gemm(1.0, a, b, beta=0.0, c=c, overwrite_c=1), repeats)


def _fastfit_own(n, dtype, threads, repeats):
    import fastfit  # noqa: F401  (first, as in fastfit's own processes)
    from fastfit import _core, _threads
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)
    packing = np.empty(threads * _core.own_product_packing_bytes([n], 0) + 64, dtype=np.uint8)
    with _threads.single_threaded_blas():
        return _best_time(lambda: _core.product(a, b, False, False, threads, True, c, packing), repeats)


def _torch(n, dtype, threads, repeats):
    import torch
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    dt = torch.float32 if dtype == "float32" else torch.float64
    a = torch.randn(n, n, generator=g, dtype=dt)
    b = torch.randn(n, n, generator=g, dtype=dt)
    c = torch.empty(n, n, dtype=dt)
    return _best_time(lambda: torch.mm(a, b, out=c), repeats)


def probe(spec):
    """Task: the machine's speed right now, at the thread count a measurement just used: the best
    of a few 1024^3 float32 products with SciPy's BLAS (about 0.1 s). A process timed while
    this machine ran at a fraction of its usual speed (a virtual machine's cores placed on one
    physical core's two hyper-threads, say) is recognised by its probe, not by its spread."""
    n = spec.get("n", 1024)
    sec = _scipy(n, "float32", spec["threads"], spec.get("repeats", 7))
    return {"gflops": 2.0 * n ** 3 / sec / 1e9}


def run(spec):
    """Task: GFLOP/s of every (backend, dtype, thread count), and the best per dtype."""
    import importlib.util
    n, repeats = spec["n"], spec["repeats"]
    backends = {"SciPy OpenBLAS": _scipy}
    if importlib.util.find_spec("fastfit") is not None:
        from fastfit import _core
        if _core.own_products_usable():
            backends["fastfit's own product"] = _fastfit_own
    if spec.get("torch", True) and importlib.util.find_spec("torch") is not None:
        backends["torch.mm"] = _torch
    rates, errors = [], []
    for backend, fn in backends.items():
        for dtype in ("float32", "float64"):
            for t in spec["thread_counts"]:
                try:
                    sec = fn(n, dtype, t, repeats)
                except Exception as exc:  # one backend failing must not hide the others
                    errors.append(f"{backend} {dtype} {t} threads: {type(exc).__name__}: {exc}")
                    continue
                rates.append({"backend": backend, "dtype": dtype, "threads": t, "seconds": sec,
                              "gflops": 2.0 * n ** 3 / sec / 1e9})
    peak = {}
    for dtype in ("float32", "float64"):
        mine = [r for r in rates if r["dtype"] == dtype]
        if mine:
            peak[dtype] = max(mine, key=lambda r: r["gflops"])
    return {"n": n, "repeats": repeats, "rates": rates, "peak": peak, "errors": errors}
