"""Threads: concurrent fits in two Python threads, and the GIL released while the core works."""
import threading
import time

import numpy as np

import fastfit as ff
from fastfit import _threads


def make_problem(seed, n=3000, d=40):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, 5, size=n)


def fit_one(seed, out, key, epochs=3, n_threads=1):
    X, y = make_problem(seed)
    model = ff.MLP([40, 128, 128, 5], seed=seed)
    history = ff.fit(model, X, y, loss="cross_entropy", optimizer=ff.Adam(1e-3), batch_size=32,
                     epochs=epochs, seed=seed, n_threads=n_threads)
    out[key] = (model.params.copy(), history["loss"])


def test_two_models_fit_in_two_threads_equal_fitting_them_one_after_the_other():
    sequential, concurrent = {}, {}
    fit_one(1, sequential, "a")
    fit_one(2, sequential, "b")
    threads = [threading.Thread(target=fit_one, args=(seed, concurrent, key)) for seed, key in ((1, "a"), (2, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in ("a", "b"):
        np.testing.assert_array_equal(concurrent[key][0], sequential[key][0])
        assert concurrent[key][1] == sequential[key][1]


def test_the_gil_is_released_while_the_core_trains():
    """While a fit runs in a worker thread, the main thread keeps ticking every millisecond.

    The fit hands the core runs of steps lasting about 0.2 s; were the GIL held
    through them, the main thread would stall for that long at a time."""
    done = threading.Event()
    out = {}

    def work():
        try:
            fit_one(3, out, "x", epochs=12)
        finally:
            done.set()

    worker = threading.Thread(target=work)
    ticks = []
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    assert "x" in out
    gaps = np.diff(ticks)
    assert len(ticks) > 50, "the fit was too short to tell"
    assert gaps.max() < 0.1, f"the main thread stalled for {gaps.max():.3f} s while the core ran"


def test_concurrent_fits_restore_the_blas_thread_count():
    before = [lib.num_threads for lib in _threads._blas_libs()]
    out = {}
    threads = [threading.Thread(target=fit_one, args=(seed, out, seed), kwargs={"epochs": 1})
               for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4
    assert [lib.num_threads for lib in _threads._blas_libs()] == before
