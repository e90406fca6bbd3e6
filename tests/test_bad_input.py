"""The bad-input battery.

The compiled core trusts its inputs; the Python layer must refuse everything the
core cannot take. For each bad argument: the exact exception type (ValueError for
a bad value or shape, TypeError for a bad kind of object), a message naming the
argument, no RuntimeWarning on the way, and the model (parameters, gradients,
pending activations) and the optimizer (t, m, v, the model it is bound to,
Nesterov's look-ahead flag) exactly as they were. Then what must be accepted:
lists, integers, the other float dtype, batch sizes above N, read-only and
non-contiguous arrays (same result as C-contiguous ones, never written to).
"""
import math
import os
import re

import numpy as np
import pytest

import fastfit as ff

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

N, D, C = 24, 4, 3
SIZES = [D, 8, C]

_rng = np.random.default_rng(2024)
X_GOOD = _rng.standard_normal((N, D))
LABELS = np.arange(N) % C
Y_BIN = (_rng.random((N, C)) < 0.5).astype(np.float64)
Y_REAL = _rng.standard_normal((N, C))
for _a in (X_GOOD, LABELS, Y_BIN, Y_REAL):
    _a.flags.writeable = False  # a test that writes to the shared data fails loudly

LOSSES = {"ce": ff.SoftmaxCrossEntropy, "bce": ff.BinaryCrossEntropy, "se": ff.SquaredError}
TARGETS = {"ce": LABELS, "bce": Y_BIN, "se": Y_REAL}


# ---------------------------------------------------------------- helpers

