"""Data-parallel training over MPI: samples/s on 1 and 2 ranks, and the all-reduce's share of a step.

    python benchmarks/mpi_bench.py                 # runs everything, prints Markdown
    python benchmarks/mpi_bench.py --json out.json --ranks 1 2 --repeats 2

The medium workload of the benchmark suite: a 784-1024-1024-10 float32 MLP
(1,863,690 parameters, 7.45 MB of gradient), Adam, softmax cross-entropy,
global batch 128, on 10,240 standard-normal rows (as benchmarks/workloads.py
draws them). Every rank runs one BLAS thread (n_threads=1, OMP_NUM_THREADS=1),
so 2 ranks use 2 cores where 1 rank uses one.

For each rank count the driver launches ``mpiexec -n R python mpi_bench.py
--worker``. The worker fits with fastfit.distributed.fit (one warm-up epoch,
then timed epochs) and reads from the history the epoch time and the time
spent waiting for the gradient all-reduce (``allreduce_s``: the all-reduce
itself plus any wait for a slower rank). It then times bare blocking
``Allreduce`` calls of gradient-sized float32 buffers (the small, medium and
large models' parameter counts), which is the communication cost alone.
As a reference, ``fastfit.fit`` (the fused single-process loop) runs the same
fit on one thread without MPI.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (784, 1024, 1024, 10)
BATCH = 128
ROWS = 10240
DATA_SEED = 1234
#: gradient sizes (parameter counts) timed by the bare all-reduce: small, medium, large models
MESSAGE_PARAMS = {"small 784-256-256-10": 269_322, "medium 784-1024-1024-10": 1_863_690,
                  "large 784-4096-4096-10": 20_037_642}


def n_params(sizes):
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def make_data(rows):
    rng = np.random.default_rng(DATA_SEED)
    X = rng.standard_normal((rows, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], rows).astype(np.intp)
    return X, y


def single(args):
    """fastfit.fit, one thread, no MPI: the fused loop's samples/s.

    With --share R it trains on batches of BATCH/R rows over rows/R rows: the work of
    one of R ranks, without any communication. The driver starts R of these at once
    (the control: what R processes computing side by side get from this machine)."""
    sys.path.insert(0, ROOT)
    import fastfit as ff
    batch, rows = BATCH // args.share, args.rows // args.share
    X, y = make_data(rows)
    model = ff.MLP(SIZES, dtype=np.float32, seed=0)
    hist = ff.fit(model, X, y, "cross_entropy", ff.Adam(1e-3), batch_size=batch, epochs=args.epochs,
                  seed=0, n_threads=1, verbose=0)
    times = hist["time"][1:]
    steps = -(-rows // batch)
    print(json.dumps({"samples_per_s": rows / statistics.median(times), "epoch_s": times,
                      "step_ms": 1e3 * statistics.median(times) / steps}))


def worker(args):
    sys.path.insert(0, ROOT)
    from mpi4py import MPI
    import fastfit as ff
    from fastfit import distributed
    comm = MPI.COMM_WORLD
    X, y = make_data(args.rows)
    model = ff.MLP(SIZES, dtype=np.float32, seed=0)
    hist = distributed.fit(model, X, y, "cross_entropy", ff.Adam(1e-3), batch_size=BATCH, epochs=args.epochs,
                           seed=0, comm=comm, n_threads=1, verbose=0, timeout=600)
    times, waits = hist["time"][1:], hist["allreduce_s"][1:]  # the first epoch is the warm-up
    steps = -(-args.rows // BATCH)
    out = {"ranks": comm.size, "samples_per_s": args.rows / statistics.median(times),
           "epoch_s": times, "allreduce_wait_s": waits,
           "step_ms": 1e3 * statistics.median(times) / steps,
           "allreduce_wait_ms_per_step": 1e3 * statistics.median(waits) / steps,
           "bare_allreduce_ms": {}}
    # the communication alone: blocking all-reduces of gradient-sized buffers, slowest rank's time
    for name, count in MESSAGE_PARAMS.items():
        buf = np.ones(count, dtype=np.float32)
        reps = max(3, min(50, int(2e8 // (count * 4))))
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)  # warm-up: connections, first touch
        samples = []
        for _ in range(reps):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            samples.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        out["bare_allreduce_ms"][name] = 1e3 * statistics.median(samples)
    if comm.rank == 0:
        print(json.dumps(out))


def mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec") or shutil.which("mpirun")


ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _result(cmd, proc):
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(cmd, timeout):
    return _result(cmd, subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout))


def run_concurrently(cmd, copies, timeout):
    """copies of cmd started together; their results."""
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(copies)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        results.append(_result(cmd, subprocess.CompletedProcess(cmd, p.returncode, out, err)))
    return results


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return None


def driver(args):
    launcher = mpiexec()
    if launcher is None:
        raise SystemExit("no mpiexec: pip install \"fastfit[mpi]\"")
    me = os.path.abspath(__file__)
    common = ["--rows", str(args.rows), "--epochs", str(args.epochs)]
    results = {"workload": {"sizes": SIZES, "dtype": "float32", "optimizer": "Adam", "global_batch": BATCH,
                            "rows": args.rows, "params": n_params(SIZES),
                            "gradient_bytes": n_params(SIZES) * 4},
               "cores": os.cpu_count(), "load_before": load_average(), "single": [], "mpi": {}, "control": {}}
    for rep in range(args.repeats):
        results["single"].append(run([sys.executable, me, "--single", *common], args.timeout))
        for r in args.ranks:
            results["mpi"].setdefault(str(r), []).append(
                run([launcher, "-n", str(r), sys.executable, me, "--worker", *common], args.timeout))
            control = run_concurrently([sys.executable, me, "--single", "--share", str(r), *common], r, args.timeout)
            results["control"].setdefault(str(r), []).append(max(c["step_ms"] for c in control))
    results["load_after"] = load_average()
    print(markdown(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def markdown(res):
    w = res["workload"]
    lines = [f"Medium workload {'-'.join(map(str, w['sizes']))} float32, Adam, global batch {w['global_batch']}, "
             f"{w['rows']} rows; {w['params']:,} parameters = {w['gradient_bytes'] / 1e6:.2f} MB all-reduced "
             f"per step; one BLAS thread per rank. Load average before/after: {res['load_before']} / "
             f"{res['load_after']} on {res['cores']} cores.", "",
             "| ranks | samples/s (runs) | step ms | compute ms | control ms | all-reduce wait ms/step "
             "| wait share | bare all-reduce ms | bare share |", "|---|---|---|---|---|---|---|---|---|"]
    single = [r["samples_per_s"] for r in res["single"]]
    lines.append(f"| fastfit.fit, 1 thread, no MPI | {' / '.join(f'{s:.0f}' for s in single)} | "
                 f"{1e3 * w['global_batch'] / statistics.median(single):.1f} | - | - | - | - | - | - |")
    for r, runs in res["mpi"].items():
        sps = [x["samples_per_s"] for x in runs]
        step = statistics.median(x["step_ms"] for x in runs)
        wait = statistics.median(x["allreduce_wait_ms_per_step"] for x in runs)
        bare = statistics.median(x["bare_allreduce_ms"]["medium 784-1024-1024-10"] for x in runs)
        control = statistics.median(res["control"][r])
        lines.append(f"| {r} | {' / '.join(f'{s:.0f}' for s in sps)} | {step:.1f} | {step - wait:.1f} | "
                     f"{control:.1f} | {wait:.2f} | {wait / step:.0%} | {bare:.2f} | {bare / step:.0%} |")
    lines += ["", "compute ms: step minus the all-reduce wait. control ms: R plain processes (no MPI) each "
              "training on batches of 128/R rows at the same time, slowest one's step: what this machine "
              "gives R processes computing side by side. The all-reduce wait includes waiting for a "
              "slower rank; the bare all-reduce is the communication alone.",
              "", "Bare blocking Allreduce (float32, in place, sum), median, slowest rank:", "",
              "| gradient of | MB | " + " | ".join(f"{r} ranks ms" for r in res["mpi"]) + " |",
              "|---|---|" + "---|" * len(res["mpi"])]
    for name, count in MESSAGE_PARAMS.items():
        cells = [statistics.median(x["bare_allreduce_ms"][name] for x in runs) for runs in res["mpi"].values()]
        lines.append(f"| {name} | {count * 4 / 1e6:.2f} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=ROWS)
    p.add_argument("--epochs", type=int, default=4, help="epochs per fit; the first is a warm-up")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2, help="runs of each configuration (the machine may be shared)")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", help="also write the raw figures here")
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
    elif args.single:
        single(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
