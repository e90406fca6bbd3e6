"""The compiled core equals the NumPy reference: passes, losses, optimizers, whole fits."""
import numpy as np
import pytest

import fastfit as ff
from fastfit import reference as ref

from conftest import LOSS_NAMES, assert_matches, make_targets, pair

DTYPES = [np.float64, np.float32]
ARCHS = {0: [5, 3], 1: [5, 7, 3], 2: [5, 7, 6, 3], 3: [5, 8, 7, 6, 3]}


def twin_models(sizes, dtype, seed=3):
    return ff.MLP(sizes, dtype=dtype, seed=seed), ref.MLP(sizes, dtype=dtype, seed=seed)


def test_same_seed_gives_same_initial_parameters():
    for dtype in DTYPES:
        fast, slow = twin_models([5, 7, 6, 3], dtype)
        assert fast.params.dtype == slow.params.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(fast.params, slow.params)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", sorted(ARCHS))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_forward_loss_and_gradients_match_reference(loss_name, reduction, hidden, dtype, rng):
    sizes = ARCHS[hidden]
    fast, slow = twin_models(sizes, dtype)
    X = rng.standard_normal((9, sizes[0]))
    y = make_targets(loss_name, 9, sizes[-1], rng)
    fl, sl = pair(loss_name, reduction)

    out_f, out_s = fast.forward(X), slow.forward(X)
    assert out_f.dtype == np.dtype(dtype)
    assert_matches(out_f, out_s, dtype, "forward output")
    v_f, d_f = fl.value_and_grad(out_f, y)
    v_s, d_s = sl.value_and_grad(out_s, y)
    assert_matches(v_f, v_s, dtype, "loss value")
    assert_matches(d_f, d_s, dtype, "loss gradient")
    fast.backward(d_f)
    slow.backward(d_s)
    for k, (lf, ls) in enumerate(zip(fast.layers, slow.layers)):
        assert_matches(lf.dW, ls.dW, dtype, f"dW_{k}")
        assert_matches(lf.db, ls.db, dtype, f"db_{k}")
    assert_matches(fast.grads, slow.grads, dtype, "flat gradient")


def optimizer_pair(name):
    """The same optimizer built from fastfit and from the reference."""
    def build(mod):
        return {
            "sgd": lambda: mod.SGD(lr=0.05),
            "momentum": lambda: mod.SGD(lr=0.05, momentum=0.9),
            "nesterov": lambda: mod.SGD(lr=0.05, momentum=0.9, nesterov=True),
            "adam": lambda: mod.Adam(lr=1e-2),
            "normalized": lambda: mod.NormalizedGD(lr=1e-3, eps=1e-4),
            "adam_cosine_schedule": lambda: mod.Adam(lr=mod.CosineWithWarmup(1e-2, total_steps=50, warmup_steps=5)),
            "nesterov_step_schedule": lambda: mod.SGD(lr=mod.StepDecay(0.05, step_size=10, gamma=0.5),
                                                      momentum=0.8, nesterov=True),
            "momentum_exponential_schedule": lambda: mod.SGD(lr=mod.ExponentialDecay(0.05, 0.97), momentum=0.5),
        }[name]()
    return build(ff), build(ref)


OPTIMIZER_NAMES = ["sgd", "momentum", "nesterov", "adam", "normalized", "adam_cosine_schedule",
                   "nesterov_step_schedule", "momentum_exponential_schedule"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name", OPTIMIZER_NAMES)
def test_fifty_optimizer_steps_match_reference(opt_name, dtype, rng):
    sizes = [6, 10, 8, 3]
    fast, slow = twin_models(sizes, dtype)
    fopt, sopt = optimizer_pair(opt_name)
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, size=40)
    fl, sl = pair("SoftmaxCrossEntropy")
    for step in range(50):
        rows = rng.choice(40, size=8, replace=False)
        for model, loss, opt in ((fast, fl, fopt), (slow, sl, sopt)):
            _, dout = loss.value_and_grad(model.forward(X[rows]), y[rows])
            model.backward(dout)
            opt.step(model)
    fopt.finalize(fast)
    sopt.finalize(slow)
    assert fopt.t == sopt.t == 50
    assert_matches(fast.params, slow.params, dtype, f"{opt_name} after 50 steps")


