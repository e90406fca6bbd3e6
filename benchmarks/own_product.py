"""fastfit's own product against SciPy's OpenBLAS, one product of a step at a time.

    python -m benchmarks.own_product [--workloads small,medium,large] [--threads 1] [--rounds 7]
                                     [--dtype float32]

Each product of one training step (forward, weight gradient and input gradient of every
layer, the first layer's input gradient excepted) is timed through the core's own product
path, ``_core.product``: the ``gemm`` the training step calls, cut into shares across
``--threads`` of fastfit's team, its output and packing buffers reused. The two backends
alternate in one process, round after round, and each keeps its best round, so drift in the
machine's speed falls on both alike. It prints GFLOP/s per product and the ratio of the
step's products in all (own over BLAS, above 1 when fastfit's own product is faster).
"""
import argparse
import time

import numpy as np

import fastfit  # noqa: F401  (first: it chooses OpenBLAS's kernels before SciPy loads them)
from fastfit import _core, _threads

from .workloads import MAIN_BATCH, SIZES


def step_products(sizes, batch):
    """(what, trans_a, trans_b, M, N, K) of each product of a step, row-major as _core.pyx states them."""
    products = []
    for k, (d_in, d_out) in enumerate(zip(sizes, sizes[1:])):
        products.append((f"L{k + 1} forward H W^T", False, True, batch, d_out, d_in))
        products.append((f"L{k + 1} weight gradient dF^T H", True, False, d_out, d_in, batch))
        if k > 0:
            products.append((f"L{k + 1} input gradient dF W", False, False, batch, d_in, d_out))
    return products


def _best_round(fn, loops):
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - t0) / loops


def compare(sizes, batch, threads=1, rounds=7, min_s=0.02, rng=None, dtype=np.float32):
    """Per product: seconds on fastfit's own product and on BLAS (best round of each)."""
    rng = rng or np.random.default_rng(0)
    longest = max(max(sizes), batch)
    packing = np.empty(threads * _core.own_product_packing_bytes([longest], 0) + 64, dtype=np.uint8)
    rows = []
    for what, trans_a, trans_b, M, N, K in step_products(sizes, batch):
        A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
        B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
        out = np.empty((M, N), dtype=dtype)
        calls = {own: (lambda own=own: _core.product(A, B, trans_a, trans_b, threads, own, out, packing))
                 for own in (True, False)}
        t0 = time.perf_counter()
        calls[False]()
        loops = max(1, int(min_s / max(time.perf_counter() - t0, 1e-7)))
        best = {True: float("inf"), False: float("inf")}
        for _ in range(rounds):
            for own, fn in calls.items():
                best[own] = min(best[own], _best_round(fn, loops))
        rows.append({"product": what, "M": M, "N": N, "K": K, "own_s": best[True], "blas_s": best[False]})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="small,medium,large",
                        help="comma-separated networks of benchmarks/workloads.py, each at its main "
                             "batch or at NAME:BATCH (e.g. small:16)")
    parser.add_argument("--threads", type=int, default=1, help="fastfit threads each product is cut across")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per product")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args(argv)
    if not _core.own_products_usable():
        raise SystemExit("fastfit's own product needs AVX-512, which this CPU or OS does not run")
    with _threads.single_threaded_blas():
        for spec in args.workloads.split(","):
            name, _, batch = spec.partition(":")
            sizes, batch = SIZES[name], int(batch or MAIN_BATCH[name])
            rows = compare(sizes, batch, args.threads, args.rounds, dtype=np.dtype(args.dtype))
            print(f"{name}: {'-'.join(map(str, sizes))}, batch {batch}, {args.dtype}, {args.threads} thread(s)")
            for r in rows:
                flops = 2.0 * r["M"] * r["N"] * r["K"]
                print(f"  {r['product']:32s} {r['M']:5d} x {r['N']:5d} x {r['K']:5d}  own "
                      f"{flops / r['own_s'] / 1e9:6.1f}  BLAS {flops / r['blas_s'] / 1e9:6.1f} GFLOP/s  "
                      f"{r['blas_s'] / r['own_s']:.2f}x")
            own, blas = sum(r["own_s"] for r in rows), sum(r["blas_s"] for r in rows)
            print(f"  the step's products: own {own * 1e3:.3f} ms, BLAS {blas * 1e3:.3f} ms, {blas / own:.2f}x")


if __name__ == "__main__":
    main()