def names(exc, name):
    """The message names the argument (as a word: "X", "y", "lr", "betas[0]" ...)."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", str(exc)) is not None


def snapshot(model, opt=None):
    state = {"params_obj": model.params, "params": model.params.copy(), "grads": model.grads.copy(),
             "last_X": model._last_X}
    if opt is not None:
        state["opt"] = opt.state_dict()
    return state


def assert_unchanged(before, model, opt=None):
    assert model.params is before["params_obj"], "the parameter buffer was replaced"
    assert model.params.tobytes() == before["params"].tobytes(), "the model's parameters changed"
    assert model.grads.tobytes() == before["grads"].tobytes(), "the model's gradients changed"
    assert model._last_X is before["last_X"], "the activations a pending backward needs were dropped"
    if opt is not None:
        old, new = before["opt"], opt.state_dict()
        assert new["t"] == old["t"], "the optimizer's step count changed"
        assert new["bound"] == old["bound"], "the optimizer was bound to a model"
        assert new["lookahead"] == old["lookahead"]
        assert sorted(new["buffers"]) == sorted(old["buffers"]), "the optimizer's state was allocated"
        for key, value in old["buffers"].items():
            assert new["buffers"][key].tobytes() == value.tobytes(), f"the optimizer's {key} changed"


def rejected(exc, name, call, model=None, opt=None):
    """call() raises exactly exc naming `name`, and leaves model and opt as they were."""
    before = snapshot(model, opt) if model is not None else None
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc, f"expected {exc.__name__}, got {type(info.value).__name__}: {info.value}"
    assert names(info.value, name), f"the message does not name {name!r}: {info.value}"
    if model is not None:
        assert_unchanged(before, model, opt)
    return info.value


def fit(model, X, y, loss="ce", opt=None, **kw):
    kw = {"batch_size": 8, "epochs": 1, "seed": 0, "verbose": 0, "n_threads": 1, **kw}
    return ff.fit(model, X, y, loss=LOSSES[loss](), optimizer=opt if opt is not None else ff.Adam(1e-2), **kw)


def fitted(X, y, loss="ce", dtype=np.float32, **kw):
    """Parameters and loss history of a fresh model fitted for two epochs."""
    model = ff.MLP(SIZES, dtype=dtype, seed=0)
    history = fit(model, X, y, loss, ff.Adam(1e-2), **{"epochs": 2, **kw})
    return model.params.copy(), list(history["loss"])


def assert_same_fit(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


@pytest.fixture(params=["fresh-adam", "warm-adam", "warm-nesterov"])
def setup(request):
    """A model and an optimizer: fresh, or after a fit with a forward pass pending."""
    model = ff.MLP(SIZES, seed=0)
    if request.param == "fresh-adam":
        return model, ff.Adam(1e-2)
    opt = ff.Adam(1e-2) if request.param == "warm-adam" else ff.SGD(0.05, momentum=0.9, nesterov=True)
    fit(model, X_GOOD, LABELS, opt=opt)
    model.forward(X_GOOD[:5])
    assert opt.t > 0 and opt.state_buffers()["m"].any()
    return model, opt


# ---------------------------------------------------------------- X

def _with(value, index):
    def make():
        X = np.array(X_GOOD)
        X[index] = value
        return X
    return make


BAD_X = {
    "nan": (_with(np.nan, (3, 1)), ValueError),
    "inf": (_with(np.inf, (0, 0)), ValueError),
    "-inf": (_with(-np.inf, (N - 1, D - 1)), ValueError),
    "nan-float32": (lambda: _with(np.nan, (5, 2))().astype(np.float32), ValueError),
    "too-large-for-float32": (_with(1e39, (2, 2)), ValueError),
    "too-many-features": (lambda: np.zeros((N, D + 1)), ValueError),
    "too-few-features": (lambda: np.zeros((N, D - 1)), ValueError),
    "1-D": (lambda: X_GOOD[0].copy(), ValueError),
    "3-D": (lambda: X_GOOD[None].copy(), ValueError),
    "scalar": (lambda: 1.0, ValueError),
    "empty": (lambda: np.empty((0, D)), ValueError),
    "empty-list": (lambda: [], ValueError),
    "object": (lambda: X_GOOD.astype(object), TypeError),
    "string": (lambda: X_GOOD.astype(str), TypeError),
    "complex": (lambda: X_GOOD.astype(np.complex128), TypeError),
    "bool": (lambda: X_GOOD > 0, TypeError),
    "ragged-list": (lambda: [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]], TypeError),
    "None": (lambda: None, TypeError),
}

X_ENTRIES = {
    "fit": (lambda m, o, X: fit(m, X, LABELS, opt=o), "X"),
    "forward": (lambda m, o, X: m.forward(X), "X"),
    "predict": (lambda m, o, X: m.predict(X), "X"),
    "evaluate": (lambda m, o, X: ff.evaluate(m, X, LABELS, ff.SoftmaxCrossEntropy()), "X"),
    "validation_data": (lambda m, o, X: fit(m, X_GOOD, LABELS, opt=o, validation_data=(X, LABELS)),
                        "validation_data"),
}


@pytest.mark.parametrize("entry", X_ENTRIES)
@pytest.mark.parametrize("case", BAD_X)
def test_bad_X(case, entry, setup):
    model, opt = setup
    make, exc = BAD_X[case]
    call, name = X_ENTRIES[entry]
    rejected(exc, name, lambda: call(model, opt, make()), model, opt)


def test_too_large_for_float32_is_reported_as_such():
    err = rejected(ValueError, "X", lambda: ff.MLP(SIZES).forward(_with(1e39, (2, 2))()))
    assert "too large" in str(err) and "[2, 2]" in str(err)


def test_failed_forward_keeps_the_pending_activations():
    model = ff.MLP(SIZES, seed=1)
    twin = model.copy()
    dout = _rng.standard_normal((6, C))
    model.forward(X_GOOD[:6])
    rejected(ValueError, "X", lambda: model.forward(np.zeros((9, D + 1))), model)
    model.backward(dout)
    twin.forward(X_GOOD[:6])
    twin.backward(dout)
    np.testing.assert_array_equal(model.grads, twin.grads)


# ---------------------------------------------------------------- y

def _labels(values, dtype=None):
    return lambda: np.array(values, dtype=dtype)


def _targets_with(base, value, index):
    def make():
        Y = np.array(base)
        Y[index] = value
        return Y
    return make


BAD_Y = {
    # softmax cross-entropy: integer labels in [0, C)
    "ce-nan": ("ce", _targets_with(LABELS.astype(float), np.nan, 4), ValueError),
    "ce-inf": ("ce", _targets_with(LABELS.astype(float), np.inf, 0), ValueError),
    "ce-label-C": ("ce", _targets_with(LABELS, C, 7), ValueError),
    "ce-label-negative": ("ce", _targets_with(LABELS, -1, 7), ValueError),
    "ce-label-huge-uint": ("ce", lambda: np.full(N, 2**63, dtype=np.uint64), ValueError),
    "ce-non-integer": ("ce", _targets_with(LABELS.astype(float), 1.5, 2), ValueError),
    "ce-short": ("ce", lambda: LABELS[:-1].copy(), ValueError),
    "ce-long": ("ce", lambda: np.append(LABELS, 0), ValueError),
    "ce-one-hot": ("ce", lambda: np.eye(C)[LABELS], ValueError),
    "ce-3-D": ("ce", lambda: LABELS.reshape(N, 1, 1), ValueError),
    "ce-empty": ("ce", lambda: np.empty(0, dtype=int), ValueError),
    "ce-scalar": ("ce", lambda: 1, ValueError),
    "ce-object": ("ce", lambda: LABELS.astype(object), TypeError),
    "ce-string": ("ce", lambda: LABELS.astype(str), TypeError),
    "ce-complex": ("ce", lambda: LABELS.astype(np.complex128), TypeError),
    "ce-bool": ("ce", lambda: LABELS > 0, TypeError),
    "ce-None": ("ce", lambda: None, TypeError),
    # binary cross-entropy: targets in [0, 1], one column per output
    "bce-above-1": ("bce", _targets_with(Y_BIN, 1.5, (3, 1)), ValueError),
    "bce-below-0": ("bce", _targets_with(Y_BIN, -0.5, (0, 2)), ValueError),
    "bce-nan": ("bce", _targets_with(Y_BIN, np.nan, (1, 1)), ValueError),
    "bce-inf": ("bce", _targets_with(Y_BIN, np.inf, (1, 1)), ValueError),
    "bce-labels": ("bce", lambda: LABELS.copy(), ValueError),   # (N,) for C outputs; labels are not targets
    "bce-too-many-columns": ("bce", lambda: np.zeros((N, C + 1)), ValueError),
    "bce-short": ("bce", lambda: Y_BIN[:-1].copy(), ValueError),
    "bce-bool": ("bce", lambda: Y_BIN > 0.5, TypeError),
    # squared error: real targets (N, C)
    "se-nan": ("se", _targets_with(Y_REAL, np.nan, (2, 0)), ValueError),
    "se-inf": ("se", _targets_with(Y_REAL, np.inf, (2, 0)), ValueError),
    "se-minus-inf": ("se", _targets_with(Y_REAL, -np.inf, (N - 1, C - 1)), ValueError),
    "se-too-large-for-float32": ("se", _targets_with(Y_REAL, -1e39, (5, 1)), ValueError),
    "se-1-D": ("se", lambda: Y_REAL[:, 0].copy(), ValueError),
    "se-too-few-columns": ("se", lambda: Y_REAL[:, :-1].copy(), ValueError),
    "se-long": ("se", lambda: np.vstack([Y_REAL, Y_REAL[:1]]), ValueError),
    "se-transposed": ("se", lambda: Y_REAL.T.copy(), ValueError),
    "se-object": ("se", lambda: Y_REAL.astype(object), TypeError),
    "se-complex": ("se", lambda: Y_REAL.astype(np.complex64), TypeError),
    "se-string": ("se", lambda: Y_REAL.astype(str), TypeError),
}

Y_ENTRIES = {
    "fit": (lambda m, o, loss, y: fit(m, X_GOOD, y, loss, opt=o), "y"),
    "evaluate": (lambda m, o, loss, y: ff.evaluate(m, X_GOOD, y, LOSSES[loss]()), "y"),
    "value_and_grad": (lambda m, o, loss, y: LOSSES[loss]().value_and_grad(np.zeros((N, C), np.float32), y), "y"),
    "validation_data": (lambda m, o, loss, y: fit(m, X_GOOD, TARGETS[loss], loss, opt=o,
                                                  validation_data=(X_GOOD, y)), "validation_data"),
}


@pytest.mark.parametrize("entry", Y_ENTRIES)
@pytest.mark.parametrize("case", BAD_Y)
def test_bad_y(case, entry, setup):
    model, opt = setup
    loss, make, exc = BAD_Y[case]
    call, name = Y_ENTRIES[entry]
    rejected(exc, name, lambda: call(model, opt, loss, make()), model, opt)


# ---------------------------------------------------------------- batch size, epochs

# (lists, not dicts: 0 == False and 8.0 == np.float64(8) would collapse as keys)
BAD_BATCH = [(0, ValueError), (-1, ValueError), (-64, ValueError), (2.5, TypeError), (8.0, TypeError),
             ("8", TypeError), (True, TypeError), (np.float64(8), TypeError), (np.int64(0), ValueError)]


@pytest.mark.parametrize("batch_size,exc", BAD_BATCH, ids=repr)
def test_bad_batch_size_in_fit(batch_size, exc, setup):
    model, opt = setup
    rejected(exc, "batch_size", lambda: fit(model, X_GOOD, LABELS, opt=opt, batch_size=batch_size), model, opt)


@pytest.mark.parametrize("batch_size,exc", BAD_BATCH, ids=repr)
def test_bad_batch_size_in_predict(batch_size, exc):
    model = ff.MLP(SIZES)
    rejected(exc, "batch_size", lambda: model.predict(X_GOOD, batch_size=batch_size), model)


BAD_EPOCHS = [(0, ValueError), (-1, ValueError), (1.5, TypeError), (2.0, TypeError), ("2", TypeError),
              (None, TypeError), (False, TypeError)]


@pytest.mark.parametrize("epochs,exc", BAD_EPOCHS, ids=repr)
def test_bad_epochs(epochs, exc, setup):
    model, opt = setup
    rejected(exc, "epochs", lambda: fit(model, X_GOOD, LABELS, opt=opt, epochs=epochs), model, opt)


def test_batch_size_above_n_is_one_full_batch():
    full = fitted(X_GOOD, LABELS, batch_size=None)
    assert_same_fit(fitted(X_GOOD, LABELS, batch_size=N), full)
    assert_same_fit(fitted(X_GOOD, LABELS, batch_size=N + 1), full)
    assert_same_fit(fitted(X_GOOD, LABELS, batch_size=10 ** 6), full)


def test_numpy_integer_batch_size_and_epochs_are_accepted():
    assert_same_fit(fitted(X_GOOD, LABELS, batch_size=np.int64(8), epochs=np.int32(2)),
                    fitted(X_GOOD, LABELS, batch_size=8, epochs=2))


# ---------------------------------------------------------------- optimizer hyper-parameters

OPTIMIZERS = {
    "SGD": lambda lr=0.1, **kw: ff.SGD(lr, **kw),
    "Adam": lambda lr=1e-3, **kw: ff.Adam(lr, **kw),
    "NormalizedGD": lambda lr=0.1, **kw: ff.NormalizedGD(lr, **kw),
}
BAD_LR = [(0, ValueError), (0.0, ValueError), (-1e-3, ValueError), (math.nan, ValueError),
          (math.inf, ValueError), (-math.inf, ValueError), (np.float32("nan"), ValueError),
          ("0.1", TypeError), (None, TypeError), (True, TypeError), (1j, TypeError)]


@pytest.mark.parametrize("lr,exc", BAD_LR, ids=repr)
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_bad_learning_rate(opt, lr, exc):
    rejected(exc, "lr", lambda: OPTIMIZERS[opt](lr))


BAD_COEF = [(-0.1, ValueError), (1.0, ValueError), (1, ValueError), (1.5, ValueError),
            (math.nan, ValueError), (math.inf, ValueError), (None, TypeError), ("0.9", TypeError),
            (True, TypeError)]


@pytest.mark.parametrize("momentum,exc", BAD_COEF, ids=repr)
def test_bad_momentum(momentum, exc):
    rejected(exc, "momentum", lambda: ff.SGD(0.1, momentum=momentum))
    rejected(exc, "momentum", lambda: ff.SGD(0.1, momentum=momentum, nesterov=True))


@pytest.mark.parametrize("value,exc", BAD_COEF, ids=repr)
@pytest.mark.parametrize("which", [0, 1])
def test_bad_beta(which, value, exc):
    betas = [0.9, 0.999]
    betas[which] = value
    rejected(exc, "betas", lambda: ff.Adam(1e-3, betas=tuple(betas)))


@pytest.mark.parametrize("betas,exc", [((0.9,), ValueError), ((0.9, 0.9, 0.9), ValueError), ((), ValueError),
                                       (0.9, TypeError), (None, TypeError)], ids=repr)
def test_betas_not_a_pair(betas, exc):
    rejected(exc, "betas", lambda: ff.Adam(1e-3, betas=betas))


BAD_EPS = [(0, ValueError), (0.0, ValueError), (-1e-8, ValueError), (math.nan, ValueError),
           (math.inf, ValueError), ("1e-8", TypeError), (None, TypeError)]


@pytest.mark.parametrize("eps,exc", BAD_EPS, ids=repr)
@pytest.mark.parametrize("opt", ["Adam", "NormalizedGD"])
def test_bad_eps(opt, eps, exc):
    rejected(exc, "eps", lambda: OPTIMIZERS[opt](eps=eps))


def test_boundary_coefficients_are_accepted():
    """Coefficients at the edges of their ranges (and NumPy scalars, lists) are taken as the
    plain floats they stand for, and the optimizers step exactly as the reference's do."""
    from fastfit import reference as ref
    sgd = ff.SGD(0.1, momentum=0.0)
    assert sgd.momentum == 0.0 and sgd.state_names == () and sgd.nesterov is False
    adam = ff.Adam(1e-3, betas=(0.0, 0.0))
    assert adam.betas == (0.0, 0.0) and all(type(b) is float for b in adam.betas)
    listed = ff.Adam(1e-3, betas=[0.9, 0.999])
    assert listed.betas == (0.9, 0.999) and repr(listed) == repr(ff.Adam(1e-3))
    nesterov = ff.SGD(np.float32(0.1), momentum=np.float64(0.5), nesterov=True)
    assert type(nesterov.lr) is float and nesterov.lr == float(np.float32(0.1))
    assert type(nesterov.momentum) is float and nesterov.momentum == 0.5 and nesterov.nesterov is True
    pairs = [(sgd, ref.SGD(0.1, momentum=0.0)), (adam, ref.Adam(1e-3, betas=(0.0, 0.0))),
             (listed, ref.Adam(1e-3, betas=(0.9, 0.999))),
             (nesterov, ref.SGD(float(np.float32(0.1)), momentum=0.5, nesterov=True))]
    for ours, theirs in pairs:
        a, b = ff.MLP(SIZES, dtype=np.float64, seed=3), ref.MLP(SIZES, dtype=np.float64, seed=3)
        np.testing.assert_array_equal(a.params, b.params)
        for model, opt in ((a, ours), (b, theirs)):
            for step in range(3):
                opt.prepare(model)
                rows = slice(8 * step, 8 * step + 8)
                _, dout = ff.SoftmaxCrossEntropy().value_and_grad(model.forward(X_GOOD[rows]), LABELS[rows])
                model.backward(dout)
                opt.step(model)
            opt.finalize(model)
        np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-12, err_msg=repr(ours))
        assert not np.array_equal(a.params, ff.MLP(SIZES, dtype=np.float64, seed=3).params)


