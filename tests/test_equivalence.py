"""The compiled core equals the NumPy reference: passes, losses, optimizers, whole fits."""
import numpy as np
import pytest

import fastfit as ff
from fastfit import reference as ref

from helpers import LOSS_NAMES, assert_matches, make_targets, pair

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


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_over_blocks_of_rows_and_far_apart_logits_matches_reference(dtype, rng):
    """The softmax cross-entropy exponentiates blocks of 64 rows at a time (float32 with
    fastfit's own exp): 150 rows cross two block edges, and the logits span exp's whole
    range, past where exp(z - max z) is no longer a normal float."""
    logits = (rng.standard_normal((150, 10)) * 30).astype(dtype)
    logits[0, :] = [0, -1, -20, -80, -87.3, -87.4, -88, -100, -1e4, -1e30]
    logits[70, :] = np.linspace(-90, 0, 10)
    y = rng.integers(0, 10, size=150)
    y[0] = 3
    for reduction in ("mean", "sum"):
        fl, sl = pair("SoftmaxCrossEntropy", reduction)
        v_f, d_f = fl.value_and_grad(logits, y)
        v_s, d_s = sl.value_and_grad(logits, y)
        assert_matches(v_f, v_s, dtype, f"{reduction} loss")
        assert_matches(d_f, d_s, dtype, f"{reduction} gradient")


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
            "sgd_weight_decay": lambda: mod.SGD(lr=0.05, weight_decay=0.1),
            "nesterov_weight_decay": lambda: mod.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05),
            "adam_weight_decay": lambda: mod.Adam(lr=1e-2, weight_decay=0.1),
            "adamw": lambda: mod.AdamW(lr=1e-2, weight_decay=0.5),
        }[name]()
    return build(ff), build(ref)


OPTIMIZER_NAMES = ["sgd", "momentum", "nesterov", "adam", "normalized", "adam_cosine_schedule",
                   "nesterov_step_schedule", "momentum_exponential_schedule", "sgd_weight_decay",
                   "nesterov_weight_decay", "adam_weight_decay", "adamw"]


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
    ("SoftmaxCrossEntropy", "mean", "adamw"), ("BinaryCrossEntropy", "mean", "nesterov_weight_decay"),
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_one_row_batches_match_reference(loss_name, dtype, rng):
    """A batch of one row takes products of its own (each weight gradient an outer product,
    each input gradient the rows of W_k summed): the step API's gradients of one row, a fit
    at batch size 1, and a fit whose last batch is one row, against the reference."""
    sizes = [4, 9, 7, 2]
    fl, sl = pair(loss_name)
    fast, slow = twin_models(sizes, dtype)
    X = rng.standard_normal((1, 4))
    y = make_targets(loss_name, 1, 2, rng)
    fast.backward(fl.value_and_grad(fast.forward(X), y)[1])
    slow.backward(sl.value_and_grad(slow.forward(X), y)[1])
    assert_matches(fast.grads, slow.grads, dtype, "gradient of one row")
    for batch_size, n in [(1, 12), (8, 17)]:
        fast, slow = twin_models(sizes, dtype)
        X = rng.standard_normal((n, 4))
        y = make_targets(loss_name, n, 2, rng)
        h_f = ff.fit(fast, X, y, loss=fl, optimizer=ff.Adam(1e-2), batch_size=batch_size, epochs=2, seed=5)
        h_s = ref.fit(slow, X, y, loss=sl, optimizer=ref.Adam(1e-2), batch_size=batch_size, epochs=2, seed=5)
        assert_matches(h_f["loss"], h_s["loss"], dtype, f"history at batch size {batch_size}")
        assert_matches(fast.params, slow.params, dtype, f"parameters at batch size {batch_size}")


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


def test_glorot_initialisation_matches_reference():
    for dtype in DTYPES:
        fast = ff.MLP([5, 7, 3], dtype=dtype, seed=4, init="glorot")
        slow = ref.MLP([5, 7, 3], dtype=dtype, seed=4, init="glorot")
        np.testing.assert_array_equal(fast.params, slow.params)
        a = np.sqrt(6 / (5 + 7))
        assert np.abs(fast.layers[0].W).max() <= a and np.abs(fast.layers[0].b).max() > 0


