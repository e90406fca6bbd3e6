"""Run under mpiexec: fastfit._allreduce against MPI's Allreduce, one JSON file from rank 0.

    mpiexec -n 2 python tests/mpi_scripts/allreduce.py OUT.json

Each case records, per rank, what the test needs: whether the sum equals
MPI's (bit for bit, or within a bound), and a CRC of the result so the test
can check that every rank holds the same bits.
"""
import json
import sys
import time
import zlib

import numpy as np
from mpi4py import MPI

from fastfit._allreduce import AllReduce, bfloat16_decode, bfloat16_encode

comm = MPI.COMM_WORLD
rank, size = comm.rank, comm.size
out = {"size": size}


def gradients(n, dtype, seed):
    """Values over many magnitudes (as gradients are), different on every rank."""
    rng = np.random.default_rng(1000 * seed + rank)
    return (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, n)).astype(dtype)


def record(name, **values):
    out.setdefault(name, []).append(values)


def crc(arr):
    return zlib.crc32(np.ascontiguousarray(arr).view(np.uint8))


# ---- exact: equal to MPI's Allreduce(SUM); many chunks, odd sizes, both dtypes, both progress modes
# (more than 2 ranks: auto is the ring already, and the machine may have fewer cores than ranks)
for progress, algorithm in (("thread", "auto"), ("wait", "auto"), ("thread", "ring"))[:3 if size == 2 else 1]:
    for chunk_bytes in (64, 1000, 256 * 1024):
        with AllReduce(comm, chunk_bytes=chunk_bytes, progress=progress, algorithm=algorithm) as ar:
            for n in (1, 2, 3, 5, 1001) + (() if chunk_bytes < 1000 else (40_000,)):
                for dtype in (np.float32, np.float64):
                    g = gradients(n, dtype, seed=n + chunk_bytes)
                    expected = g.copy()
                    comm.Allreduce(MPI.IN_PLACE, expected, op=MPI.SUM)
                    x = g.copy()
                    ar.allreduce(x, timeout=30)
                    mag = np.abs(g)
                    comm.Allreduce(MPI.IN_PLACE, mag, op=MPI.SUM)
                    err = float((np.abs(x.astype(np.float64) - expected) / np.maximum(mag, 1e-300)).max())
                    record("exact", progress=progress, algorithm=algorithm, chunk=chunk_bytes, n=n,
                           dtype=np.dtype(dtype).name,
                           bitwise=bool(np.array_equal(x, expected)), rel_err=err, crc=crc(x))

# ---- several operations at once, one per layer, waited for in any order
sizes = (784 * 64 + 64, 64 * 32 + 32, 32 * 10 + 10)
flat = gradients(sum(sizes), np.float32, seed=7)
expected = flat.copy()
comm.Allreduce(MPI.IN_PLACE, expected, op=MPI.SUM)
with AllReduce(comm, chunk_bytes=4096) as ar:
    x = flat.copy()
    ar.allreduce(x[:10])  # and a buffer reused: pooled scratch must not leak old data
    x[:10] = flat[:10]
    edges = np.cumsum((0,) + sizes)
    handles = [ar.start(x[a:b]) for a, b in zip(edges[:-1][::-1], edges[1:][::-1])]  # last layer first
    for h in handles[::-1]:
        ar.wait(h, timeout=30)
    record("layers", bitwise=bool(np.array_equal(x, expected)), all_done=all(h.done for h in handles),
           seconds_set=all(h.seconds is not None for h in handles), crc=crc(x))

# ---- MPI's own Iallreduce through the same progress thread
with AllReduce(comm, algorithm="mpi") as ar:
    g = gradients(10_000, np.float64, seed=3)
    expected = g.copy()
    comm.Allreduce(MPI.IN_PLACE, expected, op=MPI.SUM)
    ar.allreduce(g, timeout=30)
    record("mpi_algorithm", bitwise=bool(np.array_equal(g, expected)), crc=crc(g))

# ---- bfloat16 on the wire: the same bits everywhere, and the value each schedule defines
def bf16(x):
    h = np.empty(x.size, np.uint16)
    return bfloat16_decode(bfloat16_encode(np.ascontiguousarray(x, np.float32), h), np.empty(x.size, np.float32))


