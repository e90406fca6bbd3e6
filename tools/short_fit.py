"""A short tour of everything the compiled core does, small enough for valgrind.

Run by tools/valgrind_fit.sh under memcheck (and by tools/sanitize.sh under
ASan+UBSan). It must be imported from a tree whose extensions are built, i.e.
with PYTHONPATH pointing at a built copy; it never builds anything itself.

Covered, for float32 and float64:
- ``fit`` with every loss (both reductions) and every optimizer (SGD, SGD with
  momentum, Nesterov SGD with a schedule, Adam, NormalizedGD), on N=37 rows with
  batch_size=8: four full batches and a ragged last batch of 5; plus a
  batch-of-one fit, full-batch (batch_size=None), drop_last, validation data;
- the step-level API: forward, loss.value_and_grad, backward, optimizer.step,
  on a ragged batch and on a batch of one;
- predict in chunks that leave a ragged last chunk, and evaluate;
- inputs that need converting: Fortran order, non-contiguous, read-only,
  integer X, the other float dtype;
- a model above the core's threading threshold (2**16 parameters) fitted with
  n_threads=2, so the multi-threaded optimizer update runs as well.

Exit status 0 and the line "short_fit: OK" when every result is finite.
"""
import sys
import time

import numpy as np

import fastfit as ff

LOSSES = ("SquaredError", "SoftmaxCrossEntropy", "BinaryCrossEntropy")
N, D, H, C = 37, 5, 7, 3          # 37 rows at batch_size 8: 4 full batches + 1 of 5
BATCH = 8


def optimizers():
    """Fresh instances of every optimizer (and momentum flavour) the core implements."""
    return {
        "sgd": ff.SGD(0.05),
        "momentum": ff.SGD(0.05, momentum=0.9),
        "nesterov": ff.SGD(ff.CosineWithWarmup(0.05, total_steps=20, warmup_steps=3),
                           momentum=0.9, nesterov=True),
        "adam": ff.Adam(1e-2),
        "normalized": ff.NormalizedGD(1e-2),
    }


def targets(loss_name, n, c, rng, dtype):
    if loss_name == "SoftmaxCrossEntropy":
        return rng.integers(0, c, size=n)
    if loss_name == "BinaryCrossEntropy":
        return (rng.random((n, c)) < 0.5).astype(dtype)
    return rng.standard_normal((n, c)).astype(dtype)


def check_finite(what, *arrays):
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise SystemExit(f"short_fit: non-finite values after {what}")


def fits(dtype, rng):
    count = 0
    X = rng.standard_normal((N, D)).astype(dtype)
    Xv = rng.standard_normal((11, D)).astype(dtype)
    for loss_name in LOSSES:
        y = targets(loss_name, N, C, rng, dtype)
        yv = targets(loss_name, 11, C, rng, dtype)
        for reduction in ("mean", "sum"):
            loss = getattr(ff, loss_name)(reduction=reduction)
            for opt_name, opt in optimizers().items():
                model = ff.MLP([D, H, 6, C], dtype=dtype, seed=count)
                hist = ff.fit(model, X, y, loss, opt, batch_size=BATCH, epochs=2, seed=1,
                              validation_data=(Xv, yv) if reduction == "mean" else None,
                              verbose=0)
                check_finite(f"fit {loss_name}/{reduction}/{opt_name}", model.params,
                             np.asarray(hist["loss"]))
                count += 1
        # batch sizes at the edges: one row, the whole set, dropping the ragged batch
        for bs, drop in ((1, False), (None, False), (BATCH, True)):
            model = ff.MLP([D, H, C], dtype=dtype, seed=count)
            ff.fit(model, X, y, getattr(ff, loss_name)(), ff.Adam(1e-2), batch_size=bs,
                   epochs=2, drop_last=drop, verbose=0)
            check_finite(f"fit {loss_name} batch_size={bs} drop_last={drop}", model.params)
            count += 1
    return count


def step_level(dtype, rng):
    count = 0
    for loss_name in LOSSES:
        loss = getattr(ff, loss_name)()
        for opt_name, opt in optimizers().items():
            model = ff.MLP([D, H, H, C], dtype=dtype, seed=3)
            for rows in (BATCH, 5, 1, BATCH):      # a smaller batch after a larger one reuses the buffers
                X = rng.standard_normal((rows, D)).astype(dtype)
                y = targets(loss_name, rows, C, rng, dtype)
                out = model.forward(X)
                value, grad = loss.value_and_grad(out, y)
                model.backward(grad)
                opt.step(model)
                check_finite(f"step {loss_name}/{opt_name} rows={rows}", out, grad, model.grads,
                             model.params, np.asarray(value))
                count += 1
            opt.finalize(model)
    return count


def predict_and_inputs(dtype, rng):
    model = ff.MLP([D, H, C], dtype=dtype, seed=5)
    X = rng.standard_normal((N, D)).astype(dtype)
    full = model.predict(X)
    chunked = model.predict(X, batch_size=10)          # chunks of 10, 10, 10, 7
    one = model.predict(X[:1], batch_size=1)
    if not np.allclose(full, chunked) or not np.allclose(full[:1], one):
        raise SystemExit("short_fit: chunked predict differs from one-shot predict")
    fortran = np.asfortranarray(X)
    strided = np.repeat(X, 2, axis=0)[::2]              # non-contiguous view
    readonly = X.copy()
    readonly.setflags(write=False)
    other = X.astype(np.float64 if dtype == np.float32 else np.float32)
    for variant in (fortran, strided, readonly, other, np.rint(X * 3).astype(np.int64)):
        check_finite("predict of a converted input", model.predict(variant))
    y = rng.integers(0, C, size=N)
    ff.fit(model, readonly, y, ff.SoftmaxCrossEntropy(), ff.SGD(0.1), batch_size=BATCH,
           epochs=1, verbose=0)
    metrics = ff.evaluate(model, strided, y, ff.SoftmaxCrossEntropy())
    check_finite("evaluate", np.asarray(list(metrics.values()), dtype=float))
    if not readonly.flags.writeable and not np.array_equal(readonly, X):
        raise SystemExit("short_fit: a read-only input was written to")
    return 1


def threaded(dtype, rng):
    """A model above the 2**16-parameter threshold: the update is split across threads."""
    sizes = [32, 256, 256, 4]
    model = ff.MLP(sizes, dtype=dtype, seed=7)
    assert model.n_params > 2 ** 16, model.n_params
    X = rng.standard_normal((40, sizes[0])).astype(dtype)
    y = rng.standard_normal((40, sizes[-1])).astype(dtype)
    for opt in (ff.Adam(1e-3), ff.SGD(1e-3, momentum=0.9, nesterov=True), ff.NormalizedGD(1e-3)):
        ff.fit(model, X, y, ff.SquaredError(), opt, batch_size=16, epochs=1, n_threads=2, verbose=0)
        check_finite("threaded fit", model.params)
    return 1


def main():
    t0 = time.perf_counter()
    rng = np.random.default_rng(2024)
    counts = {}
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        counts[f"{name} fits"] = fits(dtype, rng)
        counts[f"{name} steps"] = step_level(dtype, rng)
        counts[f"{name} predict"] = predict_and_inputs(dtype, rng)
        counts[f"{name} threaded"] = threaded(dtype, rng)
    from fastfit import _core
    print("short_fit: core", _core.__file__)
    print("short_fit:", ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"short_fit: OK in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
