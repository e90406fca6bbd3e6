"""scikit-learn estimators over fastfit: ``MLPClassifier`` and ``MLPRegressor``.

    >>> from fastfit.sklearn import MLPClassifier
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0).fit(X, y)
    >>> clf.predict(X_test), clf.predict_proba(X_test), clf.score(X_test, y_test)

They take scikit-learn's ``MLPClassifier``/``MLPRegressor`` parameters, with
scikit-learn's defaults and meanings, pass scikit-learn's estimator checks, take
dense or sparse (CSR/CSC) X, and work in ``Pipeline``, ``GridSearchCV``,
``cross_val_score`` and friends. scikit-learn (1.6 or newer) must be installed;
fastfit itself does not need it.

How they relate to scikit-learn's own MLP estimators
----------------------------------------------------
The same, for ``activation="relu"`` and the solvers "sgd" and "adam":

- The initial weights. Glorot's uniform draw, W and b ~ U(-a, a) with
  a = sqrt(6/(fan_in + fan_out)), taken from ``random_state`` in scikit-learn's
  order: the same ``random_state`` gives the same initial weights (and, with
  ``early_stopping``, the same validation split).
- The objective and its scale. fastfit's losses use the "mean" reduction
  (docs/math.md): squared error is averaged over samples *and* outputs, binary
  cross-entropy likewise. scikit-learn's squared loss is *half* the mean squared
  error, and its multi-label log-loss is summed over labels; its gradients are
  those of the per-sample sum over outputs divided by the batch size (for
  squared error without the 1/2 of the reported loss). These estimators
  rescale so that ``loss_curve_``, ``loss_``, ``best_loss_`` and ``tol`` are on
  scikit-learn's scale and ``learning_rate_init`` means the same step: the SGD
  learning rate is multiplied, and Adam's epsilon divided, by the ratio of the
  two gradients (``n_outputs/2`` for regression, the number of labels for
  multi-label classification, 1 otherwise).
- ``alpha``, the L2 penalty on the weights (not the biases): the gradient gains
  ``alpha * W / batch_size``, as in scikit-learn. It is fastfit's loss penalty
  ``l2`` (``l2=alpha`` for the classifier; ``l2=2*alpha`` for the regressor,
  whose fastfit loss is twice scikit-learn's per output). The reported loss adds
  ``alpha/2 * ||W||^2`` per batch, divided by the number of samples, as
  scikit-learn does; the weights inside an epoch are interpolated between the
  epoch's first and last (exact for one batch per epoch).
- ``solver="sgd"``: scikit-learn's momentum is PyTorch's (velocity
  ``v <- momentum*v - lr*g``); it maps exactly onto fastfit's
  ``SGD(lr=learning_rate_init/(1-momentum), momentum, nesterov)`` (docs/math.md,
  "Matching other libraries"). With Nesterov momentum scikit-learn's parameters
  are the look-ahead point; fastfit reports the trajectory point, which differs
  by ``momentum * velocity``.
- ``learning_rate`` (with "sgd" only, as in scikit-learn): "constant";
  "invscaling", where after each epoch the rate becomes
  ``learning_rate_init / (t_ + 1)**power_t``, ``t_`` counting the training
  samples seen; "adaptive", which divides the rate by 5 instead of stopping
  when the loss (or validation score) has not improved by ``tol`` for more than
  ``n_iter_no_change`` epochs, and stops once the rate is at most 1e-6. When the
  rate changes, the momentum buffer is rescaled so that scikit-learn's velocity
  carries over unchanged.
- ``solver="adam"``: scikit-learn's Adam puts epsilon on the un-corrected
  ``sqrt(v)``; these estimators use fastfit's ``Adam(convention="sklearn")``,
  which does the same.
- Convergence: training stops when the training loss (or, with
  ``early_stopping``, the validation score: accuracy or R^2) has not improved
  by ``tol`` for more than ``n_iter_no_change`` consecutive epochs; otherwise
  after ``max_iter`` epochs, with a ConvergenceWarning. With
  ``early_stopping`` the parameters of the epoch with the best validation score
  are restored.

So with the same data, parameters and ``random_state`` the two start from the
same weights and take steps of the same size; only the order of the batches
(fastfit draws its own permutations) and rounding differ, and the results agree
within the noise of that order.

Different or missing:

- ``activation`` must be "relu" (fastfit trains ReLU networks); "identity",
  "logistic" and "tanh" are refused. ``solver`` is "sgd" or "adam": "lbfgs" is
  refused, and ``max_fun`` (an lbfgs setting) is accepted and ignored. The
  regressor's ``loss`` is "squared_error" ("poisson" is refused). ``fit`` takes
  no ``sample_weight``.
- ``momentum`` must be < 1.
- ``dtype`` (float32 by default, fastfit's own parameter) is the precision the
  network trains in; training inputs are converted to it. ``predict``,
  ``predict_proba`` and ``score`` evaluate the trained weights in float64 and
  return float64 (float32 BLAS kernels round a row differently depending on its
  place in the batch; scikit-learn expects a row's prediction not to depend on
  the other rows). ``n_threads`` is passed to ``fastfit.fit``.
- A single class in ``y`` is refused (ValueError) rather than fitted.
- A diverging fit raises ``fastfit.NonFiniteLossError`` at once, rather than
  finishing with non-finite weights.
"""
import contextlib
import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
    from sklearn.utils.validation import check_is_fitted, column_or_1d
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastfit.sklearn needs scikit-learn: pip install scikit-learn") from exc

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