# ---------------------------------------------------------------- the model's construction

BAD_SIZES = [([], ValueError), ([4], ValueError), ((4,), ValueError), ([4, 0, 3], ValueError),
             ([0, 3], ValueError), ([4, 8, 0], ValueError), ([4, -2, 3], ValueError),
             ([4, 2.5, 3], TypeError), ([4, 8.0, 3], TypeError), ([4, True, 3], TypeError),
             ([4, "8", 3], TypeError), ([4, None, 3], TypeError), (None, TypeError), (5, TypeError),
             ("abc", TypeError)]


@pytest.mark.parametrize("sizes,exc", BAD_SIZES, ids=repr)
def test_bad_sizes(sizes, exc):
    rejected(exc, "sizes", lambda: ff.MLP(sizes))


BAD_DTYPES = [int, np.int32, np.int64, np.float16, "float16", np.complex128, bool, object, "bogus",
              np.uint8]
if np.dtype(np.longdouble) != np.dtype(np.float64):
    BAD_DTYPES.append(np.longdouble)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=repr)
def test_bad_dtype(dtype):
    rejected(TypeError, "dtype", lambda: ff.MLP(SIZES, dtype=dtype))


def test_sizes_as_numpy_integers_are_accepted():
    model = ff.MLP(np.array(SIZES, dtype=np.int64), dtype="float64")
    assert model.sizes == tuple(SIZES) and model.dtype == np.float64


# ---------------------------------------------------------------- backward and value_and_grad

