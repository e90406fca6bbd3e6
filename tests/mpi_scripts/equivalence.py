"""Run under mpiexec: distributed fits against single-process fastfit.fit, one JSON line from rank 0.

    mpiexec -n 2 python tests/mpi_scripts/equivalence.py OUT.json [CASE ...]

Every case trains the same float64 model twice: across the ranks with
fastfit.distributed.fit (global batch B), and on rank 0 alone with fastfit.fit
(batch B, same seed, so the same batch order). Rank 0 writes, per case, the
largest relative difference of the parameters and of the history, and whether
every rank ended with bit-identical parameters and the same history.
"""
import json
import os
import sys
import tempfile
import time

import numpy as np
from mpi4py import MPI

import fastfit as ff
from fastfit import distributed
from fastfit import epochs as epoch_loop  # case() has an argument named epochs

comm = MPI.COMM_WORLD
rank, size = comm.rank, comm.size


def data(n, d, classes, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, classes, n)
    return X, y


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1e-300, np.max(np.abs(b))))


def case(name, sizes, n, make_opt, batch_size, epochs=3, loss="cross_entropy", memmap=False,
         validation=False, drop_last=False, targets="labels", overlap=False, exchange="gradient",
         uneven_runs=False):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, sizes[0]))
    if targets == "labels":
        y = rng.integers(0, sizes[-1], n)
    elif targets == "binary":
        y = (rng.random((n, sizes[-1])) < 0.5).astype(np.float64)
    else:
        y = rng.standard_normal((n, sizes[-1]))
    kwargs = dict(batch_size=batch_size, epochs=epochs, seed=3, drop_last=drop_last, n_threads=1, verbose=0)
    if validation:
        kwargs["validation_split"] = 0.2
    Xd = X
    path = None
    if memmap:
        # rank 0 writes the file; every rank maps it (the ranks share this machine's disk)
        path = os.path.join(tempfile.gettempdir(), f"fastfit-mpi-{name}-{os.getppid()}.npy")
        if rank == 0:
            np.save(path, X)
        comm.Barrier()
        Xd = np.load(path, mmap_mode="r")
    model = ff.MLP(sizes, dtype=np.float64, seed=rank)  # different on purpose: rank 0's is broadcast
    opt = make_opt()
    runs, real_run, real_next = [], epoch_loop.LocalRunner.run, epoch_loop._next_chunk

    def spy(self, order, first, n, lrs, t0):
        runs.append((first, n))
        return real_run(self, order, first, n, lrs, t0)

    epoch_loop.LocalRunner.run = spy
    if uneven_runs:  # each rank would size its runs differently: rank r wants runs of r + 1 steps
        epoch_loop._next_chunk = lambda *args: rank + 1
    try:
        hist = ff.fit(model, Xd, y, loss, opt, comm=comm, timeout=60, overlap=overlap, exchange=exchange,
                      **kwargs)  # ff.fit hands comm= to distributed.fit
    finally:
        epoch_loop.LocalRunner.run, epoch_loop._next_chunk = real_run, real_next
    runs_all = comm.gather(runs, root=0)
    # every rank holds the same parameters and history, bit for bit
    params_all = comm.gather(model.params, root=0)
    hist_all = comm.gather({k: v for k, v in hist.history.items() if k not in ("time", "samples_per_s",
                                                                                "allreduce_s")}, root=0)
    times_all = comm.gather(hist["time"], root=0)
    if memmap:
        comm.Barrier()
        if rank == 0:
            os.remove(path)
    if rank != 0:
        return None
    ref_model = ff.MLP(sizes, dtype=np.float64, seed=0)
    ref_opt = make_opt()
    ref = ff.fit(ref_model, X, y, loss, ref_opt, **kwargs)
    result = {
        "params_rel": rel(model.params, ref_model.params),
        "moved": rel(model.params, ff.MLP(sizes, dtype=np.float64, seed=0).params),
        "t": [opt.t, ref_opt.t],
        "loss_rel": rel(hist["loss"], ref["loss"]),
        "ranks_identical": all(np.array_equal(p, params_all[0]) for p in params_all),
        "runs_identical": all(r == runs_all[0] for r in runs_all),
        "runs": runs_all[0],
        "history_identical": all(h == hist_all[0] for h in hist_all) and all(t == times_all[0] for t in times_all),
        "keys": sorted(hist.keys()),
        "factor_layers": distributed.factor_layers(sizes, batch_size) if exchange == "factors" else None,
    }
    for key in ("val_loss", "val_accuracy", "val_r2"):
        if key in ref:
            result[key + "_rel"] = rel(hist[key], ref[key])
    return result


