"""The MLP: one flat parameter buffer, one flat gradient buffer, layers as views.

Forward and backward run in the compiled core (_core.pyx), which receives the
network as one ``_core.Network`` object (shape, offsets, buffers). This module
owns the buffers, checks what users pass in, and keeps the workspace the step
API's activations live in.
"""
import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from . import _blas_select, _checks, _core, _threads
from ._checks import check_sizes, count_params  # noqa: F401 (part of this module's face)
from .losses import get_loss
from .optim import state_buffers_of


class Layer:
    """One fully connected layer: views into the model's flat buffers.

    ``W`` has shape (out_features, in_features) (docs/math.md's W_k, PyTorch's
    layout), ``b`` shape (out_features,); ``dW`` and ``db`` are the matching
    gradient views.
    """

    def __init__(self, W, b, dW, db, relu, model):
        self._W, self._b, self._dW, self._db = W, b, dW, db
        self._relu = relu
        self._model = weakref.ref(model)  # weak: a model and its layers must not keep each other alive

    def _assign(self, target, values, name):
        """Assigning W, b, dW or db copies checked values into the model's buffer (the name would
        otherwise point at a new array the model never reads); the views stay valid. An in-place
        operation (layer.W *= 2) has already written through the view when its assignment comes:
        there is nothing left to copy, and it is unchecked, as any in-place write."""
        if values is target:
            return
        model = self._model()
        if model is None:
            raise ReferenceError(f"{name}: the model this layer belonged to no longer exists")
        model._assign(target, values, name)

    W = property(lambda self: self._W, lambda self, values: self._assign(self._W, values, "W"),
                 doc="The weights (out_features, in_features): a view into the model's params.")
    b = property(lambda self: self._b, lambda self, values: self._assign(self._b, values, "b"),
                 doc="The biases (out_features,): a view into the model's params.")
    dW = property(lambda self: self._dW, lambda self, values: self._assign(self._dW, values, "dW"),
                  doc="The weights' gradient: a view into the model's grads.")
    db = property(lambda self: self._db, lambda self, values: self._assign(self._db, values, "db"),
                  doc="The biases' gradient: a view into the model's grads.")

    @property
    def relu(self):
        """Whether a ReLU follows the layer: every layer but the last (fixed by the model's sizes)."""
        return self._relu

    @property
    def in_features(self):
        return self.W.shape[1]

    @property
    def out_features(self):
        return self.W.shape[0]

    def __repr__(self):
        act = ", ReLU" if self.relu else ""
        return f"Layer({self.in_features} -> {self.out_features}{act})"


# ---------------------------------------------------------------- initialisation

def _he(d_in, d_out, rng):
    """He: W ~ Normal(0, 2/d_in), biases zero (docs/math.md, "Initialisation")."""
    return rng.standard_normal((d_out, d_in)) * np.sqrt(2.0 / d_in), np.zeros(d_out)


def _glorot(d_in, d_out, rng):
    """Glorot-uniform as scikit-learn's MLP draws it: W and b ~ U(-a, a), a = sqrt(6/(d_in+d_out))."""
    a = np.sqrt(6.0 / (d_in + d_out))
    return rng.uniform(-a, a, (d_out, d_in)), rng.uniform(-a, a, d_out)


INITS = {"he": _he, "glorot": _glorot}


def initial_params(sizes, dtype, seed, init="he"):
    """The flat parameter buffer, drawn layer by layer in float64 from default_rng(seed), then cast.

    ``init``: "he" (the book's choice for ReLU networks), "glorot", or a callable
    ``init(d_in, d_out, rng)`` returning W (d_out, d_in), or a pair (W, b).
    """
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"init must be one of {sorted(INITS)} or a callable, got {init!r}")
        draw = INITS[init]
    elif callable(init):
        draw = init
    else:
        raise TypeError(f"init must be one of {sorted(INITS)} or a callable (d_in, d_out, rng) -> W, got {init!r}")
    rng = _checks.random_generator(seed)
    params = np.empty(sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])), dtype=dtype)
    off = 0
    for k, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        drawn = draw(d_in, d_out, rng)
        W, b = drawn if isinstance(drawn, tuple) else (drawn, np.zeros(d_out))
        W = _checks._as_numeric_array(W, f"init's weights for layer {k}")
        b = _checks._as_numeric_array(b, f"init's biases for layer {k}")
        if W.shape != (d_out, d_in) or b.shape != (d_out,):
            raise ValueError(f"init returned shapes {W.shape} and {b.shape} for layer {k}; "
                             f"it must return W ({d_out}, {d_in}) and optionally b ({d_out},)")
        params[off:off + d_in * d_out] = _checks.finite_array(W, dtype, f"init's weights for layer {k}").ravel()
        off += d_in * d_out
        params[off:off + d_out] = _checks.finite_array(b, dtype, f"init's biases for layer {k}")
        off += d_out
    return params