def test_backward_before_forward():
    model = ff.MLP(SIZES)
    rejected(RuntimeError, "forward", lambda: model.backward(np.zeros((5, C))), model)


def test_backward_twice_after_one_forward():
    model = ff.MLP(SIZES)
    model.forward(X_GOOD[:5])
    model.backward(np.ones((5, C)))
    rejected(RuntimeError, "forward", lambda: model.backward(np.ones((5, C))), model)


B = 6
BAD_DOUT = {
    "more-rows": (lambda: np.zeros((B + 1, C)), ValueError),
    "fewer-rows": (lambda: np.zeros((B - 1, C)), ValueError),
    "more-columns": (lambda: np.zeros((B, C + 1)), ValueError),
    "transposed": (lambda: np.zeros((C, B)), ValueError),
    "flat": (lambda: np.zeros(B * C), ValueError),
    "3-D": (lambda: np.zeros((1, B, C)), ValueError),
    "scalar": (lambda: 0.0, ValueError),
    "nan": (_targets_with(np.zeros((B, C)), np.nan, (1, 2)), ValueError),
    "inf": (_targets_with(np.zeros((B, C)), -np.inf, (0, 0)), ValueError),
    "too-large-for-float32": (_targets_with(np.zeros((B, C)), 1e39, (0, 0)), ValueError),
    "object": (lambda: np.zeros((B, C), dtype=object), TypeError),
    "string": (lambda: np.zeros((B, C)).astype(str), TypeError),
    "complex": (lambda: np.zeros((B, C), dtype=complex), TypeError),
    "bool": (lambda: np.zeros((B, C), dtype=bool), TypeError),
    "None": (lambda: None, TypeError),
}


@pytest.mark.parametrize("case", BAD_DOUT)
def test_bad_dout_leaves_the_forward_usable(case):
    make, exc = BAD_DOUT[case]
    model = ff.MLP(SIZES, seed=3)
    model.grads[:] = 7.0  # whatever the last backward left
    twin = model.copy()
    model.forward(X_GOOD[:B])
    rejected(exc, "dout", lambda: model.backward(make()), model)
    dout = _rng.standard_normal((B, C))
    model.backward(dout)  # the failed call consumed nothing
    twin.forward(X_GOOD[:B])
    twin.backward(dout)
    np.testing.assert_array_equal(model.grads, twin.grads)


BAD_OUT = {
    "1-D": (lambda: np.zeros(N), ValueError),
    "3-D": (lambda: np.zeros((1, N, C)), ValueError),
    "no-rows": (lambda: np.zeros((0, C)), ValueError),
    "no-columns": (lambda: np.zeros((N, 0)), ValueError),
    "scalar": (lambda: 0.0, ValueError),
    "nan": (_targets_with(np.zeros((N, C)), np.nan, (3, 1)), ValueError),
    "inf": (_targets_with(np.zeros((N, C)), np.inf, (3, 1)), ValueError),
    "object": (lambda: np.zeros((N, C), dtype=object), TypeError),
    "complex": (lambda: np.zeros((N, C), dtype=complex), TypeError),
    "bool": (lambda: np.zeros((N, C), dtype=bool), TypeError),
    "None": (lambda: None, TypeError),
}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("case", BAD_OUT)
def test_bad_out_in_value_and_grad(case, loss):
    make, exc = BAD_OUT[case]
    rejected(exc, "out", lambda: LOSSES[loss]().value_and_grad(make(), TARGETS[loss]))


@pytest.mark.parametrize("loss", ["se", "bce"])
def test_value_and_grad_targets_for_fewer_outputs(loss):
    rejected(ValueError, "y", lambda: LOSSES[loss]().value_and_grad(np.zeros((N, C - 1)), TARGETS[loss]))


def test_value_and_grad_labels_beyond_fewer_outputs():
    rejected(ValueError, "y", lambda: ff.SoftmaxCrossEntropy().value_and_grad(np.zeros((N, C - 1)), LABELS))


# ---------------------------------------------------------------- an optimizer used on a second model

OPT_KINDS = {
    "sgd": lambda: ff.SGD(0.05),
    "momentum": lambda: ff.SGD(0.05, momentum=0.9),
    "nesterov": lambda: ff.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: ff.Adam(1e-2),
    "normalized": lambda: ff.NormalizedGD(0.05, eps=1e-4),
}
OTHER_MODELS = {
    "narrower": lambda: ff.MLP([D, 5, C], seed=1),
    "deeper": lambda: ff.MLP([D, 8, 8, C], seed=1),
    "float64": lambda: ff.MLP(SIZES, dtype=np.float64, seed=1),
}


@pytest.mark.parametrize("other", OTHER_MODELS)
@pytest.mark.parametrize("kind", OPT_KINDS)
@pytest.mark.parametrize("entry", ["step", "fit"])
def test_optimizer_refuses_a_second_model(entry, kind, other):
    first, opt = ff.MLP(SIZES, seed=0), OPT_KINDS[kind]()
    fit(first, X_GOOD, LABELS, opt=opt)
    second = OTHER_MODELS[other]()
    second.forward(X_GOOD[:5])
    second.backward(np.ones((5, C)))
    second.forward(X_GOOD[:5])  # pending, must survive the refusal
    before_first = snapshot(first)
    call = (lambda: opt.step(second)) if entry == "step" else (lambda: fit(second, X_GOOD, LABELS, opt=opt))
    rejected(ValueError, "optimizer", call, second, opt)
    assert_unchanged(before_first, first)


# ---------------------------------------------------------------- learning-rate schedules

@pytest.mark.parametrize("bad", [math.nan, -0.5, math.inf, -math.inf], ids=repr)
def test_schedule_going_bad_during_a_fit(bad):
    model, opt = ff.MLP(SIZES, seed=0), ff.SGD(lambda t: 0.01 if t < 5 else bad, momentum=0.5)
    err = rejected(ValueError, "lr", lambda: fit(model, X_GOOD, LABELS, opt=opt, batch_size=4, epochs=3))
    assert re.search(r"\bstep 5\b", str(err)), str(err)
    assert opt.t == 5, "the steps before the bad learning rate must all run, and no other"
    assert np.isfinite(model.params).all()


@pytest.mark.parametrize("bad", [math.nan, -0.5], ids=repr)
def test_schedule_bad_at_the_next_step_of_a_fit(bad):
    """Bad from step 3 on, and the optimizer already took steps 0-2: nothing changes."""
    model, opt = ff.MLP(SIZES, seed=0), ff.Adam(lambda t: 0.01 if t < 3 else bad)
    fit(model, X_GOOD, LABELS, opt=opt, batch_size=8, epochs=1)
    assert opt.t == 3
    err = rejected(ValueError, "lr", lambda: fit(model, X_GOOD, LABELS, opt=opt), model, opt)
    assert re.search(r"\bstep 3\b", str(err)), str(err)


@pytest.mark.parametrize("value,exc", [("x", TypeError), (None, TypeError), (np.array([0.1, 0.2]), TypeError),
                                       (math.nan, ValueError), (-1.0, ValueError)], ids=repr)
