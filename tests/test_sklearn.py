"""fastfit.sklearn: scikit-learn's estimator checks, pipelines, grid search, and step-for-step
agreement with scikit-learn's own MLP estimators."""
import io as _stdio
import pickle
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import neural_network  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits, make_multilabel_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastfit as ff  # noqa: E402
from fastfit.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# ---------------------------------------------------------------- scikit-learn's own checks

@parametrize_with_checks([
    # scikit-learn's defaults at a small budget: its own MLP estimators pass these checks at max_iter=30
    MLPClassifier(max_iter=30),
    MLPRegressor(max_iter=30),
    MLPClassifier(hidden_layer_sizes=(8, 8), solver="sgd", learning_rate="adaptive", learning_rate_init=0.05,
                  alpha=1e-3, max_iter=100, dtype=np.float64, random_state=0),
])
def test_sklearn_estimator_checks(estimator, check, monkeypatch):
    # check_array_api_input (with NumPy arrays, since the estimators declare no array API
    # support) runs only where SCIPY_ARRAY_API=1; scikit-learn reads it when the check runs.
    # The pandas checks run where pandas is installed and skip (saying so) where it is not.
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


@pytest.mark.parametrize("ours_cls, sk_cls", [(MLPClassifier, neural_network.MLPClassifier),
                                              (MLPRegressor, neural_network.MLPRegressor)])
def test_parameters_and_defaults_are_sklearns(ours_cls, sk_cls):
    """Every parameter of scikit-learn's estimator, with its default, plus fastfit's dtype and n_threads."""
    import inspect
    sk = sk_cls().get_params()
    ours = ours_cls().get_params()
    assert ours.pop("dtype") is np.float32 and ours.pop("n_threads") is None
    assert ours == sk
    # the same positional parameters, in the same order
    def positional(cls):
        return [p.name for p in inspect.signature(cls).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional(ours_cls) == positional(sk_cls)


# ---------------------------------------------------------------- agreement with scikit-learn

def _problem(kind, n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    if kind == "regression":
        return X, np.stack([X[:, 0] * X[:, 1], np.sin(X[:, 2]), X[:, 3]], axis=1)
    if kind == "regression-1d":
        return X, X[:, 0] - 2 * X[:, 1] ** 2
    if kind == "binary":
        return X, (X[:, 0] + X[:, 1] > 0).astype(int)
    if kind == "multiclass":
        return X, np.digitize(X[:, 0] + 0.5 * X[:, 2], [-0.5, 0.5])
    if kind == "multilabel":
        return X, np.stack([X[:, 0] > 0, X[:, 1] > 0.3, X[:, 0] * X[:, 2] > 0], axis=1).astype(int)
    raise ValueError(kind)


def _synced_pair(kind, steps=3, **params):
    """scikit-learn's estimator and ours from the same weights, then `steps` full-batch epochs each."""
    X, y = _problem(kind)
    ours_cls, sk_cls = ((MLPRegressor, neural_network.MLPRegressor) if kind.startswith("regression")
                        else (MLPClassifier, neural_network.MLPClassifier))
    common = dict(hidden_layer_sizes=(6,), batch_size=X.shape[0], shuffle=False, max_iter=1,
                  warm_start=True, random_state=0, tol=0.0, n_iter_no_change=1000, alpha=0.0)
    common.update(params)
    sk = sk_cls(**common).fit(X, y)
    ours = ours_cls(dtype=np.float64, **common).fit(X, y)
    ours.coefs_, ours.intercepts_ = sk.coefs_, sk.intercepts_
    # warm-start fits: both keep the weights and start a fresh optimizer
    sk.set_params(max_iter=steps).fit(X, y)
    ours.set_params(max_iter=steps).fit(X, y)
    return ours, sk, X, y


KINDS = ["regression", "regression-1d", "binary", "multiclass", "multilabel"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_steps_match_sklearn(kind, momentum):
    """Loss scale, gradient scale and momentum convention are scikit-learn's: same weights, same losses."""
    ours, sk, X, _ = _synced_pair(kind, solver="sgd", learning_rate_init=0.05, momentum=momentum,
                                  nesterovs_momentum=False)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_[-3:], sk.loss_curve_[-3:], rtol=1e-10)
    assert ours.out_activation_ == sk.out_activation_ and ours.n_outputs_ == sk.n_outputs_
    if kind.startswith("regression"):
        assert ours.predict(X).shape == sk.predict(X).shape
        np.testing.assert_allclose(ours.predict(X), sk.predict(X), rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
        np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["regression", "multiclass"])
def test_nesterov_matches_sklearn_at_the_lookahead_point(kind):
    """scikit-learn's Nesterov parameters are fastfit's look-ahead point psi = phi - lr*beta*m (docs/math.md)."""
    ours, sk, _, _ = _synced_pair(kind, solver="sgd", learning_rate_init=0.05, momentum=0.9,
                                  nesterovs_momentum=True)
    np.testing.assert_allclose(_lookahead(ours), _flat(sk), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_[-3:], sk.loss_curve_[-3:], rtol=1e-10)


def _flat(sk):
    """scikit-learn's weights in fastfit's flat layout (W (out, in), b, layer by layer)."""
    return np.concatenate([np.concatenate([c.T.ravel(), b]) for c, b in zip(sk.coefs_, sk.intercepts_)])


def _lookahead(ours):
    """Where scikit-learn's Nesterov parameters are: psi = phi - lr_t*beta*m (docs/math.md)."""
    opt = ours._optimizer
    return ours.model_.params - opt.lr_at(opt.t) * opt.momentum * opt.state_buffers()["m"]


def _assert_same_fit(ours, sk, nesterov=False, rtol=1e-10, loss_rtol=1e-10):
    if nesterov:
        np.testing.assert_allclose(_lookahead(ours), _flat(sk), rtol=rtol, atol=1e-12)
    else:
        for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)
    assert ours.n_iter_ == sk.n_iter_ and ours.t_ == sk.t_
    np.testing.assert_allclose(ours.loss_curve_, sk.loss_curve_, rtol=loss_rtol)


@pytest.mark.parametrize("kind", KINDS)
def test_adam_steps_match_sklearn(kind):
    """Adam with scikit-learn's epsilon placement (Adam(convention="sklearn")): the same steps."""
    for epsilon in (1e-20, 1e-8, 1e-3):
        ours, sk, _, _ = _synced_pair(kind, solver="adam", learning_rate_init=1e-2, epsilon=epsilon, steps=5)
        for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ours.loss_curve_[-5:], sk.loss_curve_[-5:], rtol=1e-8)


