"""Input checks shared by the Python layer. Everything the compiled core receives
passes through here first: the core itself never checks or raises."""
import math
import numbers
import os

import numpy as np

from . import _core

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
    if kind in "USO" and arr.size and isinstance(arr.flat[0], str):
        raise TypeError(f"{name} must be numeric, got strings ({arr.dtype}): encode class labels as integers "
                        f"0..C-1 (for example `classes, {name} = np.unique({name}, return_inverse=True)`), "
                        "or use fastfit.sklearn.MLPClassifier, which takes labels of any type")
    if kind == "O" and _is_sparse(value):
        raise TypeError(f"{name} is a scipy.sparse matrix, which is not accepted here; "
                        f"pass {name}.toarray() (fit, predict and the scikit-learn estimators take sparse X)")
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
    """True when every element of a float array is finite.

    A contiguous, aligned float32 or float64 array (what fit's inputs are once
    converted) is read by the core's exponent-bit check in one pass, with no
    temporary (1.5x faster than NumPy on a 77 MB X); any other in row blocks."""
    if arr.dtype.kind != "f":
        return True
    if arr.dtype in FLOAT_DTYPES and arr.flags.c_contiguous and arr.flags.aligned:
        return _core.all_finite(arr.reshape(-1), 1)
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


def batch_rows(value, name="batch_size"):
    """A whole number of rows >= 1 that one BLAS call can take (its sizes are 32-bit)."""
    value = positive_int(value, name)
    if value > BLAS_INT_MAX:
        raise ValueError(f"{name} must be at most {BLAS_INT_MAX} rows (BLAS's 32-bit sizes), got {value}")
    return value


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


def non_negative_float(value, name):
    """A finite float >= 0."""
    value = _real(value, name, "a number >= 0")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def positive_float(value, name, expect="a number"):
    """A finite float > 0."""
    value = _real(value, name, expect)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def random_generator(seed, name="seed"):
    """np.random.default_rng(seed), with an error that names the argument."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name} must be a non-negative integer, got {seed!r} ({exc})") from None


def _is_sparse(value):
    """True for a scipy.sparse matrix or array (without importing SciPy's sparse module)."""
    return hasattr(value, "tocsr") and hasattr(value, "nnz")


class Rows:
    """The rows of X (n, n_features) as the core consumes them.

    A NumPy array (or memmap, list, ...) is checked and converted once, and
    ``array`` holds it: the core gathers batches from it directly. A SciPy
    sparse matrix is checked once (its stored values finite and within the
    dtype's range) and never densified whole: ``dense(lo, hi)`` and
    ``take(rows)`` densify the rows asked for; ``array`` is None.
    """

    def __init__(self, X, n_features, dtype, name="X"):
        self.name, self.dtype = name, np.dtype(dtype)
        if _is_sparse(X):
            shape = X.shape
            if len(shape) != 2:
                raise ValueError(f"{name} must be 2-D (samples, features), got shape {shape}")
            if shape[0] == 0:
                raise ValueError(f"{name} is empty: it has 0 samples")
            if shape[1] != n_features:
                raise ValueError(f"{name} has {shape[1]} features but the model's input layer takes {n_features}")
            self.sparse = X.tocsr()
            data = _as_numeric_array(self.sparse.data, f"{name}'s stored values")
            finite_array(data, self.dtype, f"{name}'s stored values")
            self.array, self.n = None, shape[0]
        else:
            self.sparse = None
            self.array = features(X, n_features, dtype, name)
            self.n = self.array.shape[0]

    def dense(self, lo, hi):
        """Rows [lo, hi) as a C-contiguous array of the dtype."""
        if self.sparse is None:
            return self.array[lo:hi]
        return np.ascontiguousarray(self.sparse[lo:hi].toarray(), dtype=self.dtype)

    def take(self, rows):
        """The given rows, in that order, as a C-contiguous array of the dtype."""
        if self.sparse is None:
            return np.ascontiguousarray(self.array[rows])
        return np.ascontiguousarray(self.sparse[rows].toarray(), dtype=self.dtype)


def available_memory():
    """Bytes of memory this process can still take (the smaller of the machine's and its
    cgroup's), or None when neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                found.append(int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return min(found) if found else None


def check_memory(nbytes, what):
    """MemoryError naming ``what`` and the bytes it needs when the machine cannot hold them."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise MemoryError(f"{what} needs {nbytes / 2**30:,.2f} GiB, but only {free / 2**30:,.2f} GiB "
                          "of memory is available")


def check_sizes(sizes):
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise TypeError(f"sizes must be a sequence of layer widths, got {sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, got {sizes!r}")
    for s in sizes:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral):
            raise TypeError(f"sizes must be integer layer widths, got {s!r} in {sizes!r}")
        if s < 1:
            raise ValueError(f"sizes must be whole numbers >= 1, got {sizes!r}")
        if s > BLAS_INT_MAX:
            raise ValueError(f"a layer width of {s} exceeds what BLAS's 32-bit sizes can index")
    return tuple(int(s) for s in sizes)


def count_params(sizes):
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