L2_CASES = [("SoftmaxCrossEntropy", "mean", "adam"), ("SquaredError", "sum", "momentum"),
            ("BinaryCrossEntropy", "mean", "nesterov")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_name,reduction,opt_name", L2_CASES)
def test_l2_penalty_in_a_whole_fit_matches_reference(loss_name, reduction, opt_name, dtype, rng):
    """The penalty reaches the weights only (biases untouched by it), scaled as the loss is,
    ragged last batch included."""
    sizes = [4, 9, 2]
    fast, slow = twin_models(sizes, dtype)
    X = rng.standard_normal((45, 4))
    y = make_targets(loss_name, 45, 2, rng)
    fl = getattr(ff, loss_name)(reduction=reduction, l2=0.3)
    sl = getattr(ref, loss_name)(reduction=reduction, l2=0.3)
    fopt, sopt = optimizer_pair(opt_name)
    if reduction == "sum":
        fopt.lr /= 16
        sopt.lr /= 16
    ff.fit(fast, X, y, loss=fl, optimizer=fopt, batch_size=16, epochs=3, seed=2)
    ref.fit(slow, X, y, loss=sl, optimizer=sopt, batch_size=16, epochs=3, seed=2)
    assert_matches(fast.params, slow.params, dtype, "parameters after the fit")
    plain = ff.MLP(sizes, dtype=dtype, seed=3)
    ff.fit(plain, X, y, loss=getattr(ff, loss_name)(reduction=reduction), optimizer=optimizer_pair(opt_name)[0],
           batch_size=16, epochs=3, seed=2)
    assert np.abs(plain.params - fast.params).max() > 1e-3, "the penalty changed nothing"


@pytest.mark.parametrize("opt_name", ["adam", "momentum", "nesterov"])
def test_decaying_state_is_flushed_to_zero_like_the_reference(opt_name, rng):
    """After one real gradient, zero gradients (a dead ReLU unit's): the state decays
    geometrically, and once it falls below the smallest normal number the core and the
    reference both store zero (docs/math.md, "Subnormal numbers")."""
    for dtype in DTYPES:
        fast, slow = twin_models([3, 4, 2], dtype)
        fopt, sopt = optimizer_pair(opt_name)
        g = rng.standard_normal(fast.n_params)
        steps = 7000 if dtype == np.float64 else 900  # then 0.9^k is below the smallest normal number
        for model, opt in ((fast, fopt), (slow, sopt)):
            opt.prepare(model)
            for k in range(steps):
                model.grads[...] = g if k == 0 else 0
                opt.step(model)
            opt.finalize(model)
        tiny = np.finfo(dtype).tiny
        fast_state = fopt.state_buffers()
        slow_state = {"m": sopt.m, "v": getattr(sopt, "v", None)}
        for name, state in fast_state.items():
            nonzero = np.abs(state[state != 0])
            assert nonzero.size == 0 or nonzero.min() >= tiny, f"a subnormal value is stored in {name}"
            assert_matches(state, slow_state[name], dtype, name)
        assert not fast_state["m"].any(), "m decayed below the smallest normal number and is stored as zero"
        assert_matches(fast.params, slow.params, dtype)


# ---------------------------------------------------------------- parallel paths

BIG = [300, 260, 200, 10]


def _big_problem():
    rng = np.random.default_rng(5)
    return rng.standard_normal((96, 300)), rng.integers(0, 10, size=96)


def _big_fit(n_threads, dtype=np.float64, opt=None, l2=0.0):
    """A network whose first layer (78,000 weights) is updated in slices across threads when
    n_threads > 1, and whose products of over 1 MFLOP (the first two layers' forward and
    weight-gradient products, the second layer's input gradient) are split into column
    shares, one per thread; the last layer's products stay whole."""
    X, y = _big_problem()
    model = ff.MLP(BIG, dtype=dtype, seed=1)
    assert model.layers[0].W.size >= 2 ** 16  # the update's split threshold
    assert 2 * 32 * 260 * 200 >= ff._core.PRODUCT_SPLIT_MIN_FLOPS  # the smallest product meant to be split
    ff.fit(model, X.astype(dtype), y, loss=ff.SoftmaxCrossEntropy(l2=l2), optimizer=opt or ff.Adam(1e-3),
           batch_size=32, epochs=2, seed=0, n_threads=n_threads)
    return model


def _big_reference_fit(opt, dtype=np.float64, l2=0.0):
    X, y = _big_problem()
    slow = ref.MLP(BIG, dtype=dtype, seed=1)
    ref.fit(slow, X.astype(dtype), y, loss=ref.SoftmaxCrossEntropy(l2=l2), optimizer=opt, batch_size=32,
            epochs=2, seed=0)
    return slow


@pytest.mark.parametrize("opt_name", ["adam", "nesterov", "adamw"])
def test_split_updates_equal_one_thread_and_the_reference(opt_name):
    """Products and updates large enough to be split across fastfit's thread team (2 threads,
    and more threads than cores) equal the one-thread fit and the reference to 1e-10 (not bit
    for bit: each share is its own BLAS call, which may block its sums differently)."""
    one = _big_fit(1, opt=optimizer_pair(opt_name)[0], l2=0.1)
    for n in (2, 3, 7):
        split = _big_fit(n, opt=optimizer_pair(opt_name)[0], l2=0.1)
        assert_matches(split.params, one.params, np.float64, f"{n} threads")
    assert_matches(one.params, _big_reference_fit(optimizer_pair(opt_name)[1], l2=0.1).params, np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_an_update_split_off_a_line_equals_the_reference(dtype):
    """The parameters, gradients and Adam's state start on 64-byte lines, and a split update's
    later parts start on lines too (csrc/update_impl.h, part_start). Here the second layer's
    stretch starts 4 entries past a line and is large enough to be split: its parts still
    cover every parameter once, at 2 and 3 threads as at 1."""
    sizes = [300, 260, 300, 10]
    X, y = _big_problem()
    fits = []
    for n in (1, 2, 3):
        fast = ff.MLP(sizes, dtype=dtype, seed=2)
        opt = optimizer_pair("adam")[0]
        ff.fit(fast, X.astype(dtype), y, loss=ff.SoftmaxCrossEntropy(), optimizer=opt, batch_size=32, epochs=1,
               seed=0, n_threads=n)
        for buffer in (fast.params, fast.grads, *opt.state_buffers().values()):
            assert buffer.ctypes.data % 64 == 0
        fits.append(fast.params)
    woff = int(fast._net.woff[1])
    assert (woff * np.dtype(dtype).itemsize) % 64 != 0 and fast.layers[1].W.size + 300 >= 2 ** 16
    for n, params in zip((2, 3), fits[1:]):
        assert_matches(params, fits[0], dtype, f"{n} threads")
    slow = ref.MLP(sizes, dtype=dtype, seed=2)
    ref.fit(slow, X.astype(dtype), y, loss=ref.SoftmaxCrossEntropy(), optimizer=optimizer_pair("adam")[1],
            batch_size=32, epochs=1, seed=0)
    if dtype == np.float64:  # float32's Adam can flip a tiny gradient's step (see the test below)
        assert_matches(fits[0], slow.params, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_products_split_by_rows_equal_the_reference(dtype):
    """A batch taller than its layers are wide: the forward and input-gradient products are
    cut into shares of rows (the shared operand, W, is then the smaller one); the first layer's
    weight gradient (64 x 300) into shares of columns, the second's (64 x 64) into rows."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((512, 300)).astype(dtype)
    y = rng.integers(0, 10, size=512)
    sizes = [300, 64, 64, 10]
    assert 2 * 256 * 64 * 64 >= ff._core.PRODUCT_SPLIT_MIN_FLOPS  # the second layer's products too
    slow = ref.MLP(sizes, dtype=dtype, seed=3)
    ref.fit(slow, X, y, loss=ref.SoftmaxCrossEntropy(), optimizer=optimizer_pair("momentum")[1], batch_size=256,
            epochs=2, seed=0)
    for n in (1, 2, 3):
        fast = ff.MLP(sizes, dtype=dtype, seed=3)
        ff.fit(fast, X, y, loss=ff.SoftmaxCrossEntropy(), optimizer=optimizer_pair("momentum")[0], batch_size=256,
               epochs=2, seed=0, n_threads=n)
        assert_matches(fast.params, slow.params, dtype, f"{n} threads")


def test_split_products_in_float32_equal_the_reference():
    """Momentum, not Adam: Adam's step is about lr for any gradient far above eps, so float32's
    rounding of a tiny gradient can flip a step's sign and the comparison says nothing."""
    slow = _big_reference_fit(optimizer_pair("momentum")[1], np.float32)
    for n in (1, 2, 3):
        assert_matches(_big_fit(n, np.float32, optimizer_pair("momentum")[0]).params, slow.params, np.float32,
                       f"{n} threads")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("transposed", [True, False])
@pytest.mark.parametrize("sizes, batch", [([64, 128, 128, 10], 32), ([70, 100, 10], 40)])
def test_small_forward_products_from_the_transposed_input_equal_the_reference(sizes, batch, dtype, transposed,
                                                                              monkeypatch):
    """Where BLAS has small-matrix kernels, a small forward product reads its input transposed
    (a copy in the scratch buffer). Batch 32 of [64, 128, 128, 10] takes that path in both hidden
    layers (the second at 2 threads is also split into shares), the last stays plain; batch 40
    of [70, 100, 10] (and the last batch, of 16 rows) has inputs whose sides are not multiples
    of the transpose's 16 x 16 tiles. Either way the fit equals the reference, at 1 and 2
    threads, and so does the step API's forward."""
    monkeypatch.setattr(ff._blas_select, "_small_matrix_kernels", transposed)
    assert ff.MLP(sizes, dtype=dtype).workspace(batch).transpose_small_inputs == transposed
    _fits_at_1_and_2_threads_equal_the_reference(sizes, batch, dtype, seed=4)


def _fits_at_1_and_2_threads_equal_the_reference(sizes, batch, dtype, seed):
    """Two epochs of SGD with momentum, at 1 and 2 threads, against the reference; then the step
    API's forward of one batch."""
    rng = np.random.default_rng(seed + 7)
    X = rng.standard_normal((96, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=96)
    slow = ref.MLP(sizes, dtype=dtype, seed=seed)
    ref.fit(slow, X, y, loss=ref.SoftmaxCrossEntropy(), optimizer=optimizer_pair("momentum")[1], batch_size=batch,
            epochs=2, seed=0)
    for n in (1, 2):
        fast = ff.MLP(sizes, dtype=dtype, seed=seed)
        ff.fit(fast, X, y, loss=ff.SoftmaxCrossEntropy(), optimizer=optimizer_pair("momentum")[0], batch_size=batch,
               epochs=2, seed=0, n_threads=n)
        assert_matches(fast.params, slow.params, dtype, f"{n} threads")
    assert_matches(fast.forward(X[:batch]), slow.forward(X[:batch]), dtype, "forward")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("transposed", [True, False])
@pytest.mark.parametrize("sizes, batch", [([40, 256, 256, 10], 16), ([30, 300, 290, 7], 13)])
def test_forward_products_of_few_rows_formed_transposed_equal_the_reference(sizes, batch, dtype, transposed,
                                                                             monkeypatch):
    """Where BLAS runs it faster, a float32 forward product of a few rows against a wide output is
    formed as F^T = W H^T in the scratch buffer and transposed into F. Batch 16 of [40, 256, 256, 10]
    takes that path in the second hidden layer (at 2 threads split into shares by F^T's rows); batch
    13 of [30, 300, 290, 7] (and its last batch, of 5 rows) has outputs whose sides are not
    multiples of the transpose's tiles. float64 keeps H W^T. Either way the fit equals the
    reference at 1 and 2 threads, and so does the step API's forward."""
    monkeypatch.setattr(ff._blas_select, "few_row_outputs_transposed", lambda: transposed)
    monkeypatch.setattr(ff._blas_select, "_own_products", (False, "BLAS's layouts under test"))
    d_in, d_out = sizes[1], sizes[2]  # the second layer meets the path's conditions
    assert batch <= ff._core.FEW_ROWS_PRODUCT_MAX_ROWS and d_out >= ff._core.FEW_ROWS_PRODUCT_OUTPUT_RATIO * batch
    assert batch * d_in * d_out > ff._core.SMALL_PRODUCT_MAX_MULADDS
    assert 2 * batch * d_in * d_out >= ff._core.PRODUCT_SPLIT_MIN_FLOPS
    assert ff.MLP(sizes, dtype=dtype).workspace(batch).transpose_few_row_outputs == transposed
    _fits_at_1_and_2_threads_equal_the_reference(sizes, batch, dtype, seed=5)


OWN_PRODUCTS = [False, pytest.param(True, marks=pytest.mark.skipif(
    not ff._core.own_products_usable(), reason="fastfit's own product needs AVX-512"))]

# (M, N, K) of op(A) @ op(B): edges of the product's tiles (8 rows; 32 float32 columns in masked
# vectors of 16, or 16 float64 columns in vectors of 8), of its blocks of k (512 float32 or 256
# float64, whole square tiles of 16 or 8 when an operand is transposed), a step's shapes, and
# products too small or too narrow for its own product (which BLAS then runs).
PRODUCT_SHAPES = [(1, 1, 1), (3, 5, 0), (7, 33, 5), (16, 32, 4100), (13, 290, 300), (37, 33, 1025), (9, 1000, 257),
                  (1100, 40, 130), (64, 256, 784), (128, 1024, 272), (300, 31, 513), (129, 65, 8191),
                  (16, 1000, 80), (300, 300, 16), (128, 10, 1024)]


@pytest.mark.parametrize("own", OWN_PRODUCTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("M, N, K", PRODUCT_SHAPES)
def test_products_equal_numpy_and_do_not_depend_on_the_thread_count(M, N, K, trans_a, trans_b, dtype, own, rng):
    """The core's products (fastfit's own product where `own` and the shape takes it, BLAS's
    otherwise) equal the exact product to the dtype's rounding (the float64 product of float32
    operands; NumPy's extended-precision product of float64 ones), at 1, 2 and 3 threads (the
    shares of rows or columns of a split product, and more threads than this machine's two
    cores). fastfit's own product sums each entry in the same order whatever the cut, so its
    results are bit-identical across thread counts."""
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    exact = (A.T if trans_a else A).astype(np.longdouble) @ (B.T if trans_b else B).astype(np.longdouble)
    scale = np.sqrt(max(K, 1))  # the size of an entry of a sum of K products of unit normals
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    results = [ff._core.product(A, B, trans_a, trans_b, threads, own) for threads in (1, 2, 3)]
    for threads, C in zip((1, 2, 3), results):
        assert C.shape == (M, N) and C.dtype == dtype
        assert np.abs(C - exact).max(initial=0) <= tolerance * scale, f"{threads} threads"
    if own and ff._core.takes_own_product(M, N, K):
        for C in results[1:]:
            np.testing.assert_array_equal(C, results[0])


@pytest.mark.parametrize("own", OWN_PRODUCTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes, batch", [([300, 290, 257, 7], 37), ([40, 256, 256, 10], 16),
                                          ([784, 512, 10], 64), ([40, 1024, 256, 10], 22),
                                          ([40, 64, 600, 10], 96), ([32, 160, 640, 10], 48)])
def test_fits_on_fastfit_own_products_equal_the_reference(sizes, batch, dtype, own, monkeypatch):
    """Fits whose products pass the small-matrix range run on fastfit's own product where the CPU
    has AVX-512 (BLAS's otherwise), and equal the reference at 1 and 2 threads, in float32 and in
    float64: products with edges in every dimension, last batches of fewer rows (22 and 32 of the
    96), products split by rows and by columns; and a last batch of 8 rows, too few for fastfit's
    own product, whose float32 forward product BLAS then forms as (W H^T)^T where it has the
    kernels for that. The product finishes each layer in registers (bias and ReLU forward; the
    ReLU's gate and the bias gradient backward): [40, 64, 600, 10] at batch 96 cuts the second
    layer's input-gradient product by rows, so its bias gradient is summed after the shares, and
    sums over 600 (float32: more than one block of k, so the gate applies after the last);
    [32, 160, 640, 10] at batch 48 does the same cut by columns."""
    monkeypatch.setattr(ff._blas_select, "_own_products", (own, "the path under test"))
    assert ff.MLP(sizes, dtype=dtype).workspace(batch).own_products == own
    assert max(batch * a * b for a, b in zip(sizes, sizes[1:])) > ff._core.SMALL_PRODUCT_MAX_MULADDS
    _fits_at_1_and_2_threads_equal_the_reference(sizes, batch, dtype, seed=6)


@pytest.mark.parametrize("value", ["", "auto", "own", "blas", "BLAS", "openblas", "gpu"])
def test_fastfit_products_chooses_the_product_and_says_why(value, monkeypatch, capsys):
    """FASTFIT_PRODUCTS=blas (or scipy, openblas) keeps SciPy's BLAS for every product; unset,
    auto or own leave it to the CPU; anything else is named in the reason and keeps BLAS. The
    workspaces and `fastfit config` follow the decision."""
    monkeypatch.setenv("FASTFIT_PRODUCTS", value)
    monkeypatch.setattr(ff._blas_select, "_own_products", None)  # decided again, from this value
    used, reason = ff._blas_select.own_products()
    expected = value in ("", "auto", "own") and ff._core.own_products_usable()
    assert used == expected
    if value.lower() in ("blas", "openblas"):
        assert f"FASTFIT_PRODUCTS={value.lower()}" in reason
    if value == "gpu":
        assert "'gpu'" in reason
    assert ff.MLP([784, 256, 10]).workspace(64).own_products == expected
    ff.show_config()
    shown = capsys.readouterr().out
    assert ("matrix products: SciPy's BLAS (sgemm/dgemm) for every one" in shown) == (not expected)
    assert reason in shown


def test_the_step_api_splits_large_updates_too(rng):
    """forward, backward and opt.step on a large model and batch equal the reference (the products
    and the update take the thread team's paths wherever there are two cores)."""
    fast, slow = twin_models(BIG, np.float64)
    fopt, sopt = optimizer_pair("adam")
    X = rng.standard_normal((160, 300))
    y = rng.integers(0, 10, size=160)
    assert 2 * 160 * fast.n_params >= ff._threads.SINGLE_THREAD_FLOPS  # every allowed thread
    for model, loss, opt in ((fast, ff.SoftmaxCrossEntropy(), fopt), (slow, ref.SoftmaxCrossEntropy(), sopt)):
        for _ in range(3):
            _, dout = loss.value_and_grad(model.forward(X), y)
            model.backward(dout)
            opt.step(model)
    assert_matches(fast.params, slow.params, np.float64)


def test_sparse_X_gives_the_dense_result(rng):
    sparse = pytest.importorskip("scipy.sparse")
    X = rng.standard_normal((40, 6)) * (rng.random((40, 6)) < 0.3)
    y = rng.integers(0, 3, size=40)
    results = []
    for data in (X, sparse.csr_matrix(X), sparse.csc_matrix(X)):
        model = ff.MLP([6, 8, 3], dtype=np.float64, seed=2)
        h = ff.fit(model, data, y, loss=ff.SoftmaxCrossEntropy(), optimizer=ff.Adam(1e-2), batch_size=8,
                   epochs=3, seed=1, validation_data=(data, y))
        results.append((model.params.copy(), h["val_loss"], model.predict(data)))
    for params, val_loss, out in results[1:]:
        np.testing.assert_array_equal(params, results[0][0])
        assert val_loss == results[0][1]
        np.testing.assert_array_equal(out, results[0][2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_name", LOSS_NAMES)
@pytest.mark.parametrize("cuts", [(0, 11), (0, 4, 11), (0, 0, 5, 11), (0, 3, 6, 9, 11)])
def test_a_batch_worked_in_slices_gives_the_reference_gradient(cuts, loss_name, dtype, rng):
    # The distributed fit's factor exchange: each slice of rows (one rank's) runs forward and back
    # to every dL/dF_k in the whole batch's layout; the weight gradients are then formed over all
    # rows (layers that send factors) or per slice and summed (layers whose gradient is summed).
    from fastfit import _core
    sizes = [6, 9, 8, 4]
    B = cuts[-1]
    fast, slow = twin_models(sizes, dtype)
    X = rng.standard_normal((B, sizes[0])).astype(dtype)
    y = make_targets(loss_name, B, sizes[-1], rng)
    fl, sl = pair(loss_name)
    slow.backward(sl.value_and_grad(slow.forward(X), y)[1])
    Y, labels = fl.targets(y, B, sizes[-1], dtype)
    data = _core.Dataset(X, Y, labels)
    ws = fast.workspace(B, target_cols=Y.shape[1] if Y.size else 0, labels=bool(labels.size), deltas=True)
    rows = np.arange(B, dtype=np.intp)
    total = 0.0
    for lo, hi in zip(cuts, cuts[1:]):
        total += _core.slice_head(fast._net, ws, data, fl.objective(sizes[-1]), rows, lo, hi)[0]
        for k in range(len(sizes) - 2, 0, -1):
            _core.slice_input_gradient(fast._net, ws, B, lo, hi, k)
    assert_matches(fl.reduce(total, B, sizes[-1]), sl.value_and_grad(slow.forward(X), y)[0], dtype, "loss")
    for k in range(len(sizes) - 1):
        _core.rows_weight_gradient(fast._net, ws, B, 0, B, k)
    assert_matches(fast.grads, slow.grads, dtype, "gradient over the whole batch")
    summed = np.zeros_like(fast.grads)
    for lo, hi in zip(cuts, cuts[1:]):
        for k in range(len(sizes) - 1):
            _core.rows_weight_gradient(fast._net, ws, B, lo, hi, k)
        summed += fast.grads
    assert_matches(summed, slow.grads, dtype, "sum of the slices' gradients")


def test_a_slice_outside_the_workspace_or_layers_is_refused():
    # the distributed fit computes these arguments; a slip there must not reach the buffers
    from fastfit import _core
    model = ff.MLP([3, 4, 5, 2])
    ws = model.workspace(4, labels=True, deltas=True)
    with pytest.raises(ValueError, match="k must be a layer index in \\[1, 3\\), got 0"):
        _core.slice_input_gradient(model._net, ws, 4, 0, 4, 0)
    with pytest.raises(ValueError, match="k must be a layer index in \\[0, 3\\), got 3"):
        _core.rows_weight_gradient(model._net, ws, 4, 0, 4, 3)
    with pytest.raises(ValueError, match="rows \\[0, 4\\) of a batch of 5 do not fit a workspace of 4"):
        _core.rows_weight_gradient(model._net, ws, 5, 0, 4, 0)
    with pytest.raises(ValueError, match="rows \\[3, 2\\)"):
        _core.slice_input_gradient(model._net, ws, 4, 3, 2, 1)
    with pytest.raises(ValueError, match="no deltas buffer"):
        _core.rows_weight_gradient(model._net, model.workspace(4), 4, 0, 4, 0)