def test_initial_weights_are_sklearns():
    """The same random_state draws the same Glorot-uniform weights: a step of lr=1e-300 changes no
    float64 weight, so both estimators' weights after it are their initial weights."""
    X, y = _problem("multiclass", n=50)
    params = dict(hidden_layer_sizes=(7, 5), solver="sgd", momentum=0.0, learning_rate_init=1e-300,
                  max_iter=1, random_state=3)
    sk = neural_network.MLPClassifier(**params).fit(X, y)
    ours = MLPClassifier(dtype=np.float64, **params).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_array_equal(a, b)
    bound = np.sqrt(6 / (4 + 7))
    assert 0.9 * bound < np.abs(ours.coefs_[0]).max() < bound  # U(-a, a) with a = sqrt(6/(in+out))
    other = MLPClassifier(dtype=np.float64, **{**params, "random_state": 4}).fit(X, y)
    assert not np.array_equal(other.coefs_[0], ours.coefs_[0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_alpha_is_sklearns_penalty(kind, solver):
    """alpha: the same gradient (alpha*W/batch) and the same reported loss (data + alpha/2 ||W||^2 / n)."""
    ours, sk, _, _ = _synced_pair(kind, solver=solver, alpha=0.3, learning_rate_init=0.05, momentum=0.9,
                                  nesterovs_momentum=False)
    _assert_same_fit(ours, sk, rtol=1e-8, loss_rtol=1e-9)
    plain, _, _, _ = _synced_pair(kind, solver=solver, alpha=0.0, learning_rate_init=0.05, momentum=0.9,
                                  nesterovs_momentum=False)
    assert plain.loss_curve_[-1] < ours.loss_curve_[-1]  # the penalty is in the reported loss


@pytest.mark.parametrize("nesterov", [False, True])
def test_alpha_with_several_batches_per_epoch(nesterov):
    """Minibatches in the same order: the same weights; the loss's penalty within an epoch is
    interpolated between the epoch's first and last weights, close to scikit-learn's per-batch sum."""
    # a large alpha, so that the penalty is a tenth of the loss and the weights move fast under it
    ours, sk, _, _ = _synced_pair("multiclass", solver="sgd", alpha=0.5, batch_size=16, learning_rate_init=0.05,
                                  momentum=0.9, nesterovs_momentum=nesterov, steps=4)
    _assert_same_fit(ours, sk, nesterov=nesterov, loss_rtol=1e-3)


@pytest.mark.parametrize("kind", ["regression", "multiclass", "multilabel"])
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_invscaling_is_sklearns(kind, momentum, nesterov):
    """learning_rate="invscaling": after each epoch lr = learning_rate_init / (t_+1)^power_t, and
    scikit-learn's velocity carries over: the same trajectory, minibatches included."""
    ours, sk, _, _ = _synced_pair(kind, solver="sgd", learning_rate="invscaling", power_t=0.25, batch_size=16,
                                  learning_rate_init=0.1, momentum=momentum, nesterovs_momentum=nesterov,
                                  steps=4)
    _assert_same_fit(ours, sk, nesterov=nesterov)
    assert ours._learning_rate == sk._optimizer.learning_rate == 0.1 / (ours.t_ + 1) ** 0.25


@pytest.mark.parametrize("nesterov", [False, True])
def test_adaptive_is_sklearns(nesterov):
    """learning_rate="adaptive": a stall divides the rate by 5 instead of stopping, until it is <= 1e-6."""
    # tol=10: no epoch improves enough, so every second epoch divides the rate by 5
    ours, sk, _, _ = _synced_pair("multiclass", solver="sgd", learning_rate="adaptive", tol=10.0,
                                  n_iter_no_change=1, learning_rate_init=0.1, momentum=0.9,
                                  nesterovs_momentum=nesterov, steps=6)
    _assert_same_fit(ours, sk, nesterov=nesterov)
    assert ours._learning_rate == pytest.approx(sk._optimizer.learning_rate, rel=1e-15)
    assert ours._learning_rate == pytest.approx(0.1 / 5 ** 3)
    # a rate that reaches 1e-6 stops the fit, as in scikit-learn
    ours, sk, _, _ = _synced_pair("regression", solver="sgd", learning_rate="adaptive", tol=10.0,
                                  n_iter_no_change=1, learning_rate_init=1e-5, momentum=0.5, steps=50)
    _assert_same_fit(ours, sk, nesterov=True)
    assert ours.n_iter_ < 50


def test_learning_rate_schedules_leave_adam_alone():
    """scikit-learn's Adam ignores learning_rate; so do these estimators."""
    ours, sk, _, _ = _synced_pair("multiclass", solver="adam", learning_rate="invscaling", learning_rate_init=0.01,
                                  batch_size=16, steps=3)
    _assert_same_fit(ours, sk, rtol=1e-8, loss_rtol=1e-8)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_sparse_input(fmt, cls):
    """CSR and CSC X fit and predict as their dense copies do (densified a run of batches at a time)."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = _problem("multiclass" if cls is MLPClassifier else "regression-1d", n=90)
    X[np.abs(X) < 0.8] = 0.0
    S = scipy_sparse.random(1, 1, format=fmt).__class__(X)
    params = dict(hidden_layer_sizes=(8,), max_iter=5, batch_size=16, dtype=np.float64, random_state=0)
    dense = cls(**params).fit(X, y)
    sparse = cls(**params).fit(S, y)
    np.testing.assert_array_equal(sparse.model_.params, dense.model_.params)
    np.testing.assert_array_equal(sparse.predict(S), dense.predict(X))
    assert sparse.score(S, y) == dense.score(X, y)
    early = cls(early_stopping=True, **params).fit(S, y)  # the validation split keeps X sparse
    assert len(early.validation_scores_) == early.n_iter_


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh"])
def test_other_activations_are_refused(activation):
    X, y = _problem("binary", n=20)
    for cls in (MLPClassifier, MLPRegressor):
        with pytest.raises(ValueError, match="activation='%s' is not available: fastfit trains ReLU" % activation):
            cls(activation=activation).fit(X, y)
    with pytest.raises(ValueError, match="activation must be 'relu'"):
        MLPClassifier(activation="softplus").fit(X, y)


def test_accepted_sklearn_parameters():
    """max_fun (lbfgs only) is accepted and ignored; n_iter_no_change may be np.inf."""
    X, y = _problem("binary", n=40)
    a = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0, max_fun=7).fit(X, y)
    b = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(a.model_.params, b.model_.params)
    c = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, tol=10.0, n_iter_no_change=np.inf,
                      random_state=0).fit(X, y)
    assert c.n_iter_ == 5
    # validation_fraction=0 is fine without early stopping (as in scikit-learn)
    MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, validation_fraction=0.0).fit(X, y)


# ---------------------------------------------------------------- in scikit-learn's tools

def test_pipeline_with_scaler():
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPClassifier(hidden_layer_sizes=(32,), max_iter=100, random_state=0))])
    pipe.fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.93
    proba = pipe.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    mlp = pipe.named_steps["mlp"]
    assert mlp.out_activation_ == "logistic" and mlp.n_outputs_ == 1
    assert [c.shape for c in mlp.coefs_] == [(30, 32), (32, 1)]
    # without the scaler, the raw features (up to ~4000) train far worse
    raw = clone(pipe.named_steps["mlp"]).fit(X_train, y_train)
    assert raw.score(X_test, y_test) < pipe.score(X_test, y_test)


def test_grid_search_on_digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    grid = GridSearchCV(MLPClassifier(max_iter=30, random_state=0),
                        {"hidden_layer_sizes": [(16,), (64,)], "learning_rate_init": [1e-4, 1e-2]}, cv=3)
    grid.fit(X_train, y_train)
    # 30 epochs at 1e-4 leave the network far from trained: a sensible search rejects that rate
    assert grid.best_params_["learning_rate_init"] == 1e-2
    scores = dict(zip(map(str, grid.cv_results_["params"]), grid.cv_results_["mean_test_score"]))
    assert max(scores.values()) == grid.best_score_ > 0.9
    assert grid.score(X_test, y_test) > 0.9
    assert grid.best_estimator_.classes_.tolist() == list(range(10))
    assert grid.best_estimator_.out_activation_ == "softmax"


# ---------------------------------------------------------------- kinds of targets

def test_multilabel():
    X, Y = make_multilabel_classification(n_samples=300, n_features=10, n_classes=4, random_state=0)
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=200, random_state=0)
    clf.fit(X_train, Y_train)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    assert clf.classes_.tolist() == [0, 1, 2, 3]
    pred = clf.predict(X_test)
    assert pred.shape == Y_test.shape and pred.dtype == Y_test.dtype and set(np.unique(pred)) <= {0, 1}
    proba = clf.predict_proba(X_test)
    assert proba.shape == Y_test.shape and proba.min() >= 0 and proba.max() <= 1
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    baseline = np.mean(Y_test == (Y_train.mean(axis=0) > 0.5))  # each label's majority value
    assert np.mean(pred == Y_test) > baseline + 0.1
    assert clf.score(X_test, Y_test) > 0.3  # subset accuracy, as scikit-learn scores multi-label


def test_multiclass_and_string_labels():
    X, y = _problem("multiclass", n=300)
    labels = np.array(["low", "mid", "high"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100, random_state=0)
    clf.fit(X, labels)
    assert clf.classes_.tolist() == ["high", "low", "mid"]
    assert clf.out_activation_ == "softmax" and clf.n_outputs_ == 3
    assert clf.predict(X).dtype == labels.dtype
    assert clf.score(X, labels) > 0.9
    proba = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))


def test_multi_output_regression():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(600, 4))
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2], X[:, 0] + X[:, 3]], axis=1)
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, random_state=0)
    reg = MLPRegressor(hidden_layer_sizes=(64,), learning_rate_init=0.01, max_iter=200, random_state=0)
    reg.fit(X_train, Y_train)
    assert reg.n_outputs_ == 3 and reg.out_activation_ == "identity"
    pred = reg.predict(X_test)
    assert pred.shape == Y_test.shape and pred.dtype == np.float64
    assert reg.score(X_test, Y_test) > 0.9
    # one output: predictions are 1-D, for y given 1-D or as a column
    one = clone(reg).fit(X_train, Y_train[:, 0])
    assert one.predict(X_test).shape == (len(X_test),)
    column = clone(reg).fit(X_train, Y_train[:, :1])
    np.testing.assert_array_equal(column.predict(X_test), one.predict(X_test))


# ---------------------------------------------------------------- fitting behaviour

def test_partial_fit_equals_fit_epochs():
    X, y = _problem("multiclass", n=120)
    params = dict(hidden_layer_sizes=(8,), learning_rate_init=0.01, shuffle=False, random_state=3, batch_size=32)
    whole = MLPClassifier(max_iter=3, **params).fit(X, y)
    parts = MLPClassifier(**params)
    for _ in range(3):
        parts.partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_array_equal(parts.model_.params, whole.model_.params)
    assert parts.n_iter_ == 1 and whole.n_iter_ == 3
    assert parts.t_ == whole.t_ == 360
    np.testing.assert_allclose(parts.loss_curve_, whole.loss_curve_)


def test_partial_fit_classes():
    X, y = _problem("multiclass", n=60)
    clf = MLPClassifier(hidden_layer_sizes=(4,))
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2, 3])  # not every class in every batch
    assert clf.classes_.tolist() == [0, 1, 2, 3] and clf.n_outputs_ == 4
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X, y + 3)
    with pytest.raises(ValueError, match="not the same as on last call"):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    reg = MLPRegressor(hidden_layer_sizes=(4,), random_state=0)
    for chunk in np.array_split(np.arange(60), 3):
        reg.partial_fit(X[chunk], X[chunk, 0])
    assert len(reg.loss_curve_) == 3 and reg.t_ == 60


def test_convergence_rule_and_warning():
    X, y = _problem("binary", n=200)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=500, tol=1e-2, n_iter_no_change=2,
                        learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.n_iter_ < 500 and len(clf.loss_curve_) == clf.n_iter_
    # the rule: stop once the loss has not improved by tol for more than n_iter_no_change epochs
    best, count = np.inf, 0
    for i, loss in enumerate(clf.loss_curve_):
        count = count + 1 if loss > best - clf.tol else 0
        best = min(best, loss)
        assert (count > clf.n_iter_no_change) == (i == clf.n_iter_ - 1)
    assert clf.best_loss_ == min(clf.loss_curve_)


def test_early_stopping_restores_best_validation_weights():
    X, y = load_digits(return_X_y=True)
    X = X[:600] / 16.0
    y = y[:600]
    clf = MLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.02, max_iter=200, early_stopping=True,
                        n_iter_no_change=3, validation_fraction=0.2, random_state=0)
    clf.fit(X, y)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_ < 200
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # the same split as the estimator's, and scikit-learn's: the random state draws the initial
    # weights (coefs, then intercepts, layer by layer), then the split (stratified for binary y only)
    rs = np.random.RandomState(0)
    for fan_in, fan_out in [(64, 32), (32, 10)]:
        rs.uniform(size=(fan_in, fan_out))
        rs.uniform(size=fan_out)
    _, X_val, _, y_val = train_test_split(X, y, random_state=rs, test_size=0.2)
    assert clf.score(X_val, y_val) == clf.best_validation_score_
    reg = MLPRegressor(hidden_layer_sizes=(16,), early_stopping=True, max_iter=50, random_state=0)
    Xr, yr = _problem("regression", n=200)
    reg.fit(Xr, yr)
    assert reg.best_validation_score_ == max(reg.validation_scores_)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_early_stopping_is_sklearns(kind):
    """The same random_state gives the same initial weights and the same validation split as
    scikit-learn's; with full batches in order the fits are step for step the same."""
    X, y = _problem(kind, n=150)
    params = dict(hidden_layer_sizes=(8,), early_stopping=True, validation_fraction=0.2, shuffle=False,
                  learning_rate_init=0.02, n_iter_no_change=3, tol=1e-3, max_iter=300, random_state=1)
    ours_cls, sk_cls = ((MLPRegressor, neural_network.MLPRegressor) if kind == "regression"
                        else (MLPClassifier, neural_network.MLPClassifier))
    sk = sk_cls(**params).fit(X, y)
    ours = ours_cls(dtype=np.float64, **params).fit(X, y)
    assert ours.n_iter_ == sk.n_iter_ < 300
    np.testing.assert_allclose(ours.validation_scores_, sk.validation_scores_, rtol=1e-8)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)


def test_warm_start_continues_and_checks_classes():
    X, y = _problem("multiclass", n=120)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, warm_start=True, random_state=0).fit(X, y)
    after_first = clf.model_.params.copy()
    first_curve = list(clf.loss_curve_)
    model = clf.model_
    clf.fit(X, y)
    assert clf.model_ is model and not np.array_equal(after_first, clf.model_.params)
    assert clf.loss_curve_[:5] == first_curve and len(clf.loss_curve_) == 10 and clf.n_iter_ == 5
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X[y < 2], y[y < 2])
    cold = clf.set_params(warm_start=False).fit(X, y)
    assert cold.model_ is not model and len(cold.loss_curve_) == 5


