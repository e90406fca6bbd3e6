"""fit()'s features: validation, history, early stopping, callbacks, faults, progress, determinism."""
import io
import os
import signal
import threading
import time

import numpy as np
import pytest

import fastfit as ff
from fastfit import datasets, epochs
from fastfit.progress import make_progress

from helpers import replay_steps


@pytest.fixture
def spirals():
    return datasets.spirals(n_samples=600, n_classes=3, seed=1)


def test_history_records_every_epoch_with_validation_metrics(spirals):
    Xtr, ytr, Xte, yte = spirals
    model = ff.MLP([2, 32, 3], seed=0)
    h = ff.fit(model, Xtr, ytr, loss=ff.SoftmaxCrossEntropy(), optimizer=ff.Adam(1e-2),
               epochs=5, validation_data=(Xte, yte), verbose=0)
    for key in ("loss", "val_loss", "val_accuracy", "lr", "time", "samples_per_s", "epoch"):
        assert len(h[key]) == 5, key
    assert h["epoch"] == [1, 2, 3, 4, 5]
    assert all(0 <= a <= 1 for a in h["val_accuracy"])
    # the recorded validation numbers are those of the final model
    final = ff.evaluate(model, Xte, yte, ff.SoftmaxCrossEntropy())
    assert final["accuracy"] == h["val_accuracy"][-1]
    assert final["loss"] == pytest.approx(h["val_loss"][-1], rel=1e-6)


def test_regression_history_has_r2_and_fits_the_1d_toy():
    Xtr, ytr, Xte, yte = datasets.regression_1d(n_samples=400, noise=0.05)
    model = ff.MLP([1, 64, 64, 1], dtype=np.float64, seed=0)
    h = ff.fit(model, Xtr, ytr, loss=ff.SquaredError(), optimizer=ff.Adam(1e-2), batch_size=32,
               epochs=150, validation_data=(Xte, yte))
    assert h["val_r2"][-1] > 0.95


def test_validation_split_takes_the_last_rows(spirals):
    Xtr, ytr, _, _ = spirals
    a, b = ff.MLP([2, 16, 3], seed=0), ff.MLP([2, 16, 3], seed=0)
    ha = ff.fit(a, Xtr, ytr, loss="cross_entropy", optimizer=ff.SGD(0.1), epochs=3, validation_split=0.25)
    hb = ff.fit(b, Xtr[:360], ytr[:360], loss="cross_entropy", optimizer=ff.SGD(0.1), epochs=3,
                validation_data=(Xtr[360:], ytr[360:]))
    np.testing.assert_array_equal(a.params, b.params)
    assert ha["val_loss"] == hb["val_loss"]


def test_early_stopping_restores_the_best_parameters(spirals):
    Xtr, ytr, Xte, yte = spirals
    model = ff.MLP([2, 64, 64, 3], seed=0)
    snapshots = []
    h = ff.fit(model, Xtr, ytr, loss=ff.SoftmaxCrossEntropy(), optimizer=ff.Adam(0.05), epochs=200,
               validation_data=(Xte, yte), early_stopping=True, patience=3,
               callbacks=[lambda rec: snapshots.append(model.params.copy())])
    assert h.epochs < 200, "the fit should have stopped early"
    best = int(np.argmin(h["val_loss"]))
    assert h.epochs == best + 1 + 3  # stopped `patience` epochs after the best one
    np.testing.assert_array_equal(model.params, snapshots[best])
    assert ff.evaluate(model, Xte, yte, ff.SoftmaxCrossEntropy())["loss"] == pytest.approx(h["val_loss"][best], rel=1e-6)


def test_callback_returning_false_stops_the_fit(spirals):
    Xtr, ytr, _, _ = spirals
    seen = []

    def stop_at_three(record):
        seen.append(record["epoch"])
        return record["epoch"] < 3

    h = ff.fit(ff.MLP([2, 8, 3]), Xtr, ytr, loss="cross_entropy", epochs=10, callbacks=[stop_at_three])
    assert seen == [1, 2, 3] and h.epochs == 3