from . import _checks
from ._threads import MAX_THREADS
from .losses import BinaryCrossEntropy, SoftmaxCrossEntropy, SquaredError
from .network import MLP
from .optim import SGD, Adam
from .training import fit as _ff_fit

__all__ = ["MLPClassifier", "MLPRegressor"]

_SEED_MAX = np.iinfo(np.int32).max


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def _is_int(value):
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _is_real(value):
    return isinstance(value, numbers.Real) and not _is_bool(value)


#: The sparse formats the estimators take (as scikit-learn's MLP estimators do).
_SPARSE_FORMATS = ["csr", "csc"]


#: scikit-learn's activations; fastfit trains the ReLU networks only.
_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
_LEARNING_RATES = ("constant", "invscaling", "adaptive")


class _EpochRate:
    """A learning rate the estimator changes between epochs ("invscaling", "adaptive").

    fastfit's optimizers take a schedule as any callable of the step number; this
    one returns whatever ``value`` holds, and the estimator sets it at epoch ends."""

    def __init__(self, value):
        self.value = float(value)

    def __call__(self, t):
        return self.value

    def __repr__(self):
        return repr(self.value)


@contextlib.contextmanager
def _unchanged_on_error(estimator):
    """The estimator's attributes as they were when the block raises (a refit that fails its
    checks leaves the fitted classes_, n_features_in_ and network in place)."""
    before = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(before)
        raise