def test_fitted_attributes_pickle_and_views():
    X, y = _problem("binary", n=80)
    clf = MLPClassifier(hidden_layer_sizes=(5, 3), max_iter=10, random_state=0)
    assert not hasattr(clf, "coefs_")
    clf.fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(4, 5), (5, 3), (3, 1)]
    assert [b.shape for b in clf.intercepts_] == [(5,), (3,), (1,)]
    assert clf.n_layers_ == 4 and clf.n_features_in_ == 4 and clf.n_iter_ == 10
    assert isinstance(clf.model_, ff.MLP) and clf.model_.sizes == (4, 5, 3, 1)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    # coefs_ are views of the network, as writable as scikit-learn's lists of arrays
    clf.intercepts_[-1][...] = 50.0
    assert (clf.predict(X) == 1).all()
    clf.coefs_ = restored.coefs_
    clf.intercepts_ = restored.intercepts_
    np.testing.assert_array_equal(clf.predict_proba(X), restored.predict_proba(X))
    with pytest.raises(ValueError, match="shape"):
        clf.coefs_ = [c.T for c in restored.coefs_]


@pytest.mark.parametrize("params, match", [
    (dict(solver="lbfgs"), "lbfgs"),
    (dict(alpha=-1.0), "alpha"),
    (dict(learning_rate="optimal"), "learning_rate must be one of"),
    (dict(power_t=-0.5), "power_t"),
    (dict(max_fun=0), "max_fun"),
    (dict(n_iter_no_change=2.5), "n_iter_no_change"),
    (dict(early_stopping=True, validation_fraction=0.0), "validation_fraction > 0"),
    (dict(momentum=1.0), "momentum"),
    (dict(hidden_layer_sizes=(4, 0)), "hidden_layer_sizes"),
    (dict(batch_size=0), "batch_size"),
    (dict(learning_rate_init=-1.0), "learning_rate_init"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(n_iter_no_change=0), "n_iter_no_change"),
])
def test_parameter_errors(params, match):
    X, y = _problem("binary", n=20)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(X, y)
    with pytest.raises(TypeError, match="dtype"):
        MLPRegressor(dtype=np.int32).fit(X, y.astype(float))


