"""The MLP: one flat parameter buffer, one flat gradient buffer, layers as views.

Forward and backward run in the compiled core (_core.pyx); this module owns
the buffers, checks what users pass, and keeps the workspace the core writes
its activations into.
"""
import numbers

import numpy as np

from . import _checks, _core


class Layer:
    """One fully connected layer: views into the model's flat buffers.

    ``W`` has shape (out_features, in_features) (MATH.md's W_k, PyTorch's layout),
    ``b`` shape (out_features,); ``dW`` and ``db`` are the matching gradient views.
    """

    def __init__(self, W, b, dW, db, relu):
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.relu = relu

    @property
    def in_features(self):
        return self.W.shape[1]

    @property
    def out_features(self):
        return self.W.shape[0]

    def __repr__(self):
        act = ", ReLU" if self.relu else ""
        return f"Layer({self.in_features} -> {self.out_features}{act})"


class Workspace:
    """The buffers the core works in for batches of up to ``capacity`` rows.

    acts: H_1 .. H_K and the output, back to back (MATH.md, Memory: activations);
    scratch: dL/dH_k before its ReLU mask, (capacity, widest hidden layer);
    xbuf/ybuf/lbuf: the gathered batch (inputs, float targets, integer labels).
    """

    def __init__(self, sizes, dtype, capacity, target_cols=0, labels=False):
        self.capacity = capacity
        self.acts = np.empty(capacity * sum(sizes[1:]), dtype=dtype)
        hidden = sizes[1:-1]
        self.scratch = np.empty(capacity * max(hidden) if hidden else 0, dtype=dtype)
        self.xbuf = np.empty(capacity * sizes[0], dtype=dtype)
        self.ybuf = np.empty(capacity * target_cols, dtype=dtype)
        self.lbuf = np.empty(capacity if labels else 0, dtype=np.intp)

    @property
    def nbytes(self):
        return sum(a.nbytes for a in (self.acts, self.scratch, self.xbuf, self.ybuf, self.lbuf))


def he_init(sizes, dtype, seed):
    """He initialisation (MATH.md): W ~ Normal(0, 2/d_in) drawn layer by layer in
    float64 from default_rng(seed), then cast; biases zero."""
    rng = np.random.default_rng(seed)
    chunks = []
    for din, dout in zip(sizes[:-1], sizes[1:]):
        W = rng.standard_normal((dout, din)) * np.sqrt(2.0 / din)
        chunks.append(W.astype(dtype).ravel())
        chunks.append(np.zeros(dout, dtype=dtype))
    return np.concatenate(chunks)


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
        if s > np.iinfo(np.int32).max:
            raise ValueError(f"a layer width of {s} exceeds what BLAS's 32-bit sizes can index")
    return tuple(int(s) for s in sizes)


