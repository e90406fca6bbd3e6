"""Data-parallel training over MPI: samples/s, the all-reduce against its bandwidth bound, and overlap.

    python benchmarks/mpi_bench.py                       # shared memory: 1 and 2 ranks, prints Markdown
    python benchmarks/mpi_bench.py --link 10gbit         # 2 ranks over TCP, each direction shaped to 10 Gbit/s
    python benchmarks/mpi_bench.py --link 1gbit --json out.json
    python benchmarks/mpi_bench.py --link unlimited      # TCP over loopback, no rate limit
    python benchmarks/mpi_bench.py --link 10gbit --sweep # MPICH's all-reduce algorithms and settings
    python benchmarks/mpi_bench.py --parts               # the step's parts alone (no MPI), for the cost model

The medium workload of the benchmark suite: a 784-1024-1024-10 float32 MLP
(1,863,690 parameters, 7.45 MB of gradient), Adam, softmax cross-entropy,
global batch 128, on 10,240 standard-normal rows. Every rank runs one BLAS
thread, so 2 ranks use 2 cores where 1 rank uses one.

**Simulated links** (``--link RATE``, root only): the script re-runs itself in
a fresh network namespace (``unshare -n``) where the only interface is that
namespace's own loopback; MPI is forced onto TCP over it
(``MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp
FI_TCP_IFACE=lo``). Nothing leaves the namespace. ``--duplex full`` (the
default) models a full-duplex link such as Ethernet: each rank's outgoing
traffic has its own token bucket of RATE. The ranks' libfabric listening ports
are confined to one 64-port block per rank (``FI_TCP_PORT_LOW_RANGE``), so a
``u32`` filter can tell the two directions of a connection apart (a packet
from a rank's block, or to the other rank's block, was sent by that rank).
``--duplex half`` is one ``tbf`` on the loopback device for both directions:
a 2-rank all-reduce sends the same bytes both ways at once, so it sees half
the rate. Before anything else a plain TCP transfer between two processes,
in each direction alone and in both at once, checks the rate actually
delivered. ``--tcp-buffers`` raises the namespace's default TCP socket
buffers (16 MiB by default) so that a whole gradient fits in flight.

``--hosts two`` models two machines more closely: rank 1 runs in a second
namespace, joined to the first by a veth pair (MTU 1500) with a ``tbf`` of
RATE on each end's egress, so each rank has its own TCP stack and queueing
discipline and the two directions share no lock. Rank 1 is started through
``ip netns exec`` in ``mpiexec``'s colon-separated form, each rank with its own
``FI_TCP_IFACE``.

For each configuration the driver launches ``mpiexec -n R python
mpi_bench.py --worker``. The worker reports:

- the distributed fit (``fastfit.distributed.fit``, one warm-up epoch, then
  timed epochs): samples/s, and the time waiting for the gradient all-reduce;
- the step's parts timed on every rank at once on its 64 rows (forward,
  loss, backward, optimizer update, with the public step API), so that the
  compute reflects two processes sharing the machine;
- the bare all-reduce of the gradient, slowest rank's time: MPI's blocking
  ``Allreduce`` and fastfit._allreduce (exact and bfloat16), against the
  bound ``2(n-1)/n * bytes / rate``, and each layer's gradient alone;
- overlap: an emulated backward pass (the same matrix products, layer by
  layer, in NumPy) that starts each layer's all-reduce as soon as that
  layer's gradient exists, against the same work done one after the other.

From these the driver predicts the time per step with the cost model of
docs/distributed.md and prints the prediction beside the measurement.
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
#: gradient sizes (parameter counts) timed by the bare all-reduce on shared memory: small, medium, large models
MESSAGE_PARAMS = {"small 784-256-256-10": 269_322, "medium 784-1024-1024-10": 1_863_690,
                  "large 784-4096-4096-10": 20_037_642}
#: each rank's libfabric listening ports: a 64-port block per rank (the tc filters match these blocks)
PORT_BASE, PORT_BLOCK = 20480, 64
#: --hosts two: the veth pair's ends (rank r on VETH[r]) and their addresses
VETH = ("ffveth0", "ffveth1")
VETH_ADDR = ("10.77.0.1", "10.77.0.2")
#: MPICH over TCP on the namespace's loopback
TCP_ENV = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp", "FI_TCP_IFACE": "lo"}
#: what --sweep tries, each on top of TCP_ENV
SWEEP = [
    ("MPICH default", {}),
    ("recursive doubling", {"MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM": "recursive_doubling"}),
    ("reduce-scatter + all-gather", {"MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM": "reduce_scatter_allgather"}),
    ("ring", {"MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM": "ring"}),
    ("tree, 256 KiB pipeline chunks", {"MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM": "tree",
                                       "MPIR_CVAR_ALLREDUCE_TREE_PIPELINE_CHUNK_SIZE": "262144"}),
    ("recexch", {"MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM": "recexch"}),
    ("default, TCP_NODELAY off", {"FI_TCP_NODELAY": "0"}),
    ("default, async progress thread", {"MPIR_CVAR_ASYNC_PROGRESS": "1"}),
]


#: progress alternatives for the overlap comparison: (algorithm, progress, extra environment)
OVERLAP_MODES = {
    "fastfit thread": ("auto", "thread", {}),
    "MPI Iallreduce, fastfit thread": ("mpi", "thread", {}),
    "MPI Iallreduce, no progress": ("mpi", "wait", {}),
    "MPI Iallreduce, MPICH async progress": ("mpi", "wait", {"MPIR_CVAR_ASYNC_PROGRESS": "1"}),
}


def n_params(sizes):
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def layer_params(sizes):
    return [a * b + b for a, b in zip(sizes[:-1], sizes[1:])]


def make_data(rows):
    rng = np.random.default_rng(DATA_SEED)
    X = rng.standard_normal((rows, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], rows).astype(np.intp)
    return X, y


def parse_rate(text):
    """'10gbit' -> bits per second; 'unlimited' and 'shm' -> None."""
    t = text.strip().lower()
    if t in ("unlimited", "shm"):
        return None
    for suffix, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)):
        if t.endswith(suffix):
            try:
                value = float(t[:-len(suffix)])
            except ValueError:
                break
            if value > 0:
                return value * scale
    raise SystemExit(f"mpi_bench: --link must be a rate such as 10gbit, 500mbit, or 'unlimited' or 'shm'; got {text!r}")


def bound_s(nbytes, ranks, rate):
    """The all-reduce's bandwidth bound: each rank sends and receives 2(n-1)/n of the buffer."""
    return None if rate is None else 2 * (ranks - 1) / ranks * nbytes * 8 / rate


# ---------------------------------------------------------------- single process (no MPI)

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