@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adam", "normalized"])
def test_schedule_bad_in_step(kind, value, exc):
    opt = {"sgd": lambda s: ff.SGD(s), "nesterov": lambda s: ff.SGD(s, momentum=0.9, nesterov=True),
           "adam": lambda s: ff.Adam(s), "normalized": lambda s: ff.NormalizedGD(s)}[kind](lambda t: value)
    model = ff.MLP(SIZES)
    model.forward(X_GOOD[:5])
    model.backward(np.ones((5, C)))
    err = rejected(exc, "lr", lambda: opt.step(model), model, opt)  # a fresh optimizer stays unbound
    assert re.search(r"\bstep 0\b", str(err)), str(err)


def test_nesterov_schedule_bad_at_the_look_ahead_step():
    """Nesterov's step t needs lr(t+1) too: a bad one refuses the step before it starts."""
    opt = ff.SGD(lambda t: 0.1 if t == 0 else math.nan, momentum=0.9, nesterov=True)
    model = ff.MLP(SIZES)
    model.forward(X_GOOD[:5])
    model.backward(np.ones((5, C)))
    err = rejected(ValueError, "lr", lambda: opt.step(model), model, opt)
    assert re.search(r"\bstep 1\b", str(err)), str(err)


def test_schedule_bad_at_the_first_step_of_a_fit_leaves_a_fresh_optimizer_unbound():
    model, opt = ff.MLP(SIZES), ff.Adam(lambda t: math.nan)
    rejected(ValueError, "lr", lambda: fit(model, X_GOOD, LABELS, opt=opt), model, opt)


@pytest.mark.parametrize("seed,exc", [(-1, ValueError), ("a", TypeError), (1.5, TypeError)], ids=repr)
def test_bad_seed_in_fit(seed, exc, setup):
    model, opt = setup
    rejected(exc, "seed", lambda: fit(model, X_GOOD, LABELS, opt=opt, seed=seed), model, opt)


# ---------------------------------------------------------------- accepted: lists, integers, other dtypes

@pytest.mark.parametrize("loss", LOSSES)
def test_python_lists_give_the_same_fit(loss):
    y = TARGETS[loss]
    assert_same_fit(fitted(X_GOOD.tolist(), y.tolist(), loss), fitted(X_GOOD, y, loss))


def test_python_lists_in_the_step_api():
    model = ff.MLP(SIZES)
    np.testing.assert_array_equal(model.predict(X_GOOD.tolist()), model.predict(X_GOOD))
    out = model.forward(X_GOOD[:5].tolist())
    np.testing.assert_array_equal(out, model.forward(X_GOOD[:5]))
    loss = ff.SoftmaxCrossEntropy()
    v1, g1 = loss.value_and_grad(out.tolist(), LABELS[:5].tolist())
    v2, g2 = loss.value_and_grad(out.astype(np.float64), LABELS[:5])
    assert v1 == v2
    np.testing.assert_array_equal(g1, g2)
    model.backward(g1.tolist())


@pytest.mark.parametrize("int_dtype", [np.int8, np.uint16, np.int32, np.int64])
def test_integer_X_is_converted(int_dtype):
    Xi = np.round(X_GOOD * 3).astype(int_dtype) if np.dtype(int_dtype).kind == "i" else \
        np.abs(np.round(X_GOOD * 3)).astype(int_dtype)
    assert_same_fit(fitted(Xi, LABELS), fitted(Xi.astype(np.float32), LABELS))
    model = ff.MLP(SIZES)
    np.testing.assert_array_equal(model.predict(Xi), model.predict(Xi.astype(np.float32)))


@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int32, np.int64, np.float32, np.float64])
def test_labels_of_any_integer_valued_dtype(label_dtype):
    assert_same_fit(fitted(X_GOOD, LABELS.astype(label_dtype)), fitted(X_GOOD, LABELS))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model_dtype,data_dtype", [(np.float32, np.float64), (np.float64, np.float32),
                                                    (np.float32, np.float16)])
def test_data_of_another_dtype_is_converted(model_dtype, data_dtype, loss):
    X = X_GOOD.astype(data_dtype)
    y = TARGETS[loss] if loss == "ce" else TARGETS[loss].astype(data_dtype)
    pre_y = y if loss == "ce" else y.astype(model_dtype)
    assert_same_fit(fitted(X, y, loss, dtype=model_dtype), fitted(X.astype(model_dtype), pre_y, loss, dtype=model_dtype))
    model = ff.MLP(SIZES, dtype=model_dtype)
    out = model.predict(X)
    assert out.dtype == np.dtype(model_dtype)
    np.testing.assert_array_equal(out, model.predict(X.astype(model_dtype)))


# ---------------------------------------------------------------- accepted: read-only, non-contiguous

def _layout(a, kind):
    """An array equal to a, laid out as `kind`."""
    a = np.asarray(a)
    if kind == "read-only":
        return read_only(a)
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "strided-rows":
        return np.repeat(a, 2, axis=0)[::2]
    if kind == "strided-columns":
        return np.repeat(a, 2, axis=1)[:, ::2] if a.ndim == 2 else np.repeat(a, 3)[::3]
    if kind == "reversed":
        return a[::-1].copy()[::-1]
    if kind == "read-only-strided":
        out = np.repeat(a, 2, axis=0)[::2]
        out.flags.writeable = False
        return out
    if kind == "read-only-fortran":
        out = np.asfortranarray(a)
        out.flags.writeable = False
        return out
    raise AssertionError(kind)


LAYOUTS = ["read-only", "fortran", "strided-rows", "strided-columns", "reversed", "read-only-strided",
           "read-only-fortran"]


class Untouched:
    """Remembers arrays' bytes and flags; check() asserts they are bit-identical."""

    def __init__(self, *arrays):
        self.saved = [(a, a.tobytes(), a.flags.writeable, a.strides) for a in arrays]

    def check(self):
        for a, data, writeable, strides in self.saved:
            assert a.tobytes() == data, "an input array was written to"
            assert a.flags.writeable == writeable and a.strides == strides


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_in_fit(layout, loss):
    # float32 data and intp labels: the dtype the core takes, so nothing forces a copy
    X = X_GOOD.astype(np.float32)
    y = TARGETS[loss].astype(np.intp if loss == "ce" else np.float32)
    Xl, yl = _layout(X, layout), _layout(y, layout)
    assert np.array_equal(Xl, X) and np.array_equal(yl, y)
    guard = Untouched(Xl, yl)
    assert_same_fit(fitted(Xl, yl, loss), fitted(X, y, loss))
    assert_same_fit(fitted(Xl, yl, loss, validation_data=(Xl, yl)), fitted(X, y, loss, validation_data=(X, y)))
    guard.check()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_only_C_contiguous_float32_everything(layout):
    """The arrays the core could be handed as they are: every entry point, never written to."""
    model, twin = ff.MLP(SIZES, seed=5), ff.MLP(SIZES, seed=5)
    X = X_GOOD[:B].astype(np.float32)
    dout = _rng.standard_normal((B, C)).astype(np.float32)
    labels = LABELS[:B].astype(np.intp)
    Xl, doutl, labelsl = _layout(X, layout), _layout(dout, layout), _layout(labels, layout)
    guard = Untouched(Xl, doutl, labelsl)

    np.testing.assert_array_equal(model.predict(Xl), twin.predict(X))
    np.testing.assert_array_equal(model.predict(Xl, batch_size=4), twin.predict(X, batch_size=4))
    out, out_twin = model.forward(Xl), twin.forward(X)
    np.testing.assert_array_equal(out, out_twin)
    outl = _layout(out, layout)
    guard_out = Untouched(outl)
    loss = ff.SoftmaxCrossEntropy()
    v, g = loss.value_and_grad(outl, labelsl)
    v_twin, g_twin = loss.value_and_grad(out_twin, labels)
    assert v == v_twin
    np.testing.assert_array_equal(g, g_twin)
    model.backward(doutl)
    twin.backward(dout)
    np.testing.assert_array_equal(model.grads, twin.grads)
    assert ff.evaluate(model, Xl, labelsl, loss) == ff.evaluate(twin, X, labels, loss)
    guard.check()
    guard_out.check()


