"""Datasets made or loaded without a network.

- ``spirals``: two or more interleaved spiral arms (classification), built in.
- ``regression_1d``: the 1-D toy regression of the book's early chapters, built in.
- ``mnist1d``: MNIST-1D (4,000 train / 1,000 test, 40 features, 10 classes)
  from the ``mnist1d`` package's own generator, when it is installed
  (``pip install mnist1d``).
- ``digits``: scikit-learn's bundled 8x8 digits, when scikit-learn is installed.

Each returns ``(X_train, y_train, X_test, y_test)`` as NumPy arrays (features
float64, class labels int64), so they feed ``fit`` directly. ``Standardizer``
centres and scales features with the training set's statistics.
"""
import math
import numbers
import random

import numpy as np


class MissingDependency(ImportError):
    """A dataset needs an optional package that is not installed."""


def _check_real(value, name, low, high=math.inf, low_open=False):
    """A finite real in [low, high) (or (low, high) with low_open), else an error naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and (value > low if low_open else value >= low) and value < high):
        raise ValueError(f"{name} must be a finite number in {'(' if low_open else '['}{low}, {high}), got {value!r}")
    return float(value)


def _split(X, y, test_fraction, rng):
    test_fraction = _check_real(test_fraction, "test_fraction", 0.0, 1.0)
    order = rng.permutation(len(X))
    n_test = int(round(len(X) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


def spirals(n_samples=1000, n_classes=2, noise=0.2, turns=1.5, test_fraction=0.2, seed=0):
    """Interleaved spiral arms in 2-D, one class per arm: a task no linear model solves."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if n_samples < n_classes:
        raise ValueError(f"n_samples must be at least n_classes ({n_classes}), got {n_samples}")
    noise = _check_real(noise, "noise", 0.0)
    turns = _check_real(turns, "turns", 0.0, low_open=True)
    rng = np.random.default_rng(seed)
    per_class = [n_samples // n_classes + (1 if c < n_samples % n_classes else 0) for c in range(n_classes)]
    Xs, ys = [], []
    for c, n in enumerate(per_class):
        r = np.sqrt(rng.random(n)) * 1.0            # denser near the centre, as arms are narrower there
        angle = r * turns * 2 * np.pi + 2 * np.pi * c / n_classes
        arm = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
        Xs.append(arm + noise * 0.1 * rng.standard_normal((n, 2)))
        ys.append(np.full(n, c, dtype=np.int64))
    X, y = np.concatenate(Xs), np.concatenate(ys)
    return _split(X, y, test_fraction, rng)


def regression_1d(n_samples=200, noise=0.1, test_fraction=0.2, seed=0):
    """y = sin(3x) + 0.3 x^2 - 0.5 plus Gaussian noise for x in [-2, 2]: the book's 1-D toy,
    a smooth curve a shallow ReLU network fits piecewise linearly. y has shape (n, 1)."""
    noise = _check_real(noise, "noise", 0.0)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n_samples, 1))
    y = np.sin(3 * x) + 0.3 * x ** 2 - 0.5 + noise * rng.standard_normal((n_samples, 1))
    return _split(x, y, test_fraction, rng)


def mnist1d(seed=42):
    """MNIST-1D through the mnist1d package's generator: 4,000 train and 1,000 test
    sequences of length 40, ten classes. The published MLP baseline is about 68%
    test accuracy. Raises MissingDependency when mnist1d is not installed."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise MissingDependency("mnist1d is not installed: pip install mnist1d") from exc
    args = get_dataset_args()
    args.seed = seed
    # the generator seeds NumPy's and Python's global generators: keep the caller's
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return (np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"], dtype=np.int64),
            np.asarray(data["x_test"], dtype=np.float64), np.asarray(data["y_test"], dtype=np.int64))


def digits(test_fraction=0.2, seed=0):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 samples, 64 features, pixels 0-16)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise MissingDependency("scikit-learn is not installed: pip install scikit-learn") from exc
    data = load_digits()
    X, y = data.data.astype(np.float64), data.target.astype(np.int64)
    return _split(X, y, test_fraction, np.random.default_rng(seed))


class Standardizer:
    """Centre and scale each feature by the training set's mean and standard deviation.

    >>> scaler = Standardizer().fit(X_train)
    >>> X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    """

    def fit(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)  # constant features stay put
        return self

    def transform(self, X):
        if not hasattr(self, "mean_"):
            raise RuntimeError("call fit(X_train) before transform")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"X must have {self.mean_.shape[0]} features, got shape {X.shape}")
        return (X - self.mean_) / self.scale_

    def fit_transform(self, X):
        return self.fit(X).transform(X)


def standardize(X_train, *others):
    """Standardise X_train and any further arrays with X_train's statistics."""
    scaler = Standardizer().fit(X_train)
    out = tuple(scaler.transform(X) for X in (X_train,) + others)
    return out if others else out[0]
