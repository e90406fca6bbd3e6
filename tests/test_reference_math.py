"""Pin the formulas of the pure-NumPy reference (fastfit/reference.py) to docs/math.md.

These tests check the reference against mathematics (finite differences,
hand arithmetic, closed-form solutions), never against the compiled core.
"""
import math

import numpy as np
import pytest

from fastfit import reference as ref


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def make_targets(loss_cls, rng, B, C):
    if loss_cls is ref.SoftmaxCrossEntropy:
        return rng.integers(0, C, size=B)
    if loss_cls is ref.BinaryCrossEntropy:
        return rng.integers(0, 2, size=(B, C)).astype(np.float64)
    return rng.standard_normal((B, C))


def preactivations(model, X):
    """All hidden pre-activations F_0 .. F_{K-1}, computed independently of the model."""
    H = X
    Fs = []
    for layer in model.layers[:-1]:
        F = H @ layer.W.T + layer.b
        Fs.append(F)
        H = np.maximum(F, 0)
    return Fs


def loss_at(model, loss, X, y, params):
    saved = model.params.copy()
    model.params[:] = params
    value, _ = loss.value_and_grad(model.predict(X), y)
    model.params[:] = saved
    return value


def set_params(model, values):
    model.params[:] = np.asarray(values, dtype=model.dtype)


def set_grads(model, values):
    model.grads[:] = np.asarray(values, dtype=model.dtype)


# --------------------------------------------------------------------------
# 1. gradients
# --------------------------------------------------------------------------