# ---------------------------------------------------------------- the same checks through attribute assignment

def assigned(obj, attr, value):
    return lambda: setattr(obj, attr, value)


def kept(obj, attr, call):
    """call() raises; obj.attr is what it was."""
    before = getattr(obj, attr)
    call()
    assert getattr(obj, attr) == before


@pytest.mark.parametrize("lr,exc", BAD_LR, ids=repr)
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_bad_learning_rate_assigned(opt, lr, exc):
    o = OPTIMIZERS[opt]()
    kept(o, "lr", lambda: rejected(exc, "lr", assigned(o, "lr", lr)))


@pytest.mark.parametrize("value,exc", BAD_COEF, ids=repr)
def test_bad_momentum_and_betas_assigned(value, exc):
    sgd, adam = ff.SGD(0.1, momentum=0.5), ff.Adam()
    kept(sgd, "momentum", lambda: rejected(exc, "momentum", assigned(sgd, "momentum", value)))
    kept(adam, "betas", lambda: rejected(exc, "betas", assigned(adam, "betas", (0.9, value))))
    kept(adam, "betas", lambda: rejected(exc, "betas", assigned(adam, "betas", (value, 0.999))))


@pytest.mark.parametrize("eps,exc", BAD_EPS, ids=repr)
@pytest.mark.parametrize("opt", ["Adam", "NormalizedGD"])
def test_bad_eps_assigned(opt, eps, exc):
    o = OPTIMIZERS[opt]()
    kept(o, "eps", lambda: rejected(exc, "eps", assigned(o, "eps", eps)))


@pytest.mark.parametrize("attr,value,exc", [
    ("weight_decay", -5.0, ValueError), ("weight_decay", "0", TypeError), ("t", -1, ValueError),
    ("t", 1.5, ValueError), ("t", True, ValueError), ("betas", (0.9,), ValueError), ("convention", "x", ValueError),
    ("nesterov", "yes", TypeError), ("nesterov", 1, TypeError)], ids=repr)
def test_other_bad_optimizer_attributes(attr, value, exc):
    o = ff.SGD(0.1, momentum=0.5) if attr == "nesterov" else ff.Adam()
    kept(o, attr, lambda: rejected(exc, attr, assigned(o, attr, value)))


def test_sgd_rule_keeps_its_kind_once_it_holds_state():
    """Momentum's state and Nesterov's look-ahead parameters belong to the rule they were made
    for: once bound, momentum may change its value but not become 0 or leave it, nor Nesterov
    switch; before binding (and after reset) anything valid goes, and trains as if constructed so."""
    model = ff.MLP(SIZES, seed=0)
    for opt, attr, value in [(ff.SGD(0.1), "momentum", 0.9), (ff.SGD(0.1), "nesterov", True),
                             (ff.SGD(0.1, momentum=0.9), "momentum", 0.0),
                             (ff.SGD(0.1, momentum=0.9, nesterov=True), "nesterov", False)]:
        fit(model, X_GOOD, LABELS, opt=opt)
        rejected(ValueError, attr, assigned(opt, attr, value), model, opt)
    rejected(ValueError, "nesterov", assigned(ff.SGD(0.1, momentum=0.9, nesterov=True), "momentum", 0.0))
    opt = ff.SGD(0.1, momentum=0.9)
    fit(model, X_GOOD, LABELS, opt=opt)
    opt.momentum = 0.5  # the same kind: allowed
    opt.reset()
    opt.nesterov = True
    changed, built = ff.MLP(SIZES, seed=1), ff.MLP(SIZES, seed=1)
    late = ff.SGD(0.1)
    late.momentum, late.nesterov = 0.9, True
    fit(changed, X_GOOD, LABELS, opt=late)
    fit(built, X_GOOD, LABELS, opt=ff.SGD(0.1, momentum=0.9, nesterov=True))
    np.testing.assert_array_equal(changed.params, built.params)


@pytest.mark.parametrize("attr,value,exc", [("reduction", "bogus", ValueError), ("l2", "abc", TypeError),
                                            ("l2", -1.0, ValueError), ("kind", 1, AttributeError),
                                            ("uses_labels", True, AttributeError)], ids=repr)
def test_loss_attributes_checked_on_assignment(attr, value, exc):
    loss = ff.SquaredError()
    kept(loss, attr, lambda: rejected(exc, attr, assigned(loss, attr, value)))


@pytest.mark.parametrize("attr,value", [("sizes", (1, 8, 3)), ("sizes", (400, 8, 3)), ("dtype", np.float64)],
                         ids=repr)
def test_model_shape_and_dtype_are_read_only(attr, value):
    """The compiled network is built for them: changing either would have the core read past
    the input (predict) or write past its buffers (fit)."""
    model = ff.MLP(SIZES, seed=0)
    rejected(AttributeError, attr, assigned(model, attr, value), model)
    fit(model, X_GOOD, LABELS)


def test_layer_assignment_writes_into_the_model():
    model, twin = ff.MLP(SIZES, seed=0), ff.MLP(SIZES, seed=0)
    W, b = _rng.standard_normal((8, D)), _rng.standard_normal(C)
    model.layers[0].W = W
    model.layers[1].b = b.tolist()
    twin.params[:8 * D] = W.ravel()
    twin.params[-C:] = b
    np.testing.assert_array_equal(model.params, twin.params)
    np.testing.assert_array_equal(model.predict(X_GOOD), twin.predict(X_GOOD))
    assert model.layers[0].W.base is not None and np.shares_memory(model.layers[0].W, model.params)
    rejected(ValueError, "W", assigned(model.layers[0], "W", np.ones((D, 8))), model)
    rejected(ValueError, "b", assigned(model.layers[0], "b", np.full(8, np.nan)), model)
    rejected(AttributeError, "relu", assigned(model.layers[0], "relu", False), model)


