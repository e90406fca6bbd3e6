"""Threads: concurrent fits in two Python threads, and the GIL released while the core works."""
import threading
import time

import numpy as np

import fastfit as ff
from fastfit import _core, _threads


def make_problem(seed, n=1200, d=40):
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


def _longest_core_call_with_main_thread_ticks(n_rows):
    """Fit (full batch: one compiled call per epoch) in a worker thread while the main thread
    counts ticks; returns (start, end) of the longest _core.train_steps call and the ticks."""
    calls, ticks = [], []
    real = _core.train_steps

    def timed(*args):
        t0 = time.perf_counter()
        try:
            return real(*args)
        finally:
            calls.append((t0, time.perf_counter()))

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_rows, 256)).astype(np.float32)
    y = rng.integers(0, 10, size=n_rows)
    model = ff.MLP([256, 1024, 1024, 10], seed=0)
    done = threading.Event()
    errors = []

    def work():
        try:
            ff.fit(model, X, y, loss="cross_entropy", optimizer=ff.SGD(0.01), batch_size=None, epochs=2,
                   n_threads=1, verbose=0)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            done.set()

    _core.train_steps = timed
    try:
        worker = threading.Thread(target=work)
        worker.start()
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)   # lets the worker run; returns at once when the GIL is free
        worker.join()
    finally:
        _core.train_steps = real
    assert not errors, errors
    assert len(calls) == 2
    return max(calls, key=lambda c: c[1] - c[0]), np.array(ticks)


def test_the_gil_is_released_while_the_core_trains():
    """While one compiled run of steps lasts at least 0.3 s in a worker thread, the main
    thread keeps running through it: no gap between its ticks spans half of that call.

    Were the GIL held through the call, the main thread could not run at all until the call
    returned: one gap as long as the call."""
    n_rows = 1000
    for _ in range(6):
        (start, end), ticks = _longest_core_call_with_main_thread_ticks(n_rows)
        if end - start >= 0.3:
            break
        n_rows *= 2   # a faster machine: a bigger batch, until one call lasts long enough to tell
    duration = end - start
    assert duration >= 0.3, f"no compiled call lasted 0.3 s (the longest: {duration:.3f} s)"
    inside = ticks[(ticks > start) & (ticks < end)]
    assert len(inside) > 100, f"the main thread ticked {len(inside)} times during a {duration:.2f} s core call"
    edges = np.concatenate([[start], inside, [end]])
    longest_gap = np.diff(edges).max()
    assert longest_gap < duration / 2, (f"the main thread stalled for {longest_gap:.3f} s of a {duration:.3f} s "
                                        "core call: the GIL was held")


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


def _blas_counts_asked(monkeypatch):
    asked = []
    real = _threads._apply

    def recording(n):
        asked.append(n)
        real(n)

    monkeypatch.setattr(_threads, "_apply", recording)
    return asked


def _team_counts_given(monkeypatch, model):
    """The thread counts the fits' workspaces are made with (their products' team shares)."""
    given = []
    real = model.workspace

    def recording(*args, **kwargs):
        ws = real(*args, **kwargs)
        given.append(ws.threads)
        return ws

    monkeypatch.setattr(model, "workspace", recording)
    return given


def test_a_thread_limit_set_by_the_user_is_never_raised(monkeypatch):
    """Under threadpool_limits(1) (or OPENBLAS_NUM_THREADS=1, or one MPI rank per core), the step
    API, fit and the optimizer's team stay at one thread even for products big enough to share;
    two processes each using 2 threads on 2 cores slow each other down many times over."""
    from threadpoolctl import threadpool_limits
    if _threads.cpu_count() < 2:
        import pytest
        pytest.skip("one core: every count is 1")
    model = ff.MLP([512, 1024, 10], seed=0)    # 2 x 128 rows x 0.5M params: above SINGLE_THREAD_FLOPS
    X = np.random.default_rng(0).standard_normal((128, 512)).astype(np.float32)
    assert 2 * 128 * model.n_params >= _threads.SINGLE_THREAD_FLOPS
    assert _threads.auto_threads(2 * 128 * model.n_params) == _threads.allowed_threads() > 1
    asked = _blas_counts_asked(monkeypatch)
    given = _team_counts_given(monkeypatch, model)
    opt = ff.Adam()
    with threadpool_limits(1, user_api="blas"):
        assert _threads.allowed_threads() == 1
        model.forward(X)
        assert model._ws.threads == 1
        model.backward(np.ones((128, 10), np.float32))
        assert model._ws.threads == 1
        ff.fit(model, X, np.zeros(128, int), "cross_entropy", opt, batch_size=128, epochs=1, verbose=0)
        assert given and set(given) == {1}, given
        assert all(n == 1 for n in asked), asked
        assert [lib.num_threads for lib in _threads._blas_libs()] == [1] * len(_threads._blas_libs())
    model.forward(X)           # no limit: the big products are shared by every core again,
    assert model._ws.threads == _threads.cpu_count()
    assert all(n == 1 for n in asked), asked  # with BLAS at one thread inside each share


def test_an_explicit_thread_count_is_used_as_given(monkeypatch):
    from threadpoolctl import threadpool_limits
    model = ff.MLP([40, 64, 5], seed=0)
    given = _team_counts_given(monkeypatch, model)
    X, y = make_problem(0, n=64)
    with threadpool_limits(1, user_api="blas"):
        ff.fit(model, X, y, "cross_entropy", ff.Adam(), batch_size=64, epochs=1, verbose=0, n_threads=2)
    assert 2 in given, given


def test_an_idle_team_sleeps():
    """After a job the team watches for the next one for microseconds, then sleeps: a process that
    fitted with every core and then waits uses no CPU while it waits."""
    if _threads.cpu_count() < 2:
        import pytest
        pytest.skip("one core: no team")
    model = ff.MLP([300, 260, 200, 10], seed=0)
    X, y = make_problem(0, n=256, d=300)
    ff.fit(model, X, y, "cross_entropy", ff.Adam(), batch_size=128, epochs=2, verbose=0, n_threads=2)
    assert _core.team_size() >= 1
    time.sleep(0.05)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(0.5)
    busy = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    assert busy < 0.1, f"the process used {busy:.0%} of a core while nothing ran: a thread kept spinning"
