"""Input checks shared by the Python layer. Everything the compiled core receives
passes through here first: the core itself never checks or raises."""
import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def model_dtype(dtype):
    """The model's dtype: float32 or float64, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _as_numeric_array(value, name):
    """np.asarray that rejects what cannot be a number: object, string, complex, bool."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be a numeric array; could not convert it: {exc}") from None
    kind = arr.dtype.kind
    if kind == "b":
        raise TypeError(f"{name} must be numeric, got a boolean array; convert it with .astype(float) if you mean 0/1")
    if kind == "c":
        raise TypeError(f"{name} must be real, got a complex array ({arr.dtype})")
    if kind not in "iuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


#: Largest size BLAS's 32-bit integers can pass (rows of a batch, layer widths).
BLAS_INT_MAX = 2 ** 31 - 1

#: Finiteness is checked this many elements at a time, so that a large array (a
#: memmap bigger than memory, say) never needs a boolean copy of itself.
_FINITE_BLOCK = 1 << 20


def all_finite(arr):
    """True when every element of a float array is finite; works in row blocks."""
    if arr.dtype.kind != "f":
        return True
    if arr.ndim < 2 or arr.size <= _FINITE_BLOCK:
        return bool(np.isfinite(arr).all())
    rows = max(1, _FINITE_BLOCK // max(1, arr[0].size))
    return all(np.isfinite(arr[i:i + rows]).all() for i in range(0, arr.shape[0], rows))


def check_finite(arr, name):
    if arr.dtype.kind == "f" and not all_finite(arr):
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = ", ".join(str(int(i)) for i in bad)
        raise ValueError(f"{name} contains NaN or infinity (first at index [{where}])")


def finite_array(arr, dtype, name):
    """arr as a C-contiguous, finite array of dtype (arr itself when it already is one).

    A value the caller gave as finite but beyond dtype's range (1e39 into float32)
    is reported as such, not silently turned into infinity."""
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if out.dtype.kind == "f" and not all_finite(out):
        check_finite(arr, name)  # the caller's own NaN or infinity
        bad = np.argwhere(~np.isfinite(out))[0]
        where = ", ".join(str(int(i)) for i in bad)
        raise ValueError(f"{name} holds values too large for {out.dtype} (first at index [{where}])")
    return out


def features(X, n_features, dtype, name="X"):
    """X as a C-contiguous (n, n_features) array of dtype; the caller's array is never written to."""
    arr = _as_numeric_array(X, name)
    if arr.ndim != 2:
        hint = " (use X.reshape(-1, 1) for a single feature)" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (samples, features), got {arr.ndim}-D with shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features but the model's input layer takes {n_features}")
    return finite_array(arr, dtype, name)


def positive_int(value, name, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def learning_rate(value, name="lr"):
    """A float > 0 or a callable schedule."""
    if callable(value):
        return value
    return positive_float(value, name, expect="a number or a callable schedule")


def unit_interval(value, name):
    """A coefficient in [0, 1)."""
    value = _real(value, name, "a number in [0, 1)")
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def _real(value, name, expect):
    """value as a float; TypeError for what is not a real number (bools included)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expect}, got {value!r}")
    return float(value)


def positive_float(value, name, expect="a number"):
    """A finite float > 0."""
    value = _real(value, name, expect)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value