def step_parts(rows, reps, barrier=None):
    """Median seconds of the public step API's parts on `rows` rows, and each layer's share of backward.

    barrier: called before each timed block, so that ranks time their parts at the same moment."""
    sys.path.insert(0, ROOT)
    import fastfit as ff
    from threadpoolctl import threadpool_limits
    X, y = make_data(rows)
    model = ff.MLP(SIZES, dtype=np.float32, seed=0)
    loss = ff.SoftmaxCrossEntropy()
    opt = ff.Adam(1e-3)
    parts = {"forward": [], "loss": [], "backward": [], "update": []}
    with threadpool_limits(1):
        for i in range(reps + 2):
            if barrier:
                barrier()
            t0 = time.perf_counter()
            out = model.forward(X)
            t1 = time.perf_counter()
            _, dout = loss.value_and_grad(out, y)
            t2 = time.perf_counter()
            model.backward(dout)
            t3 = time.perf_counter()
            opt.step(model)
            t4 = time.perf_counter()
            if i >= 2:
                for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    parts[key].append(dt)
        shares = backward_layer_shares(rows, reps, barrier)
    result = {k: statistics.median(v) for k, v in parts.items()}
    result["backward_shares"] = shares
    return result


def _backward_products(rows, seed=0):
    """The matrix products of one backward pass as the core runs them, for NumPy to time layer by layer."""
    rng = np.random.default_rng(seed)
    acts = [rng.standard_normal((rows, d), dtype=np.float32) for d in SIZES[:-1]]  # H_0 = X, H_1, H_2
    weights = [rng.standard_normal((b, a), dtype=np.float32) * 0.01 for a, b in zip(SIZES[:-1], SIZES[1:])]
    dF = rng.standard_normal((rows, SIZES[-1]), dtype=np.float32)
    return acts, weights, dF


def emulated_backward(acts, weights, dF, grads, on_layer=None):
    """Backward pass in NumPy, last layer first: grads[k] gets dW_k (flattened) then db_k.

    on_layer(k) runs as soon as layer k's gradient is complete (the hook for starting its all-reduce)."""
    for k in range(len(weights) - 1, -1, -1):
        W = weights[k]
        dout, din = W.shape
        g = grads[k]
        np.matmul(dF.T, acts[k], out=g[:dout * din].reshape(dout, din))
        np.sum(dF, axis=0, out=g[dout * din:])
        if on_layer is not None:
            on_layer(k)
        if k:
            dH = dF @ W
            dH *= acts[k] > 0
            dF = dH


def backward_layer_shares(rows, reps, barrier=None):
    """Fraction of the backward pass's time spent on each layer (index = layer), measured in NumPy."""
    acts, weights, dF = _backward_products(rows)
    grads = [np.empty(p, np.float32) for p in layer_params(SIZES)]
    marks = {}
    samples = []
    for i in range(reps + 2):
        if barrier:
            barrier()
        t0 = time.perf_counter()
        emulated_backward(acts, weights, dF, grads, on_layer=lambda k: marks.__setitem__(k, time.perf_counter()))
        t_end = time.perf_counter()
        if i >= 2:
            # layer k's work: from the previous layer's mark (or the start) to its own mark, plus what
            # follows its gradient (the input gradient) up to the next mark
            order = sorted(marks, reverse=True)  # 2, 1, 0
            ends = [marks[k] for k in order]
            spans = np.diff([t0] + ends)
            total = t_end - t0
            samples.append([s / total for s in spans[::-1]])
    return [float(np.median([s[k] for s in samples])) for k in range(len(SIZES) - 1)]


def parts(args):
    """--parts: the step's parts in one process, no MPI (JSON)."""
    res = step_parts(args.parts_rows, args.parts_reps)
    res["rows"] = args.parts_rows
    print(json.dumps(res))


# ---------------------------------------------------------------- worker (under mpiexec)

def _confine_ports():
    """Before MPI starts: this rank's libfabric listening ports come from its own block."""
    rank = int(os.environ.get("PMI_RANK", os.environ.get("MPI_LOCALRANKID", "0")))
    lo = PORT_BASE + PORT_BLOCK * rank
    os.environ.setdefault("FI_TCP_PORT_LOW_RANGE", str(lo))
    os.environ.setdefault("FI_TCP_PORT_HIGH_RANGE", str(lo + PORT_BLOCK - 1))


def _time_collective(comm, MPI, fn, reps):
    """Slowest rank's seconds per call: median and minimum over reps (after two warm-ups)."""
    return _time_many(comm, MPI, {"x": fn}, reps)["x"]


def _time_many(comm, MPI, fns, reps):
    """_time_collective for several functions, taken in turn (one call of each per round), so that a
    busy machine's changing load falls on all of them alike."""
    for fn in fns.values():
        fn()
        fn()
    samples = {name: [] for name in fns}
    cpu = dict.fromkeys(fns, 0.0)
    for _ in range(reps):
        for name, fn in fns.items():
            comm.Barrier()
            c0 = _cpu_seconds()
            t0 = time.perf_counter()
            fn()
            t1 = time.perf_counter()
            cpu[name] += _cpu_seconds() - c0
            samples[name].append(comm.allreduce(t1 - t0, op=MPI.MAX))
    # CPU seconds of this process (every thread, user and kernel: TCP's copies are kernel time) per call,
    # the larger of the ranks': less changed by other work on the machine than the wall time (a blocking
    # MPI call spins, so its waiting counts too)
    cpu = {name: comm.allreduce(c / reps, op=MPI.MAX) for name, c in cpu.items()}
    return {name: {"median_s": statistics.median(v), "min_s": min(v), "p25_s": float(np.percentile(v, 25)),
                   "cpu_s": cpu[name]} for name, v in samples.items()}


def _cpu_seconds():
    return time.process_time()  # every thread of the process, user and kernel time, at nanosecond resolution


