"""Attacks that once broke fastfit: buffers replaced by assignment, one model trained from two
threads, stops that left non-finite or off-by-one parameters, optimizers stepping the wrong
model, and the checks around them (names for memory_report, nesterov's type, memory up front)."""
import math
import threading
import time
import tracemalloc

import numpy as np
import pytest

import fastfit as ff
from fastfit import _core

from helpers import classification_data, replay_steps

# ---------------------------------------------------------------- assigning params and grads


def _model_and_views():
    model = ff.MLP([4, 5, 3], dtype=np.float64, seed=0)
    return model, model.params, model.grads, model.layers[0].W


@pytest.mark.parametrize("name", ["params", "grads"])
@pytest.mark.parametrize("value", [np.zeros(10), np.zeros(42), np.zeros(44), np.zeros((43, 1)), np.zeros(0),
                                   np.full(43, np.nan), np.full(43, "a"), None, 3.0], ids=repr)
def test_assigning_a_wrong_buffer_is_refused_and_the_model_is_untouched(name, value):
    model, params, grads, W = _model_and_views()
    model.grads = np.arange(43.0)
    before = model.params.copy(), model.grads.copy()
    with pytest.raises((ValueError, TypeError), match=name):
        setattr(model, name, value)
    assert model.params is params and model.grads is grads and model.layers[0].W.base is not None
    np.testing.assert_array_equal(model.params, before[0])
    np.testing.assert_array_equal(model.grads, before[1])


def test_assigning_params_copies_into_the_same_buffer_the_layers_view():
    model, params, _, W = _model_and_views()
    X = np.random.default_rng(0).standard_normal((5, 4))
    other = ff.MLP([4, 5, 3], dtype=np.float64, seed=9)
    model.params = other.params.tolist()
    assert model.params is params
    np.testing.assert_array_equal(W, other.layers[0].W)        # the views see the new values
    np.testing.assert_array_equal(model.predict(X), other.predict(X))


# ---------------------------------------------------------------- one model, two threads

class _InsideTheCore:
    """Wraps _core.train_steps so that the first call from a chosen thread waits, inside
    the compiled call's Python frame, until the test lets it go."""

    def __init__(self, monkeypatch, parties=2):
        self.real = _core.train_steps
        self.arrived = threading.Barrier(parties, timeout=30)
        self.release = threading.Event()
        self.waiting = set()
        monkeypatch.setattr(_core, "train_steps", self)

    def hold(self, thread=None):
        self.waiting.add(thread or threading.current_thread())

    def __call__(self, *args):
        me = threading.current_thread()
        if me in self.waiting:
            self.waiting.discard(me)
            self.arrived.wait()
            assert self.release.wait(30)
        return self.real(*args)


def _fit(model, opt, X, y, seed=0, epochs=2):
    return ff.fit(model, X, y, loss="cross_entropy", optimizer=opt, batch_size=16, epochs=epochs, seed=seed,
                  n_threads=1, verbose=0)


def test_a_second_thread_fitting_or_stepping_the_same_model_gets_a_runtime_error(monkeypatch):
    X, y = classification_data(n=96, d=6)
    model, opt = ff.MLP([6, 16, 3], seed=1), ff.Adam(1e-2)
    alone, opt_alone = ff.MLP([6, 16, 3], seed=1), ff.Adam(1e-2)
    _fit(alone, opt_alone, X, y)
    core = _InsideTheCore(monkeypatch)
    out = {}

    def worker():
        try:
            out["history"] = _fit(model, opt, X, y)
        except BaseException as exc:  # noqa: BLE001 - reported below
            out["error"] = exc

    thread = threading.Thread(target=worker)
    core.hold(thread)
    thread.start()
    try:
        core.arrived.wait()   # the worker is inside its fit's first compiled run of steps
        other_opt = ff.SGD(0.1)
        for what, call in (("fit", lambda: _fit(model, ff.Adam(1e-2), X, y)),
                           ("fit", lambda: _fit(model, opt, X, y)),
                           ("step", lambda: other_opt.step(model)),
                           ("forward", lambda: model.forward(X[:4])),
                           ("predict", lambda: model.predict(X[:4])),
                           ("assigning params", lambda: setattr(model, "params", alone.params)),
                           ("assigning grads", lambda: setattr(model, "grads", np.zeros(model.n_params))),
                           ("load_state_dict", lambda: model.load_state_dict(alone.state_dict()))):
            with pytest.raises(RuntimeError, match=f"{what}: this model is being used by another thread"):
                call()
        assert other_opt.t == 0 and not other_opt.state_buffers()
    finally:
        core.release.set()
        thread.join(60)
    assert "error" not in out, out.get("error")
    # the refused calls changed nothing: the worker's fit is the fit run alone
    np.testing.assert_array_equal(model.params, alone.params)
    assert out["history"]["loss"] == _fit(ff.MLP([6, 16, 3], seed=1), ff.Adam(1e-2), X, y)["loss"]
    _fit(model, opt, X, y)   # and the model is free again