def test_poisson_loss_is_refused():
    X, y = _problem("regression-1d", n=20)
    with pytest.raises(ValueError, match="loss='poisson' is not available"):
        MLPRegressor(loss="poisson").fit(X, np.abs(y))
    with pytest.raises(ValueError, match="loss must be 'squared_error'"):
        MLPRegressor(loss="absolute_error").fit(X, y)


def test_single_class_and_dtype_and_verbose():
    X, y = _problem("binary", n=30)
    with pytest.raises(ValueError, match="only one class"):
        MLPClassifier().fit(X, np.zeros(30))
    reg64 = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, dtype=np.float64, random_state=0).fit(X, y)
    assert reg64.model_.dtype == np.float64 and reg64.coefs_[0].dtype == np.float64
    out = _stdio.StringIO()
    with redirect_stdout(out):
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, verbose=True, random_state=0).fit(X, y)
    assert "Iteration 1, loss = " in out.getvalue() and "Iteration 2, loss = " in out.getvalue()


def test_assigning_one_layer_writes_it_into_the_network():
    X, y = _problem("multiclass")
    ours = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
    W, b = np.random.default_rng(0).standard_normal(ours.coefs_[0].shape), np.ones(5)
    ours.coefs_[0] = W
    ours.intercepts_[-2] = b
    np.testing.assert_array_equal(ours.coefs_[0], W.astype(np.float32))
    np.testing.assert_array_equal(ours.model_.layers[0].W, W.T.astype(np.float32))
    np.testing.assert_array_equal(ours.model_.layers[0].b, b)
    before = ours.model_.params.copy()
    for index, value, exc in [(0, np.ones((2, 2)), ValueError), (1, np.full(ours.coefs_[1].shape, np.nan), ValueError),
                              (0, np.full(W.shape, 1 + 1j), TypeError), (0, np.full(W.shape, "2.5"), TypeError),
                              (5, W, IndexError), (slice(0, 1), [W], TypeError)]:
        with pytest.raises(exc):
            ours.coefs_[index] = value
    np.testing.assert_array_equal(ours.model_.params, before)
    assert pickle.loads(pickle.dumps(ours.coefs_))[0].shape == W.shape