def test_diverging_learning_rate_raises_a_clear_error_and_leaves_finite_parameters():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 10)) * 10
    y = rng.standard_normal((256, 1)) * 100
    model = ff.MLP([10, 64, 64, 1], dtype=np.float32, seed=0)
    with pytest.raises(ff.NonFiniteLossError) as info:
        ff.fit(model, X, y, loss=ff.SquaredError(), optimizer=ff.SGD(lr=10.0, momentum=0.9), batch_size=16, epochs=50)
    err = info.value
    assert isinstance(err, FloatingPointError)
    message = str(err)
    assert f"epoch {err.epoch}" in message and f"step {err.step}" in message
    assert "smaller" in message and "learning rate" in message
    assert np.isfinite(model.params).all()
    assert len(err.history["loss"]) == err.epoch - 1


def test_a_diverging_classifier_stops_with_the_same_clear_error():
    """Logits that overflow float32 make the softmax cross-entropy's loss not finite (inf - inf
    in its shift by the row's largest logit): the fit stops at that step, as for squared error."""
    dtype = np.float32
    rng = np.random.default_rng(1)
    X = rng.standard_normal((256, 10)) * 100
    y = rng.integers(0, 5, size=256)
    model = ff.MLP([10, 64, 64, 5], dtype=dtype, seed=0)
    with pytest.raises(ff.NonFiniteLossError):
        ff.fit(model, X, y, loss=ff.SoftmaxCrossEntropy(reduction="sum"), optimizer=ff.SGD(lr=1e3, momentum=0.9),
               batch_size=16, epochs=200)
    assert np.isfinite(model.params).all()


def interrupt_soon(delay):
    """Deliver SIGINT to this process after delay seconds (as Ctrl-C would)."""
    timer = threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="needs POSIX signals")
def test_interrupt_mid_fit_ends_at_a_step_boundary_with_a_consistent_model():
    """Ctrl-C mid-epoch: the fit stops at a step boundary with the history of the epochs it
    completed, and the parameters are exactly those of as many steps taken through the step API."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40000, 32)).astype(np.float32)
    y = rng.integers(0, 4, size=40000)
    model = ff.MLP([32, 512, 512, 4], seed=0)   # an epoch (1250 steps) lasts several runs of about 0.2 s
    opt = ff.SGD(0.01, momentum=0.9, nesterov=True)
    timer = interrupt_soon(0.3)
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            # one thread: with BLAS's threads a product may sum in another order than the step API's
            ff.fit(model, X, y, loss="cross_entropy", optimizer=opt, batch_size=32, epochs=1000, n_threads=1)
    finally:
        timer.cancel()
    history = info.value.history
    steps_per_epoch = 40000 // 32
    assert 0 < opt.t < 1000 * steps_per_epoch
    assert len(history["loss"]) == opt.t // steps_per_epoch
    assert np.isfinite(model.params).all()
    assert not opt._lookahead   # the model holds the trajectory point phi
    same = replay_steps(ff.MLP([32, 512, 512, 4], seed=0), ff.SGD(0.01, momentum=0.9, nesterov=True),
                        ff.SoftmaxCrossEntropy(), X, y, batch_size=32, n_steps=opt.t, seed=0)
    np.testing.assert_array_equal(model.params, same.params)
    h2 = ff.fit(model, X[:64], y[:64], loss="cross_entropy", optimizer=opt, batch_size=32, epochs=1)
    assert np.isfinite(h2["loss"][0])


def test_interrupted_fit_equals_the_same_steps_run_uninterrupted():
    """A KeyboardInterrupt raised from a callback (at an epoch boundary) keeps an exact state."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 5))
    y = rng.integers(0, 3, size=64)

    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    a, b = ff.MLP([5, 8, 3], dtype=np.float64), ff.MLP([5, 8, 3], dtype=np.float64)
    oa, ob = ff.Adam(1e-2), ff.Adam(1e-2)
    with pytest.raises(KeyboardInterrupt) as info:
        ff.fit(a, X, y, loss="cross_entropy", optimizer=oa, batch_size=16, epochs=5, callbacks=[interrupt])
    hb = ff.fit(b, X, y, loss="cross_entropy", optimizer=ob, batch_size=16, epochs=2)
    np.testing.assert_array_equal(a.params, b.params)
    assert oa.t == ob.t == 8
    assert info.value.history["loss"] == hb["loss"]