def test_two_models_in_two_threads_inside_the_core_at_once_equal_sequential_fits(monkeypatch):
    data = [classification_data(n=96, d=6, seed=s) for s in (1, 2)]
    sequential = []
    for s, (X, y) in zip((1, 2), data):
        model = ff.MLP([6, 16, 3], seed=s)
        _fit(model, ff.Adam(1e-2), X, y, seed=s)
        sequential.append(model.params.copy())
    core = _InsideTheCore(monkeypatch)
    models = [ff.MLP([6, 16, 3], seed=s) for s in (1, 2)]
    errors = []

    def worker(i):
        try:
            core.hold()
            _fit(models[i], ff.Adam(1e-2), *data[i], seed=i + 1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    core.release.set()        # both wait at the barrier inside the core, then both go on together
    for t in threads:
        t.join(60)
    assert not errors, errors
    for model, params in zip(models, sequential):
        np.testing.assert_array_equal(model.params, params)


# ---------------------------------------------------------------- stops keep a completed step's parameters

X_STOP, Y_STOP = classification_data(n=96, d=6, seed=3)
SUM_CE = ff.SoftmaxCrossEntropy(reduction="sum")


def _stopped_fit(opt, dtype=np.float32, epochs=3, loss=SUM_CE):
    model = ff.MLP([6, 16, 3], dtype=dtype, seed=1)
    with pytest.raises((ArithmeticError, ValueError)) as info:
        ff.fit(model, X_STOP, Y_STOP, loss=loss, optimizer=opt, batch_size=16, epochs=epochs, seed=5, verbose=0,
               n_threads=1)   # one thread: the step API's arithmetic, sum for sum
    return model, info.value


def _after_steps(opt, n_steps, dtype=np.float32, loss=SUM_CE):
    model = ff.MLP([6, 16, 3], dtype=dtype, seed=1)
    return replay_steps(model, opt, loss, X_STOP, Y_STOP, 16, n_steps, seed=5)


def test_an_overflowing_update_stops_with_the_parameters_before_it():
    model, err = _stopped_fit(ff.SGD(1e38))
    assert type(err) is ff.NonFiniteLossError and "update made the parameters infinite" in str(err)
    assert (err.epoch, err.step) == (1, 1) and len(err.history["loss"]) == 0
    np.testing.assert_array_equal(model.params, ff.MLP([6, 16, 3], seed=1).params)


@pytest.mark.parametrize("good_steps", [1, 5, 9])
def test_an_update_overflowing_mid_run_is_undone_to_the_last_completed_step(good_steps):
    """Steps 0..k-1 at a small rate, step k at a rate beyond float32's range (no update can be
    finite): the compiled run that overflows is rolled back and replayed, leaving exactly the
    parameters and momentum of k steps."""
    def lr(t):
        return 1e-3 if t < good_steps else 1e300
    opt = ff.SGD(lr, momentum=0.5)
    model, err = _stopped_fit(opt)
    assert type(err) is ff.NonFiniteLossError
    assert opt.t == good_steps and (err.epoch - 1) * 6 + err.step == good_steps + 1
    assert len(err.history["loss"]) == err.epoch - 1
    assert np.isfinite(model.params).all()
    reference = ff.SGD(lr, momentum=0.5)
    np.testing.assert_array_equal(model.params, _after_steps(reference, good_steps).params)
    np.testing.assert_array_equal(opt.state_buffers()["m"], reference.state_buffers()["m"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_guard_finds_every_value_that_is_not_finite_in_every_part(dtype):
    """The check after a run (``_core.all_finite``) and the snapshot (``_core.copy_into``) are
    split across threads for large buffers: a bad value at either end of any part, or the last
    element, is found at 1, 2 and 3 threads, and the copy is exact."""
    item = np.dtype(dtype).itemsize
    for n in (0, 1, 65, ff._core.GUARD_PARALLEL_MIN_BYTES // item + 17):
        x = ff._core.line_aligned_zeros(n, dtype)
        x[:] = np.finfo(dtype).max * np.linspace(-1.0, 1.0, n)  # the largest values are finite too
        for threads in (1, 2, 3):
            copy = np.empty_like(x)
            ff._core.copy_into(copy, x, threads)
            np.testing.assert_array_equal(copy, x)
            assert ff._core.all_finite(x, threads)
            blocks = (n + 63) // 64
            ends = {b * blocks // threads * 64 for b in range(threads)} | {n - 1}
            positions = {min(max(p + d, 0), n - 1) for p in ends for d in (-1, 0, 1)} if n else set()
            for position in positions:
                for bad in (np.inf, -np.inf, np.nan):
                    saved = x[position]
                    x[position] = bad
                    assert not ff._core.all_finite(x, threads), (n, threads, position, bad)
                    x[position] = saved


@pytest.mark.parametrize("threads", [2, 3])
def test_a_large_model_is_restored_to_its_last_finite_step(threads):
    """A model whose parameters (1.1M float32, over GUARD_PARALLEL_MIN_BYTES) are snapshot,
    checked and restored in parts: an update that overflows at step 3 leaves the parameters of
    step 3, as a fit at the same threads whose rate is 0 from step 3 on."""
    sizes = [1100, 1000, 3]
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((64, 1100)).astype(np.float32), rng.integers(0, 3, 64)
    assert ff.MLP(sizes).params.nbytes >= ff._core.GUARD_PARALLEL_MIN_BYTES

    def fit(after):
        model = ff.MLP(sizes, seed=1)
        opt = ff.SGD(lambda t: 1e-3 if t < 3 else after, momentum=0.5)
        ff.fit(model, X, y, loss=SUM_CE, optimizer=opt, batch_size=16, epochs=2, seed=5, verbose=0,
               n_threads=threads)
        return model, opt

    overflowing = ff.MLP(sizes, seed=1)
    opt = ff.SGD(lambda t: 1e-3 if t < 3 else 1e300, momentum=0.5)
    with pytest.raises(ff.NonFiniteLossError):
        ff.fit(overflowing, X, y, loss=SUM_CE, optimizer=opt, batch_size=16, epochs=2, seed=5, verbose=0,
               n_threads=threads)
    assert opt.t == 3
    stopped, _ = fit(0.0)
    np.testing.assert_array_equal(overflowing.params, stopped.params)


def test_a_schedule_that_overflows_stops_after_the_steps_it_could_rate():
    opt = ff.SGD(ff.ExponentialDecay(1e-300, 1e300))  # step 0: 1e-300, step 1: 1.0, step 2: overflows
    model, err = _stopped_fit(opt, dtype=np.float64, loss="cross_entropy")
    assert type(err) is OverflowError and "step 2" in str(err)
    assert opt.t == 2 and len(err.history["loss"]) == 0
    expected = _after_steps(ff.SGD(ff.ExponentialDecay(1e-300, 1e300)), 2, np.float64, ff.SoftmaxCrossEntropy())
    np.testing.assert_array_equal(model.params, expected.params)


@pytest.mark.parametrize("make", [lambda lr: ff.SGD(lr), lambda lr: ff.SGD(lr, momentum=0.9), lambda lr: ff.Adam(lr)],
                         ids=["sgd", "momentum", "adam"])
def test_a_schedule_raising_at_step_k_keeps_the_parameters_of_k_steps(make):
    def lr(t):
        if t == 7:
            raise OverflowError("the schedule overflowed")
        return 0.01
    opt = make(lr)
    model, err = _stopped_fit(opt)
    assert type(err) is OverflowError and "step 7" in str(err)
    assert opt.t == 7 and len(err.history["loss"]) == 1   # 6 steps per epoch: the first epoch completed
    np.testing.assert_array_equal(model.params, _after_steps(make(lr), 7).params)


@pytest.mark.parametrize("make", [lambda lr: ff.SGD(lr), lambda lr: ff.Adam(lr)], ids=["sgd", "adam"])
def test_a_schedule_returning_nan_at_the_third_step_stops_after_two(make):
    def lr(t):
        return math.nan if t == 2 else 0.01
    opt = make(lr)
    model, err = _stopped_fit(opt)
    assert type(err) is ValueError and "returned nan at step 2" in str(err)
    assert opt.t == 2 and err.history["loss"] == []
    np.testing.assert_array_equal(model.params, _after_steps(make(lr), 2).params)


def test_nesterov_stops_one_step_earlier_since_each_step_needs_the_next_rate():
    """Nesterov's step t moves to the look-ahead point with lr(t+1): a NaN at t=2 leaves one step."""
    def lr(t):
        return math.nan if t == 2 else 0.01
    opt = ff.SGD(lr, momentum=0.9, nesterov=True)
    model, err = _stopped_fit(opt)
    assert type(err) is ValueError and opt.t == 1
    expected = _after_steps(ff.SGD(lr, momentum=0.9, nesterov=True), 1)
    np.testing.assert_array_equal(model.params, expected.params)   # both at phi (finalized)


# ---------------------------------------------------------------- optimizers and the model they step

def _stepped(model, opt):
    model.forward(np.ones((2, model.n_inputs)))
    model.backward(np.ones((2, model.n_outputs)))
    opt.step(model)


@pytest.mark.parametrize("make", [lambda: ff.SGD(0.1), lambda: ff.SGD(0.1, momentum=0.9), lambda: ff.Adam()],
                         ids=["sgd", "momentum", "adam"])
def test_an_optimizer_refuses_a_model_of_other_sizes_with_as_many_parameters(make):
    a, b = ff.MLP([3, 4, 2]), ff.MLP([5, 3, 2])
    assert a.n_params == b.n_params == 26
    opt = make()
    _stepped(a, opt)
    before = b.params.copy()
    with pytest.raises(ValueError, match=r"sizes \[3, 4, 2\].*cannot step a float32 model of sizes \[5, 3, 2\]"):
        _stepped(b, opt)
    np.testing.assert_array_equal(b.params, before)
    with pytest.raises(ValueError, match="sizes"):
        ff.fit(b, np.ones((4, 5)), [0, 1, 0, 1], loss="cross_entropy", optimizer=opt, verbose=0)
    assert opt.t == 1


def test_an_optimizer_refuses_another_model_of_the_same_sizes_while_the_first_lives():
    a, b = ff.MLP([3, 4, 2], seed=0), ff.MLP([3, 4, 2], seed=1)
    opt = ff.Adam()
    _stepped(a, opt)
    with pytest.raises(ValueError, match="cannot step another model"):
        _stepped(b, opt)
    with pytest.raises(ValueError, match="another model"):
        ff.fit(b, np.ones((4, 3)), [0, 1, 0, 1], loss="cross_entropy", optimizer=opt, verbose=0)
    del a  # once the first model is gone, its state may carry on with a model of its sizes
    import gc
    gc.collect()
    _stepped(b, opt)
    assert opt.t == 2


@pytest.mark.parametrize("name,make", [("adam", ff.Adam), ("adamw", ff.AdamW), ("sgd", lambda: ff.SGD(0.1)),
                                       ("momentum", lambda: ff.SGD(0.1, momentum=0.9)),
                                       ("nesterov", lambda: ff.SGD(0.1, momentum=0.9, nesterov=True)),
                                       ("normalized", lambda: ff.NormalizedGD(0.1))])
@pytest.mark.parametrize("loss,loss_obj", [("cross_entropy", ff.SoftmaxCrossEntropy()), ("mse", ff.SquaredError()),
                                           ("bce", ff.BinaryCrossEntropy()), (None, None)])
def test_memory_report_takes_names_and_objects_alike(name, make, loss, loss_obj):
    model = ff.MLP([10, 32, 4], dtype=np.float64)
    assert model.memory_report(64, optimizer=name, loss=loss) == model.memory_report(64, optimizer=make(),
                                                                                      loss=loss_obj)
    with pytest.raises(TypeError, match="optimizer"):
        model.memory_report(64, optimizer="adagrad")


@pytest.mark.parametrize("own", [False, True])
@pytest.mark.parametrize("sizes, batch, dtype", [([784, 256, 10], 64, np.float32), ([784, 256, 10], 64, np.float64),
                                                 ([64, 128, 10], 32, np.float32)])
def test_memory_report_counts_the_packing_buffers_a_workspace_holds(sizes, batch, dtype, own, monkeypatch):
    """fastfit's own product packs its operands into one buffer per thread: where it runs (AVX-512,
    some product past the small-matrix range) memory_report counts exactly what the fit's
    workspace holds at that thread count; elsewhere both are 0."""
    if own and not ff._core.own_products_usable():
        pytest.skip("fastfit's own product needs AVX-512")
    monkeypatch.setattr(ff._blas_select, "_own_products", (own, "the path under test"))
    model = ff.MLP(sizes, dtype=dtype)
    for threads in (1, 2, 3):
        packing = model.memory_report(batch, "adam", "cross_entropy", n_threads=threads)["packing"]
        assert packing == model.workspace(batch, threads=threads).packing.nbytes
        assert (packing > 0) == (own and sizes[0] == 784)
    with pytest.raises(ValueError, match="n_threads"):
        model.memory_report(batch, n_threads=0)


@pytest.mark.parametrize("sizes, batch, dtype, loss", [([784, 256, 10], 64, np.float32, "cross_entropy"),
                                                       ([64, 128, 10], 32, np.float64, "mse"),
                                                       ([5, 3], 7, np.float32, "cross_entropy")])
def test_memory_report_counts_what_the_buffers_allocate(sizes, batch, dtype, loss):
    """Each term is the allocation of its buffers, which start on 64-byte lines (each allocated
    64 bytes longer): the model's parameters and gradients, Adam's state, and a fit's workspace."""
    model = ff.MLP(sizes, dtype=dtype)
    opt = ff.Adam()
    report = model.memory_report(batch, opt, loss, n_threads=2)
    X = np.zeros((batch, sizes[0]), dtype=dtype)
    y = np.zeros(batch, dtype=int) if loss == "cross_entropy" else np.zeros((batch, sizes[-1]))
    ff.fit(model, X, y, loss=loss, optimizer=opt, batch_size=batch, epochs=1, n_threads=2, verbose=0)
    assert report["parameters"] == ff._core.allocated_bytes(model.params)
    assert report["gradients"] == ff._core.allocated_bytes(model.grads)
    assert report["optimizer_state"] == sum(ff._core.allocated_bytes(b) for b in opt.state_buffers().values())
    labels = loss == "cross_entropy"
    ws = model.workspace(batch, target_cols=0 if labels else sizes[-1], labels=labels, threads=2)
    assert ws.nbytes == sum(report[k] for k in ("activations", "backward_scratch", "batch", "packing"))


@pytest.mark.parametrize("value", ["no", "False", 0, 1, None, 1.0, np.array(True)], ids=repr)
def test_nesterov_must_be_a_bool(value):
    with pytest.raises(TypeError, match="nesterov must be True or False"):
        ff.SGD(0.1, momentum=0.9, nesterov=value)


def test_a_model_too_large_for_memory_is_refused_before_allocating():
    from fastfit import _checks
    sizes = [50000, 50000, 50000]
    n = 2 * (50000 * 50000 + 50000)
    free = _checks.available_memory()
    if free is None or free > 2 * n * 4:
        pytest.skip("this machine has the memory for that model")
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(MemoryError, match=r"MLP of sizes \[50000, 50000, 50000\] \(5,000,100,000 parameters\) "
                                              r"needs [\d,.]+ GiB, but only [\d,.]+ GiB"):
            ff.MLP(sizes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and time.perf_counter() - t0 < 1.0


def _nesterov_fitted():
    model, opt = ff.MLP([6, 16, 3], seed=1), ff.SGD(0.1, momentum=0.9, nesterov=True)
    ff.fit(model, X_STOP, Y_STOP, loss="cross_entropy", optimizer=opt, batch_size=16, epochs=1, verbose=0)
    huge = opt.state_dict()
    huge["hyper"] = {**huge["hyper"], "lr": 1e308}   # lr * momentum * m is beyond float32
    opt.load_state_dict(huge)
    return model, opt


def test_a_nesterov_look_ahead_beyond_the_dtype_stops_the_fit_with_the_model_untouched():
    model, opt = _nesterov_fitted()
    before, m_before = model.params.copy(), opt.state_buffers()["m"].copy()
    with pytest.raises(ff.NonFiniteLossError, match="look-ahead point psi .* is not finite in float32") as info:
        ff.fit(model, X_STOP, Y_STOP, loss="cross_entropy", optimizer=opt, batch_size=16, epochs=2, verbose=0)
    assert info.value.history.epochs == 0 and (info.value.epoch, info.value.step) == (1, 1)
    np.testing.assert_array_equal(model.params, before)
    np.testing.assert_array_equal(opt.state_buffers()["m"], m_before)
    assert opt.t == 6 and not opt._lookahead


def test_nesterov_prepare_refuses_a_look_ahead_beyond_the_dtype_and_leaves_the_model_untouched():
    model, opt = _nesterov_fitted()
    before = model.params.copy()
    with pytest.raises(FloatingPointError, match="look-ahead point"):
        opt.prepare(model)
    np.testing.assert_array_equal(model.params, before)
    assert not opt._lookahead


def test_an_update_that_overflows_the_optimizer_state_stops_the_fit():
    """Inputs of 1e20 in float32: g*g overflows, v becomes infinite and m_hat / sqrt(v_hat) is 0,
    so those parameters would stop moving for good, silently. The fit must stop instead."""
    X = X_STOP * 1e20
    model, opt = ff.MLP([6, 16, 3], seed=1), ff.Adam(1e-3)
    with pytest.raises(ff.NonFiniteLossError):
        ff.fit(model, X, Y_STOP, loss="cross_entropy", optimizer=opt, batch_size=16, epochs=2, verbose=0)
    assert all(np.isfinite(buffer).all() for buffer in opt.state_buffers().values())