def test_labels_changed_during_the_fit_do_not_reach_the_core():
    """The fit trains on a copy of the labels it checked: a callback that rewrites the caller's
    array (with labels the model has no output for) changes nothing."""
    results = []
    for bad in (None, -1, C, 10 ** 9):
        y = (np.arange(N) % C).astype(np.intp)  # the core's own label type: no conversion copies it
        model = ff.MLP(SIZES, seed=0)

        def rewrite(record, y=y, bad=bad):
            if bad is not None:
                y[:] = bad

        history = fit(model, X_GOOD, y, epochs=3, callbacks=[rewrite])
        results.append((model.params.copy(), list(history["loss"])))
    for other in results[1:]:
        assert_same_fit(other, results[0])


def test_a_callback_returning_numpy_false_stops_the_fit():
    threshold = np.float64(1e9)
    history = fit(ff.MLP(SIZES, seed=0), X_GOOD, LABELS, epochs=5, callbacks=[lambda r: r["loss"] > threshold])
    assert len(history["loss"]) == 1
    history = fit(ff.MLP(SIZES, seed=0), X_GOOD, LABELS, epochs=3, callbacks=[lambda r: np.True_])
    assert len(history["loss"]) == 3


@pytest.mark.parametrize("n_threads,exc", [(2 ** 31, ValueError), (10 ** 7, ValueError), (257, ValueError),
                                           (0, ValueError), (1.5, TypeError), (True, TypeError)], ids=repr)
def test_bad_n_threads(n_threads, exc, setup):
    model, opt = setup
    rejected(exc, "n_threads", lambda: fit(model, X_GOOD, LABELS, opt=opt, n_threads=n_threads), model, opt)
    rejected(exc, "n_threads", lambda: model.memory_report(8, n_threads=n_threads))


def failed_start(exc_text, model, opt, call):
    """call() is a fit whose first step fails because of values written in place before it: a
    ValueError saying so (not NonFiniteLossError's blame on the learning rate), no step kept (the
    parameters and the optimizer's step count and state as they were), a fresh optimizer unbound.
    (Unlike a refused argument, the fit ran its first step: the gradient buffer holds its work.)"""
    params, state = model.params.copy(), opt.state_dict()
    with pytest.raises(ValueError) as info:
        call()
    assert type(info.value) is ValueError and exc_text in str(info.value), info.value
    assert "learning rate" not in str(info.value)
    np.testing.assert_array_equal(model.params, params)
    after = opt.state_dict()
    assert after["t"] == state["t"] and after["bound"] == state["bound"]
    for key, value in state["buffers"].items():
        np.testing.assert_array_equal(after["buffers"][key], value)


def test_a_fit_from_parameters_made_non_finite_in_place_says_so(setup):
    model, opt = setup
    model.layers[0].W[0, 0] = np.nan  # in place: no check sees it
    failed_start("parameters held NaN", model, opt, lambda: fit(model, X_GOOD, LABELS, opt=opt))


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
def test_step_refuses_non_finite_gradients_and_overflowing_updates(kind):
    make = {"sgd": lambda lr: ff.SGD(lr), "momentum": lambda lr: ff.SGD(lr, momentum=0.5),
            "adam": lambda lr: ff.Adam(lr)}[kind]
    model, opt = ff.MLP(SIZES, seed=0), make(0.1)
    out = model.forward(X_GOOD.astype(np.float32))
    model.backward(np.full(out.shape, 3e38, np.float32))  # finite, but the weight gradients overflow
    assert not np.isfinite(model.grads).all()
    rejected(FloatingPointError, "model.grads", lambda: opt.step(model), model, opt)
    # finite gradients, an update too large for float32: refused before anything is written, the
    # step not counted; also on a model large enough for the update to be split across threads,
    # with the overflow in its second part only
    for sizes in (SIZES, [300, 260, 10]):
        model, opt = ff.MLP(sizes, seed=0), make(1e38 if kind != "adam" else 3e38)
        model.grads = np.full(model.n_params, 1e30 if kind != "adam" else 1.0, np.float32)
        if sizes == SIZES:
            model.params = np.full(model.n_params, -3e38, np.float32)
        else:
            params = np.zeros(model.n_params, np.float32)
            params[70000] = -3e38  # in the second half of the first layer (78,260 parameters)
            model.params = params
        rejected(FloatingPointError, "learning rate", lambda: opt.step(model), model, opt)


def test_reads_of_a_model_wait_for_no_one_else_s_step():
    """save, state_dict, copy, pickling and the estimator's weights see a model between steps:
    while another thread holds it (a fit), each refuses as predict does."""
    import pickle
    import threading

    model = ff.MLP(SIZES, seed=0)
    holding, release = threading.Event(), threading.Event()

    def hold():
        with model.exclusive("fit"):
            holding.set()
            release.wait(30)

    other = threading.Thread(target=hold)
    other.start()
    try:
        assert holding.wait(30)
        for what, call in [("save", lambda: ff.save(model, os.devnull)), ("state_dict", model.state_dict),
                           ("copy", model.copy), ("pickling", lambda: pickle.dumps(model)),
                           ("assigning", lambda: setattr(model.layers[0], "b", np.zeros(8)))]:
            with pytest.raises(RuntimeError, match="another thread"):
                call()
    finally:
        release.set()
        other.join()
    ff.save(model, os.devnull)
    pickle.loads(pickle.dumps(model))


# ---------------------------------------------------------------- the core's own checks at its entry points