class _LayerArrays(list):
    """coefs_ or intercepts_: a list of views of the network's arrays, whose entries can be
    assigned: ``coefs_[k] = W`` copies W into the network, checked. Pickles as a plain list."""

    def __init__(self, estimator, name, views):
        super().__init__(views)
        self._estimator, self._name = estimator, name

    def __setitem__(self, k, value):
        if isinstance(k, slice):
            raise TypeError(f"assign {self._name} one layer at a time ({self._name}[k] = array), "
                            f"or all of them ({self._name} = [...])")
        k = range(len(self))[k]  # negative indices as a list takes them; IndexError past the end
        self._estimator._set_weights(value, self._name, only=k)  # the entry is a view: it shows the new values

    def __reduce__(self):
        return list, (list(self),)


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, fitting, the network."""

    # The parameters both estimators take, in scikit-learn's order (the regressor adds ``loss``).
    def _set_common(self, hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
                    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose, warm_start,
                    momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2, epsilon,
                    n_iter_no_change, max_fun, dtype, n_threads):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads

    # ------------------------------------------------------------ parameters

    def _check_params(self):
        """Check every constructor parameter (scikit-learn checks them in fit, not __init__)."""
        hls = self.hidden_layer_sizes
        if _is_int(hls):
            hls = (hls,)
        try:
            hls = tuple(hls)
        except TypeError:
            raise ValueError(f"hidden_layer_sizes must be an int or a sequence of ints, got {self.hidden_layer_sizes!r}") from None
        if not all(_is_int(h) and h >= 1 for h in hls):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {self.hidden_layer_sizes!r}.")
        if any(h > _checks.BLAS_INT_MAX for h in hls):
            raise ValueError(f"hidden_layer_sizes must be at most {_checks.BLAS_INT_MAX} (BLAS's 32-bit sizes), "
                             f"got {self.hidden_layer_sizes!r}")
        if self.activation != "relu":
            if self.activation in _ACTIVATIONS:
                raise ValueError(f"activation={self.activation!r} is not available: fastfit trains ReLU networks "
                                 "only, so activation must be 'relu' (scikit-learn's "
                                 "sklearn.neural_network estimators fit the other activations)")
            raise ValueError(f"activation must be 'relu' (one of scikit-learn's {_ACTIVATIONS}; fastfit "
                             f"trains ReLU networks), got {self.activation!r}")
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"solver must be 'sgd' or 'adam' (fastfit has no 'lbfgs'), got {self.solver!r}")
        if self.learning_rate not in _LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {_LEARNING_RATES}, got {self.learning_rate!r}")
        if not (self.batch_size == "auto" or (_is_int(self.batch_size) and self.batch_size >= 1)):
            raise ValueError(f"batch_size must be 'auto' or an int >= 1, got {self.batch_size!r}")
        n_iter_no_change = self.n_iter_no_change
        checks = [
            ("alpha", _is_real(self.alpha) and np.isfinite(self.alpha) and self.alpha >= 0, "a number >= 0"),
            ("learning_rate_init", _is_real(self.learning_rate_init) and np.isfinite(self.learning_rate_init)
             and self.learning_rate_init > 0, "a number > 0"),
            ("power_t", _is_real(self.power_t) and np.isfinite(self.power_t) and self.power_t >= 0,
             "a number >= 0"),
            ("max_iter", _is_int(self.max_iter) and self.max_iter >= 1, "an int >= 1"),
            ("tol", _is_real(self.tol) and self.tol >= 0, "a number >= 0"),
            ("momentum", _is_real(self.momentum) and 0 <= self.momentum < 1,
             "a number in [0, 1) (fastfit's momentum needs momentum < 1)"),
            ("validation_fraction", _is_real(self.validation_fraction) and 0 <= self.validation_fraction < 1,
             "a number in [0, 1)"),
            ("beta_1", _is_real(self.beta_1) and 0 <= self.beta_1 < 1, "a number in [0, 1)"),
            ("beta_2", _is_real(self.beta_2) and 0 <= self.beta_2 < 1, "a number in [0, 1)"),
            ("epsilon", _is_real(self.epsilon) and np.isfinite(self.epsilon) and self.epsilon > 0, "a number > 0"),
            ("n_iter_no_change", (_is_int(n_iter_no_change) and n_iter_no_change >= 1)
             or (_is_real(n_iter_no_change) and n_iter_no_change == np.inf), "an int >= 1 or np.inf"),
            ("max_fun", _is_int(self.max_fun) and self.max_fun >= 1, "an int >= 1 (it is used by lbfgs only)"),
            ("n_threads", self.n_threads is None or (_is_int(self.n_threads) and 1 <= self.n_threads <= MAX_THREADS),
             f"None or an int in [1, {MAX_THREADS}]"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")
        for name in ("shuffle", "verbose", "warm_start", "nesterovs_momentum", "early_stopping"):
            value = getattr(self, name)
            if not (_is_bool(value) or _is_int(value)):
                raise ValueError(f"{name} must be a bool, got {value!r}")
        if self.early_stopping and self.validation_fraction == 0:
            raise ValueError("early_stopping=True needs validation_fraction > 0: it holds out that fraction "
                             "of the training data to score each epoch")
        dtype = _checks.model_dtype(self.dtype)
        return [int(h) for h in hls], dtype

    # ------------------------------------------------------------ fitted attributes

    def _fitted_model(self):
        model = self.__dict__.get("_model")
        if model is None:
            raise AttributeError(f"This {type(self).__name__} instance is not fitted yet: it has no weights")
        return model

    @property
    def coefs_(self):
        """Weights per layer in scikit-learn's layout, (in, out): views of the network's weights.
        ``coefs_[k] = W`` copies W into layer k, checked (as scikit-learn's replaces the layer)."""
        return _LayerArrays(self, "coefs_", [layer.W.T for layer in self._fitted_model().layers])

    @coefs_.setter
    def coefs_(self, value):
        self._set_weights(value, "coefs_")

    @property
    def intercepts_(self):
        """Biases per layer, (out,): views of the network's biases; ``intercepts_[k] = b`` copies b in."""
        return _LayerArrays(self, "intercepts_", [layer.b for layer in self._fitted_model().layers])

    @intercepts_.setter
    def intercepts_(self, value):
        self._set_weights(value, "intercepts_")

    def _set_weights(self, value, name, only=None):
        """Copy checked arrays into every layer's weights (coefs_) or biases (intercepts_), or
        into layer ``only`` alone (value is then that one array); nothing is written unless all check."""
        model = self._fitted_model()
        views = [layer.W.T if name == "coefs_" else layer.b for layer in model.layers]
        if only is None:
            value = list(value)
            if len(value) != len(views):
                raise ValueError(f"{name} needs {len(views)} arrays, got {len(value)}")
            pairs = list(enumerate(value))
        else:
            pairs = [(only, value)]
        staged = [(views[k], model._checked_values(views[k], v, f"{name}[{k}]")) for k, v in pairs]
        with model.exclusive(f"assigning {name}"):
            for target, arr in staged:
                target[...] = arr

    @property
    def model_(self):
        """The fitted fastfit.MLP (its output is the last layer's linear output)."""
        return self._fitted_model()

    # ------------------------------------------------------------ fitting

    def _loss_scales(self):
        """(factor of the reported loss, factor of the gradient): scikit-learn's over fastfit's."""
        raise NotImplementedError

    def _schedule_in_use(self):
        """scikit-learn changes the learning rate between epochs only with "sgd"."""
        return self.solver == "sgd" and self.learning_rate != "constant"

    def _make_optimizer(self, grad_scale):
        self._learning_rate = float(self.learning_rate_init)  # scikit-learn's rate now
        if self.solver == "adam":
            # scikit-learn's epsilon placement (docs/math.md): its Adam, step for step
            return Adam(lr=self._learning_rate, betas=(float(self.beta_1), float(self.beta_2)),
                        eps=float(self.epsilon) / grad_scale, convention="sklearn")
        beta = float(self.momentum)
        # scikit-learn's velocity v <- beta*v - lr*g is fastfit's book momentum at lr/(1-beta)
        self._lr_factor = grad_scale / (1.0 - beta)
        lr = self._learning_rate * self._lr_factor
        if self._schedule_in_use():
            lr = _EpochRate(lr)
        if beta == 0:
            return SGD(lr)
        return SGD(lr, momentum=beta, nesterov=bool(self.nesterovs_momentum))

    def _set_learning_rate(self, value):
        """Change scikit-learn's learning rate between epochs, as its SGDOptimizer does.

        scikit-learn's velocity is v = -lr_book * m (lr_book the rate of the step that
        made it), and its next step decays v as it is: rescaling m by old/new keeps v,
        and fastfit's Nesterov look-ahead point, where they were."""
        old = self._learning_rate
        if value == old:
            return
        opt = self._optimizer
        m = opt.state_buffers().get("m")
        if m is not None:
            m *= old / value
        opt.lr.value = value * self._lr_factor
        self._learning_rate = value

    def _initialize(self, sizes, dtype):
        rs = self._random_state

        def glorot_as_sklearn(d_in, d_out, rng):
            # scikit-learn's draw, from its random state in its order: coefs (in, out), then intercepts
            bound = np.sqrt(6.0 / (d_in + d_out))
            W = rs.uniform(-bound, bound, (d_in, d_out))
            return W.T, rs.uniform(-bound, bound, d_out)

        self._model = MLP(sizes, dtype=dtype, seed=None, init=glorot_as_sklearn)
        self._optimizer = None
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(sizes)
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf
        self._best_params = self._model.params.copy()

    def _squared_weights(self):
        """sum_k ||W_k||^2 where the next gradient is taken (Nesterov: the look-ahead point;
        the model holds the trajectory point between fastfit's epochs)."""
        model, opt = self._model, self._optimizer
        params = model.params
        m = opt.state_buffers().get("m") if opt is not None else None
        if m is not None and getattr(opt, "nesterov", False):
            params = params - (opt.lr_at(opt.t) * opt.momentum) * m
        total, off = 0.0, 0
        for d_in, d_out in zip(model.sizes[:-1], model.sizes[1:]):  # the flat layout: W_0, b_0, W_1, ...
            # summed in float64: a float32 sum of squares overflows long before the loss does
            w = params[off:off + d_in * d_out].astype(np.float64, copy=False)
            total += float(np.dot(w, w))
            off += d_in * d_out + d_out
        return total

    def _fit(self, X, y, incremental):
        # every check before training leaves a fitted estimator as it was when it fails
        with _unchanged_on_error(self):
            hidden, dtype = self._check_params()
            if self.early_stopping and incremental:
                raise ValueError("partial_fit does not support early_stopping=True")
            first_pass = self.__dict__.get("_model") is None or (not self.warm_start and not incremental)
            X, Y = self._validate_fit_data(X, y, incremental, first_pass, dtype)
            n_outputs = self._n_model_outputs(Y)
            sizes = [X.shape[1]] + hidden + [n_outputs]
            self._random_state = check_random_state(self.random_state)
            if first_pass:
                self._initialize(sizes, dtype)
            elif list(self._model.sizes) != sizes or self._model.dtype != dtype:
                raise ValueError(f"the fitted network has sizes {list(self._model.sizes)} ({self._model.dtype}); "
                                 f"these parameters and data need {sizes} ({dtype}): refit without warm_start")
            self.n_outputs_ = n_outputs
            loss_scale, grad_scale = self._loss_scales()
            if not incremental or self.__dict__.get("_optimizer") is None:
                self._optimizer = self._make_optimizer(grad_scale)

            if self.early_stopping:
                X_train, X_val, Y_train, Y_val = self._split_validation(X, Y)
            else:
                X_train, Y_train, X_val, Y_val = X, Y, None, None
            n = X_train.shape[0]
            if self.batch_size == "auto":
                batch_size = min(200, n)
            else:
                if self.batch_size > n:
                    warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
                batch_size = int(np.clip(self.batch_size, 1, n))
            n_batches = -(-n // batch_size)
            alpha = float(self.alpha)
            penalty = {"start": self._squared_weights() if alpha else 0.0}

        self.n_iter_ = 0
        state = {"stopped": False}

        def on_epoch(record):
            self.n_iter_ += 1
            self.t_ += n
            loss = float(record["loss"]) * loss_scale
            if alpha:
                # scikit-learn adds alpha/2 ||W||^2 / n for each batch's W; fastfit sees the
                # epoch's first and last W: interpolate between them
                start, end = penalty["start"], self._squared_weights()
                loss += 0.5 * alpha * (n_batches * start + (end - start) * (n_batches - 1) / 2.0) / n
                penalty["start"] = end
            self.loss_ = loss
            self.loss_curve_.append(loss)
            if self.verbose:
                print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
            self._update_no_improvement_count(X_val, Y_val)
            if self.solver == "sgd" and self.learning_rate == "invscaling":
                self._set_learning_rate(float(self.learning_rate_init) / (self.t_ + 1) ** float(self.power_t))
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if self.early_stopping else "Training loss"
                msg = "%s did not improve more than tol=%f for %d consecutive epochs." % (
                    what, self.tol, self.n_iter_no_change)
                if self.solver == "sgd" and self.learning_rate == "adaptive":
                    if self._learning_rate > 1e-6:
                        self._set_learning_rate(self._learning_rate / 5.0)
                        self._no_improvement_count = 0
                        if self.verbose:
                            print(msg + " Setting learning rate to %f" % self._learning_rate)
                        return True
                    msg += " Learning rate too small."
                if self.verbose:
                    print(msg + " Stopping.")
                state["stopped"] = True
                return False
            return True

        try:
            _ff_fit(self._model, X_train, Y_train, loss=self._ff_loss(), optimizer=self._optimizer,
                    batch_size=batch_size, epochs=1 if incremental else int(self.max_iter),
                    seed=int(self._random_state.randint(_SEED_MAX)), shuffle=bool(self.shuffle),
                    n_threads=self.n_threads, callbacks=[on_epoch], verbose=0)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if not incremental and not state["stopped"] and self.n_iter_ == self.max_iter:
            warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the optimization "
                          "hasn't converged yet." % self.max_iter, ConvergenceWarning)
        if self.early_stopping:
            self._model.params[...] = self._best_params
        return self

    def _update_no_improvement_count(self, X_val, Y_val):
        """scikit-learn's rule, on its loss scale (called with the model at its trajectory point)."""
        if self.early_stopping:
            score = self._validation_score(X_val, Y_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self._model.params.copy()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _split_validation(self, X, Y):
        stratify = self._stratify_on(Y)
        try:
            X_train, X_val, Y_train, Y_val = train_test_split(
                X, Y, random_state=self._random_state, test_size=self.validation_fraction, stratify=stratify)
        except ValueError:
            if stratify is None:
                raise
            # a class too small to stratify: split without stratification
            X_train, X_val, Y_train, Y_val = train_test_split(
                X, Y, random_state=self._random_state, test_size=self.validation_fraction)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        if not _checks._is_sparse(X_train):
            X_train, X_val = np.ascontiguousarray(X_train), np.ascontiguousarray(X_val)
        return X_train, X_val, np.ascontiguousarray(Y_train), np.ascontiguousarray(Y_val)

    def _stratify_on(self, Y):
        return None

    def _logits(self, X):
        """The network's output for X (float64, validated), evaluated in float64: (n, n_outputs_).

        A float32 network is evaluated with its weights widened to float64: float32
        BLAS kernels round a row differently depending on its place in the batch,
        and scikit-learn expects each row's prediction not to depend on the others.
        """
        model = self._model
        if model.dtype != np.float64:
            model = MLP.from_params(model.sizes, model.params, dtype=np.float64)
        return model.predict(X)

    def _validate_predict_data(self, X):
        check_is_fitted(self)
        return _validate_data(self, X, reset=False, accept_sparse=_SPARSE_FORMATS, dtype=np.float64, order="C")

    # ------------------------------------------------------------ scikit-learn plumbing

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR and CSC, densified a run of batches at a time
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {}


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by fastfit (ReLU hidden layers).

    Multi-class targets are fitted with softmax cross-entropy (``out_activation_``
    "softmax"); binary targets with one logit and binary cross-entropy
    ("logistic"), as scikit-learn does; a label-indicator matrix ``y`` (multi-label)
    with one logit and binary cross-entropy per label ("logistic").

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(100,)
        Width of each hidden layer.
    activation : "relu", default="relu"
        scikit-learn's other activations ("identity", "logistic", "tanh") are
        refused: fastfit trains ReLU networks.
    solver : {"adam", "sgd"}, default="adam"
    alpha : float, default=0.0001
        L2 penalty on the weights, scaled as in scikit-learn: the gradient gains
        ``alpha * W / batch_size``.
    batch_size : int or "auto", default="auto"
        "auto" is ``min(200, n_samples)``; larger values are clipped to n_samples.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        With solver="sgd" only (as in scikit-learn). "invscaling": after each
        epoch the rate is ``learning_rate_init / (t_ + 1)**power_t``, ``t_`` the
        training samples seen. "adaptive": the rate is divided by 5 when the loss
        (or validation score) has not improved by ``tol`` for more than
        ``n_iter_no_change`` epochs; training stops once it is at most 1e-6.
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
        The exponent of "invscaling".
    max_iter : int, default=200
        Maximum number of epochs.
    shuffle : bool, default=True
        Draw each epoch's batches from a fresh permutation.
    random_state : int, RandomState or None, default=None
        Seeds the initial weights (drawn as scikit-learn draws them), the
        validation split, and the shuffling.
    tol : float, default=1e-4
    verbose : bool, default=False
        Print scikit-learn's lines ("Iteration 1, loss = ...") to stdout.
    warm_start : bool, default=False
        Continue from the previous fit's weights (with a fresh optimizer).
    momentum : float in [0, 1), default=0.9
        For solver="sgd" (scikit-learn's, i.e. PyTorch's, momentum convention).
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified for binary
        targets, as scikit-learn does), stop on its score, and restore the best
        epoch's weights.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : Adam's coefficients, defaults 0.9, 0.999, 1e-8
    n_iter_no_change : int or np.inf, default=10
    max_fun : int, default=15000
        Accepted for scikit-learn's sake and ignored: it limits lbfgs, which
        fastfit does not have.
    dtype : np.float32 or np.float64, default=np.float32
        The precision of the network (fastfit's parameter).
    n_threads : int or None, default=None
        Threads for fastfit's fit (None: fastfit chooses).

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_ (with named columns), n_outputs_,
    n_layers_, out_activation_, coefs_ (list of (in, out) views of the weights),
    intercepts_, loss_, loss_curve_, best_loss_ (None with early stopping),
    validation_scores_, best_validation_score_, n_iter_ (epochs of the last
    fit), t_ (training samples seen), model_ (the fastfit.MLP).

    The module docstring says how the fit compares with scikit-learn's
    MLPClassifier (in short: the same initial weights, objective, steps and
    stopping rule; ReLU only, no lbfgs, no sample_weight).
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=np.float32, n_threads=None):
        self._set_common(hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
                         learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose, warm_start,
                         momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2,
                         epsilon, n_iter_no_change, max_fun, dtype, n_threads)

    def _validate_fit_data(self, X, y, incremental, first_pass, dtype):
        X, y = _validate_data(self, X, y, accept_sparse=_SPARSE_FORMATS, multi_output=True, dtype=dtype,
                              order="C", reset=first_pass)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            lb = LabelBinarizer().fit(y)
            self._check_n_classes(lb.classes_)
            self._label_binarizer = lb
            self.classes_ = lb.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the "
                                     f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        lb = self._label_binarizer
        Y = lb.transform(y)
        if lb.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
            return X, np.ascontiguousarray(Y.argmax(axis=1), dtype=np.intp)
        self.out_activation_ = "logistic"
        return X, np.ascontiguousarray(Y, dtype=dtype)

    def _check_n_classes(self, classes):
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes, but y has "
                             f"only one class: {classes[0]!r}")

    def _n_model_outputs(self, Y):
        return len(self.classes_) if Y.ndim == 1 else Y.shape[1]

    def _multiclass(self):
        return self._label_binarizer.y_type_ == "multiclass"

    def _ff_loss(self):
        # both divide the penalty as scikit-learn does once the gradient is scaled (_loss_scales)
        loss = SoftmaxCrossEntropy if self._multiclass() else BinaryCrossEntropy
        return loss(l2=float(self.alpha))

    def _loss_scales(self):
        # softmax and single-logit: identical; multi-label: scikit-learn sums over the labels
        k = 1.0 if self._multiclass() else float(self.n_outputs_)
        return k, k

    def _stratify_on(self, Y):
        # scikit-learn stratifies when its binarized y has one column: binary targets only
        # (not multi-class, whose y it holds one-hot); the same rule gives the same split
        return Y if Y.ndim == 2 and Y.shape[1] == 1 else None

    def _proba(self, X):
        p = self._ff_loss().predict_proba(self._logits(X))
        if self._multiclass():
            return p
        if p.shape[1] == 1 and self._label_binarizer.y_type_ == "binary":
            return np.hstack([1.0 - p, p])
        return p

    def _predict_validated(self, X):
        p = self._proba(X)
        if self._label_binarizer.y_type_ == "binary":
            p = p[:, 1]
        return self._label_binarizer.inverse_transform(p)

    def _validation_score(self, X_val, Y_val):
        y_pred = self._predict_validated(X_val)
        if self._multiclass():
            y_true = self.classes_[Y_val]
        else:
            y_true = self._label_binarizer.inverse_transform(Y_val)
        return accuracy_score(y_true, y_pred)

    def fit(self, X, y):
        """Fit to X (n_samples, n_features) and y: class labels, or a label-indicator matrix (multi-label)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), keeping the weights and the optimizer's state between calls.

        ``classes`` (all the labels that will ever occur) is required on the first
        call; for multi-label y the labels are read off y's columns.
        """
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            lb = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                lb.fit(y)
            else:
                lb.fit(classes)
            self._check_n_classes(lb.classes_)
            self._label_binarizer = lb
            self.classes_ = lb.classes_
        elif classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                             f"was: {self.classes_!r}")
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Predicted class labels (or, multi-label, a 0/1 indicator matrix)."""
        return self._predict_validated(self._validate_predict_data(X))

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_`` (float64)."""
        return self._proba(self._validate_predict_data(X))

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        p = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(p, out=p)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multilabel": True}


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by fastfit (ReLU hidden layers, linear output).

    Fits the squared error; ``y`` may have several columns (multi-output). The
    loss reported in ``loss_curve_`` is scikit-learn's, half the mean squared
    error, and learning rates mean what they mean in scikit-learn (see the
    module docstring: fastfit's own SquaredError is the full mean over samples
    and outputs).

    Parameters
    ----------
    loss : "squared_error", default="squared_error"
        scikit-learn's other loss, "poisson", is refused.

    The other parameters are those of :class:`MLPClassifier` (with early
    stopping on R^2 and an unstratified validation split).

    Attributes
    ----------
    n_features_in_, n_outputs_, n_layers_, out_activation_ ("identity"), coefs_,
    intercepts_, loss_, loss_curve_, best_loss_, validation_scores_,
    best_validation_score_, n_iter_, t_, model_.
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001,
                 power_t=0.5, max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 max_fun=15000, dtype=np.float32, n_threads=None):
        self.loss = loss
        self._set_common(hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
                         learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose, warm_start,
                         momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2,
                         epsilon, n_iter_no_change, max_fun, dtype, n_threads)

    def _check_params(self):
        if self.loss != "squared_error":
            if self.loss == "poisson":
                raise ValueError("loss='poisson' is not available: fastfit fits the squared error only "
                                 "(loss='squared_error')")
            raise ValueError(f"loss must be 'squared_error', got {self.loss!r}")
        return super()._check_params()

    def _validate_fit_data(self, X, y, incremental, first_pass, dtype):
        X, y = _validate_data(self, X, y, accept_sparse=_SPARSE_FORMATS, multi_output=True, y_numeric=True,
                              dtype=dtype, order="C", reset=first_pass)
        Y = np.ascontiguousarray(y.reshape(-1, 1) if y.ndim == 1 else y, dtype=dtype)
        if not first_pass and Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs, but the fitted model has {self.n_outputs_}")
        self.out_activation_ = "identity"
        return X, Y

    def _n_model_outputs(self, Y):
        return Y.shape[1]

    def _ff_loss(self):
        # fastfit's squared error per output is twice scikit-learn's: so is the penalty it takes
        return SquaredError(l2=2.0 * float(self.alpha))

    def _loss_scales(self):
        # scikit-learn: loss 0.5*mean((f-y)^2) over samples and outputs, gradient (f-y)/n_samples;
        # fastfit: loss mean((f-y)^2) over both, gradient 2(f-y)/(n_samples*n_outputs)
        return 0.5, self.n_outputs_ / 2.0

    def _validation_score(self, X_val, Y_val):
        return r2_score(Y_val, self._logits(X_val))

    def fit(self, X, y):
        """Fit to X (n_samples, n_features) and y (n_samples,) or (n_samples, n_outputs)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y):
        """One epoch over (X, y), keeping the weights and the optimizer's state between calls."""
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Predictions, (n_samples,) for one output, else (n_samples, n_outputs), as float64.

        The network computes in ``dtype`` (float32 by default); its output is returned as float64,
        as scikit-learn expects of regressors."""
        out = self._logits(self._validate_predict_data(X))
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}