def test_progress_display_appears_with_verbose_and_not_without(spirals, capsys):
    Xtr, ytr, Xte, yte = spirals
    ff.fit(ff.MLP([2, 8, 3]), Xtr, ytr, loss="cross_entropy", epochs=3, validation_data=(Xte, yte), verbose=1)
    err = capsys.readouterr().err
    assert "loss" in err and "3/3" in err and "val_accuracy" in err and "samples/s" in err
    ff.fit(ff.MLP([2, 8, 3]), Xtr, ytr, loss="cross_entropy", epochs=3, verbose=0)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_plain_progress_line_without_tqdm(monkeypatch):
    import fastfit.progress as progress

    def no_tqdm(*a, **k):
        raise ImportError("no tqdm")

    monkeypatch.setattr(progress, "_Tqdm", no_tqdm)
    stream = io.StringIO()
    bar = make_progress(1, 2, 100, stream=stream)
    bar.update_steps(1, 5, 10)
    bar.end_epoch({"epoch": 1, "loss": 0.5, "val_accuracy": 0.75, "samples_per_s": 12345.0})
    bar.close()
    text = stream.getvalue()
    assert "epoch 1/2" in text and "loss 0.5" in text and "val_accuracy 0.75" in text and "12.3k samples/s" in text


def test_auto_progress_stays_silent_off_a_terminal():
    stream = io.StringIO()
    bar = make_progress("auto", 2, 100, stream=stream)
    bar.end_epoch({"epoch": 1, "loss": 0.5})
    bar.close()
    assert stream.getvalue() == ""


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_seed_and_threads_give_bit_identical_parameters(dtype):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((500, 20))
    y = rng.integers(0, 5, size=500)
    results = []
    for _ in range(2):
        model = ff.MLP([20, 300, 300, 5], dtype=dtype, seed=4)
        ff.fit(model, X, y, loss="cross_entropy", optimizer=ff.Adam(1e-3), batch_size=50, epochs=3,
               seed=9, n_threads=2)
        results.append(model.params.copy())
    np.testing.assert_array_equal(results[0], results[1])


def test_different_seeds_give_different_batch_orders():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((100, 4))
    y = rng.integers(0, 2, size=100)
    a, b = ff.MLP([4, 8, 2], seed=0), ff.MLP([4, 8, 2], seed=0)
    ff.fit(a, X, y, loss="cross_entropy", optimizer=ff.SGD(0.1), batch_size=10, epochs=1, seed=1)
    ff.fit(b, X, y, loss="cross_entropy", optimizer=ff.SGD(0.1), batch_size=10, epochs=1, seed=2)
    assert not np.array_equal(a.params, b.params)


def test_gradient_descent_reaches_the_least_squares_solution():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.3 + 0.01 * rng.standard_normal(200)
    model = ff.MLP([3, 1], dtype=np.float64)
    ff.fit(model, X, y, loss=ff.SquaredError(), optimizer=ff.SGD(0.5), batch_size=None, epochs=500)
    A = np.hstack([X, np.ones((200, 1))])
    solution = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(model.layers[0].W.ravel(), solution[:3], rtol=1e-8)
    np.testing.assert_allclose(model.layers[0].b, solution[3:], rtol=1e-8)


def test_mnist1d_mlp_reaches_the_published_baseline_range():
    pytest.importorskip("mnist1d")
    Xtr, ytr, Xte, yte = datasets.mnist1d()
    model = ff.MLP([40, 100, 100, 10], seed=0)
    ff.fit(model, Xtr, ytr, loss=ff.SoftmaxCrossEntropy(), optimizer=ff.Adam(1e-2), batch_size=100, epochs=60)
    accuracy = ff.evaluate(model, Xte, yte, ff.SoftmaxCrossEntropy())["accuracy"]
    assert accuracy > 0.6, accuracy   # published MLP: about 68%