# ---------------------------------------------------------------- the model

class MLP:
    """A fully connected network: ReLU hidden layers, a linear output.

    >>> model = MLP([64, 128, 128, 10], dtype=np.float32, seed=0)

    ``model.params`` and ``model.grads`` are flat 1-D arrays; ``model.layers[k].W``
    and ``.b`` are views into ``params``. Assigning ``model.params = values``
    copies checked values into the same buffer (the views stay valid).
    ``forward`` keeps what ``backward`` needs; ``backward`` fills ``grads`` for
    the last forward's batch. ``init``: "he" (default), "glorot", or a callable
    ``(d_in, d_out, rng) -> W`` or ``(W, b)``.

    A model is used by one thread at a time: a fit or step-API call while
    another thread fits it raises RuntimeError.
    """

    def __init__(self, sizes, dtype=np.float32, seed=0, init="he"):
        sizes = check_sizes(sizes)
        dtype = _checks.model_dtype(dtype)
        n = count_params(sizes)
        # the buffers, plus the float64 draw of the widest layer
        _checks.check_memory(2 * n * dtype.itemsize + 8 * max(a * b for a, b in zip(sizes[:-1], sizes[1:])),
                             f"an MLP of sizes {list(sizes)} ({n:,} parameters)")
        self._build(sizes, dtype, initial_params(sizes, dtype, seed, init), seed)

    @classmethod
    def from_params(cls, sizes, params, dtype=None, seed=None):
        """A model of these sizes holding a copy of ``params`` (the flat layout of docs/math.md).

        ``dtype`` defaults to params' own when it is float32 or float64; values
        are checked finite."""
        sizes = check_sizes(sizes)
        arr = _checks._as_numeric_array(params, "params")
        if dtype is None:
            dtype = arr.dtype if arr.dtype in _checks.FLOAT_DTYPES else np.float32
        dtype = _checks.model_dtype(dtype)
        n = count_params(sizes)
        if arr.shape != (n,):
            raise ValueError(f"params has shape {arr.shape}, sizes {list(sizes)} need ({n},)")
        model = cls.__new__(cls)
        model._build(sizes, dtype, _checks.finite_array(arr, dtype, "params"), seed)  # _build copies it
        return model

    def _build(self, sizes, dtype, params, seed):
        self._sizes, self._dtype, self.seed = sizes, dtype, seed
        # a copy on 64-byte lines, as the optimizer's state is: whole vectors per line in the update
        params, given = _core.line_aligned_zeros(params.size, dtype), params
        params[...] = given
        self._net = _core.Network(sizes, params, _core.line_aligned_zeros(params.size, dtype))
        self._ws = None          # workspace of the step API
        self._last_X = None      # the batch whose activations are stored, until backward
        self._use = threading.RLock()
        layers = []
        L = len(sizes) - 1
        for k in range(L):
            d_in, d_out = sizes[k], sizes[k + 1]
            w, b = int(self._net.woff[k]), int(self._net.boff[k])
            layers.append(Layer(params[w:b].reshape(d_out, d_in), params[b:b + d_out],
                                self.grads[w:b].reshape(d_out, d_in), self.grads[b:b + d_out],
                                relu=k < L - 1, model=self))
        self._layers = tuple(layers)

    @property
    def layers(self):
        """The layers, views into the model's buffers (a tuple: the model's shape is fixed)."""
        return self._layers

    @layers.setter
    def layers(self, value):
        raise AttributeError("layers are views into this model's buffers and cannot be replaced; assign a "
                             "layer's W and b, or model.params, to change the weights")

    # The compiled network is built for these: they are read-only, as a mismatch between
    # them and the buffers would let the core read past an array.
    @property
    def sizes(self):
        """The layer widths (d_0, ..., d_L), fixed when the model is built."""
        return self._sizes

    @sizes.setter
    def sizes(self, value):
        raise AttributeError(f"sizes is fixed when a model is built (this one has {list(self._sizes)}); "
                             "build a new MLP of the sizes you want")

    @property
    def dtype(self):
        """float32 or float64, fixed when the model is built."""
        return self._dtype

    @dtype.setter
    def dtype(self, value):
        raise AttributeError(f"dtype is fixed when a model is built (this one is {self._dtype.name}); "
                             "build a new MLP, or MLP.from_params(model.sizes, model.params, dtype=...)")

    # ---- the buffers

    @property
    def params(self):
        """All weights and biases, flat (W_0, b_0, W_1, b_1, ...; each W (out, in) row-major)."""
        return self._net.params

    @params.setter
    def params(self, values):
        self._assign(self._net.params, values, "params")

    @property
    def grads(self):
        """The gradient buffer, in the layout of params."""
        return self._net.grads

    @grads.setter
    def grads(self, values):
        self._assign(self._net.grads, values, "grads")

    def _assign(self, target, values, name):
        arr = self._checked_values(target, values, name)
        with self.exclusive(f"assigning {name}"):
            target[...] = arr

    def _checked_values(self, target, values, name):
        """values as an array that may be written into ``target`` (one of this model's buffers or a
        view into one): the same shape, finite in the model's dtype; else an error naming ``name``."""
        arr = _checks._as_numeric_array(values, name)
        if arr.shape != target.shape:
            what = f"the model's {self.n_params} parameters" if target.ndim == 1 and target.size == self.n_params \
                else "the layer's"
            raise ValueError(f"{name} must have shape {target.shape} ({what}), got {arr.shape}")
        return _checks.finite_array(arr, self.dtype, name)

    @contextlib.contextmanager
    def exclusive(self, what):
        """Hold the model for ``what``; RuntimeError when another thread is using it."""
        if not self._use.acquire(blocking=False):
            raise RuntimeError(f"{what}: this model is being used by another thread (a fit or a step); "
                               "a model is trained by one thread at a time; use model.copy() for another")
        try:
            yield
        finally:
            self._use.release()

    @contextlib.contextmanager
    def _pass_threads(self, flops_per_param):
        """The threads for a pass of that many flops per parameter: one for small ones, all
        allowed cores for large ones (fastfit's team splits the large products). BLAS runs at one
        thread inside the pass and is restored after."""
        with _threads.single_threaded_blas():
            yield _threads.auto_threads(flops_per_param * self.n_params)

    @property
    def n_params(self):
        """Number of weights and biases."""
        return self._net.n_params

    @property
    def n_inputs(self):
        return self.sizes[0]

    @property
    def n_outputs(self):
        return self.sizes[-1]

    def workspace(self, capacity, target_cols=0, labels=False, threads=1, deltas=False):
        """A fresh workspace (activations, scratch, gathered batch) for batches of up to ``capacity`` rows,
        whose large products are split across ``threads`` of fastfit's threads; ``deltas`` adds a
        buffer that keeps dL/dF apart from the activations (the distributed factor exchange)."""
        return _core.Workspace(self._net, capacity, target_cols, labels, threads,
                               transpose_small_inputs=_blas_select.small_matrix_kernels(), deltas=deltas,
                               transpose_few_row_outputs=_blas_select.few_row_outputs_transposed(),
                               own_products=_blas_select.own_products()[0])

    def _output(self, ws, rows):
        start = self._net.output_offset(rows)
        return ws.acts[start:start + rows * self.n_outputs].reshape(rows, self.n_outputs)

    # ---- step-level API

    def forward(self, X):
        """Output for the batch X (B, d_0) as a new array; keeps the activations for backward."""
        rows = X.shape[0] if isinstance(X, np.ndarray) and X.ndim == 2 else None
        if rows is not None and rows > _checks.BLAS_INT_MAX:
            raise ValueError(f"X has {rows} rows; one forward pass takes at most {_checks.BLAS_INT_MAX} "
                             "(BLAS's 32-bit sizes): use predict(), which works in chunks")
        X = _checks.features(X, self.n_inputs, self.dtype)
        with self.exclusive("forward"), self._pass_threads(2 * X.shape[0]) as threads:
            B = X.shape[0]
            if self._ws is None or self._ws.capacity < B:
                self._ws = self.workspace(B)
            self._ws.threads = threads
            _core.forward(self._net, X, self._ws)
            self._last_X = X
            return self._output(self._ws, B).copy()

    def backward(self, dout):
        """Fill ``grads`` with dL/dparams given dL/doutput (B, d_out) for the last forward's batch.

        The stored activations serve as workspace, so each forward allows one backward.
        """
        if self._last_X is None:
            raise RuntimeError("backward needs the activations of a forward pass: call forward(X) first "
                               "(each forward allows one backward)")
        B, C = self._last_X.shape[0], self.n_outputs
        arr = _checks._as_numeric_array(dout, "dout")
        if arr.shape != (B, C):
            raise ValueError(f"dout must have the shape of the last forward's output {(B, C)}, got {arr.shape}")
        arr = _checks.finite_array(arr, self.dtype, "dout")
        with self.exclusive("backward"), self._pass_threads(4 * B) as threads:
            X, self._last_X = self._last_X, None
            self._ws.threads = threads
            self._output(self._ws, B)[...] = arr
            _core.backward(self._net, X, self._ws)

    def predict(self, X, batch_size=4096):
        """Network output for X, computed in chunks; stores nothing for backward.

        X may be a NumPy array, a memmap, or a SciPy sparse matrix (densified a
        chunk at a time)."""
        batch_size = _checks.batch_rows(batch_size)
        rows = _checks.Rows(X, self.n_inputs, self.dtype)
        N = rows.n
        cap = min(N, batch_size)
        ws = self.workspace(cap)
        out = np.empty((N, self.n_outputs), dtype=self.dtype)
        with self.exclusive("predict"), self._pass_threads(2 * cap) as threads:
            ws.threads = threads
            for start in range(0, N, cap):
                chunk = rows.dense(start, min(N, start + cap))
                _core.forward(self._net, chunk, ws)
                out[start:start + chunk.shape[0]] = self._output(ws, chunk.shape[0])
        return out

    # ---- memory

    def memory_report(self, batch_size, optimizer=None, loss=None, n_threads=None):
        """Exact bytes that training with ``batch_size`` allocates (docs/math.md, "Memory").

        ``optimizer``: an optimizer or a name ("sgd", "momentum", "adam",
        "adamw", "normalized"); ``loss``: a loss or a loss name; ``n_threads``:
        the fit's (default: the count ``fit`` would choose). Returns a dict:
        parameters, gradients, optimizer_state, activations (one array per
        layer), backward_scratch (dL/dH before its mask, widest hidden layer),
        batch (gathered inputs and targets), snapshot (the parameters and state
        a fit keeps to undo a step that overflows), packing (one buffer per
        thread for fastfit's own products, where they run), and total.
        """
        B = _checks.batch_rows(batch_size)
        if n_threads is None:
            n_threads = _threads.auto_threads(6.0 * self.n_params * B)
        else:
            n_threads = _threads.thread_count(n_threads)
        own_products = _blas_select.own_products()[0] and _core.uses_own_products(self.sizes, B, self.dtype)
        item = self.dtype.itemsize
        n_state = 0 if optimizer is None else state_buffers_of(optimizer)
        hidden = self.sizes[1:-1]
        if loss is not None and get_loss(loss).uses_labels:
            targets = B * np.dtype(np.intp).itemsize
        else:
            targets = B * self.n_outputs * item
        line = _core.LINE_BYTES  # each buffer is that much longer, to start on a cache line
        report = {
            "parameters": self.n_params * item + line,
            "gradients": self.n_params * item + line,
            "optimizer_state": n_state * (self.n_params * item + line),
            "activations": B * sum(self.sizes[1:]) * item + line,
            "backward_scratch": B * max(hidden) * item + line if hidden else 0,
            "batch": B * self.sizes[0] * item + line + targets + line,
            "snapshot": (1 + n_state) * self.n_params * item,
            "packing": (n_threads * _core.own_product_packing_bytes(self.sizes, B) + line) if own_products else 0,
        }
        report["total"] = sum(report.values())
        return report

    # ---- weights that travel: PyTorch's nn.Sequential(Linear, ReLU, ..., Linear) keys

    def state_dict(self):
        """Weights in PyTorch's nn.Sequential(Linear, ReLU, ..., Linear) convention
        ("0.weight", "0.bias", "2.weight", ...); NumPy copies, W (out, in)."""
        sd = OrderedDict()
        with self.exclusive("state_dict"):  # not half-way through another thread's step
            for layer, (wk, bk) in zip(self.layers, sequential_keys(len(self.layers))):
                sd[wk] = layer.W.copy()
                sd[bk] = layer.b.copy()
        return sd

    def load_state_dict(self, state_dict):
        """Load weights in that convention (NumPy arrays or torch tensors), checked; returns self.

        Every key must be present and no other; every shape must match; values
        are cast to the model's dtype and must be finite. Nothing is written
        unless everything checks."""
        sd = check_mapping(state_dict)
        keys = sequential_keys(len(self.layers))
        msg = key_mismatch_message([k for pair in keys for k in pair], list(sd.keys()), f"{self!r}")
        if msg:
            raise ValueError(msg)
        staged = []
        for k, (layer, (wk, bk)) in enumerate(zip(self.layers, keys)):
            for key, target in ((wk, layer.W), (bk, layer.b)):
                arr = as_array(sd[key], f"state_dict[{key!r}]")
                if arr.shape != target.shape:
                    hint = ""
                    if arr.shape == target.shape[::-1] and arr.ndim == 2:
                        hint = (" (it looks transposed: PyTorch and fastfit store weights as (out, in); "
                                "for scikit-learn's (in, out) coefs_ use fastfit.interop.from_sklearn)")
                    raise ValueError(f"state_dict[{key!r}] has shape {arr.shape}, but layer {k} of {self!r} "
                                     f"needs {target.shape}{hint}")
                staged.append((target, _checks.finite_array(arr, self.dtype, f"state_dict[{key!r}]")))
        with self.exclusive("load_state_dict"):
            for target, arr in staged:
                target[...] = arr
        return self

    # ---- copying and pickling

    def copy(self):
        """An independent model with the same sizes, dtype and parameters."""
        with self.exclusive("copy"):  # not half-way through another thread's step
            return MLP.from_params(self.sizes, self.params, self.dtype, self.seed)

    def __copy__(self):
        """copy.copy gives an independent model, as model.copy() does (a shallow copy would share
        the parameter buffer and the lock with this one)."""
        return self.copy()

    def __getstate__(self):
        with self.exclusive("pickling"):
            params = self.params.copy()
        return {"sizes": self.sizes, "dtype": self.dtype.str, "seed": self.seed, "params": params}

    def __setstate__(self, state):
        other = MLP.from_params(state["sizes"], state["params"], state["dtype"], state.get("seed"))
        self.__dict__.update(other.__dict__)

    def __repr__(self):
        return f"MLP(sizes={list(self.sizes)}, dtype={self.dtype.name}, n_params={self.n_params})"