for algorithm in (("pair", "ring") if size == 2 else ("ring",)):
    with AllReduce(comm, compress="bfloat16", chunk_bytes=1024, algorithm=algorithm) as ar:
        for n in (1, 7, 5000):
            g = gradients(n, np.float32, seed=n)
            g[:: max(1, n // 3)] *= 1e30  # near bfloat16's top: sums may round to infinity
            x = g.copy()
            ar.allreduce(x, timeout=30)
            inputs = comm.allgather(g)
            exact = np.sum(np.array(inputs, dtype=np.float64), axis=0)
            with np.errstate(over="ignore"):
                if algorithm == "pair":
                    # both ranks add the two rounded values in float32
                    model = bf16(inputs[0]) + bf16(inputs[1])
                elif size == 2:
                    # rank r completes segment r+1: its own float32 value plus the other's rounded one,
                    # rounded once more; rank 0 owns the second half, rank 1 the first
                    model = np.empty(n, np.float32)
                    half = n // 2
                    for owner, (lo, hi) in ((1, (0, half)), (0, (half, n))):
                        model[lo:hi] = bf16(inputs[owner][lo:hi] + bf16(inputs[1 - owner][lo:hi]))
                else:
                    model = None
            finite = np.isfinite(x)
            rel = float((np.abs(x[finite] - exact[finite]) / np.abs(np.array(inputs))[:, finite].sum(axis=0)).max()) \
                if finite.any() else 0.0
            record("bfloat16", algorithm=algorithm, n=n, crc=crc(x),
                   low_bits_zero=bool(not (x.view(np.uint32) & 0xFFFF).any()),
                   matches_model=None if model is None else bool(np.array_equal(x, model)), rel_err=rel)

# ---- NaN and infinity survive compression; a NaN anywhere makes that element NaN everywhere
with AllReduce(comm, compress="bfloat16") as ar:
    x = np.ones(8, np.float32)
    if rank == 0:
        x[1] = np.nan
        x[2] = np.inf
        x[3] = np.float32(np.frombuffer(np.uint32(0x7FFFFFFF).tobytes(), np.float32)[0])  # NaN, payload all ones
    ar.allreduce(x, timeout=30)
    record("nonfinite", nan=[bool(v) for v in np.isnan(x)], inf=[bool(v) for v in np.isinf(x)], crc=crc(x))

# ---- a rank that starts late: TimeoutError on the waiting rank, then the sum still completes
with AllReduce(comm) as ar:
    x = np.full(1000, float(rank + 1))
    timed_out = None
    if rank == 0:
        h = ar.start(x)
        try:
            ar.wait(h, timeout=0.2)
            timed_out = False
        except TimeoutError as exc:
            timed_out = str(exc)
        comm.Barrier()  # now let the others start
        ar.wait(h, timeout=30)
    else:
        comm.Barrier()
        ar.allreduce(x, timeout=30)
    record("late_rank", timed_out=timed_out, sum_ok=bool(np.all(x == size * (size + 1) / 2)))

# ---- close with an operation still under way: TimeoutError, not a hang
ar = AllReduce(comm)
x = np.ones(100)
closing = None
if rank == 0:
    h = ar.start(x)
    try:
        ar.close(timeout=0.2)
        closing = "closed"
    except TimeoutError as exc:
        closing = str(exc)
    comm.Barrier()
    ar._thread.join(30)  # the late rank joined: the sum completes and the closed engine's thread ends
    closing = [closing, h.done, not ar._thread.is_alive()]
else:
    comm.Barrier()
    ar.allreduce(x, timeout=30)
    ar.close()
record("close_pending", result=closing)

# ---- bad input: a clear error naming the problem
errors = {}
with AllReduce(comm) as ar:
    for name, bad in [("2-D", np.zeros((2, 2), np.float32)), ("int", np.zeros(4, np.int32)),
                      ("strided", np.zeros(8, np.float32)[::2]), ("list", [1.0, 2.0])]:
        try:
            ar.start(bad)
            errors[name] = None
        except ValueError as exc:
            errors[name] = str(exc)
    ro = np.zeros(4)
    ro.flags.writeable = False
    try:
        ar.start(ro)
    except ValueError as exc:
        errors["read-only"] = str(exc)
with AllReduce(comm, compress="bfloat16") as ar:
    try:
        ar.start(np.zeros(4))
    except ValueError as exc:
        errors["bf16-float64"] = str(exc)
for kwargs in ({"compress": "float16"}, {"algorithm": "tree"}, {"chunk_bytes": 8}, {"progress": "never"},
               {"algorithm": "mpi", "compress": "bfloat16"}, {"poll_s": -1}, {"algorithm": "pair"}):
    try:
        AllReduce(comm, **kwargs).close()
        errors[repr(kwargs)] = None  # (pair on 2 ranks is fine)
    except ValueError as exc:
        errors[repr(kwargs)] = str(exc)
record("errors", **errors)

# ---- a quick time of one medium gradient, for the record (not asserted: the machine may be busy)
with AllReduce(comm) as ar:
    g = np.zeros(1_863_690, np.float32)
    ar.allreduce(g)
    comm.Barrier()
    t0 = time.perf_counter()
    ar.allreduce(g)
    record("timing", ring_ms=1e3 * (time.perf_counter() - t0))

gathered = comm.gather(out, root=0)
if rank == 0:
    merged = {"size": size}
    for key in out:
        if key != "size":
            merged[key] = [g[key] for g in gathered]  # [rank][case]
    with open(sys.argv[1], "w") as f:
        json.dump(merged, f)