def test_runs_of_steps_grow_until_their_snapshot_and_check_are_a_small_share():
    """Each run of compiled steps is guarded by a snapshot and a check of the parameters and
    state; for a large model with slow steps, runs grow (up to a second) until that guard costs
    at most 1% of them, and stay at about 0.2 s otherwise."""
    # a fast model: 1 ms steps, a 0.1 ms guard: 0.2 s runs
    assert epochs._next_chunk(elapsed=0.0101, steps=10, guard_s=1e-4, n_batches=10_000) == 200
    # 0.39 s steps with a 30 ms guard: 3 s wanted, capped at 1 s: two steps a run
    assert epochs._next_chunk(elapsed=0.42, steps=1, guard_s=0.03, n_batches=100) == 2
    # 0.1 s steps with a 1 ms guard: 0.1 s wanted, 0.2 s kept
    assert epochs._next_chunk(elapsed=0.101, steps=1, guard_s=0.001, n_batches=100) == 2
    # ... with a 3 ms guard: 0.3 s wanted, three steps
    assert epochs._next_chunk(elapsed=0.103, steps=1, guard_s=0.003, n_batches=100) == 3
    # never more than the epoch, never fewer than one
    assert epochs._next_chunk(elapsed=5.0, steps=1, guard_s=0.0, n_batches=100) == 1
    assert epochs._next_chunk(elapsed=1e-6, steps=1, guard_s=0.0, n_batches=7) == 7


def test_no_run_is_left_shorter_than_half_a_run():
    """A run takes every remaining step of the epoch when at most half a run would be left
    after it (one guard, not two); the first run of a fit, one step to time it, stays one."""
    assert epochs._run_length(chunk=3, remaining=4) == 4
    assert epochs._run_length(chunk=3, remaining=5) == 3
    assert epochs._run_length(chunk=200, remaining=300) == 300
    assert epochs._run_length(chunk=200, remaining=301) == 200
    assert epochs._run_length(chunk=200, remaining=150) == 150
    assert epochs._run_length(chunk=1, remaining=2) == 1
    assert epochs._run_length(chunk=1, remaining=1) == 1


def test_a_later_fit_of_the_model_starts_with_runs_of_its_last_pace(spirals, monkeypatch):
    """The first run of a fit is one step, to time it; a later fit of the same model, batch
    size and threads starts at the pace the last one measured, so it takes one snapshot and
    check where it would take two. Another batch size starts again at one step. Results do
    not depend on where runs end."""
    X, y = spirals[0], spirals[1]
    lengths = []
    real = epochs.LocalRunner.run

    def spy(self, order, first, n, lrs, t0):
        lengths.append(n)
        return real(self, order, first, n, lrs, t0)

    monkeypatch.setattr(epochs.LocalRunner, "run", spy)

    def fit(model, batch_size, n_threads=1):
        lengths.clear()
        ff.fit(model, X, y, "cross_entropy", ff.Adam(1e-2), batch_size=batch_size, epochs=1, seed=0, verbose=0,
               n_threads=n_threads)
        return list(lengths)

    model, twin = ff.MLP([2, 16, 3], seed=0), ff.MLP([2, 16, 3], seed=0)
    n_batches = -(-len(X) // 8)
    assert fit(model, 8)[0] == 1
    assert fit(model, 8) == [n_batches]  # the whole epoch in one run: its steps take microseconds
    assert fit(model, 16)[0] == 1 and fit(model, 8, n_threads=2)[0] == 1
    assert fit(twin, 8)[0] == 1  # a pace belongs to its model
    del epochs._PACE[twin]
    assert fit(twin, 8)[0] == 1  # the same steps as model's one run, cut in two
    fit(twin, 16), fit(twin, 8, n_threads=2)
    np.testing.assert_array_equal(model.params, twin.params)


def test_the_guard_time_is_measured_around_each_run(spirals):
    X, y = spirals[0], spirals[1]
    model = ff.MLP([2, 16, 3], seed=0)
    seen = []
    real = epochs.LocalRunner.run

    def spy(self, *args):
        out = real(self, *args)
        seen.append(self.guard_s)
        return out

    epochs.LocalRunner.run = spy
    try:
        ff.fit(model, X, y, "cross_entropy", ff.Adam(1e-2), batch_size=32, epochs=2, verbose=0)
    finally:
        epochs.LocalRunner.run = real
    assert seen and all(0 < g < 0.5 for g in seen)
