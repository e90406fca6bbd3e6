"""Losses: squared error, softmax cross-entropy, binary cross-entropy on logits.

Each computes its value and its gradient with respect to the network output in
one compiled pass (docs/math.md, "Losses"). ``reduction="sum"`` is the book's
L = sum_i l_i; ``"mean"`` divides by the batch size B (cross-entropy) or by
B times the number of outputs (squared error, binary cross-entropy), as
PyTorch's losses do.
"""
import numpy as np

from . import _checks, _core

_EMPTY_LABELS = np.empty(0, dtype=np.intp)


class Loss:
    """Common machinery: target checks, reduction, the compiled value-and-gradient, scores.

    ``l2``: an L2 penalty on the weights (not the biases) joins the objective
    the fit minimises: sum_i l_i + (l2/2) sum_k ||W_k||^2, divided by the same
    divisor as the loss under "mean" (docs/math.md, "Regularisation"). With
    cross-entropy and "mean" that is scikit-learn's ``alpha``. ``fit`` adds its
    gradient in the update; ``value_and_grad`` returns the data term only.
    """

    kind = None
    #: True when targets are integer class labels (one per sample).
    uses_labels = False
    #: The score reported beside the loss ("accuracy" or "r2").
    score_name = None

    def __init__(self, reduction="mean", l2=0.0):
        self.reduction = reduction
        self.l2 = l2

    def __setattr__(self, name, value):
        # checked on every assignment, as in the constructor: the core reads them as they are
        if name == "reduction" and value not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {value!r}")
        if name == "l2":
            value = _checks.non_negative_float(value, "l2")
        if name in ("kind", "uses_labels", "score_name"):
            raise AttributeError(f"{name} is fixed by the loss's class ({type(self).__name__}); "
                                 "use another loss class")
        object.__setattr__(self, name, value)

    @property
    def mean(self):
        return self.reduction == "mean"

    def elements_per_sample(self, n_outputs):
        """What "mean" divides by per sample: 1, or the number of outputs."""
        return n_outputs

    def grad_scale(self, n_rows, n_outputs):
        """The factor dl_i/df takes in dL/df: 1 for "sum", 1/(rows * elements per sample) for "mean"."""
        return 1.0 / (n_rows * self.elements_per_sample(n_outputs)) if self.mean else 1.0

    def objective(self, n_outputs):
        """The loss as the compiled step takes it."""
        return _core.Objective(self.kind, self.mean, self.elements_per_sample(n_outputs), self.l2)

    def targets(self, y, n_rows, n_outputs, dtype, name="y"):
        """Checked targets for the core: (float targets (n, C) or empty, labels (n,) or empty)."""
        raise NotImplementedError

    def value_and_grad(self, out, y):
        """The batch loss (a float) and dL/dout (an array shaped like out)."""
        arr = _checks._as_numeric_array(out, "out")
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"out must be a non-empty 2-D array (batch, outputs), got shape {arr.shape}")
        dtype = arr.dtype if arr.dtype in _checks.FLOAT_DTYPES else np.dtype(np.float64)
        out = np.ascontiguousarray(arr, dtype=dtype)
        _checks.check_finite(out, "out")
        B, C = out.shape
        Y, labels = self.targets(y, B, C, dtype)
        grad = np.empty_like(out)
        total = _core.loss_value_and_grad(self.kind, self.grad_scale(B, C), out, Y, labels, grad)
        return self.reduce(total, B, C), grad

    def sum_of_losses(self, out, Y, labels):
        """sum_i l_i over checked outputs and targets (no gradient kept)."""
        return _core.loss_value_and_grad(self.kind, 1.0, out, Y, labels, np.empty_like(out))

    def reduce(self, total, n_rows, n_outputs):
        """The reduced loss from sum_i l_i over n_rows samples."""
        if self.reduction == "sum":
            return float(total)
        return float(total) / (n_rows * self.elements_per_sample(n_outputs))

    # ---- scores: sums that add up across batches and ranks, then the score

    def score_sums(self, out, Y, labels):
        """The additive sums the score is made of, over these rows (float64 array)."""
        raise NotImplementedError

    def score(self, sums, n_rows, n_outputs, Y_all):
        """The score from the summed ``score_sums`` over n_rows rows (Y_all: every target, for R^2)."""
        raise NotImplementedError

    def predict_proba(self, out):
        """Probabilities from the network's outputs (logits); only for classification losses."""
        raise TypeError(f"{type(self).__name__} is not a classification loss: its outputs are not probabilities")

    def __repr__(self):
        l2 = f", l2={self.l2!r}" if self.l2 else ""
        return f"{type(self).__name__}(reduction={self.reduction!r}{l2})"

    def __eq__(self, other):
        return type(self) is type(other) and self.reduction == other.reduction and self.l2 == other.l2

    def __hash__(self):
        return hash((type(self).__name__, self.reduction, self.l2))


def _float_targets(y, n_rows, n_outputs, dtype, name):
    arr = _checks._as_numeric_array(y, name)
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape != (n_rows, n_outputs):
        expect = f"({n_rows}, {n_outputs})" + (f" or ({n_rows},)" if n_outputs == 1 else "")
        raise ValueError(f"{name} must have shape {expect} to match the {n_rows} samples and "
                         f"{n_outputs} outputs, got {arr.shape}")
    return _checks.finite_array(arr, dtype, name)