@pytest.mark.parametrize("n_hidden", [0, 1, 2, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss_cls", [ref.SquaredError, ref.SoftmaxCrossEntropy, ref.BinaryCrossEntropy])
def test_gradient_equals_central_finite_differences(loss_cls, reduction, n_hidden):
    d_in, width, C, B = 4, 5, 3, 5
    sizes = [d_in] + [width] * n_hidden + [C]
    # Pick the first seed whose pre-activations are all far from the ReLU kink,
    # so that the loss is smooth within the finite-difference step.
    for seed in range(50):
        rng = np.random.default_rng(seed)
        model = ref.MLP(sizes, dtype=np.float64, seed=seed)
        # non-zero biases so that the bias gradients are exercised at a generic point
        for layer in model.layers:
            layer.b[:] = 0.3 * rng.standard_normal(layer.b.shape)
        X = rng.standard_normal((B, d_in))
        y = make_targets(loss_cls, rng, B, C)
        if all(np.min(np.abs(F)) > 1e-3 for F in preactivations(model, X)):
            break
    else:
        pytest.fail("no kink-free seed found")

    loss = loss_cls(reduction=reduction)
    out = model.forward(X)
    value, dout = loss.value_and_grad(out, y)
    model.backward(dout)
    analytic = model.grads.copy()
    assert value == pytest.approx(loss_at(model, loss, X, y, model.params), rel=1e-14)

    eps = 1e-6
    numeric = np.empty_like(analytic)
    base = model.params.copy()
    for i in range(model.n_params):
        plus, minus = base.copy(), base.copy()
        plus[i] += eps
        minus[i] -= eps
        numeric[i] = (loss_at(model, loss, X, y, plus) - loss_at(model, loss, X, y, minus)) / (2 * eps)

    scale = max(1.0, np.max(np.abs(analytic)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6 * scale)
    assert np.linalg.norm(analytic - numeric) <= 1e-6 * np.linalg.norm(analytic)


def test_backward_of_one_linear_unit_by_hand():
    # f = w*x + b with w=2, b=0.5, x=3, y=1 ; SE sum: l = (f-y)^2 = 5.5^2
    model = ref.MLP([1, 1], dtype=np.float64)
    set_params(model, [2.0, 0.5])
    out = model.forward([[3.0]])
    assert out[0, 0] == 6.5
    value, dout = ref.SquaredError("sum").value_and_grad(out, [1.0])
    assert value == 30.25
    assert dout[0, 0] == 11.0                      # 2 (f - y)
    model.backward(dout)
    np.testing.assert_array_equal(model.grads, [33.0, 11.0])   # dW = 11*3, db = 11


def test_backward_masks_by_relu_and_skips_input_gradient():
    # 1 -> 2 -> 1 network with one active, one inactive hidden unit
    model = ref.MLP([1, 2, 1], dtype=np.float64)
    # W0 = [[1],[-1]], b0 = [0, 0], W1 = [[2, 3]], b1 = [0]
    set_params(model, [1.0, -1.0, 0.0, 0.0, 2.0, 3.0, 0.0])
    out = model.forward([[2.0]])                   # H1 = [2, 0], f = 4
    assert out[0, 0] == 4.0
    model.backward(np.array([[1.0]]))
    # dW1 = dF1.T @ H1 = [2, 0]; db1 = 1; dH1 = [2, 3]; dF0 = [2, 0] (mask);
    # dW0 = dF0.T @ X = [[4], [0]]; db0 = [2, 0]
    np.testing.assert_array_equal(model.grads, [4.0, 0.0, 2.0, 0.0, 2.0, 0.0, 1.0])


def test_float32_model_keeps_float32_everywhere():
    rng = np.random.default_rng(0)
    model = ref.MLP([3, 4, 2], dtype=np.float32)
    X = rng.standard_normal((5, 3))                # float64 input is converted
    for loss in (ref.SquaredError(), ref.SoftmaxCrossEntropy(), ref.BinaryCrossEntropy()):
        y = make_targets(type(loss), rng, 5, 2)
        out = model.forward(X)
        assert out.dtype == np.float32
        value, dout = loss.value_and_grad(out, y)
        assert isinstance(value, float)
        assert dout.dtype == np.float32 and dout.shape == out.shape
        model.backward(dout)
        assert model.grads.dtype == np.float32
    for opt in (ref.SGD(0.1), ref.SGD(0.1, momentum=0.9), ref.SGD(0.1, momentum=0.9, nesterov=True),
                ref.Adam(0.1), ref.NormalizedGD(0.1)):
        opt.prepare(model)
        opt.step(model)
        opt.finalize(model)
        assert model.params.dtype == np.float32
        for layer in model.layers:
            assert layer.W.dtype == np.float32 and np.shares_memory(layer.W, model.params)
    assert model.predict(X).dtype == np.float32


# --------------------------------------------------------------------------
# 2. one optimizer step by hand (model f = w*x + b, params [w, b])
# --------------------------------------------------------------------------

def tiny_model():
    model = ref.MLP([1, 1], dtype=np.float64)
    set_params(model, [1.0, 0.0])
    return model


def test_sgd_step_by_hand():
    model = tiny_model()
    opt = ref.SGD(0.1)
    set_grads(model, [2.0, -4.0])
    opt.step(model)
    np.testing.assert_allclose(model.params, [1.0 - 0.2, 0.0 + 0.4], rtol=0, atol=1e-15)
    assert opt.t == 1


def test_sgd_step_on_real_gradient_by_hand():
    # w=2, b=0.5, x=3, y=1, SE sum -> grads [33, 11]; lr 0.01 -> [2-0.33, 0.5-0.11]
    model = ref.MLP([1, 1], dtype=np.float64)
    set_params(model, [2.0, 0.5])
    _, dout = ref.SquaredError("sum").value_and_grad(model.forward([[3.0]]), [1.0])
    model.backward(dout)
    ref.SGD(0.01).step(model)
    np.testing.assert_allclose(model.params, [1.67, 0.39], rtol=0, atol=1e-15)


def test_momentum_two_steps_by_hand():
    model = tiny_model()
    opt = ref.SGD(0.1, momentum=0.5)
    set_grads(model, [2.0, -4.0])
    opt.step(model)
    # m1 = 0.5*0 + 0.5*[2,-4] = [1,-2]; phi1 = [1,0] - 0.1*[1,-2] = [0.9, 0.2]
    np.testing.assert_allclose(opt.m, [1.0, -2.0], atol=1e-15)
    np.testing.assert_allclose(model.params, [0.9, 0.2], atol=1e-15)
    set_grads(model, [1.0, 1.0])
    opt.step(model)
    # m2 = 0.5*[1,-2] + 0.5*[1,1] = [1, -0.5]; phi2 = [0.9,0.2] - 0.1*[1,-0.5] = [0.8, 0.25]
    np.testing.assert_allclose(opt.m, [1.0, -0.5], atol=1e-15)
    np.testing.assert_allclose(model.params, [0.8, 0.25], atol=1e-15)
    assert opt.t == 2


def test_nesterov_two_steps_by_hand_lookahead_and_finalize():
    model = tiny_model()
    opt = ref.SGD(0.1, momentum=0.5, nesterov=True)
    opt.prepare(model)
    np.testing.assert_array_equal(model.params, [1.0, 0.0])        # psi_0 = phi_0
    set_grads(model, [2.0, -4.0])                                  # g at psi_0
    opt.step(model)
    # m1 = [1,-2]; phi1 = [0.9, 0.2]; psi1 = phi1 - 0.1*0.5*m1 = [0.85, 0.3]
    np.testing.assert_allclose(opt.m, [1.0, -2.0], atol=1e-15)
    np.testing.assert_allclose(opt.phi, [0.9, 0.2], atol=1e-15)
    np.testing.assert_allclose(model.params, [0.85, 0.3], atol=1e-15)
    set_grads(model, [1.0, 1.0])                                   # g at psi_1
    opt.step(model)
    # m2 = [1,-0.5]; phi2 = [0.8, 0.25]; psi2 = phi2 - 0.05*m2 = [0.75, 0.275]
    np.testing.assert_allclose(opt.m, [1.0, -0.5], atol=1e-15)
    np.testing.assert_allclose(opt.phi, [0.8, 0.25], atol=1e-15)
    np.testing.assert_allclose(model.params, [0.75, 0.275], atol=1e-15)
    opt.finalize(model)
    np.testing.assert_allclose(model.params, [0.8, 0.25], atol=1e-15)
    # the gradient now in model.grads would be at phi, not psi: refuse
    with pytest.raises(RuntimeError, match="prepare"):
        opt.step(model)
    opt.prepare(model)
    np.testing.assert_allclose(model.params, [0.75, 0.275], atol=1e-15)
    opt.step(model)                                                # fine after prepare
    assert opt.t == 3


def test_nesterov_fresh_optimizer_steps_without_prepare():
    model = tiny_model()
    opt = ref.SGD(0.1, momentum=0.5, nesterov=True)
    set_grads(model, [2.0, -4.0])
    opt.step(model)                                                # m_0 = 0: psi_0 = phi_0
    np.testing.assert_allclose(model.params, [0.85, 0.3], atol=1e-15)


def test_nesterov_requires_momentum():
    with pytest.raises(ValueError, match="momentum"):
        ref.SGD(0.1, nesterov=True)


def test_adam_first_step_moves_by_lr_times_sign_of_gradient():
    model = tiny_model()
    opt = ref.Adam(lr=0.1)
    set_grads(model, [2.0, -4.0])
    opt.step(model)
    # m_hat = g, v_hat = g^2: step = lr * g / (|g| + eps)
    expected = [1.0 - 0.1 * 2.0 / (2.0 + 1e-8), 0.0 + 0.1 * 4.0 / (4.0 + 1e-8)]
    np.testing.assert_allclose(model.params, expected, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(model.params, [0.9, 0.1], atol=1e-9)


def test_adam_second_step_by_hand():
    model = tiny_model()
    opt = ref.Adam(lr=0.1)                      # betas (0.9, 0.999), eps 1e-8
    set_grads(model, [2.0, -4.0])
    opt.step(model)
    p1 = model.params.copy()
    set_grads(model, [1.0, 1.0])
    opt.step(model)
    # m1 = 0.1*[2,-4] = [0.2,-0.4];  v1 = 0.001*[4,16] = [0.004, 0.016]
    # m2 = 0.9*m1 + 0.1*[1,1] = [0.28, -0.26]
    # v2 = 0.999*v1 + 0.001*[1,1] = [0.004996, 0.016984]
    # m_hat = m2/(1-0.81) ; v_hat = v2/(1-0.998001)
    m_hat = np.array([0.28, -0.26]) / 0.19
    v_hat = np.array([0.004996, 0.016984]) / 0.001999
    np.testing.assert_allclose(opt.m, [0.28, -0.26], rtol=1e-14)
    np.testing.assert_allclose(opt.v, [0.004996, 0.016984], rtol=1e-14)
    np.testing.assert_allclose(model.params, p1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-12)


def test_adam_bias_correction_makes_m_hat_equal_constant_gradient():
    # betas that are exact in binary: m_t = (1 - 0.5^t) g and v_t = (1 - 0.75^t) g^2
    # are computed without rounding, so the corrected moments are g and g^2 exactly.
    model = tiny_model()
    b1, b2, lr, eps = 0.5, 0.75, 0.01, 1e-8
    opt = ref.Adam(lr=lr, betas=(b1, b2), eps=eps)
    g = np.array([2.0, -0.5])
    for t in range(1, 9):
        before = model.params.copy()
        set_grads(model, g)
        opt.step(model)
        assert opt.t == t
        np.testing.assert_array_equal(opt.m / (1 - b1 ** t), g)
        np.testing.assert_array_equal(opt.v / (1 - b2 ** t), g * g)
        np.testing.assert_allclose(before - model.params, lr * g / (np.abs(g) + eps), rtol=1e-12)


def test_normalized_gd_step_by_hand():
    model = tiny_model()
    opt = ref.NormalizedGD(0.1, eps=1e-8)
    set_grads(model, [-3.0, 0.0])
    opt.step(model)
    # phi - lr * g / (sqrt(g*g) + eps): [1 + 0.1*3/(3+1e-8), 0 - 0]
    np.testing.assert_allclose(model.params, [1.0 + 0.1 * 3.0 / (3.0 + 1e-8), 0.0], rtol=1e-15, atol=0)


def test_optimizer_uses_schedule_at_step_count_before_increment():
    model = tiny_model()
    opt = ref.SGD(ref.StepDecay(1.0, step_size=1, gamma=0.5))
    for expected_lr in (1.0, 0.5, 0.25):
        assert opt.current_lr() == expected_lr
        before = model.params.copy()
        set_grads(model, [1.0, 1.0])
        opt.step(model)
        np.testing.assert_allclose(before - model.params, [expected_lr] * 2, atol=1e-15)
    assert opt.lr_at(3) == 0.125


@pytest.mark.parametrize("make, word", [
    (lambda: ref.SGD(0.0), "lr"),
    (lambda: ref.SGD(-1.0), "lr"),
    (lambda: ref.SGD(float("inf")), "lr"),
    (lambda: ref.SGD(0.1, momentum=1.0), "momentum"),
    (lambda: ref.SGD(0.1, momentum=-0.1), "momentum"),
    (lambda: ref.Adam(0.1, betas=(1.0, 0.999)), "betas"),
    (lambda: ref.Adam(0.1, betas=(0.9, -0.1)), "betas"),
    (lambda: ref.Adam(0.1, eps=0.0), "eps"),
    (lambda: ref.NormalizedGD(0.1, eps=-1.0), "eps"),
    (lambda: ref.NormalizedGD("fast"), "lr"),
])
def test_bad_hyperparameters_raise_value_error_naming_argument(make, word):
    with pytest.raises(ValueError, match=word):
        make()


# --------------------------------------------------------------------------
# 3. gradient descent reaches the least-squares solution
# --------------------------------------------------------------------------

def test_gradient_descent_reaches_lstsq_solution():
    rng = np.random.default_rng(1)
    N, d = 40, 3
    X = rng.standard_normal((N, d))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.7 + 0.1 * rng.standard_normal(N)
    A = np.hstack([X, np.ones((N, 1))])
    solution, *_ = np.linalg.lstsq(A, y, rcond=None)

    # mean SE: L = |A theta - y|^2 / N, Hessian 2 A^T A / N; lr = 1 / lambda_max
    hessian = 2 * A.T @ A / N
    lr = 1.0 / np.linalg.eigvalsh(hessian).max()
    model = ref.MLP([d, 1], dtype=np.float64)
    hist = ref.fit(model, X, y, ref.SquaredError(), ref.SGD(lr), batch_size=None, epochs=400)
    np.testing.assert_allclose(model.params, solution, rtol=0, atol=1e-6)   # params = [w, b]
    residual = np.mean((A @ solution - y) ** 2)
    assert hist["loss"][-1] == pytest.approx(residual, rel=1e-9)
    # monotone descent (up to rounding once converged)
    assert all(a >= b - 1e-12 * a for a, b in zip(hist["loss"], hist["loss"][1:]))
    assert hist["loss"][0] > 10 * residual


# --------------------------------------------------------------------------
# 4. Nesterov follows the book's rule with a schedule (docs/math.md, "Nesterov accelerated momentum")
# --------------------------------------------------------------------------

def test_nesterov_trajectory_matches_the_books_rule_with_schedule():
    rng = np.random.default_rng(2)
    N, d, beta, steps = 20, 3, 0.8, 20
    X = rng.standard_normal((N, d))
    y = rng.standard_normal(N)
    A = np.hstack([X, np.ones((N, 1))])
    schedule = ref.CosineWithWarmup(0.2, total_steps=steps, warmup_steps=3, min_lr=0.01)

    def grad(theta):                     # gradient of mean SE, a quadratic
        return 2 * A.T @ (A @ theta - y) / N

    model = ref.MLP([d, 1], dtype=np.float64, seed=5)
    phi = model.params.copy()
    m = np.zeros_like(phi)
    opt = ref.SGD(schedule, momentum=beta, nesterov=True)
    opt.prepare(model)
    loss = ref.SquaredError()
    for t in range(steps):
        alpha = schedule(t)
        # docs/math.md, literally
        m = beta * m + (1 - beta) * grad(phi - alpha * beta * m)
        phi = phi - alpha * m
        # reference
        _, dout = loss.value_and_grad(model.forward(X), y)
        model.backward(dout)
        opt.step(model)
        np.testing.assert_allclose(opt.phi, phi, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(model.params, phi - schedule(t + 1) * beta * m, rtol=1e-12, atol=1e-14)
    opt.finalize(model)
    np.testing.assert_allclose(model.params, phi, rtol=1e-12, atol=1e-14)

    # the same through fit (full batch, one step per epoch), finalized at phi
    model2 = ref.MLP([d, 1], dtype=np.float64, seed=5)
    ref.fit(model2, X, y, loss, ref.SGD(schedule, momentum=beta, nesterov=True),
            batch_size=None, epochs=steps)
    np.testing.assert_allclose(model2.params, phi, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------
# 5. sum vs mean reduction
# --------------------------------------------------------------------------

@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("loss_cls, sizes", [
    (ref.SoftmaxCrossEntropy, [4, 6, 3]),    # mean divides by B
    (ref.SquaredError, [4, 6, 1]),           # mean divides by B*C, C = 1
])
def test_sum_and_mean_reduction_agree_when_lr_scaled_by_batch_size(loss_cls, sizes, momentum):
    rng = np.random.default_rng(3)
    N, B, lr_sum = 12, 4, 0.01
    X = rng.standard_normal((N, sizes[0]))
    y = make_targets(loss_cls, rng, N, sizes[-1])
    if loss_cls is ref.SquaredError:
        y = y[:, 0]
    models, hists = [], []
    for reduction, lr in (("sum", lr_sum), ("mean", lr_sum * B)):
        model = ref.MLP(sizes, dtype=np.float64, seed=4)
        hists.append(ref.fit(model, X, y, loss_cls(reduction), ref.SGD(lr, momentum=momentum),
                             batch_size=B, epochs=3, seed=9))
        models.append(model)
    np.testing.assert_allclose(models[0].params, models[1].params, rtol=1e-12, atol=1e-14)
    # same trajectory: epoch sum loss = N * epoch mean loss
    np.testing.assert_allclose(hists[0]["loss"], N * np.array(hists[1]["loss"]), rtol=1e-12)


# --------------------------------------------------------------------------
# 6. initialisation and parameter layout
# --------------------------------------------------------------------------

def test_init_follows_documented_rng_recipe():
    sizes = [3, 5, 4, 2]
    model = ref.MLP(sizes, dtype=np.float32, seed=7)
    rng = np.random.default_rng(7)
    expected = []
    for din, dout in zip(sizes[:-1], sizes[1:]):
        W = rng.standard_normal((dout, din)) * np.sqrt(2.0 / din)
        expected += [W.ravel(), np.zeros(dout)]
    expected = np.concatenate(expected).astype(np.float32)
    assert model.sizes == (3, 5, 4, 2)
    assert model.dtype == np.float32 and model.params.dtype == np.float32
    assert model.params.ndim == 1 and model.n_params == expected.size == 3 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2
    np.testing.assert_array_equal(model.params, expected)
    assert model.grads.shape == model.params.shape and not model.grads.any()
    assert [layer.W.shape for layer in model.layers] == [(5, 3), (4, 5), (2, 4)]


def test_layer_arrays_are_views_into_flat_buffers():
    model = ref.MLP([3, 5, 2], dtype=np.float64, seed=0)
    W1, b1 = model.layers[1].W, model.layers[1].b
    for layer in model.layers:
        assert np.shares_memory(layer.W, model.params) and np.shares_memory(layer.b, model.params)
        assert np.shares_memory(layer.dW, model.grads) and np.shares_memory(layer.db, model.grads)
    model.layers[0].W[1, 2] = 42.0               # W_0 row-major at offset 1*3 + 2
    assert model.params[5] == 42.0
    model.layers[0].b[4] = -1.0                  # b_0 after W_0 (15 entries)
    assert model.params[15 + 4] == -1.0
    model.params[20] = 7.0                       # first entry of W_1
    assert W1[0, 0] == 7.0
    model.params[-1] = 3.0
    assert b1[-1] == 3.0
    model.grads[20] = 2.0
    assert model.layers[1].dW[0, 0] == 2.0


def test_predict_equals_forward_and_does_not_store():
    rng = np.random.default_rng(0)
    model = ref.MLP([3, 4, 2], dtype=np.float64)
    X1, X2 = rng.standard_normal((5, 3)), rng.standard_normal((2, 3))
    out = model.forward(X1)
    model.predict(X2)
    np.testing.assert_array_equal(model.predict(X1), out)
    model.backward(np.ones_like(out))            # still the batch of the last forward (5 rows)
    assert model.layers[0].dW.any()


# --------------------------------------------------------------------------
# 7. losses
# --------------------------------------------------------------------------

def test_loss_values_by_hand():
    f = np.array([[1.0, 2.0], [0.0, -1.0]])
    y = np.array([[0.0, 2.0], [1.0, 1.0]])
    # SE: (1 + 0) + (1 + 4) = 6 ; mean over 4 elements
    assert ref.SquaredError("sum").value_and_grad(f, y)[0] == 6.0
    v, g = ref.SquaredError("mean").value_and_grad(f, y)
    assert v == 1.5
    np.testing.assert_array_equal(g, 2 * (f - y) / 4)
    # CE with equal logits: log C per row
    v, g = ref.SoftmaxCrossEntropy("sum").value_and_grad(np.zeros((2, 4)), np.array([1, 3]))
    assert v == pytest.approx(2 * math.log(4), rel=1e-15)
    np.testing.assert_allclose(g, [[0.25, -0.75, 0.25, 0.25], [0.25, 0.25, 0.25, -0.75]])
    v, g2 = ref.SoftmaxCrossEntropy("mean").value_and_grad(np.zeros((2, 4)), np.array([1, 3]))
    assert v == pytest.approx(math.log(4), rel=1e-15)
    np.testing.assert_allclose(g2, g / 2)
    # BCE at f = 0: log 2 per element, gradient 1/2 - y
    v, g = ref.BinaryCrossEntropy("sum").value_and_grad(np.zeros((2, 2)), np.array([[0.0, 1.0], [1.0, 0.5]]))
    assert v == pytest.approx(4 * math.log(2), rel=1e-15)
    np.testing.assert_allclose(g, [[0.5, -0.5], [-0.5, 0.0]])


def test_cross_entropy_finite_for_huge_logits():
    for dtype in (np.float32, np.float64):
        f = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]], dtype=dtype)
        v, g = ref.SoftmaxCrossEntropy("sum").value_and_grad(f, np.array([0, 1]))
        assert np.isfinite(v) and np.all(np.isfinite(g))
        assert v == pytest.approx(1e4, rel=1e-6)         # row 0 costs 0, row 1 costs 1e4
        np.testing.assert_allclose(g, [[0, 0, 0], [1, -1, 0]], atol=1e-6)
        assert g.dtype == dtype


def test_binary_cross_entropy_stable_for_huge_logits():
    for dtype in (np.float32, np.float64):
        f = np.array([[1e4], [-1e4]], dtype=dtype)
        v, g = ref.BinaryCrossEntropy("sum").value_and_grad(f, np.array([1.0, 0.0]))
        assert v == 0.0 and np.all(g == 0)
        v, g = ref.BinaryCrossEntropy("sum").value_and_grad(f, np.array([0.0, 1.0]))
        assert v == pytest.approx(2e4, rel=1e-6)
        np.testing.assert_array_equal(g, [[1.0], [-1.0]])
        assert g.dtype == dtype


@pytest.mark.parametrize("loss_cls", [ref.SquaredError, ref.BinaryCrossEntropy])
def test_one_dimensional_targets_accepted_for_single_output(loss_cls):
    f = np.array([[0.3], [-1.2], [2.0]])
    y = np.array([1.0, 0.0, 1.0])
    v1, g1 = loss_cls().value_and_grad(f, y)
    v2, g2 = loss_cls().value_and_grad(f, y.reshape(3, 1))
    assert v1 == v2 and g1.shape == (3, 1)
    np.testing.assert_array_equal(g1, g2)
    with pytest.raises(ValueError):
        loss_cls().value_and_grad(np.zeros((3, 2)), y)


def test_losses_expose_and_validate_reduction():
    for cls in (ref.SquaredError, ref.SoftmaxCrossEntropy, ref.BinaryCrossEntropy):
        assert cls().reduction == "mean" and cls("sum").reduction == "sum"
        with pytest.raises(ValueError, match="reduction"):
            cls("avg")


# --------------------------------------------------------------------------
# fit: batching and epoch loss
# --------------------------------------------------------------------------

@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_fit_matches_explicit_minibatch_loop(shuffle, drop_last):
    rng = np.random.default_rng(5)
    N, bs, epochs = 10, 4, 3                     # ragged last batch of 2
    X = rng.standard_normal((N, 3))
    y = rng.integers(0, 2, size=N)
    loss = ref.SoftmaxCrossEntropy()
    model = ref.MLP([3, 4, 2], dtype=np.float64, seed=1)
    hist = ref.fit(model, X, y, loss, ref.SGD(0.1), batch_size=bs, epochs=epochs,
                   seed=11, shuffle=shuffle, drop_last=drop_last)

    manual = ref.MLP([3, 4, 2], dtype=np.float64, seed=1)
    opt = ref.SGD(0.1)
    order_rng = np.random.default_rng(11)
    n_batches = N // bs if drop_last else math.ceil(N / bs)
    losses = []
    for _ in range(epochs):
        order = order_rng.permutation(N) if shuffle else np.arange(N)
        total, seen = 0.0, 0
        for j in range(n_batches):
            idx = order[j * bs:(j + 1) * bs]
            value, dout = loss.value_and_grad(manual.forward(X[idx]), y[idx])
            manual.backward(dout)
            opt.step(manual)
            total += value * len(idx)
            seen += len(idx)
        losses.append(total / seen)
    assert opt.t == epochs * n_batches
    np.testing.assert_array_equal(model.params, manual.params)
    assert hist["loss"] == losses
    assert hist.epochs == epochs


def test_fit_batch_size_larger_than_data_is_full_batch():
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((7, 2)), rng.standard_normal(7)
    m1, m2 = ref.MLP([2, 1], dtype=np.float64), ref.MLP([2, 1], dtype=np.float64)
    o1, o2 = ref.SGD(0.05), ref.SGD(0.05)
    h1 = ref.fit(m1, X, y, ref.SquaredError("sum"), o1, batch_size=None, epochs=4)
    h2 = ref.fit(m2, X, y, ref.SquaredError("sum"), o2, batch_size=100, epochs=4)
    assert o1.t == o2.t == 4
    np.testing.assert_array_equal(m1.params, m2.params)
    assert h1["loss"] == h2["loss"]


# --------------------------------------------------------------------------
# 8. schedules
# --------------------------------------------------------------------------

def test_schedule_values():
    c = ref.ConstantLR(0.1)
    assert [c(t) for t in (0, 1, 100)] == [0.1, 0.1, 0.1]

    s = ref.StepDecay(1.0, step_size=10, gamma=0.5)
    assert [s(t) for t in (0, 9, 10, 19, 25)] == [1.0, 1.0, 0.5, 0.5, 0.25]

    e = ref.ExponentialDecay(2.0, gamma=0.5)
    assert [e(t) for t in (0, 1, 3)] == [2.0, 1.0, 0.25]

    cw = ref.CosineWithWarmup(1.0, total_steps=10, warmup_steps=2, min_lr=0.0)
    assert cw(0) == 0.5 and cw(1) == 1.0                 # linear warm-up lr*(t+1)/warmup
    assert cw(2) == 1.0                                  # cosine starts at lr
    assert cw(6) == pytest.approx(0.5, abs=1e-15)        # half way through the decay
    assert cw(10) == 0.0 and cw(50) == 0.0               # min_lr after total_steps

    cm = ref.CosineWithWarmup(1.0, total_steps=4, min_lr=0.2)
    assert cm(0) == 1.0
    assert cm(2) == pytest.approx(0.6, abs=1e-15)        # 0.2 + 0.5*0.8*(1 + cos(pi/2))
    assert cm(4) == 0.2