FIT_CASES = [
    ("SquaredError", "mean", "sgd"), ("SquaredError", "sum", "momentum"),
    ("SoftmaxCrossEntropy", "mean", "adam"), ("SoftmaxCrossEntropy", "sum", "nesterov"),
    ("BinaryCrossEntropy", "mean", "normalized"), ("BinaryCrossEntropy", "sum", "adam_cosine_schedule"),
    ("SoftmaxCrossEntropy", "mean", "nesterov_step_schedule"),
    ("SquaredError", "mean", "momentum_exponential_schedule"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_name,reduction,opt_name", FIT_CASES)
def test_whole_fit_matches_reference(loss_name, reduction, opt_name, dtype, rng):
    sizes = [4, 9, 7, 2]
    fast, slow = twin_models(sizes, dtype)
    X = rng.standard_normal((53, 4))  # 53 = 3 batches of 16 and a ragged one of 5
    y = make_targets(loss_name, 53, 2, rng)
    fl, sl = pair(loss_name, reduction)
    fopt, sopt = optimizer_pair(opt_name)
    if reduction == "sum":  # keep sum-reduced steps the size of mean-reduced ones
        for opt in (fopt, sopt):
            if not callable(opt.lr) and not isinstance(opt, (ff.Adam, ref.Adam)):
                opt.lr /= 16
    h_f = ff.fit(fast, X, y, loss=fl, optimizer=fopt, batch_size=16, epochs=4, seed=7)
    h_s = ref.fit(slow, X, y, loss=sl, optimizer=sopt, batch_size=16, epochs=4, seed=7)
    assert len(h_f["loss"]) == len(h_s["loss"]) == 4
    assert_matches(h_f["loss"], h_s["loss"], dtype, "history")
    assert_matches(fast.params, slow.params, dtype, "parameters after the fit")
    assert fopt.t == sopt.t == 16


@pytest.mark.parametrize("options", [dict(batch_size=None), dict(batch_size=10, drop_last=True),
                                     dict(batch_size=10, shuffle=False), dict(batch_size=1000)])
def test_fit_batching_options_match_reference(options, rng):
    fast, slow = twin_models([3, 5, 1], np.float64)
    X = rng.standard_normal((25, 3))
    y = rng.standard_normal(25)
    h_f = ff.fit(fast, X, y, loss=ff.SquaredError(), optimizer=ff.SGD(0.05, momentum=0.5), epochs=3, **options)
    h_s = ref.fit(slow, X, y, loss=ref.SquaredError(), optimizer=ref.SGD(0.05, momentum=0.5), epochs=3, **options)
    assert_matches(h_f["loss"], h_s["loss"], np.float64)
    assert_matches(fast.params, slow.params, np.float64)


def test_fit_continued_with_the_same_nesterov_optimizer_matches_reference(rng):
    """Two fits in a row: the look-ahead point is left and re-entered correctly."""
    fast, slow = twin_models([3, 6, 2], np.float64)
    fopt, sopt = optimizer_pair("nesterov")
    X = rng.standard_normal((32, 3))
    y = rng.integers(0, 2, size=32)
    for seed in (1, 2):
        ff.fit(fast, X, y, loss=ff.SoftmaxCrossEntropy(), optimizer=fopt, batch_size=8, epochs=2, seed=seed)
        ref.fit(slow, X, y, loss=ref.SoftmaxCrossEntropy(), optimizer=sopt, batch_size=8, epochs=2, seed=seed)
        assert_matches(fast.params, slow.params, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fortran_and_strided_inputs_give_the_c_ordered_result(dtype, rng):
    wide = rng.standard_normal((30, 8))
    X = np.ascontiguousarray(wide[:, ::2])
    readonly = X.copy()
    readonly.flags.writeable = False
    layouts = {"C": X, "F": np.asfortranarray(X), "strided": wide[:, ::2], "read-only": readonly}
    y = rng.integers(0, 3, size=30)
    base = ff.MLP([4, 6, 3], dtype=dtype, seed=1)
    expected_out = base.forward(X)
    results = {}
    for name, arr in layouts.items():
        model = ff.MLP([4, 6, 3], dtype=dtype, seed=1)
        np.testing.assert_allclose(model.forward(arr), expected_out, rtol=1e-6 if dtype == np.float32 else 0)
        model = ff.MLP([4, 6, 3], dtype=dtype, seed=1)
        ff.fit(model, arr, y, loss=ff.SoftmaxCrossEntropy(), optimizer=ff.Adam(1e-2), batch_size=7, epochs=2)
        results[name] = model.params
    for name in ("F", "strided", "read-only"):
        np.testing.assert_array_equal(results[name], results["C"])


def test_predict_matches_forward_and_reference_in_chunks(rng):
    fast, slow = twin_models([5, 7, 3], np.float64)
    X = rng.standard_normal((1000, 5))
    assert_matches(fast.predict(X, batch_size=64), slow.predict(X), np.float64)
    assert_matches(fast.predict(X), fast.forward(X), np.float64)