@pytest.mark.parametrize("change", ["random_state", "one_class", "n_threads"])
def test_a_refit_that_fails_its_checks_leaves_the_fitted_estimator_as_it_was(change):
    X, y = _problem("multiclass")
    ours = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
    before = (ours.classes_.copy(), ours.n_features_in_, ours.predict_proba(X).copy(), ours.model_)
    with pytest.raises(ValueError):
        if change == "random_state":
            ours.set_params(random_state="abc").fit(X, np.where(y == y[0], "spam", "ham"))
        elif change == "n_threads":
            ours.set_params(n_threads=300).fit(X, np.where(y == y[0], "spam", "ham"))
        else:
            ours.fit(np.hstack([X, X]), np.zeros(len(X), int))
    ours.set_params(random_state=0, n_threads=None)
    np.testing.assert_array_equal(ours.classes_, before[0])
    assert ours.n_features_in_ == before[1] and ours.model_ is before[3]
    np.testing.assert_array_equal(ours.predict_proba(X), before[2])


def test_a_diverging_fit_raises_what_scikit_learn_raises():
    """A ValueError; the epochs before the divergence keep finite losses (the L2 penalty's sum
    of squares is taken in float64: in float32 it overflowed an epoch before the loss did)."""
    X, y = _problem("regression-1d")
    reg = MLPRegressor(hidden_layer_sizes=(5,), solver="sgd", learning_rate_init=10.0, max_iter=50, random_state=0)
    with pytest.raises(ValueError, match="not finite"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(X * 1e3, y * 1e3)
    assert len(reg.loss_curve_) >= 2 and np.isfinite(reg.loss_curve_).all()
    assert np.isfinite(reg.predict(X)).all()