CASES = {
    # 2 ranks x 16 rows = global batch 32; 200 rows: 6 full batches and a ragged one of 8
    "sgd_momentum": dict(sizes=(5, 16, 16, 3), n=200, make_opt=lambda: ff.SGD(0.05, momentum=0.9), batch_size=32),
    "adam": dict(sizes=(5, 16, 16, 3), n=200, make_opt=lambda: ff.Adam(0.01), batch_size=32),
    # ranks that would end their runs at different steps end them together
    "uneven_runs": dict(sizes=(5, 16, 16, 3), n=200, make_opt=lambda: ff.Adam(0.01), batch_size=32,
                        uneven_runs=True),
    "nesterov": dict(sizes=(5, 16, 16, 3), n=200,
                     make_opt=lambda: ff.SGD(0.05, momentum=0.9, nesterov=True), batch_size=32),
    # a last batch of one row: every rank but the last has an empty slice; odd batch: uneven slices
    "ragged": dict(sizes=(4, 12, 3), n=2 * 33 + 1, make_opt=lambda: ff.Adam(0.01), batch_size=33),
    "memmap_validation": dict(sizes=(6, 10, 4), n=150, make_opt=lambda: ff.SGD(0.1, momentum=0.5),
                              batch_size=20, memmap=True, validation=True),
    "mse_schedule": dict(sizes=(3, 8, 2), n=90, batch_size=16, loss="mse", targets="real", validation=True,
                         make_opt=lambda: ff.SGD(ff.StepDecay(0.05, 10, 0.5), momentum=0.9, nesterov=True)),
    "bce_drop_last": dict(sizes=(3, 8, 2), n=90, batch_size=16, loss="bce", targets="binary",
                          make_opt=lambda: ff.Adam(0.01), drop_last=True, validation=True),
    # each layer's sum started as soon as the backward pass produced it (one bucket per layer
    # here: BUCKET_BYTES is lowered in main), with the L2 penalty, and with empty slices
    "adam_overlap": dict(sizes=(5, 16, 16, 3), n=200, make_opt=lambda: ff.AdamW(0.01), batch_size=32,
                         loss=ff.SoftmaxCrossEntropy(l2=0.1), overlap=True),
    "ragged_overlap": dict(sizes=(4, 12, 3), n=2 * 33 + 1, batch_size=33, overlap=True,
                           make_opt=lambda: ff.SGD(0.05, momentum=0.9, nesterov=True)),
    # the factor exchange: every rank's rows of each layer's input and output gradient, the
    # gradient formed on every rank over the whole batch
    "adam_factors": dict(sizes=(20, 64, 48, 16), n=100, make_opt=lambda: ff.AdamW(0.01), batch_size=12,
                         loss=ff.SoftmaxCrossEntropy(l2=0.1), exchange="factors"),
    # a last batch of one row (rank 0's slice empty); the output layer's gradient is summed
    "ragged_factors": dict(sizes=(30, 40, 3), n=2 * 9 + 1, batch_size=9, exchange="factors",
                           make_opt=lambda: ff.SGD(0.05, momentum=0.9, nesterov=True)),
    "memmap_factors": dict(sizes=(24, 40, 30, 4), n=150, make_opt=lambda: ff.SGD(0.1, momentum=0.5),
                           batch_size=10, memmap=True, validation=True, exchange="factors"),
    "mse_factors": dict(sizes=(8, 32, 6), n=90, batch_size=8, loss="mse", targets="real", validation=True,
                        make_opt=lambda: ff.Adam(0.01), exchange="factors"),
    "bce_factors": dict(sizes=(8, 32, 6), n=90, batch_size=8, loss="bce", targets="binary",
                        make_opt=lambda: ff.Adam(0.01), drop_last=True, exchange="factors"),
}