def factor_parts(comm, MPI, reps):
    """The factor exchange's parts on this rank, both ranks at once (slowest rank's seconds, median):
    forward and loss of the rank's rows (head), their input gradients (dx), the weight gradients over
    the whole batch (dw), the update; and the step's messages alone (exchange), with their CPU time.
    Also each part's share of the layers, for the timeline of ``predict_factors``."""
    sys.path.insert(0, ROOT)
    import fastfit as ff
    from fastfit import _core, distributed
    X, y = make_data(BATCH)
    model = ff.MLP(SIZES, dtype=np.float32, seed=0)
    opt = ff.Adam(1e-3)
    opt.bind(model)
    rule = opt.rule(1)
    net, L = model._net, len(SIZES) - 1
    ws = model.workspace(BATCH, labels=True, deltas=True)
    data = _core.Dataset(X, np.empty((0, 0), np.float32), y.astype(np.intp))
    objective = ff.SoftmaxCrossEntropy().objective(SIZES[-1])
    rows = np.arange(BATCH, dtype=np.intp)
    lo, hi = distributed._shard(BATCH, comm.rank, comm.size)
    factors = distributed.factor_layers(SIZES, BATCH)
    shards = [distributed._shard(BATCH, r, comm.size) for r in range(comm.size)]

    def block(buf, k, B=BATCH):
        a = B * int(net.aoff[k])
        return buf[a:a + B * SIZES[k + 1]]

    def gather(buf):
        d = buf.size // BATCH
        return comm.Iallgatherv(MPI.IN_PLACE, [buf, [(b - a) * d for a, b in shards], [a * d for a, _ in shards],
                                               MPI.FLOAT])

    def exchange():
        reqs = [gather(block(ws.acts, k - 1)) for k in range(1, L) if factors[k]]
        for k in range(L - 1, -1, -1):
            if factors[k]:
                reqs.append(gather(block(ws.deltas, k)))
            else:
                a, b = int(net.woff[k]), int(net.boff[k]) + SIZES[k + 1]
                reqs.append(comm.Iallreduce(MPI.IN_PLACE, model.grads[a:b], op=MPI.SUM))
        MPI.Request.Waitall(reqs)

    fns = {"head": lambda: _core.slice_head(net, ws, data, objective, rows, lo, hi)}
    for k in range(L - 1, 0, -1):
        fns[f"dx{k}"] = lambda k=k: _core.slice_input_gradient(net, ws, BATCH, lo, hi, k)
    for k in range(L - 1, -1, -1):
        fns[f"dw{k}"] = (lambda k=k: _core.rows_weight_gradient(net, ws, BATCH, 0, BATCH, k)) if factors[k] else \
                        (lambda k=k: _core.rows_weight_gradient(net, ws, BATCH, lo, hi, k))
        fns[f"update{k}"] = lambda k=k: _core.update(net, rule, 1e-3, 1e-3, 1, 0.0, k, k + 1)
    fns["exchange"] = exchange
    timed = _time_many(comm, MPI, fns, reps)
    out = {name: t["median_s"] for name, t in timed.items()}
    out["exchange_cpu_s"] = timed["exchange"]["cpu_s"]
    out["factor_layers"] = factors
    out["rows"] = hi - lo
    return out


def bare_allreduces(comm, MPI, reps, ring=True):
    """Bare all-reduce of the medium gradient: MPI's blocking Allreduce, and fastfit._allreduce."""
    from fastfit._allreduce import AllReduce
    n = n_params(SIZES)
    buf = np.zeros(n, np.float32)  # zeros: the sums stay finite however often they run
    fns = {"mpi": lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)}
    if not ring:
        return _time_many(comm, MPI, fns, reps)
    engines = {"ring": AllReduce(comm), "ring_bf16": AllReduce(comm, compress="bfloat16"),
               "mpi_thread": AllReduce(comm, algorithm="mpi")}
    for name, ar in engines.items():
        fns[name] = (lambda ar: lambda: ar.allreduce(buf))(ar)
    out = _time_many(comm, MPI, fns, reps)
    layer_bufs = [np.zeros(p, np.float32) for p in layer_params(SIZES)]
    for name in ("ring", "ring_bf16"):
        ar = engines[name]
        timed = _time_many(comm, MPI, {k: (lambda b: lambda: ar.allreduce(b))(b) for k, b in enumerate(layer_bufs)},
                           reps)
        out[name + "_layers"] = [timed[k] for k in range(len(layer_bufs))]
    for ar in engines.values():
        ar.close()
    return out


def overlap_runs(comm, MPI, rows, reps, compress=None, algorithm="auto", progress="thread"):
    """Emulated backward (NumPy, layer by layer) with and without each layer's all-reduce started early.

    Returns slowest-rank medians: backward alone, all-reduce alone, one after the other, overlapped.
    algorithm="mpi", progress="wait": MPI's Iallreduce started per layer and only waited for at the end,
    which overlaps only if MPI progresses by itself (MPICH's async progress thread)."""
    from fastfit._allreduce import AllReduce
    from threadpoolctl import threadpool_limits
    acts, weights, dF = _backward_products(rows, seed=comm.rank)
    sizes = layer_params(SIZES)
    flat = np.zeros(sum(sizes), np.float32)
    edges = np.cumsum([0] + sizes)
    grads = [flat[a:b] for a, b in zip(edges[:-1], edges[1:])]

    def clean():
        # the emulated gradients grow without bound when summed in place every time; keep them finite
        for g in grads:
            g *= 0.5

    with threadpool_limits(1), AllReduce(comm, compress=compress, algorithm=algorithm, progress=progress) as ar:
        def backward_only():
            emulated_backward(acts, weights, dF, grads)

        def allreduce_only():
            hs = [ar.start(grads[k]) for k in (2, 1, 0)]
            for h in hs:
                ar.wait(h)

        def sequential():
            emulated_backward(acts, weights, dF, grads)
            allreduce_only()

        def overlapped():
            hs = []
            emulated_backward(acts, weights, dF, grads, on_layer=lambda k: hs.append(ar.start(grads[k])))
            for h in hs:
                ar.wait(h)

        fns = {"backward": backward_only, "allreduce": allreduce_only, "sequential": sequential,
               "overlapped": overlapped}
        timed = _time_many(comm, MPI, {k: (lambda fn: lambda: (fn(), clean()))(fn) for k, fn in fns.items()}, reps)
    out = {k: v["median_s"] for k, v in timed.items()}
    out["cpu_s"] = {k: v["cpu_s"] for k, v in timed.items()}
    return out