class MLP:
    """A fully connected network: ReLU hidden layers, a linear output, He init.

    >>> model = MLP([64, 128, 128, 10], dtype=np.float32, seed=0)

    ``model.params`` and ``model.grads`` are flat 1-D arrays; ``model.layers[k].W``
    and ``.b`` are views into ``params``. ``forward`` keeps what ``backward``
    needs; ``backward`` fills ``grads`` for the last forward's batch.
    """

    def __init__(self, sizes, dtype=np.float32, seed=0):
        self.sizes = check_sizes(sizes)
        self.dtype = _checks.model_dtype(dtype)
        self.seed = seed
        self._layout()
        self.params = he_init(self.sizes, self.dtype, seed)
        self.grads = np.zeros_like(self.params)
        self._make_views()
        self._ws = None          # workspace of the step-level API
        self._last_X = None      # the batch whose activations are stored, until backward
        self._last_rows = 0

    # ---- layout

    def _layout(self):
        sizes = self.sizes
        self._dims = np.asarray(sizes, dtype=np.int32)
        woff, boff, off = [], [], 0
        for din, dout in zip(sizes[:-1], sizes[1:]):
            woff.append(off)
            off += din * dout
            boff.append(off)
            off += dout
        self._woff = np.asarray(woff, dtype=np.intp)
        self._boff = np.asarray(boff, dtype=np.intp)
        self._n_params = off

    def _make_views(self):
        self.layers = []
        n = len(self.sizes) - 1
        for k, (din, dout) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            w0, b0 = self._woff[k], self._boff[k]
            self.layers.append(Layer(
                self.params[w0:w0 + din * dout].reshape(dout, din), self.params[b0:b0 + dout],
                self.grads[w0:w0 + din * dout].reshape(dout, din), self.grads[b0:b0 + dout],
                relu=k < n - 1))

    @property
    def n_params(self):
        """Number of weights and biases."""
        return self._n_params

    @property
    def n_inputs(self):
        return self.sizes[0]

    @property
    def n_outputs(self):
        return self.sizes[-1]

    def workspace(self, capacity, target_cols=0, labels=False):
        """A fresh Workspace sized for batches of up to ``capacity`` rows."""
        return Workspace(self.sizes, self.dtype, capacity, target_cols, labels)

    # ---- step-level API

    def forward(self, X):
        """Output for the batch X (B, d_0) as a new array; keeps the activations for backward."""
        rows = X.shape[0] if isinstance(X, np.ndarray) and X.ndim == 2 else None
        if rows is not None and rows > _checks.BLAS_INT_MAX:
            raise ValueError(f"X has {rows} rows; one forward pass takes at most {_checks.BLAS_INT_MAX} "
                             "(BLAS's 32-bit sizes): use predict(), which works in chunks")
        X = _checks.features(X, self.n_inputs, self.dtype)
        B = X.shape[0]
        if self._ws is None or self._ws.capacity < B:
            self._ws = self.workspace(B)
        _core.forward(self.params, self._dims, self._woff, self._boff, X, self._ws.acts)
        self._last_X = X
        self._last_rows = B
        out_start = B * sum(self.sizes[1:-1])
        return self._ws.acts[out_start:out_start + B * self.n_outputs].reshape(B, self.n_outputs).copy()

    def backward(self, dout):
        """Fill ``grads`` with dL/dparams given dL/doutput (B, d_out) for the last forward's batch.

        The stored activations serve as workspace, so each forward allows one backward.
        """
        if self._last_X is None:
            raise RuntimeError("backward needs the activations of a forward pass: call forward(X) first "
                               "(each forward allows one backward)")
        B, C = self._last_rows, self.n_outputs
        arr = _checks._as_numeric_array(dout, "dout")
        if arr.shape != (B, C):
            raise ValueError(f"dout must have the shape of the last forward's output {(B, C)}, got {arr.shape}")
        arr = _checks.finite_array(arr, self.dtype, "dout")
        out_start = B * sum(self.sizes[1:-1])
        self._ws.acts[out_start:out_start + B * C] = arr.ravel()
        X, self._last_X = self._last_X, None
        _core.backward(self.params, self.grads, self._dims, self._woff, self._boff, X,
                       self._ws.acts, self._ws.scratch)

    def predict(self, X, batch_size=4096):
        """Network output for X, computed in chunks; stores nothing for backward."""
        batch_size = _checks.positive_int(batch_size, "batch_size")
        if batch_size > _checks.BLAS_INT_MAX:
            raise ValueError(f"batch_size must be at most {_checks.BLAS_INT_MAX} (BLAS's 32-bit sizes), got {batch_size}")
        X = _checks.features(X, self.n_inputs, self.dtype)
        N = X.shape[0]
        cap = min(N, batch_size)
        acts = np.empty(cap * sum(self.sizes[1:]), dtype=self.dtype)
        out = np.empty((N, self.n_outputs), dtype=self.dtype)
        for start in range(0, N, cap):
            chunk = X[start:start + cap]
            B = chunk.shape[0]
            _core.forward(self.params, self._dims, self._woff, self._boff, chunk, acts)
            out_start = B * sum(self.sizes[1:-1])
            out[start:start + B] = acts[out_start:out_start + B * self.n_outputs].reshape(B, -1)
        return out

    # ---- memory

    def memory_report(self, batch_size, optimizer=None, loss=None):
        """Exact bytes that training with ``batch_size`` allocates (MATH.md, Memory).

        Returns a dict: parameters, gradients, optimizer_state, activations (one
        array per layer, the only term that grows with the batch), backward_scratch
        (dL/dH before its mask, widest hidden layer), batch (gathered inputs and
        targets), and total.
        """
        from .losses import SoftmaxCrossEntropy
        B = _checks.positive_int(batch_size, "batch_size")
        item = self.dtype.itemsize
        n_state = 0 if optimizer is None else optimizer.n_state_buffers
        hidden = self.sizes[1:-1]
        if isinstance(loss, SoftmaxCrossEntropy):
            targets = B * np.dtype(np.intp).itemsize
        else:
            targets = B * self.n_outputs * item
        report = {
            "parameters": self.n_params * item,
            "gradients": self.n_params * item,
            "optimizer_state": n_state * self.n_params * item,
            "activations": B * sum(self.sizes[1:]) * item,
            "backward_scratch": B * (max(hidden) if hidden else 0) * item,
            "batch": B * self.sizes[0] * item + targets,
        }
        report["total"] = sum(report.values())
        return report

    # ---- weights that travel (fastfit.interop, fastfit.io)

    def state_dict(self):
        """Weights in PyTorch's nn.Sequential(Linear, ReLU, ..., Linear) convention ("0.weight", ...); NumPy copies."""
        from .interop import state_dict
        return state_dict(self)

    def load_state_dict(self, state_dict):
        """Load weights in that convention (NumPy arrays or torch tensors), checked; returns self."""
        from .interop import load_state_dict
        return load_state_dict(self, state_dict)

    def save(self, path, optimizer=None):
        """fastfit.save(self, path, optimizer)."""
        from .io import save
        save(self, path, optimizer=optimizer)

    # ---- copying and pickling

    def copy(self):
        """An independent model with the same sizes, dtype and parameters."""
        other = MLP.__new__(MLP)
        other.__setstate__(self.__getstate__())
        return other

    def __getstate__(self):
        return {"sizes": self.sizes, "dtype": self.dtype.str, "seed": self.seed,
                "params": self.params.copy()}

    def __setstate__(self, state):
        self.sizes = check_sizes(state["sizes"])
        self.dtype = _checks.model_dtype(state["dtype"])
        self.seed = state.get("seed")
        self._layout()
        params = np.ascontiguousarray(state["params"], dtype=self.dtype)
        if params.shape != (self._n_params,):
            raise ValueError(f"params has shape {params.shape}, sizes {self.sizes} need ({self._n_params},)")
        self.params = params.copy()
        self.grads = np.zeros_like(self.params)
        self._make_views()
        self._ws = None
        self._last_X = None
        self._last_rows = 0

    def __repr__(self):
        return f"MLP(sizes={list(self.sizes)}, dtype={self.dtype.name}, n_params={self.n_params})"