def errors():
    """Errors are raised on every rank at the same point, not on one rank while the others wait."""
    X, y = data(64, 3, 2)
    found = {}
    # ranks given different settings: a ValueError on every rank, before any step
    try:
        distributed.fit(ff.MLP([3, 4, 2], dtype=np.float64), X, y, "cross_entropy", ff.SGD(0.1),
                        batch_size=16 + rank, epochs=1, comm=comm, timeout=30, verbose=0)
        found["mismatch"] = "no error"
    except ValueError as exc:
        found["mismatch"] = str(exc)
    # an unknown exchange, or the factor exchange with the all-reduce's options: refused before any step
    for name, kwargs in (("exchange", dict(exchange="activations")),
                         ("factors_compress", dict(exchange="factors", compress="bfloat16")),
                         ("factors_overlap", dict(exchange="factors", overlap=True))):
        model = ff.MLP([3, 4, 2], dtype=np.float32)
        before = model.params.copy()
        try:
            distributed.fit(model, X, y, "cross_entropy", ff.SGD(0.1), batch_size=16, epochs=1, comm=comm,
                            timeout=30, verbose=0, **kwargs)
            found[name] = "no error"
        except ValueError as exc:
            found[name] = str(exc) if np.array_equal(before, model.params) else "model changed"
    # a NaN in one rank's share of X: every rank reports it
    Xn = X.copy()
    Xn[50, 1] = np.nan
    try:
        distributed.fit(ff.MLP([3, 4, 2], dtype=np.float64), Xn, y, "cross_entropy", ff.SGD(0.1),
                        batch_size=16, epochs=1, comm=comm, timeout=30, verbose=0)
        found["nan"] = "no error"
    except ValueError as exc:
        found["nan"] = str(exc)
    # ranks handed different X of the same shape, or different schedules: refused before any step
    for name, X_here, lr in (("other_X", X + 5.0 * rank, 0.1),
                             ("other_schedule", X, ff.schedules.ExponentialDecay(0.1, 0.5 + 0.4 * rank))):
        model = ff.MLP([3, 4, 2], dtype=np.float64)
        before = model.params.copy()
        try:
            distributed.fit(model, X_here, y, "cross_entropy", ff.SGD(lr), batch_size=16, epochs=1, comm=comm,
                            timeout=30, verbose=0)
            found[name] = "no error"
        except ValueError as exc:
            found[name] = str(exc) if np.array_equal(before, model.params) else "model changed"
    # an argument only one rank refuses: every rank raises at once (not at the timeout)
    start = time.perf_counter()
    try:
        distributed.fit(ff.MLP([3, 4, 2], dtype=np.float64), X, y, "cross_entropy", ff.SGD(0.1),
                        batch_size=16 if rank == 0 else 0, epochs=1, comm=comm, timeout=30, verbose=0)
        found["one_rank_refuses"] = "no error"
    except ValueError as exc:
        found["one_rank_refuses"] = ["batch_size" in str(exc) if rank else "rank(s) [1] refused" in str(exc),
                                     time.perf_counter() - start < 10]
    # rank 0's optimizer state damaged in place: refused on every rank, and no rank's own
    # parameters or state replaced by what was refused
    model, opt = ff.MLP([3, 4, 2], dtype=np.float64, seed=rank), ff.Adam(0.01)
    ff.fit(model, X, y, "cross_entropy", opt, batch_size=16, epochs=1, verbose=0)
    if rank == 0:
        opt.state_buffers()["v"][0] = -1.0
    before, v_before = model.params.copy(), opt.state_buffers()["v"].copy()
    try:
        distributed.fit(model, X, y, "cross_entropy", opt, batch_size=16, epochs=1, comm=comm, timeout=30, verbose=0)
        found["bad_state"] = "no error"
    except ValueError as exc:
        # rank 0's state reaches every rank, which checks it before it replaces its own
        found["bad_state"] = ["'v'" in str(exc),
                              bool(np.array_equal(before, model.params)),
                              bool(np.array_equal(v_before, opt.state_buffers()["v"]))]
    # a diverging fit stops on every rank at the same step
    try:
        distributed.fit(ff.MLP([3, 64, 2], dtype=np.float64), X * 1e150, y, "cross_entropy", ff.SGD(1e10),
                        batch_size=16, epochs=3, comm=comm, timeout=30, verbose=0)
        found["nonfinite"] = "no error"
    except ff.NonFiniteLossError as exc:
        found["nonfinite"] = [exc.epoch, exc.step]
    return comm.gather(found, root=0)


def checkpoint():
    """Rank 0 alone writes the checkpoint; it holds the final parameters and optimizer state."""
    import fastfit.io
    calls = []
    real_save = fastfit.io.save

    def counting_save(*args, **kwargs):
        calls.append(rank)
        return real_save(*args, **kwargs)

    fastfit.io.save = counting_save
    path = os.path.join(tempfile.gettempdir(), f"fastfit-mpi-checkpoint-{os.getppid()}.npz")
    X, y = data(100, 3, 2)
    model, opt = ff.MLP([3, 8, 2], dtype=np.float64), ff.SGD(0.05, momentum=0.9, nesterov=True)
    distributed.fit(model, X, y, "cross_entropy", opt, batch_size=16, epochs=2, comm=comm, timeout=30,
                    checkpoint=path, verbose=0)
    fastfit.io.save = real_save
    writers = comm.gather(len(calls), root=0)
    if rank != 0:
        return None
    saved, saved_opt = ff.load(path, return_optimizer=True)
    os.remove(path)
    return {"writes_per_rank": writers, "params_equal": bool(np.array_equal(saved.params, model.params)),
            "t": [saved_opt.t, opt.t], "m_equal": bool(np.array_equal(saved_opt.state_buffers()["m"], opt.state_buffers()["m"]))}


def main():
    distributed.BUCKET_BYTES = 64  # small layers still travel one bucket each
    out_path = sys.argv[1]
    only = sys.argv[2:] or list(CASES)
    results = {"size": size}
    for name in only:
        results[name] = case(name, **CASES[name])
    if not sys.argv[2:]:  # the whole set: the error and checkpoint checks too
        results["errors"] = errors()
        results["checkpoint"] = checkpoint()
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