def worker(args):
    _confine_ports()
    sys.path.insert(0, ROOT)
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rate = parse_rate(args.link) if args.link else None
    reps = args.reps or (10 if rate is not None and rate < 3e9 else 30)
    out = {"ranks": comm.size, "env": {k: v for k, v in os.environ.items()
                                        if k.startswith(("MPIR_CVAR_", "FI_", "MPICH_"))}}
    if args.bare_only:
        out["bare"] = bare_allreduces(comm, MPI, reps, ring=False)
        if comm.rank == 0:
            print(json.dumps(out))
        return
    if args.overlap_only:
        algorithm, progress = OVERLAP_MODES[args.overlap_only][:2]
        out["overlap"] = overlap_runs(comm, MPI, BATCH // comm.size, max(5, reps // 2), algorithm=algorithm,
                                      progress=progress)
        if comm.rank == 0:
            print(json.dumps(out))
        return
    import fastfit as ff
    from fastfit import distributed
    X, y = make_data(args.rows)
    model = ff.MLP(SIZES, dtype=np.float32, seed=0)
    cpu0 = os.times()
    hist = distributed.fit(model, X, y, "cross_entropy", ff.Adam(1e-3), batch_size=BATCH, epochs=args.epochs,
                           seed=0, comm=comm, n_threads=1, verbose=0, timeout=600, overlap=args.fit in ("overlap", "bfloat16-overlap"),
                           compress="bfloat16" if args.fit.startswith("bfloat16") else None,
                           exchange="factors" if args.fit == "factors" else "gradient")
    cpu1 = os.times()
    times, waits = hist["time"][1:], hist["allreduce_s"][1:]  # the first epoch is the warm-up
    steps = -(-args.rows // BATCH)
    # this rank's CPU time per step over the whole fit (warm-up included): TCP's copies are kernel time
    out["fit_cpu_ms_per_step"] = {"user": 1e3 * (cpu1.user - cpu0.user) / (steps * args.epochs),
                                  "system": 1e3 * (cpu1.system - cpu0.system) / (steps * args.epochs)}
    out.update({"samples_per_s": args.rows / statistics.median(times), "epoch_s": times,
                "allreduce_wait_s": waits, "step_ms": 1e3 * statistics.median(times) / steps,
                "allreduce_wait_ms_per_step": 1e3 * statistics.median(waits) / steps})
    # once the fit overlaps its all-reduce with the backward pass, its history says how much it hid
    out["fit_overlap"] = {k: list(hist[k][1:]) for k in hist.keys() if "overlap" in k or "hidden" in k}
    if comm.size > 1 and args.fit == "factors":
        out["factor_parts"] = factor_parts(comm, MPI, 20)
    if comm.size > 1:
        local = BATCH // comm.size
        out["parts"] = step_parts(local, 20, barrier=comm.Barrier)
        out["parts"]["rows"] = local
        if rate is None and not args.link:  # shared memory: the historical message-size table
            out["bare_allreduce_ms"] = {}
            for name, count in MESSAGE_PARAMS.items():
                buf = np.zeros(count, dtype=np.float32)
                r = max(3, min(50, int(2e8 // (count * 4))))
                out["bare_allreduce_ms"][name] = 1e3 * _time_collective(
                    comm, MPI, lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM), r)["median_s"]
        out["bare"] = bare_allreduces(comm, MPI, reps)
        out["overlap"] = overlap_runs(comm, MPI, local, max(5, reps // 2))
        out["overlap_bf16"] = overlap_runs(comm, MPI, local, max(5, reps // 2), compress="bfloat16")
    if comm.rank == 0:
        print(json.dumps(out))


# ---------------------------------------------------------------- launching

def mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec") or shutil.which("mpirun")


ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _result(cmd, proc):
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(cmd, timeout, env=None):
    return _result(cmd, subprocess.run(cmd, env=env or ENV, capture_output=True, text=True, timeout=timeout))


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


# ---------------------------------------------------------------- the simulated link

def _missing_tools():
    missing = [t for t in ("unshare", "ip", "tc") if shutil.which(t) is None]
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        missing.insert(0, "root")
    return missing


def _sh(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"mpi_bench: `{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def setup_link(rate_text, duplex, tcp_buffers, burst="512kb"):
    """Inside the fresh namespace: loopback up, socket buffers, and the shaping. Returns a description."""
    _sh(["ip", "link", "set", "lo", "up"])
    if tcp_buffers:
        _write_tcp_buffers(tcp_buffers)
    rate = parse_rate(rate_text)
    if rate is None:
        return "no rate limit"
    r = f"{int(rate)}bit"
    tbf = ["tbf", "rate", r, "burst", burst, "latency", "200ms"]
    if duplex == "half":
        _sh(["tc", "qdisc", "add", "dev", "lo", "root", *tbf])
        return f"one tbf {rate_text} on lo for both directions (half duplex)"
    # full duplex: an HTB root whose two classes hold one tbf each (rank 0's and rank 1's outgoing bytes);
    # everything else (the launcher's own traffic) goes unshaped through class 1:99
    _sh(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "99", "r2q", "100000"])
    for cls in ("1:10", "1:11", "1:99"):
        _sh(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", cls, "htb", "rate", "100gbit",
             "ceil", "100gbit", "quantum", "200000"])
    _sh(["tc", "qdisc", "add", "dev", "lo", "parent", "1:10", "handle", "10:", *tbf])
    _sh(["tc", "qdisc", "add", "dev", "lo", "parent", "1:11", "handle", "11:", *tbf])
    block = f"{0x10000 - PORT_BLOCK:#x}"
    r0, r1 = str(PORT_BASE), str(PORT_BASE + PORT_BLOCK)
    for sender, own, other in (("1:10", r0, r1), ("1:11", r1, r0)):
        for field, port in (("sport", own), ("dport", other)):
            _sh(["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                 "match", "ip", field, port, block, "flowid", sender])
    return f"each direction its own tbf {rate_text} (full duplex)"


def _write_tcp_buffers(tcp_buffers, netns=None):
    b = str(int(tcp_buffers))
    for key in ("net.ipv4.tcp_wmem", "net.ipv4.tcp_rmem"):
        value = f"4096 {b} {max(int(b), 2 * int(b))}"
        if netns is None:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
        else:
            _sh(["ip", "netns", "exec", netns, "sh", "-c", f"echo '{value}' > /proc/sys/{key.replace('.', '/')}"])


def setup_two_hosts(rate_text, tcp_buffers, other, burst="512kb"):
    """Inside the fresh namespace (rank 0's host): namespace `other` for rank 1, a veth pair between
    them, and a tbf of RATE on each end. Returns a description."""
    _sh(["ip", "link", "set", "lo", "up"])
    _sh(["ip", "netns", "add", other])
    _sh(["ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1], "netns", other])
    _sh(["ip", "addr", "add", VETH_ADDR[0] + "/24", "dev", VETH[0]])
    _sh(["ip", "-n", other, "addr", "add", VETH_ADDR[1] + "/24", "dev", VETH[1]])
    for cmd in (["ip", "link", "set", VETH[0], "up"], ["ip", "-n", other, "link", "set", VETH[1], "up"],
                ["ip", "-n", other, "link", "set", "lo", "up"]):
        _sh(cmd)
    if tcp_buffers:
        _write_tcp_buffers(tcp_buffers)
        _write_tcp_buffers(tcp_buffers, other)
    rate = parse_rate(rate_text)
    if rate is None:
        return "two namespaces joined by a veth pair, no rate limit"
    tbf = ["tbf", "rate", f"{int(rate)}bit", "burst", burst, "latency", "200ms"]
    _sh(["tc", "qdisc", "add", "dev", VETH[0], "root", *tbf])
    _sh(["ip", "netns", "exec", other, "tc", "qdisc", "add", "dev", VETH[1], "root", *tbf])
    return f"two namespaces joined by a veth pair, a tbf {rate_text} on each end (full duplex)"


def two_rank_command(launcher, worker_args, other=None):
    """mpiexec running 2 workers: both here (one namespace), or rank 1 in namespace `other`."""
    me = os.path.abspath(__file__)
    if other is None:
        return [launcher, "-n", "2", sys.executable, me, "--worker", *worker_args]
    rank0 = ["-n", "1", "-env", "FI_TCP_IFACE", VETH[0], sys.executable, me, "--worker", *worker_args]
    rank1 = ["-n", "1", "-env", "FI_TCP_IFACE", VETH[1], "ip", "netns", "exec", other, sys.executable, me,
             "--worker", *worker_args]
    return [launcher, *rank0, ":", *rank1]


def link_counters(other=None):
    """Bytes through each tbf (the two directions), for the record."""
    if other is not None:
        counts = {}
        for netns, dev in ((None, VETH[0]), (other, VETH[1])):
            cmd = ["tc", "-s", "qdisc", "show", "dev", dev]
            out = subprocess.run(cmd if netns is None else ["ip", "netns", "exec", netns, *cmd],
                                 capture_output=True, text=True).stdout
            sent = [line.split()[1] for line in out.splitlines() if line.split()[:1] == ["Sent"]]
            counts[dev] = int(sent[0]) if sent else None
        return counts
    out = subprocess.run(["tc", "-s", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout
    counts, current = {}, None
    for line in out.splitlines():
        words = line.split()
        if words[:2] == ["qdisc", "tbf"]:
            current = words[2]
        elif words[:1] == ["Sent"] and current:
            counts[current] = int(words[1])
            current = None
    return counts


def _enter_netns(netns):
    """This (forked) process joins the named network namespace (setns(2), through libc)."""
    if netns is None:
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{netns}") as f:
        if libc.setns(f.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns into {netns} failed")


def _sink(port, ready, result, host="127.0.0.1", netns=None):
    import socket
    _enter_netns(netns)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1)
    ready.set()
    conn, _ = srv.accept()
    buf = bytearray(1 << 20)
    got, t0 = 0, None
    while True:
        k = conn.recv_into(buf)
        if not k:
            break
        if t0 is None:
            t0 = time.perf_counter()
        got += k
    result.put((port, got, time.perf_counter() - t0 if t0 else 0.0))


def _source(port, nbytes, host="127.0.0.1", netns=None):
    import socket
    _enter_netns(netns)
    conn = socket.create_connection((host, port))
    chunk = b"\0" * (1 << 20)
    sent = 0
    while sent < nbytes:
        sent += conn.send(chunk[:min(len(chunk), nbytes - sent)])
    conn.close()


def socket_check(rate, other=None):
    """A plain TCP transfer between two processes, rank 0's direction alone, then both directions
    at once: Gbit/s delivered per direction. Ports in the ranks' blocks, so the shaping applies;
    with two hosts (rank 1 in namespace `other`), each sink listens on its own end of the veth."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    seconds = 0.3
    nbytes = int(min(512e6, (rate or 20e9) / 8 * seconds))
    out = {}
    # a sink on rank 1's block receives rank 0's direction; on rank 0's block, rank 1's
    for label, ports in (("one direction", [PORT_BASE + PORT_BLOCK]),
                         ("both directions", [PORT_BASE + PORT_BLOCK, PORT_BASE])):
        result = ctx.Queue()
        sinks = []
        # where rank r's sink listens and its source runs: rank 1's block is rank 1's host
        ends = {p: (VETH_ADDR[1], other, VETH_ADDR[0], None) if p == PORT_BASE + PORT_BLOCK
                else (VETH_ADDR[0], None, VETH_ADDR[1], other) for p in ports} if other else \
            {p: ("127.0.0.1", None, "127.0.0.1", None) for p in ports}
        for p in ports:
            ready = ctx.Event()
            host, netns = ends[p][:2]
            s = ctx.Process(target=_sink, args=(p + 1, ready, result, host, netns))  # +1: not MPI's port
            s.start()
            ready.wait(10)
            sinks.append(s)
        sources = [ctx.Process(target=_source, args=(p + 1, nbytes, ends[p][0], ends[p][3])) for p in ports]
        for s in sources:
            s.start()
        got = [result.get(timeout=120) for _ in ports]
        for p in sources + sinks:
            p.join(30)
        out[label] = [round(g * 8 / t / 1e9, 2) if t else None for _, g, t in sorted(got)]
    return out


def in_netns(args, argv):
    """Inside the namespace: shape the link, check it, run the MPI workers; print the report."""
    other = f"ffbench{os.getpid()}" if args.hosts == "two" else None  # rank 1's namespace
    try:
        if other is not None:
            describe = setup_two_hosts(args.link, args.tcp_buffers, other, args.burst)
        else:
            describe = setup_link(args.link, args.duplex, args.tcp_buffers, args.burst)
        if args.burst != "512kb":
            describe += f", tbf burst {args.burst}"
        measure_link(args, describe, other)
    finally:
        if other is not None:
            subprocess.run(["ip", "netns", "del", other], capture_output=True)


def measure_link(args, describe, other):
    """in_netns, once the link is up: the socket check, then the MPI runs; prints the report."""
    rate = parse_rate(args.link)
    results = {"link": args.link, "rate_bps": rate, "shaping": describe, "duplex": args.duplex, "hosts": args.hosts,
               "tcp_buffers": args.tcp_buffers, "cores": os.cpu_count(), "load_before": load_average(),
               "workload": workload_info(args)}
    results["socket_gbps"] = socket_check(rate, other)
    launcher = mpiexec()
    me = os.path.abspath(__file__)
    env = dict(ENV, **TCP_ENV)
    common = ["--rows", str(args.rows), "--epochs", str(args.epochs), "--link", args.link, "--fit", args.fit]
    if args.reps:
        common += ["--reps", str(args.reps)]
    if args.progress:
        results["progress"] = []
        for name, (_, _, extra) in OVERLAP_MODES.items():
            r = run(two_rank_command(launcher, ["--overlap-only", name, *common], other), args.timeout,
                    env=dict(env, **extra))
            results["progress"].append({"name": name, **r["overlap"]})
    elif args.sweep:
        results["sweep"] = []
        for name, extra in SWEEP:
            r = run(two_rank_command(launcher, ["--bare-only", *common], other), args.timeout,
                    env=dict(env, **extra))
            results["sweep"].append({"name": name, "env": extra, **r["bare"]["mpi"]})
    else:
        # One process is timed before every 2-rank run and after the last: each run is compared
        # with the two nearest in time, since this kind of machine drifts by tens of percent.
        single_cmd = [sys.executable, me, "--single", "--rows", str(args.rows), "--epochs", str(args.epochs)]
        results["single"], results["mpi"] = [], []
        for _ in range(args.repeats):
            results["single"].append(run(single_cmd, args.timeout))
            results["mpi"].append(run(two_rank_command(launcher, common, other), args.timeout, env=env))
        results["single"].append(run(single_cmd, args.timeout))
    results["bytes_per_direction"] = link_counters(other)
    results["load_after"] = load_average()
    publish(results, link_markdown, args.json)


def publish(results, render, json_path):
    """Print the report; keep the raw figures too when asked (--json)."""
    print(render(results))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)


def workload_info(args):
    return {"sizes": SIZES, "dtype": "float32", "optimizer": "Adam", "global_batch": BATCH,
            "rows": args.rows, "params": n_params(SIZES), "gradient_bytes": n_params(SIZES) * 4}


# ---------------------------------------------------------------- the cost model

def predict(parts, allreduce_s, layer_allreduce_s=None):
    """Seconds per step: compute plus the gradient's all-reduce, and with each layer's all-reduce
    started as soon as its gradient exists (the layers' all-reduces run one after another on the link;
    the optimizer update waits for all of them).

    parts: forward, loss, backward, update seconds and backward_shares (fraction of backward per layer)."""
    compute = parts["forward"] + parts["loss"] + parts["backward"] + parts["update"]
    out = {"compute_s": compute, "no_overlap_s": compute + allreduce_s}
    if layer_allreduce_s is not None:
        out["overlap_s"] = parts["forward"] + parts["loss"] + overlap_timeline(
            parts["backward"], parts["backward_shares"], layer_allreduce_s) + parts["update"]
    return out


def predict_factors(fp):
    """Seconds per step of the factor exchange, from its parts (``factor_parts``).

    The timeline: the head (forward and loss of the rank's rows); the hidden layers' outputs leave
    then, and each layer's dL/dF (or, for a layer that sums its gradient, that gradient, formed from
    the rank's rows) as the backward pass produces it; the messages cross the link one after another,
    each taking the measured time of the step's messages alone (``exchange``) in proportion to its
    values. Layer k's weight gradient over the batch waits for its messages; the updates follow it.
    With every core computing, the messages' CPU time cannot hide: the step is at least the compute
    plus ``exchange_cpu_s`` (which counts a blocking wait's spinning, so it over-predicts slow links)."""
    L = len(SIZES) - 1
    factors, b = fp["factor_layers"], fp["rows"]
    posted = [(k, b * SIZES[k]) for k in range(1, L) if factors[k]]  # H_k, after the head
    backward = [(k, b * SIZES[k + 1] if factors[k] else (SIZES[k] + 1) * SIZES[k + 1]) for k in range(L - 1, -1, -1)]
    per_value = fp["exchange"] / sum(v for _, v in posted + backward)
    t = link_free = fp["head"]
    ready = dict.fromkeys(range(L), 0.0)

    def send(k, values, at):
        nonlocal link_free
        link_free = max(at, link_free) + values * per_value
        ready[k] = max(ready[k], link_free)

    for k, values in posted:
        send(k, values, t)
    for k, values in backward:  # dL/dF_k is final here
        if not factors[k]:
            t += fp[f"dw{k}"]
        send(k, values, t)
        if k:
            t += fp[f"dx{k}"]
    for k in range(L - 1, -1, -1):
        t = max(t, ready[k])
        if factors[k]:
            t += fp[f"dw{k}"]
        t += fp[f"update{k}"]
    compute = fp["head"] + sum(fp[f"dx{k}"] for k in range(1, L)) + sum(fp[f"dw{k}"] + fp[f"update{k}"]
                                                                      for k in range(L))
    return {"compute_s": compute, "timeline_s": t, "step_s": max(t, compute + fp["exchange_cpu_s"])}


def overlap_timeline(backward_s, shares, layer_allreduce_s):
    """Seconds from the start of backward until the last layer's all-reduce ends (or backward ends)."""
    t, link_free = 0.0, 0.0
    for k in range(len(shares) - 1, -1, -1):  # the last layer's gradient is ready first
        t += shares[k] * backward_s
        start = max(t, link_free)
        link_free = start + layer_allreduce_s[k]
    return max(backward_s, link_free)


def link_markdown(res):
    w = res["workload"]
    rate = res["rate_bps"]
    nbytes = w["gradient_bytes"]
    bound = bound_s(nbytes, 2, rate)
    lines = [f"Link **{res['link']}** ({res['shaping']}); medium workload {'-'.join(map(str, w['sizes']))} "
             f"float32, Adam, global batch {w['global_batch']}, 2 ranks x 1 BLAS thread; gradient "
             f"{nbytes / 1e6:.2f} MB. TCP socket buffers: {res['tcp_buffers'] or 'kernel default'}. "
             f"Load average before/after: {res['load_before']} / {res['load_after']} on {res['cores']} cores.", ""]
    sock = res["socket_gbps"]
    both = [x for x in sock["both directions"] if x]
    ceiling = bound_s(nbytes, 2, 1e9 * min(both)) if both else None  # what plain TCP delivered both ways at once
    lines.append(f"Socket check (Gbit/s per direction): one direction alone {sock['one direction']}, "
                 f"both at once {sock['both directions']}. Bytes through each direction's shaper: "
                 f"{res.get('bytes_per_direction') or '-'}. The socket ceiling below is the gradient's time at the "
                 f"rate plain TCP delivered both ways at once: {1e3 * ceiling:.2f} ms." if ceiling else "")
    lines.append("")

    def fractions(b):
        cells = [f"{bound / b['median_s']:.0%} / {bound / b['min_s']:.0%}" if bound else "-"]
        cells.append(f"{ceiling / b['median_s']:.0%}" if ceiling else "-")
        return " | ".join(cells)

    if "progress" in res:
        lines += ["| progress | backward ms | all-reduce ms | one after the other ms | overlapped ms | "
                  "hidden (share of the all-reduce) | CPU ms per rank: backward, all-reduce, overlapped |",
                  "|---|---|---|---|---|---|---|"]
        for s in res["progress"]:
            hidden = s["sequential"] - s["overlapped"]
            c = s.get("cpu_s", {})
            cpu = ", ".join(f"{1e3 * c[k]:.1f}" for k in ("backward", "allreduce", "overlapped")) if c else "-"
            lines.append(f"| {s['name']} | {1e3 * s['backward']:.2f} | {1e3 * s['allreduce']:.2f} | "
                         f"{1e3 * s['sequential']:.2f} | {1e3 * s['overlapped']:.2f} | {1e3 * hidden:.2f} "
                         f"({hidden / s['allreduce']:.0%}) | {cpu} |")
        return "\n".join(lines)
    if "sweep" in res:
        lines += ["| MPICH setting | blocking Allreduce ms (median / min) | fraction of bound (median / best) "
                  "| fraction of socket ceiling (median) | CPU ms per rank |", "|---|---|---|---|---|"]
        for s in res["sweep"]:
            cpu = f"{1e3 * s['cpu_s']:.2f}" if "cpu_s" in s else "-"
            lines.append(f"| {s['name']} | {1e3 * s['median_s']:.2f} / {1e3 * s['min_s']:.2f} | {fractions(s)} "
                         f"| {cpu} |")
        return "\n".join(lines)
    single = [x["samples_per_s"] for x in res["single"]]
    lines += [f"One process (fastfit.fit, 1 thread, no MPI), before each 2-rank run and after the last: "
              f"{', '.join(f'{x:,.0f}' for x in single)} samples/s.", "",
              "| run | samples/s | against one process (the runs before and after it) | step ms "
              "| all-reduce wait ms/step | predicted step ms (no overlap) |",
              "|---|---|---|---|---|---|"]
    ratios = []
    factors = "factor_parts" in res["mpi"][0]
    if factors:
        lines[-2] = lines[-2].replace("predicted step ms (no overlap)", "predicted step ms (factor exchange)")
    for i, r in enumerate(res["mpi"]):
        pred = predict(r["parts"], r["bare"]["mpi"]["median_s"])
        if factors:
            pred = {"no_overlap_s": predict_factors(r["factor_parts"])["step_s"]}
        around = single[i:i + 2] or single[-1:]  # a report of an older run: one figure for all
        ratios.append(r["samples_per_s"] / statistics.mean(around))
        lines.append(f"| {i + 1} | {r['samples_per_s']:,.0f} | {ratios[-1]:.2f}x | {r['step_ms']:.1f} | "
                     f"{r['allreduce_wait_ms_per_step']:.2f} | {1e3 * pred['no_overlap_s']:.1f} |")
    lines += ["", f"2 ranks against one process: median {statistics.median(ratios):.2f}x "
              f"(runs {', '.join(f'{x:.2f}' for x in ratios)})."]
    for i, r in enumerate(res["mpi"]):
        for key, values in (r.get("fit_overlap") or {}).items():
            lines.append(f"\nFit run {i + 1}, history `{key}` per timed epoch: {values}")
    r = res["mpi"][0]
    p = r["parts"]
    for i, run in enumerate(res["mpi"] if factors else []):
        fp, fm = run["factor_parts"], predict_factors(run["factor_parts"])
        lines += ["", f"Factor exchange, run {i + 1}, parts on both ranks at once (ms): head (forward and loss of "
                  f"{fp['rows']} rows) {1e3 * fp['head']:.2f}; input gradients "
                  f"{', '.join(f'{1e3 * fp[k]:.2f}' for k in sorted(fp) if k.startswith('dx'))}; weight gradients "
                  f"{', '.join(f'{1e3 * fp[k]:.2f}' for k in sorted(fp) if k.startswith('dw'))}; updates "
                  f"{', '.join(f'{1e3 * fp[k]:.2f}' for k in sorted(fp) if k.startswith('update'))}; the step's "
                  f"messages alone {1e3 * fp['exchange']:.2f} ({1e3 * fp['exchange_cpu_s']:.2f} of CPU per rank); "
                  f"layers sending factors {fp['factor_layers']}. Model: compute {1e3 * fm['compute_s']:.1f}, "
                  f"timeline {1e3 * fm['timeline_s']:.1f}, step {1e3 * fm['step_s']:.1f} ms; fit CPU per step "
                  f"(rank 0) {run.get('fit_cpu_ms_per_step')}."]
    lines += ["", f"Step parts on {p['rows']} rows, both ranks at once (ms): forward {1e3 * p['forward']:.2f}, "
              f"loss {1e3 * p['loss']:.3f}, backward {1e3 * p['backward']:.2f} (layer shares "
              f"{', '.join(f'{s:.2f}' for s in p['backward_shares'])}), update {1e3 * p['update']:.2f}.", "",
              "| bare all-reduce (slowest rank) | median ms | min ms | fraction of bound (median / best) "
              "| fraction of socket ceiling (median) | CPU ms per rank |", "|---|---|---|---|---|---|"]
    names = {"mpi": "MPI Allreduce (blocking)", "ring": "_allreduce, exact (pair schedule, thread)",
             "ring_bf16": "_allreduce, bfloat16 (pair schedule, thread)",
             "mpi_thread": "MPI Iallreduce + progress thread"}
    for key, label in names.items():
        b = r["bare"][key]
        cpu = f"{1e3 * b['cpu_s']:.2f}" if "cpu_s" in b else "-"
        lines.append(f"| {label} | {1e3 * b['median_s']:.2f} | {1e3 * b['min_s']:.2f} | {fractions(b)} | {cpu} |")
    if bound:
        lines.append(f"| bound 2(n-1)/n x bytes / rate | {1e3 * bound:.2f} | | | | |")
    for mode, key, layer_key in (("exact", "overlap", "ring_layers"), ("bfloat16", "overlap_bf16", "ring_bf16_layers")):
        o = r[key]
        hidden = o["sequential"] - o["overlapped"]
        layers = [x["median_s"] for x in r["bare"][layer_key]]
        timeline = overlap_timeline(o["backward"], p["backward_shares"], layers)
        lines += ["", f"Overlap, {mode} (emulated backward on {p['rows']} rows, NumPy, layer by layer; ms): "
                  f"backward {1e3 * o['backward']:.2f}, all-reduce {1e3 * o['allreduce']:.2f}, one after the other "
                  f"{1e3 * o['sequential']:.2f}, overlapped {1e3 * o['overlapped']:.2f}: hid "
                  f"{1e3 * hidden:.2f} ms = {hidden / o['allreduce']:.0%} of the all-reduce "
                  f"(model: {1e3 * timeline:.2f} ms overlapped, per-layer all-reduce "
                  f"{', '.join(f'{1e3 * x:.2f}' for x in layers)} ms)."]
    pred = predict(p, r["bare"]["ring"]["median_s"], [x["median_s"] for x in r["bare"]["ring_layers"]])
    pred16 = predict(p, r["bare"]["ring_bf16"]["median_s"], [x["median_s"] for x in r["bare"]["ring_bf16_layers"]])
    lines += ["", f"Cost model, ms per step: compute {1e3 * pred['compute_s']:.1f}; exact ring: "
              f"{1e3 * pred['no_overlap_s']:.1f} without overlap, {1e3 * pred['overlap_s']:.1f} with; bfloat16: "
              f"{1e3 * pred16['no_overlap_s']:.1f} without, {1e3 * pred16['overlap_s']:.1f} with "
              f"(samples/s: {BATCH / pred['no_overlap_s']:,.0f}, {BATCH / pred['overlap_s']:,.0f}, "
              f"{BATCH / pred16['no_overlap_s']:,.0f}, {BATCH / pred16['overlap_s']:,.0f})."]
    return "\n".join(lines)


# ---------------------------------------------------------------- shared memory (no namespace)

def driver(args):
    launcher = mpiexec()
    if launcher is None:
        raise SystemExit("no mpiexec: pip install mpi4py mpich")
    me = os.path.abspath(__file__)
    common = ["--rows", str(args.rows), "--epochs", str(args.epochs)]
    worker_args = [*common, "--fit", args.fit]
    results = {"workload": workload_info(args),
               "cores": os.cpu_count(), "load_before": load_average(), "single": [], "mpi": {}, "control": {}}
    for rep in range(args.repeats):
        results["single"].append(run([sys.executable, me, "--single", *common], args.timeout))
        for r in args.ranks:
            results["mpi"].setdefault(str(r), []).append(
                run([launcher, "-n", str(r), sys.executable, me, "--worker", *worker_args], args.timeout))
            control = run_concurrently([sys.executable, me, "--single", "--share", str(r), *common], r, args.timeout)
            results["control"].setdefault(str(r), []).append(max(c["step_ms"] for c in control))
    results["load_after"] = load_average()
    publish(results, markdown, args.json)


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
    multi = {r: runs for r, runs in res["mpi"].items() if "bare_allreduce_ms" in runs[0]}
    for r, runs in res["mpi"].items():
        sps = [x["samples_per_s"] for x in runs]
        step = statistics.median(x["step_ms"] for x in runs)
        wait = statistics.median(x["allreduce_wait_ms_per_step"] for x in runs)
        bare = (f"{statistics.median(x['bare_allreduce_ms']['medium 784-1024-1024-10'] for x in runs):.2f}"
                if r in multi else "-")
        control = statistics.median(res["control"][r])
        share = f"{float(bare) / step:.0%}" if r in multi else "-"
        lines.append(f"| {r} | {' / '.join(f'{s:.0f}' for s in sps)} | {step:.1f} | {step - wait:.1f} | "
                     f"{control:.1f} | {wait:.2f} | {wait / step:.0%} | {bare} | {share} |")
    lines += ["", "compute ms: step minus the all-reduce wait. control ms: R plain processes (no MPI) each "
              "training on batches of 128/R rows at the same time, slowest one's step: what this machine "
              "gives R processes computing side by side. The all-reduce wait includes waiting for a "
              "slower rank; the bare all-reduce is the communication alone."]
    if multi:
        lines += ["", "Bare blocking Allreduce (float32, in place, sum), median, slowest rank:", "",
                  "| gradient of | MB | " + " | ".join(f"{r} ranks ms" for r in multi) + " |",
                  "|---|---|" + "---|" * len(multi)]
        for name, count in MESSAGE_PARAMS.items():
            cells = [statistics.median(x["bare_allreduce_ms"][name] for x in runs) for runs in multi.values()]
            lines.append(f"| {name} | {count * 4 / 1e6:.2f} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bare-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--overlap-only", choices=sorted(OVERLAP_MODES), help=argparse.SUPPRESS)
    p.add_argument("--progress", action="store_true",
                   help="with --link: compare ways to progress the all-reduce during compute (overlap only)")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--link", help="shm (default: shared memory, no namespace), unlimited, or a rate "
                                  "such as 10gbit or 1gbit: 2 ranks over TCP in a network namespace")
    p.add_argument("--duplex", choices=("full", "half"), default="full",
                   help="full: each direction its own RATE (default); half: one RATE for both")
    p.add_argument("--hosts", choices=("one", "two"), default="one",
                   help="with --link: one namespace for both ranks, its loopback shaped (default); or two, "
                        "joined by a veth pair with a tbf of RATE on each end")
    p.add_argument("--burst", default="512kb",
                   help="with --link: the tbf's bucket (default 512kb: after an idle moment that many bytes leave "
                        "at once; a real link has no such allowance, so a small one such as 32kb is closer to it)")
    p.add_argument("--tcp-buffers", type=int, default=16 << 20,
                   help="default TCP socket buffer bytes in the namespace (0: the kernel's)")
    p.add_argument("--sweep", action="store_true", help="with --link: MPICH's all-reduce settings, bare only")
    p.add_argument("--parts", action="store_true", help="time the step's parts in one process (no MPI)")
    p.add_argument("--parts-rows", type=int, default=BATCH // 2)
    p.add_argument("--parts-reps", type=int, default=30)
    p.add_argument("--rows", type=int, default=ROWS)
    p.add_argument("--fit", choices=("plain", "overlap", "bfloat16", "bfloat16-overlap", "factors"), default="plain",
                   help="the distributed fit's sums: one MPI all-reduce after the backward pass (plain), "
                        "each bucket's sum overlapped with the rest of the backward pass (overlap), one "
                        "sum sent as bfloat16 after the backward pass (bfloat16), or both (bfloat16-overlap); "
                        "or no sum: each layer's input and output gradient rows gathered (factors)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per fit; the first is a warm-up")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=None, help="runs of each configuration (default 2 on shared "
                                                             "memory, 1 on a simulated link)")
    p.add_argument("--reps", type=int, default=None, help="timed all-reduces per measurement")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", help="also write the raw figures here")
    p.add_argument("--render", help="print the report of a --link run's JSON file again")
    args = p.parse_args(argv)
    link = args.link if args.link and args.link.lower() != "shm" else None
    if args.hosts == "two" and not link:
        raise SystemExit("mpi_bench: --hosts two needs a simulated link (--link RATE or --link unlimited)")
    if args.repeats is None:
        args.repeats = 1 if link else 2
    if args.render:
        with open(args.render) as f:
            print(link_markdown(json.load(f)))
    elif args.worker:
        worker(args)
    elif args.single:
        single(args)
    elif args.parts:
        parts(args)
    elif args.in_netns:
        in_netns(args, argv)
    elif link:
        parse_rate(link)
        missing = _missing_tools()
        if missing:
            raise SystemExit(f"mpi_bench: --link {link} needs root and the unshare, ip and tc commands "
                             f"(missing: {', '.join(missing)}); use --link shm for shared memory")
        if args.hosts == "two" and args.duplex != "full":
            raise SystemExit("mpi_bench: --hosts two gives each end its own tbf (full duplex); drop --duplex half")
        if args.ranks != [1, 2] and args.ranks != [2]:
            raise SystemExit("mpi_bench: a simulated link runs 2 ranks (the direction filters know 2 port blocks)")
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise SystemExit(f"mpi_bench: --link {link} could not create a network namespace "
                             f"({probe.stderr.strip() or 'unshare -n failed'}); use --link shm for shared memory")
        sys.exit(subprocess.run(["unshare", "-n", sys.executable, os.path.abspath(__file__), "--in-netns",
                                 *argv]).returncode)
    else:
        driver(args)


if __name__ == "__main__":
    main()
