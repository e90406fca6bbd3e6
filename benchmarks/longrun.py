"""A long run at batch 1: does a step get slower as training goes on?

The tiny network (64-128-10) at batch 1 with Adam on random labels, 131,072
rows: six one-epoch ``ff.fit`` calls on the same model and optimizer, so the
optimizer state carries over as in one six-epoch fit. Random labels drive many
ReLU units dead; their gradients are then exactly zero and Adam's moment
estimates decay geometrically towards zero, through the subnormal range, where
every arithmetic operation on them can cost many times a normal one. A loop
whose time per step grows from epoch to epoch shows it. Reported: microseconds
per step of each epoch and the sixth over the first, plus how many parameters
and optimizer-state entries are subnormal at the end (the state is read through
``state_buffers()`` where the optimizer offers it).

One thread (``n_threads=1``): at batch 1 a second thread has nothing to share.
"""
import time


def _subnormal(a):
    import numpy as np
    a = np.abs(np.asarray(a).ravel())
    return int(np.count_nonzero((a > 0) & (a < np.finfo(a.dtype).tiny)))


def run(spec):
    import numpy as np
    import fastfit as ff
    sizes, B, rows, epochs = spec["sizes"], spec["batch"], spec["rows"], spec["epochs"]
    rng = np.random.default_rng(1234)
    X = rng.standard_normal((rows, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], rows).astype(np.intp)
    model = ff.MLP(list(sizes), dtype=np.float32, seed=0)
    opt = ff.Adam(lr=1e-3)
    loss = ff.SoftmaxCrossEntropy()
    steps = rows // B
    us, losses = [], []
    for e in range(epochs):
        t0 = time.perf_counter()
        hist = ff.fit(model, X, y, loss=loss, optimizer=opt, batch_size=B, epochs=1, seed=e,
                      n_threads=1, verbose=0)
        us.append((time.perf_counter() - t0) / steps * 1e6)
        try:
            losses.append(float(hist["loss"][-1]))
        except (KeyError, IndexError, TypeError):
            losses.append(None)
    out = {"sizes": list(sizes), "batch": B, "rows": rows, "epochs": epochs, "steps_per_epoch": steps,
           "us_per_step": us, "loss": losses, "ratio_last_first": us[-1] / us[0],
           "n_params": int(np.asarray(model.params).size),
           "subnormal_params": _subnormal(model.params)}
    buffers = getattr(opt, "state_buffers", None)
    if callable(buffers):
        found = buffers()
        found = found.values() if isinstance(found, dict) else found  # a dict by name, or (m, v)
        state = [np.asarray(b) for b in found if np.asarray(b).size]
        out["subnormal_state"] = sum(_subnormal(b) for b in state)
        out["state_entries"] = sum(b.size for b in state)
    return out