# ---------------------------------------------------------------- PyTorch's state_dict keys

def sequential_keys(n_layers):
    """The nn.Sequential keys of layer k: ('{2k}.weight', '{2k}.bias') (the ReLUs take the odd indices)."""
    return [(f"{2 * k}.weight", f"{2 * k}.bias") for k in range(n_layers)]


def as_array(value, name):
    """A NumPy view or copy of an array-like or a torch tensor (detached, moved to the CPU)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        t = value.detach().cpu()
        try:
            value = np.asarray(t)
        except (TypeError, RuntimeError):  # dtypes NumPy lacks (bfloat16, ...)
            value = np.asarray(t.double())
    return _checks._as_numeric_array(value, name)


def check_mapping(state_dict):
    if not isinstance(state_dict, Mapping) and not (hasattr(state_dict, "keys") and hasattr(state_dict, "__getitem__")):
        raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
    return state_dict


def key_mismatch_message(expected, given, what):
    """None when the keys match; else a message listing missing and unexpected keys, with a hint."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if not missing and not unexpected:
        return None
    parts = [f"state_dict does not match {what}"]
    if missing:
        parts.append(f"missing keys {missing}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected}")
    msg = "; ".join(parts) + "."
    prefixes = {k.split(".", 1)[0] for k in unexpected if "." in k and not k.split(".", 1)[0].isdigit()}
    if unexpected and len(prefixes) == 1 and all("." in k for k in unexpected):
        p = prefixes.pop()
        msg += (f" The keys carry a prefix {p + '.'!r} (a Sequential inside another module?): "
                f"pass {{k[{len(p) + 1}:]: v for k, v in sd.items() if k.startswith({p + '.'!r})}}.")
    else:
        msg += (" fastfit's keys are those of nn.Sequential(Linear, ReLU, Linear, ReLU, ..., Linear): "
                "'0.weight', '0.bias', '2.weight', '2.bias', ...")
    return msg