def test_the_core_refuses_what_would_reach_past_a_buffer():
    """The Python layer never hands the core mismatched pieces; should a caller (or a bug) do
    so, each entry point raises instead of reading or writing past a buffer."""
    from fastfit import _core
    model = ff.MLP(SIZES, seed=0)
    net, ws = model._net, model.workspace(8, labels=True)
    X32 = np.ascontiguousarray(X_GOOD[:8], dtype=np.float32)
    with pytest.raises(TypeError):
        _core.forward(net, np.ascontiguousarray(X_GOOD[:8]), ws)          # float64 rows, float32 network
    with pytest.raises(ValueError, match="columns"):
        _core.forward(net, np.ones((8, D + 1), np.float32), ws)
    with pytest.raises(ValueError, match="workspace"):
        _core.forward(net, np.ones((9, D), np.float32), ws)               # more rows than it holds
    with pytest.raises(ValueError, match="workspace"):
        _core.forward(net, X32, ff.MLP([D, 16, C]).workspace(8))          # another network's buffers
    with pytest.raises(ValueError, match="state buffer m"):
        _core.update(net, _core.UpdateRule(_core.OPT_ADAM, np.empty(0, np.float32), np.empty(0, np.float32)),
                     0.1, 0.0, 0, 0.0)
    with pytest.raises(ValueError, match="state buffer v"):
        m = np.zeros(model.n_params, np.float32)
        _core.update(net, _core.UpdateRule(_core.OPT_ADAM, m, np.zeros(3, np.float32)), 0.1, 0.0, 0, 0.0)

    ce = ff.SoftmaxCrossEntropy().objective(C)
    rule = _core.UpdateRule(_core.OPT_SGD, np.empty(0, np.float32), np.empty(0, np.float32))  # no state
    lrs = np.full(2, 0.1)
    no_y = np.empty((0, 0), np.float32)

    def steps(data, order=np.arange(8, dtype=np.intp), objective=ce, workspace=ws):
        return _core.train_steps(net, workspace, data, objective, rule, order, 8, 0, 1, lrs, 0)

    for bad in (-1, C, 10 ** 9):
        labels = np.full(8, bad, dtype=np.intp)
        with pytest.raises(ValueError, match="labels"):
            steps(_core.Dataset(X32, no_y, labels))
    good = _core.Dataset(X32, no_y, (np.arange(8) % C).astype(np.intp))
    with pytest.raises(ValueError, match="row index"):
        steps(good, order=np.array([0, 1, 2, 3, 4, 5, 6, 8], dtype=np.intp))
    with pytest.raises(ValueError, match="float targets"):
        steps(good, objective=ff.SquaredError().objective(C), workspace=model.workspace(8, target_cols=C))
    with pytest.raises(ValueError, match="labels"):
        steps(_core.Dataset(X32, np.ones((8, C), np.float32), np.empty(0, np.intp)))
    with pytest.raises(ValueError):
        _core.Dataset(X32, no_y, np.zeros(7, np.intp))                     # fewer labels than rows
    before = model.params.copy()
    steps(good)                                                           # and the right pieces run
    assert not np.array_equal(before, model.params)

    out = np.zeros((4, C), np.float32)
    for labels in (np.array([0, 1, 2, C], np.intp), np.array([0, -1, 2, 1], np.intp), np.zeros(3, np.intp)):
        with pytest.raises(ValueError):
            _core.loss_value_and_grad(_core.LOSS_SOFTMAX_CROSS_ENTROPY, 1.0, out, no_y, labels, np.empty_like(out))
    with pytest.raises(ValueError):
        _core.loss_value_and_grad(_core.LOSS_SQUARED_ERROR, 1.0, out, no_y, np.zeros(4, np.intp), np.empty_like(out))
    with pytest.raises(ValueError):
        _core.loss_value_and_grad(99, 1.0, out, np.zeros((4, C), np.float32), np.empty(0, np.intp),
                                  np.empty_like(out))


def test_the_core_keeps_its_own_labels_and_workspaces_match_their_network():
    from fastfit import _core
    model = ff.MLP(SIZES, seed=0)
    X32 = np.ascontiguousarray(X_GOOD[:8], dtype=np.float32)
    labels = (np.arange(8) % C).astype(np.intp)
    data = _core.Dataset(X32, np.empty((0, 0), np.float32), labels)
    labels[:] = 10 ** 9  # after the range was read: the Dataset holds its own copy
    assert data.labels.max() < C and not data.labels.flags.writeable
    ws = model.workspace(8, labels=True)
    rule = _core.UpdateRule(_core.OPT_SGD, np.empty(0, np.float32), np.empty(0, np.float32))
    _core.train_steps(model._net, ws, data, ff.SoftmaxCrossEntropy().objective(C), rule,
                      np.arange(8, dtype=np.intp), 8, 0, 1, np.full(2, 0.1), 0)
    other = ff.MLP([D, 16, C], seed=0)
    _core.gradient_head(model._net, ws, data, ff.SoftmaxCrossEntropy().objective(C), np.arange(8, dtype=np.intp), 8)
    with pytest.raises(ValueError, match="workspace"):
        _core.gradient_layer(other._net, ws, 0)
    wide = other.workspace(8, labels=True, deltas=True)
    with pytest.raises(ValueError, match="workspace"):
        _core.slice_input_gradient(model._net, wide, 8, 0, 4, 1)
    with pytest.raises(ValueError, match="workspace"):
        _core.rows_weight_gradient(model._net, wide, 8, 0, 4, 0)


def test_a_dropped_model_is_freed_at_once_and_its_optimizer_can_step_another():
    """Its layers hold it weakly: no reference cycle keeps a dropped model (and its buffers) alive
    until the garbage collector runs, and an optimizer bound to it may then step a new model."""
    import gc
    import weakref
    gc.disable()
    try:
        opt = ff.Adam(1e-2)
        model = ff.MLP(SIZES, seed=0)
        fit(model, X_GOOD, LABELS, opt=opt)
        gone = weakref.ref(model)
        del model
        assert gone() is None
        fit(ff.MLP(SIZES, seed=1), X_GOOD, LABELS, opt=opt)
    finally:
        gc.enable()
    layer = ff.MLP(SIZES).layers[0]
    with pytest.raises(ReferenceError):
        layer.W = np.zeros((8, D))


def test_copies_of_models_and_optimizers_are_independent():
    import copy
    model = ff.MLP(SIZES, seed=0)
    opt = ff.Adam(1e-2)
    fit(model, X_GOOD, LABELS, opt=opt)
    twin_opt = copy.copy(opt)
    assert all(not np.shares_memory(a, b) for a, b in zip(opt.state_buffers().values(),
                                                         twin_opt.state_buffers().values()))
    m_before = opt.state_buffers()["m"].copy()
    twin = copy.copy(model)
    assert not np.shares_memory(twin.params, model.params)
    fit(twin, X_GOOD, LABELS, opt=twin_opt)
    np.testing.assert_array_equal(opt.state_buffers()["m"], m_before)
    rejected(AttributeError, "layers", assigned(model, "layers", twin.layers), model)


def test_state_damaged_in_place_and_a_step_count_at_its_end_are_refused():
    model, opt = ff.MLP(SIZES, seed=0), ff.Adam(1e-2)
    fit(model, X_GOOD, LABELS, opt=opt)
    v = opt.state_buffers()["v"]
    v[3] = -1.0  # in place: a second moment no step could make
    failed_start("'v' holds negative values", model, opt, lambda: fit(model, X_GOOD, LABELS, opt=opt))
    out = model.forward(X_GOOD.astype(np.float32))
    model.backward(np.zeros_like(out))
    v[3] = 1.0
    state = opt.state_dict()
    state["t"] = 2 ** 53 - 2
    opt.load_state_dict(state)
    rejected(ValueError, "epochs", lambda: fit(model, X_GOOD, LABELS, opt=opt), model, opt)
    opt.step(model)  # the last step the count allows
    rejected(ValueError, "t", lambda: opt.step(model), model, opt)


def test_cross_entropy_needs_two_outputs():
    model = ff.MLP([D, 8, 1], seed=0)
    rejected(ValueError, "BinaryCrossEntropy", lambda: fit(model, X_GOOD, np.zeros(N, int)), model)


@pytest.mark.parametrize("kwargs,name,exc", [({"noise": math.nan}, "noise", ValueError),
                                             ({"turns": math.inf}, "turns", ValueError),
                                             ({"noise": -1.0}, "noise", ValueError),
                                             ({"test_fraction": 1.5}, "test_fraction", ValueError),
                                             ({"test_fraction": "0.2"}, "test_fraction", TypeError)], ids=repr)
def test_bad_dataset_arguments(kwargs, name, exc):
    from fastfit import datasets
    rejected(exc, name, lambda: datasets.spirals(**kwargs))
