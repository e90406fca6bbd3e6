"""Losses: squared error, softmax cross-entropy, binary cross-entropy on logits.

Each computes its value and its gradient with respect to the network output in
one compiled pass (MATH.md, Losses). ``reduction="sum"`` is the seed's
L = sum_i l_i; ``"mean"`` divides by the batch size B (cross-entropy) or by
B times the number of outputs (squared error, binary cross-entropy), as
PyTorch's losses do.
"""
import numpy as np

from . import _checks, _core

_EMPTY_LABELS = np.empty(0, dtype=np.intp)


class Loss:
    """Common machinery: target checks, reduction, the compiled value-and-gradient."""

    kind = None
    name = None
    #: True when targets are integer class labels (one per sample).
    uses_labels = False

    def __init__(self, reduction="mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    @property
    def mean(self):
        return self.reduction == "mean"

    def elements_per_sample(self, n_outputs):
        """What "mean" divides by per sample: 1, or the number of outputs."""
        return n_outputs

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
        total = _core.loss_value_and_grad(self.kind, self.mean, out, Y, labels, grad)
        return self.reduce(total, B, C), grad

    def reduce(self, total, n_rows, n_outputs):
        """The reduced loss from sum_i l_i over n_rows samples."""
        if self.reduction == "sum":
            return float(total)
        return float(total) / (n_rows * self.elements_per_sample(n_outputs))

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"

    def __eq__(self, other):
        return type(self) is type(other) and self.reduction == other.reduction

    def __hash__(self):
        return hash((type(self).__name__, self.reduction))


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
    name = "squared_error"

    def targets(self, y, n_rows, n_outputs, dtype, name="y"):
        return _float_targets(y, n_rows, n_outputs, dtype, name), _EMPTY_LABELS


class BinaryCrossEntropy(Loss):
    """On logits: l = max(f, 0) - f*y + log(1 + exp(-|f|)); gradient sigmoid(f) - y.

    Targets in [0, 1], one column per output (PyTorch's BCEWithLogitsLoss).
    """

    kind = _core.LOSS_BINARY_CROSS_ENTROPY
    name = "binary_cross_entropy"

    def targets(self, y, n_rows, n_outputs, dtype, name="y"):
        Y = _float_targets(y, n_rows, n_outputs, dtype, name)
        if Y.size and (Y.min() < 0 or Y.max() > 1):
            raise ValueError(f"{name} must lie in [0, 1] for binary cross-entropy, "
                             f"got values from {Y.min()} to {Y.max()}")
        return Y, _EMPTY_LABELS


class SoftmaxCrossEntropy(Loss):
    """Integer labels y_i in [0, C): l_i = logsumexp(f_i) - f_i[y_i]; gradient softmax(f_i) - onehot(y_i)."""

    kind = _core.LOSS_SOFTMAX_CROSS_ENTROPY
    name = "softmax_cross_entropy"
    uses_labels = True

    def elements_per_sample(self, n_outputs):
        return 1

    def targets(self, y, n_rows, n_outputs, dtype, name="y"):
        arr = _checks._as_numeric_array(y, name)
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
        labels = np.ascontiguousarray(arr, dtype=np.intp)
        return np.empty((0, 0), dtype=dtype), labels


# PyTorch/Keras-style names users reach for.
LOSSES = {
    "squared_error": SquaredError, "mse": SquaredError,
    "cross_entropy": SoftmaxCrossEntropy, "softmax_cross_entropy": SoftmaxCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy, "bce": BinaryCrossEntropy,
}


def get_loss(loss):
    """A Loss instance from an instance or one of the names in LOSSES."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        try:
            return LOSSES[loss.lower()]()
        except KeyError:
            raise ValueError(f"loss must be a Loss or one of {sorted(LOSSES)}, got {loss!r}") from None
    raise TypeError(f"loss must be a Loss (e.g. fastfit.SoftmaxCrossEntropy()) or a name, got {loss!r}")
