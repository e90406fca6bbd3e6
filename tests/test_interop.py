"""Weights that travel (fastfit.interop): PyTorch's state_dict convention, scikit-learn's layout."""
import warnings

import numpy as np
import pytest

import fastfit as ff
from fastfit import interop


def _model(sizes=(5, 8, 6, 3), dtype=np.float64, seed=0):
    model = ff.MLP(list(sizes), dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for layer in model.layers:  # non-zero biases, so that bias mistakes show
        layer.b[...] = rng.standard_normal(layer.b.shape)
    return model


def _X(n=17, d=5, seed=1):
    return np.random.default_rng(seed).standard_normal((n, d))


def _relu_mlp_numpy(X, weights, biases):
    """The nn.Sequential(Linear, ReLU, ..., Linear) function, written out: W (out, in)."""
    h = X
    for k, (W, b) in enumerate(zip(weights, biases)):
        h = h @ W.T + b
        if k < len(weights) - 1:
            h = np.maximum(h, 0)
    return h


# ---------------------------------------------------------------- state_dict

def test_state_dict_keys_shapes_and_copies():
    model = _model()
    sd = interop.state_dict(model)
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert [v.shape for v in sd.values()] == [(8, 5), (8,), (6, 8), (6,), (3, 6), (3,)]
    assert all(isinstance(v, np.ndarray) and v.dtype == model.dtype for v in sd.values())
    X = _X()
    np.testing.assert_allclose(
        _relu_mlp_numpy(X, [sd["0.weight"], sd["2.weight"], sd["4.weight"]], [sd["0.bias"], sd["2.bias"], sd["4.bias"]]),
        model.predict(X), rtol=1e-12, atol=1e-12)
    before = model.params.copy()
    for v in sd.values():
        v += 1.0  # copies: the model is untouched
    np.testing.assert_array_equal(model.params, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_state_dict_round_trip(dtype):
    src = _model(dtype=dtype, seed=3)
    dst = ff.MLP([5, 8, 6, 3], dtype=dtype, seed=9)
    assert interop.load_state_dict(dst, interop.state_dict(src)) is dst
    np.testing.assert_array_equal(dst.params, src.params)
    # values of another dtype (and plain lists) are cast to the model's
    sd64 = {k: v.astype(np.float64).tolist() for k, v in interop.state_dict(src).items()}
    dst2 = ff.MLP([5, 8, 6, 3], dtype=dtype, seed=9)
    interop.load_state_dict(dst2, sd64)
    np.testing.assert_array_equal(dst2.params, src.params)


def test_from_state_dict_infers_sizes():
    src = _model(sizes=(4, 7, 2), seed=5)
    built = interop.from_state_dict(interop.state_dict(src), dtype=np.float64)
    assert built.sizes == (4, 7, 2) and built.dtype == np.float64
    np.testing.assert_array_equal(built.params, src.params)
    single = interop.from_state_dict({"0.weight": np.ones((2, 3)), "0.bias": np.zeros(2)})
    assert single.sizes == (3, 2) and single.dtype == np.float32


def test_load_state_dict_errors_leave_model_unchanged():
    model = _model()
    good = interop.state_dict(model)
    before = model.params.copy()

    missing = dict(good)
    del missing["2.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['2.bias'\]"):
        interop.load_state_dict(model, missing)

    extra = dict(good, **{"6.weight": np.zeros((1, 3))})
    with pytest.raises(ValueError, match=r"unexpected keys \['6.weight'\]"):
        interop.load_state_dict(model, extra)

    prefixed = {"net." + k: v for k, v in good.items()}
    with pytest.raises(ValueError, match="prefix 'net.'"):
        interop.load_state_dict(model, prefixed)

    wrong = dict(good, **{"2.weight": np.zeros((6, 7))})
    with pytest.raises(ValueError, match=r"'2.weight'.*\(6, 7\).*layer 1.*\(6, 8\)"):
        interop.load_state_dict(model, wrong)

    transposed = dict(good, **{"0.weight": good["0.weight"].T})
    with pytest.raises(ValueError, match="transposed"):
        interop.load_state_dict(model, transposed)

    # a later bad value must not leave earlier layers written
    late_nan = {k: v + 1 for k, v in good.items()}
    late_nan["4.bias"] = np.array([0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        interop.load_state_dict(model, late_nan)

    with pytest.raises(TypeError):
        interop.load_state_dict(model, [("0.weight", good["0.weight"])])
    with pytest.raises(TypeError):
        interop.load_state_dict(model, dict(good, **{"0.bias": np.array(["a"] * 8)}))
    np.testing.assert_array_equal(model.params, before)


def test_from_state_dict_errors():
    with pytest.raises(ValueError, match="no '<index>.weight'"):
        interop.from_state_dict({})
    with pytest.raises(ValueError, match="gives 8 outputs"):
        interop.from_state_dict({"0.weight": np.ones((8, 3)), "0.bias": np.ones(8),
                                 "2.weight": np.ones((2, 7)), "2.bias": np.ones(2)})
    with pytest.raises(ValueError, match="missing keys"):
        interop.from_state_dict({"0.weight": np.ones((8, 3)), "0.bias": np.ones(8), "1.weight": np.ones((2, 8))})


# ---------------------------------------------------------------- scikit-learn layout

def test_sklearn_layout_round_trip():
    model = _model()
    coefs, intercepts = interop.to_sklearn(model)
    assert [c.shape for c in coefs] == [(5, 8), (8, 6), (6, 3)]
    assert [b.shape for b in intercepts] == [(8,), (6,), (3,)]
    for c, layer in zip(coefs, model.layers):
        np.testing.assert_array_equal(c, layer.W.T)
    scratch, _ = interop.to_sklearn(model)
    scratch[0][0, 0] += 1  # copies
    assert model.layers[0].W[0, 0] != scratch[0][0, 0]
    back = interop.from_sklearn(coefs, intercepts, dtype=np.float64)
    assert back.sizes == model.sizes
    np.testing.assert_array_equal(back.params, model.params)
    assert interop.from_sklearn(coefs, intercepts).dtype == np.float32


def test_from_sklearn_errors():
    with pytest.raises(ValueError, match="2 layers but intercepts has 1"):
        interop.from_sklearn([np.ones((3, 4)), np.ones((4, 2))], [np.ones(4)])
    with pytest.raises(ValueError, match="gives 4 outputs"):
        interop.from_sklearn([np.ones((3, 4)), np.ones((5, 2))], [np.ones(4), np.ones(2)])
    with pytest.raises(ValueError, match=r"intercepts\[0\]"):
        interop.from_sklearn([np.ones((3, 4))], [np.ones(3)])
    with pytest.raises(ValueError, match="empty"):
        interop.from_sklearn([], [])
    with pytest.raises(TypeError):
        interop.from_sklearn(object())


@pytest.fixture(scope="module")
def sk_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 5))
    y_reg = np.stack([X[:, 0] * X[:, 1], np.sin(X[:, 2])], axis=1)
    y_cls = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    return X, y_reg, y_cls


def test_real_sklearn_regressor_weights_both_ways(sk_data):
    neural_network = pytest.importorskip("sklearn.neural_network")
    X, y, _ = sk_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = neural_network.MLPRegressor(hidden_layer_sizes=(7, 4), max_iter=30, random_state=0).fit(X, y)
    # scikit-learn -> fastfit: the same function
    model = interop.from_sklearn(sk, dtype=np.float64)
    assert model.sizes == (5, 7, 4, 2)
    np.testing.assert_allclose(model.predict(X), sk.predict(X), rtol=1e-12, atol=1e-12)
    # fastfit -> scikit-learn: overwrite the estimator's weights, it predicts what fastfit does
    other = _model(sizes=(5, 7, 4, 2), seed=4)
    sk.coefs_, sk.intercepts_ = interop.to_sklearn(other)
    np.testing.assert_allclose(sk.predict(X), other.predict(X), rtol=1e-12, atol=1e-12)


def test_real_sklearn_classifier_output_activation(sk_data):
    neural_network = pytest.importorskip("sklearn.neural_network")
    X, _, y = sk_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = neural_network.MLPClassifier(hidden_layer_sizes=(6,), max_iter=30, random_state=0).fit(X, y)
    logits = interop.from_sklearn(sk.coefs_, sk.intercepts_, dtype=np.float64).predict(X)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, sk.predict_proba(X), rtol=1e-10, atol=1e-12)
    tanh = neural_network.MLPClassifier(hidden_layer_sizes=(3,), activation="tanh", max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tanh.fit(X, y)
    with pytest.raises(ValueError, match="activation='tanh'"):
        interop.from_sklearn(tanh)


def test_fastfit_estimator_is_accepted_by_from_sklearn(sk_data):
    pytest.importorskip("sklearn")
    from fastfit.sklearn import MLPRegressor
    X, y, _ = sk_data
    est = MLPRegressor(hidden_layer_sizes=(6,), max_iter=5, dtype=np.float64, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    model = interop.from_sklearn(est, dtype=np.float64)
    np.testing.assert_allclose(model.predict(X), est.predict(X), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- PyTorch itself

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_load_into_real_torch_sequential(dtype):
    torch = pytest.importorskip("torch")
    model = _model(dtype=dtype, seed=2)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    seq = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6), torch.nn.ReLU(),
                              torch.nn.Linear(6, 3)).to(tdtype)
    result = seq.load_state_dict({k: torch.from_numpy(v) for k, v in interop.state_dict(model).items()})
    assert not result.missing_keys and not result.unexpected_keys
    X = _X().astype(dtype)
    with torch.no_grad():
        out = seq(torch.from_numpy(X)).numpy()
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, model.predict(X), rtol=tol, atol=tol)


def test_torch_to_fastfit_with_tensors():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(5, 9), torch.nn.ReLU(), torch.nn.Linear(9, 2)).double()
    model = ff.MLP([5, 9, 2], dtype=np.float64, seed=0)
    interop.load_state_dict(model, seq.state_dict())  # torch tensors, taken as they are
    X = _X()
    with torch.no_grad():
        expected = seq(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12, atol=1e-12)
    # parameters that require grad are detached, not refused
    interop.load_state_dict(model, dict(seq.named_parameters()))
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12, atol=1e-12)
    built = interop.from_torch(seq)
    assert built.dtype == np.float64 and built.sizes == (5, 9, 2)
    np.testing.assert_array_equal(built.params, model.params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_torch_and_back(dtype):
    torch = pytest.importorskip("torch")
    model = _model(sizes=(5, 4, 4, 3), dtype=dtype, seed=6)
    seq = interop.to_torch(model)
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert seq[0].weight.dtype == (torch.float64 if dtype == np.float64 else torch.float32)
    X = _X().astype(dtype)
    with torch.no_grad():
        out = seq(torch.from_numpy(X)).numpy()
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, model.predict(X), rtol=tol, atol=tol)
    # independent copies
    with torch.no_grad():
        seq[0].weight.add_(1.0)
    assert not np.allclose(seq[0].weight.detach().numpy(), model.layers[0].W)
    back = interop.from_torch(interop.to_torch(model))
    assert back.dtype == model.dtype
    np.testing.assert_array_equal(back.params, model.params)


def test_from_torch_refuses_other_architectures():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    with pytest.raises(ValueError, match="Tanh"):
        interop.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="without bias"):
        interop.from_torch(nn.Sequential(nn.Linear(3, 4, bias=False)))
    with pytest.raises(ValueError, match="end with a Linear"):
        interop.from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))
    with pytest.raises(TypeError):
        interop.from_torch(nn.Linear(3, 4))
