"""Helpers shared by the tests: the tolerances of the core against the reference, targets, loss pairs."""
import numpy as np

import fastfit as ff
from fastfit import reference as ref

#: Agreement required between the compiled core and the reference (README: guarantees).
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def assert_matches(actual, expected, dtype, what=""):
    """Equal to the dtype's tolerance, relative to the size of the expected values."""
    tol = TOL[np.dtype(dtype)]
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


LOSS_NAMES = ["SquaredError", "SoftmaxCrossEntropy", "BinaryCrossEntropy"]


def make_targets(loss_name, n, n_out, rng, dtype=np.float64):
    """Targets that suit the loss: real values, class labels, or 0/1."""
    if loss_name == "SoftmaxCrossEntropy":
        return rng.integers(0, n_out, size=n)
    if loss_name == "BinaryCrossEntropy":
        return (rng.random((n, n_out)) < 0.5).astype(dtype)
    return rng.standard_normal((n, n_out)).astype(dtype)


def pair(loss_name, reduction="mean"):
    """The same loss from the core and from the reference."""
    return getattr(ff, loss_name)(reduction=reduction), getattr(ref, loss_name)(reduction=reduction)
