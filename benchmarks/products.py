"""OpenBLAS products alone: the matrix products of one training step, timed by themselves.

A training step of an MLP does three GEMMs per layer (forward product, weight
gradient, input gradient) less the first layer's input gradient, which nobody
needs. This module times exactly those products, at the workload's own shapes
and in the column-major form fastfit's core calls them (_core.pyx), with
``scipy.linalg.blas.sgemm``/``dgemm``: the same SciPy OpenBLAS fastfit links, in
a process that imported fastfit first so the same kernels are chosen, at 1 thread
and at the run's largest thread count, keeping the faster (short products run
faster on one thread). Each product is repeated on the same arrays (warm caches)
and the fastest of several loops is kept, so the sum is a best case: the
workload's samples/s if everything but these products took no time, on this
library. It is not a bound on other libraries (PyTorch and JAX use other GEMM
kernels) nor on fastfit, whose products see colder caches but may overlap other
work; the machine's peak (peak.py) is the library-independent yardstick.

The f2py wrapper costs about a microsecond per call, which fastfit's core does
not pay; it is measured on a 1x1x1 product and subtracted (this matters only for
the tiny network, whose products take a few microseconds).
"""
import time

import numpy as np


def step_gemms(sizes, batch):
    """(what, transa, transb, m, n, k) of each GEMM of one step, column-major as _core.pyx calls them.

    One exception: where OpenBLAS has small-matrix kernels, _core.pyx calls a small forward
    product 'T', 'T' from a transposed copy of its input (``_core.input_transposed``); this
    yardstick keeps 'T', 'N' for every forward product, so on the tiny network at batches
    16 to 64 it times a slower layout than fastfit runs."""
    calls = []
    for k, (din, dout) in enumerate(zip(sizes[:-1], sizes[1:])):
        calls.append((f"L{k + 1} forward", 1, 0, dout, batch, din))      # F^T = W @ H^T
        calls.append((f"L{k + 1} dW", 0, 1, din, dout, batch))           # dW^T = H^T @ dF
        if k > 0:
            calls.append((f"L{k + 1} dH", 0, 0, din, batch, dout))       # dH^T = W^T @ dF^T
    return calls


def _operands(transa, transb, m, n, k, dtype, rng):
    """Fortran-ordered a, b, c so the f2py wrapper passes them without copying."""
    a_shape = (k, m) if transa else (m, k)
    b_shape = (n, k) if transb else (k, n)
    a = np.asfortranarray(rng.standard_normal(a_shape).astype(dtype) * 0.1)
    b = np.asfortranarray(rng.standard_normal(b_shape).astype(dtype) * 0.1)
    c = np.zeros((m, n), dtype=dtype, order="F")
    return a, b, c


def time_call(fn, min_s, repeats=7):
    """Seconds per call of fn(): the best of ``repeats`` loops of at least min_s each.

    The best, not the median: other load only ever adds time, and this is a best case.
    """
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(min_s / one))
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        per.append((time.perf_counter() - t0) / loops)
    return min(per)


def gemm_fn(dtype):
    from scipy.linalg import blas
    return blas.sgemm if np.dtype(dtype) == np.float32 else blas.dgemm


def call_overhead(dtype, min_s):
    gemm = gemm_fn(dtype)
    a, b, c = _operands(0, 0, 1, 1, 1, dtype, np.random.default_rng(0))
    return time_call(lambda: gemm(1.0, a, b, beta=0.0, c=c, overwrite_c=1), min_s)


def products_alone(sizes, batch, dtype, min_s, overhead):
    gemm = gemm_fn(dtype)
    rng = np.random.default_rng(0)
    rows, total = [], 0.0
    for what, ta, tb, m, n, k in step_gemms(sizes, batch):
        a, b, c = _operands(ta, tb, m, n, k, dtype, rng)
        out = gemm(1.0, a, b, beta=0.0, c=c, trans_a=ta, trans_b=tb, overwrite_c=1)
        assert out is c or np.shares_memory(out, c), "sgemm copied its output: timing would be off"
        t = time_call(lambda: gemm(1.0, a, b, beta=0.0, c=c, trans_a=ta, trans_b=tb, overwrite_c=1), min_s)
        net = max(t - overhead, 0.0)
        total += net
        rows.append({"gemm": what, "trans": ("T" if ta else "N") + ("T" if tb else "N"), "m": m, "n": n,
                     "k": k, "us": t * 1e6, "us_net": net * 1e6,
                     "gflops": 2.0 * m * n * k / net / 1e9 if net > 0 else None})
    flops = sum(2.0 * m * n * k for _, _, _, m, n, k in step_gemms(sizes, batch))
    return {"gemms": rows, "step_us": total * 1e6, "flops_per_step": flops,
            "samples_per_s": batch / total if total > 0 else None,
            "gflops": flops / total / 1e9 if total > 0 else None}


def run(spec):
    """Task: the products-alone rate of each workload in spec["workloads"]."""
    import threadpoolctl
    from .workloads import Workload
    threads, min_s = spec["threads"], spec["min_s"]
    result = {"workloads": {}}
    # A best case: each workload's products timed with 1 thread and with `threads`,
    # keeping the faster (short products run faster on one thread).
    for t in sorted({1, threads}):
        with threadpoolctl.threadpool_limits(t, user_api="blas"):
            overhead = {dt: call_overhead(dt, min_s) for dt in ("float32", "float64")}
            if t == threads:
                result["call_overhead_us"] = {dt: v * 1e6 for dt, v in overhead.items()}
            for d in spec["workloads"]:
                wl = Workload.from_dict(d)
                limit = products_alone(wl.sizes, wl.batch, wl.dtype, min_s, overhead[wl.dtype])
                limit["threads"] = t
                best = result["workloads"].get(wl.name)
                if best is None or (limit["samples_per_s"] or 0) > (best["samples_per_s"] or 0):
                    result["workloads"][wl.name] = limit
    return result