class SquaredError(Loss):
    """l_i = sum_j (f_ij - y_ij)^2; gradient 2 (f - y). "mean" is PyTorch's MSELoss."""

    kind = _core.LOSS_SQUARED_ERROR
    score_name = "r2"

    def targets(self, y, n_rows, n_outputs, dtype, name="y"):
        return _float_targets(y, n_rows, n_outputs, dtype, name), _EMPTY_LABELS

    def score_sums(self, out, Y, labels):
        """Per output: the sum of squared residuals."""
        return ((Y - out) ** 2).sum(axis=0, dtype=np.float64)

    def score(self, sums, n_rows, n_outputs, Y_all):
        """R^2 averaged over outputs (an output with constant targets counts 0)."""
        ss_tot = ((Y_all - Y_all.mean(axis=0)) ** 2).sum(axis=0, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1 - sums / np.where(ss_tot > 0, ss_tot, 1), 0.0)
        return float(r2.mean())


class BinaryCrossEntropy(Loss):
    """On logits: l = max(f, 0) - f*y + log(1 + exp(-|f|)); gradient sigmoid(f) - y.

    Targets in [0, 1], one column per output (PyTorch's BCEWithLogitsLoss).
    """

    kind = _core.LOSS_BINARY_CROSS_ENTROPY
    score_name = "accuracy"

    def targets(self, y, n_rows, n_outputs, dtype, name="y"):
        Y = _float_targets(y, n_rows, n_outputs, dtype, name)
        if Y.size and (Y.min() < 0 or Y.max() > 1):
            raise ValueError(f"{name} must lie in [0, 1] for binary cross-entropy, "
                             f"got values from {Y.min()} to {Y.max()}")
        return Y, _EMPTY_LABELS

    def score_sums(self, out, Y, labels):
        """Outputs on the right side of 0.5 (the logit's sign against the target)."""
        return np.array([np.count_nonzero((out > 0) == (Y > 0.5))], dtype=np.float64)

    def score(self, sums, n_rows, n_outputs, Y_all):
        return float(sums[0] / (n_rows * n_outputs))

    def predict_proba(self, out):
        """sigmoid(out), one probability per output."""
        out = np.asarray(out, dtype=np.float64)
        e = np.exp(-np.abs(out))  # in (0, 1]: never overflows
        return np.where(out >= 0, 1 / (1 + e), e / (1 + e))


class SoftmaxCrossEntropy(Loss):
    """Integer labels y_i in [0, C): l_i = logsumexp(f_i) - f_i[y_i]; gradient softmax(f_i) - onehot(y_i)."""

    kind = _core.LOSS_SOFTMAX_CROSS_ENTROPY
    uses_labels = True
    score_name = "accuracy"

    def elements_per_sample(self, n_outputs):
        return 1

    def targets(self, y, n_rows, n_outputs, dtype, name="y"):
        if n_outputs < 2:
            raise ValueError("softmax cross-entropy needs a model of at least 2 outputs (one per class); with one "
                             "output the softmax is 1 and nothing trains: use BinaryCrossEntropy for two classes")
        # a copy first, checked after: the core reads the labels for the whole fit, and a caller's
        # array changed meanwhile (by a callback or another thread) would send unchecked indices into it
        arr = np.array(_checks._as_numeric_array(y, name), copy=True)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.ravel()
        if arr.ndim != 1 or arr.shape[0] != n_rows:
            raise ValueError(f"{name} must be a 1-D array of {n_rows} integer class labels, got shape {arr.shape}")
        if arr.dtype.kind == "f":
            _checks.check_finite(arr, name)
            if not np.array_equal(arr, np.round(arr)):
                raise ValueError(f"{name} must hold integer class labels for cross-entropy, got non-integer values")
        if arr.size and (arr.min() < 0 or arr.max() >= n_outputs):
            raise ValueError(f"{name} holds class labels from {arr.min()} to {arr.max()}, "
                             f"but the model has {n_outputs} outputs: labels must lie in [0, {n_outputs})")
        labels = np.ascontiguousarray(arr, dtype=np.intp)  # arr is this call's own copy
        if labels.base is not None:  # a view of it (a raveled column): the core wants an array that owns its data
            labels = labels.copy()
        labels.flags.writeable = False  # what was checked stays so; the core's Dataset takes it as it is
        return np.empty((0, 0), dtype=dtype), labels

    def score_sums(self, out, Y, labels):
        """Rows whose largest output is the label's."""
        return np.array([np.count_nonzero(out.argmax(axis=1) == labels)], dtype=np.float64)

    def score(self, sums, n_rows, n_outputs, Y_all):
        return float(sums[0] / n_rows)

    def predict_proba(self, out):
        """softmax(out) row by row."""
        out = np.asarray(out, dtype=np.float64)
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


# PyTorch/Keras-style names users reach for.
LOSSES = {
    "squared_error": SquaredError, "mse": SquaredError,
    "cross_entropy": SoftmaxCrossEntropy, "softmax_cross_entropy": SoftmaxCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy, "bce": BinaryCrossEntropy,
}


def get_loss(loss):
    """A Loss instance from an instance or one of the names in LOSSES."""
    if loss is None:
        raise TypeError("loss is required: pass a Loss (fastfit.SoftmaxCrossEntropy() for integer class labels, "
                        "fastfit.SquaredError() for regression, fastfit.BinaryCrossEntropy() for 0/1 targets) "
                        f"or one of the names {sorted(LOSSES)}")
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        try:
            return LOSSES[loss.lower()]()
        except KeyError:
            raise ValueError(f"loss must be a Loss or one of {sorted(LOSSES)}, got {loss!r}") from None
    raise TypeError(f"loss must be a Loss (e.g. fastfit.SoftmaxCrossEntropy()) or a name, got {loss!r}")
