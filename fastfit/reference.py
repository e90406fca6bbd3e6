"""Pure-NumPy reference implementation of docs/math.md (the oracle).

Every formula of docs/math.md is written out here literally, one line of code per
line of mathematics where possible: loops over layers, no fused kernels, no
in-place tricks beyond writing results into the flat parameter/gradient
buffers. The compiled core is checked against this module; this module is
checked against the mathematics (tests/test_reference_math.py).

All arrays keep the model's dtype (float32 or float64).
"""
import math
import numbers

import numpy as np

from .history import History
from .schedules import ConstantLR, CosineWithWarmup, ExponentialDecay, StepDecay

__all__ = [
    "MLP",
    "SquaredError", "SoftmaxCrossEntropy", "BinaryCrossEntropy",
    "SGD", "Adam", "AdamW", "NormalizedGD",
    "ConstantLR", "StepDecay", "ExponentialDecay", "CosineWithWarmup",
    "fit",
]


# --------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------

class Layer:
    """One affine layer. ``W``/``b`` are views into ``MLP.params``,
    ``dW``/``db`` views into ``MLP.grads``."""

    def __init__(self, W, b, dW, db):
        self.W = W      # (d_out, d_in)
        self.b = b      # (d_out,)
        self.dW = dW    # (d_out, d_in)
        self.db = db    # (d_out,)

    @property
    def shape(self):
        return self.W.shape

    def __repr__(self):
        return f"Layer(d_in={self.W.shape[1]}, d_out={self.W.shape[0]})"


class MLP:
    """Fully connected ReLU network; the last layer is linear.

    ``params`` is one flat array holding W_0, b_0, W_1, b_1, ... (each W
    row-major, shape (sizes[k+1], sizes[k])); ``grads`` has the same layout.
    """

    def __init__(self, sizes, dtype=np.float32, seed=0, init="he"):
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must have at least 2 entries (input and output), got {sizes!r}")
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
                raise ValueError(f"sizes must be whole numbers >= 1, got {sizes!r}")
        self.sizes = tuple(int(s) for s in sizes)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")

        self.n_params = sum(dout * din + dout for din, dout in zip(self.sizes[:-1], self.sizes[1:]))
        self.params = np.zeros(self.n_params, dtype=self.dtype)
        self.grads = np.zeros(self.n_params, dtype=self.dtype)

        # Carve the flat buffers into per-layer views: W_k then b_k.
        self.layers = []
        offset = 0
        for din, dout in zip(self.sizes[:-1], self.sizes[1:]):
            W = self.params[offset:offset + dout * din].reshape(dout, din)
            dW = self.grads[offset:offset + dout * din].reshape(dout, din)
            offset += dout * din
            b = self.params[offset:offset + dout]
            db = self.grads[offset:offset + dout]
            offset += dout
            self.layers.append(Layer(W, b, dW, db))
        assert offset == self.n_params

        # docs/math.md, "Initialisation": drawn in float64, layer by layer, W then b.
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            dout, din = layer.W.shape
            if init == "he":                                # W ~ Normal(0, 2 / d_in), b = 0
                layer.W[...] = rng.standard_normal((dout, din)) * np.sqrt(2.0 / din)
                layer.b[...] = 0
            elif init == "glorot":                          # W, b ~ U(-a, a), a = sqrt(6 / (d_in + d_out))
                a = np.sqrt(6.0 / (din + dout))
                layer.W[...] = rng.uniform(-a, a, (dout, din))
                layer.b[...] = rng.uniform(-a, a, dout)
            else:
                raise ValueError(f"init must be 'he' or 'glorot', got {init!r}")

        self._H = None  # H_0 .. H_K of the last forward pass

    @property
    def n_layers(self):
        return len(self.layers)

    def _check_input(self, X):
        X = np.asarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must have shape (B, {self.sizes[0]}), got {X.shape}")
        return X

    def _forward(self, X, store):
        H = X                                           # H_0 = X
        Hs = [H]
        K = len(self.layers) - 1                        # number of hidden layers
        for k, layer in enumerate(self.layers):
            F = H @ layer.W.T + layer.b                 # F_k = H_k @ W_k.T + b_k
            if k < K:
                H = np.maximum(F, 0)                    # H_{k+1} = relu(F_k)
                Hs.append(H)
            else:
                out = F                                 # output = F_K (linear)
        if store:
            self._H = Hs
        return out

    def forward(self, X):
        """Output (B, sizes[-1]); stores H_0 .. H_K for ``backward``."""
        return self._forward(self._check_input(X), store=True)

    def predict(self, X):
        """Output (B, sizes[-1]) without storing anything."""
        return self._forward(self._check_input(X), store=False)

    __call__ = predict

    def backward(self, dout):
        """Fill ``grads`` from dL/d(output) for the batch of the last ``forward``."""
        if self._H is None:
            raise RuntimeError("backward() needs a forward() first")
        B = self._H[0].shape[0]
        dF = np.asarray(dout, dtype=self.dtype)          # dL/dF_K
        if dF.shape != (B, self.sizes[-1]):
            raise ValueError(f"dout must have shape {(B, self.sizes[-1])}, got {dF.shape}")
        for k in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[k]
            H = self._H[k]
            layer.db[...] = dF.sum(axis=0)                # dL/db_k = sum over rows of dL/dF_k
            layer.dW[...] = dF.T @ H                      # dL/dW_k = (dL/dF_k).T @ H_k
            if k > 0:                                     # dL/dH_0 is never computed
                dH = dF @ layer.W                         # dL/dH_k = dL/dF_k @ W_k
                dF = (H > 0) * dH                         # dL/dF_{k-1} = 1[H_k > 0] * dL/dH_k
        return self.grads

    def __repr__(self):
        return f"MLP(sizes={list(self.sizes)}, dtype={self.dtype.name}, n_params={self.n_params})"


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------

def _check_reduction(reduction):
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return reduction


def _as_2d_output(out):
    out = np.asarray(out)
    if out.ndim != 2:
        raise ValueError(f"out must have shape (B, C), got {out.shape}")
    if out.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        out = out.astype(np.float64)
    return out


def _as_targets_like(y, out):
    """Targets for element-wise losses: (B, C), or (B,) when C == 1."""
    y = np.asarray(y, dtype=out.dtype)
    B, C = out.shape
    if y.ndim == 1 and C == 1:
        y = y.reshape(B, 1) if y.shape[0] == B else y
    if y.shape != out.shape:
        raise ValueError(f"y must have shape {out.shape}" + (f" or ({B},)" if C == 1 else "")
                         + f", got {np.shape(y)}")
    return y


class SquaredError:
    """l_i = sum_j (f_ij - y_ij)^2; gradient 2 (f - y).
    "mean" divides by B*C (every element), as torch's MSELoss does."""

    def __init__(self, reduction="mean", l2=0.0):
        self.reduction = _check_reduction(reduction)
        self.l2 = float(l2)  # the L2 penalty's coefficient (docs/math.md, "Regularisation"); fit applies it

    def value_and_grad(self, out, y):
        out = _as_2d_output(out)
        y = _as_targets_like(y, out)
        B, C = out.shape
        diff = out - y
        value = float(np.sum(diff * diff))
        grad = 2 * diff
        if self.reduction == "mean":
            value = value / (B * C)
            grad = grad / out.dtype.type(B * C)
        return value, grad.astype(out.dtype, copy=False)

    def __repr__(self):
        return f"SquaredError(reduction={self.reduction!r})"


class SoftmaxCrossEntropy:
    """Integer labels y_i in [0, C): l_i = logsumexp(f_i) - f_i[y_i];
    gradient softmax(f_i) - onehot(y_i). "mean" divides by B."""

    def __init__(self, reduction="mean", l2=0.0):
        self.reduction = _check_reduction(reduction)
        self.l2 = float(l2)  # the L2 penalty's coefficient (docs/math.md, "Regularisation"); fit applies it

    def value_and_grad(self, out, y):
        out = _as_2d_output(out)
        B, C = out.shape
        y = np.asarray(y)
        if y.shape != (B,):
            raise ValueError(f"y must be integer labels of shape ({B},), got {y.shape}")
        if y.dtype.kind not in "iu":
            if not np.all(y == np.round(y)):
                raise ValueError("y must hold integer class labels")
            y = y.astype(np.int64)
        if B and (y.min() < 0 or y.max() >= C):
            raise ValueError(f"labels must be in [0, {C}), got min {y.min()} max {y.max()}")
        rows = np.arange(B)
        shifted = out - out.max(axis=1, keepdims=True)            # max subtracted: no overflow
        expd = np.exp(shifted)
        sumexp = expd.sum(axis=1, keepdims=True)
        lse = np.log(sumexp)[:, 0]                                # logsumexp(f_i) - max_i
        losses = lse - shifted[rows, y]                           # l_i
        softmax = expd / sumexp
        onehot = np.zeros_like(out)
        onehot[rows, y] = 1
        grad = softmax - onehot
        value = float(np.sum(losses))
        if self.reduction == "mean":
            value = value / B
            grad = grad / out.dtype.type(B)
        return value, grad.astype(out.dtype, copy=False)

    def __repr__(self):
        return f"SoftmaxCrossEntropy(reduction={self.reduction!r})"


def _sigmoid(f):
    """Stable logistic function: never exponentiates a positive number."""
    e = np.exp(-np.abs(f))                     # in (0, 1]
    return np.where(f >= 0, 1 / (1 + e), e / (1 + e))


class BinaryCrossEntropy:
    """On logits, y in {0, 1} (or [0, 1]):
    l = max(f, 0) - f*y + log(1 + exp(-|f|)); gradient sigmoid(f) - y.
    "mean" divides by B*C (every element), as torch's BCEWithLogitsLoss does."""

    def __init__(self, reduction="mean", l2=0.0):
        self.reduction = _check_reduction(reduction)
        self.l2 = float(l2)  # the L2 penalty's coefficient (docs/math.md, "Regularisation"); fit applies it

    def value_and_grad(self, out, y):
        out = _as_2d_output(out)
        y = _as_targets_like(y, out)
        B, C = out.shape
        losses = np.maximum(out, 0) - out * y + np.log1p(np.exp(-np.abs(out)))
        grad = _sigmoid(out) - y
        value = float(np.sum(losses))
        if self.reduction == "mean":
            value = value / (B * C)
            grad = grad / out.dtype.type(B * C)
        return value, grad.astype(out.dtype, copy=False)

    def __repr__(self):
        return f"BinaryCrossEntropy(reduction={self.reduction!r})"


# --------------------------------------------------------------------------
# Optimizers (the book's form)
# --------------------------------------------------------------------------

def _check_lr(lr):
    if callable(lr):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise ValueError(f"lr must be a finite number > 0 or a callable t -> lr, got {lr!r}")
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0 or a callable t -> lr, got {lr!r}")
    return lr


def _check_unit_interval(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    return eps


def _flushed(x):
    """x with its subnormal entries set to zero (docs/math.md, "Subnormal numbers")."""
    x[np.abs(x) < np.finfo(x.dtype).tiny] = 0
    return x


class Optimizer:
    """Common part: learning rate (float or schedule t -> float), step count t, weight decay."""

    def __init__(self, lr, weight_decay=0.0):
        self.lr = _check_lr(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0  # steps taken so far

    def _gradient(self, model):
        """g, with weight decay (PyTorch's meaning): g + wd * params."""
        return model.grads + self.weight_decay * model.params

    def lr_at(self, t):
        """alpha_t: the learning rate of step t (t counted from 0)."""
        return float(self.lr(t)) if callable(self.lr) else self.lr

    def current_lr(self):
        """Learning rate of the next step."""
        return self.lr_at(self.t)

    def prepare(self, model):
        """Put model.params where the next gradient must be evaluated (no-op here)."""

    def finalize(self, model):
        """Put model.params at the trajectory point phi (no-op here)."""

    def step(self, model):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with the book's momentum or Nesterov.

    momentum == 0:   phi <- phi - alpha_t * g
    momentum beta:   m <- beta*m + (1-beta)*g ;  phi <- phi - alpha_t * m
    nesterov=True:   the same, with g evaluated at psi_t = phi_t - alpha_t*beta*m_t.
                     phi and m are kept explicitly (``self.phi``, ``self.m``);
                     model.params holds psi_t between steps, phi after finalize().
    """

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _check_unit_interval("momentum", momentum)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0")
        self.m = None
        self.phi = None             # Nesterov only: the trajectory point phi_t
        self._at_lookahead = False  # Nesterov only: model.params == psi_t

    # Nesterov bookkeeping ---------------------------------------------------
    def _bind(self, model):
        if self.phi is None:
            self.phi = model.params.copy()                    # phi_0
            self.m = np.zeros_like(model.params)              # m_0 = 0

    def _lookahead(self):
        beta = self.momentum
        return self.phi - self.lr_at(self.t) * beta * self.m  # psi_t = phi_t - alpha_t*beta*m_t

    def prepare(self, model):
        if not self.nesterov:
            return
        self._bind(model)
        model.params[:] = self._lookahead()
        self._at_lookahead = True

    def finalize(self, model):
        if not self.nesterov or self.phi is None:
            return
        model.params[:] = self.phi
        self._at_lookahead = False

    # The step ---------------------------------------------------------------
    def step(self, model):
        g = self._gradient(model)
        lr = self.lr_at(self.t)
        beta = self.momentum
        if self.nesterov:
            self._bind(model)
            if not self._at_lookahead and np.any(self.m != 0):
                raise RuntimeError(
                    "Nesterov step() after finalize(): model.params are at phi, not at the "
                    "look-ahead point, so the gradient was taken at the wrong point; call "
                    "prepare(model) and recompute the gradient before step()")
            self.m = _flushed(beta * self.m + (1 - beta) * g)  # m_{t+1} (g taken at psi_t)
            self.phi = self.phi - lr * self.m                 # phi_{t+1} = phi_t - alpha_t*m_{t+1}
            self.t += 1
            model.params[:] = self._lookahead()               # psi_{t+1}, with alpha_{t+1}
            self._at_lookahead = True
        elif beta > 0:
            if self.m is None:
                self.m = np.zeros_like(model.params)
            self.m = _flushed(beta * self.m + (1 - beta) * g)  # m_{t+1}
            model.params[:] = model.params - lr * self.m      # phi_{t+1}
            self.t += 1
        else:
            model.params[:] = model.params - lr * g           # phi_{t+1} = phi_t - alpha_t*g_t
            self.t += 1

    def __repr__(self):
        return f"SGD(lr={self.lr!r}, momentum={self.momentum!r}, nesterov={self.nesterov!r})"


class Adam(Optimizer):
    """m <- b1 m + (1-b1) g ; v <- b2 v + (1-b2) g*g ;
    phi <- phi - alpha_t * m_hat / (sqrt(v_hat) + eps), with bias correction
    m_hat = m / (1 - b1^(t+1)), v_hat = v / (1 - b2^(t+1))."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (_check_unit_interval("betas[0]", b1), _check_unit_interval("betas[1]", b2))
        self.eps = _check_eps(eps)
        self.m = None
        self.v = None

    decoupled = False

    def step(self, model):
        g = model.grads if self.decoupled else self._gradient(model)
        lr = self.lr_at(self.t)
        b1, b2 = self.betas
        if self.m is None:
            self.m = np.zeros_like(model.params)
            self.v = np.zeros_like(model.params)
        if self.decoupled:                                 # AdamW: phi <- phi (1 - lr wd) first
            model.params[:] = model.params * (1 - lr * self.weight_decay)
        self.m = _flushed(b1 * self.m + (1 - b1) * g)
        self.v = _flushed(b2 * self.v + (1 - b2) * g * g)
        m_hat = self.m / (1 - b1 ** (self.t + 1))
        v_hat = self.v / (1 - b2 ** (self.t + 1))
        model.params[:] = model.params - lr * m_hat / (np.sqrt(v_hat) + self.eps)
        self.t += 1

    def __repr__(self):
        return f"Adam(lr={self.lr!r}, betas={self.betas!r}, eps={self.eps!r})"


class AdamW(Adam):
    """Adam with decoupled weight decay: phi <- phi (1 - lr wd), then Adam's step from g alone."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas, eps, weight_decay)


class NormalizedGD(Optimizer):
    """phi <- phi - alpha_t * g / (sqrt(g*g) + eps) (element-wise)."""

    def __init__(self, lr, eps=1e-8):
        super().__init__(lr)
        self.eps = _check_eps(eps)

    def step(self, model):
        g = model.grads
        lr = self.lr_at(self.t)
        model.params[:] = model.params - lr * g / (np.sqrt(g * g) + self.eps)
        self.t += 1

    def __repr__(self):
        return f"NormalizedGD(lr={self.lr!r}, eps={self.eps!r})"


# --------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------

def fit(model, X, y, loss, optimizer, batch_size=64, epochs=10, seed=0,
        shuffle=True, drop_last=False):
    """Minibatch training; returns a History with one "loss" entry per epoch.

    Batches are drawn without replacement from ``rng.permutation(N)``
    (``np.arange(N)`` if not shuffle), rng = np.random.default_rng(seed).
    batch_size=None is full-batch gradient descent. The epoch loss is the
    row-weighted mean of the batch values (reduction "mean") or their sum ("sum").
    """
    X = np.asarray(X, dtype=model.dtype)
    y = np.asarray(y)
    N = len(X)
    if N == 0:
        raise ValueError("X is empty")
    if len(y) != N:
        raise ValueError(f"X and y must have the same number of rows, got {N} and {len(y)}")
    if batch_size is None:
        bs = N
    else:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1 or None, got {batch_size!r}")
        bs = min(int(batch_size), N)
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"epochs must be a whole number >= 0, got {epochs!r}")
    reduction = getattr(loss, "reduction", "mean")

    n_batches = N // bs if drop_last else -(-N // bs)
    n_batches = max(n_batches, 1)

    rng = np.random.default_rng(seed)
    history = History()
    optimizer.prepare(model)
    for _ in range(int(epochs)):
        order = rng.permutation(N) if shuffle else np.arange(N)
        total = 0.0
        n_seen = 0
        for j in range(n_batches):
            idx = order[j * bs:(j + 1) * bs]
            Xb, yb = X[idx], y[idx]
            out = model.forward(Xb)
            value, dout = loss.value_and_grad(out, yb)
            model.backward(dout)
            if getattr(loss, "l2", 0):                 # the L2 penalty on the weights, scaled as the loss is
                per_sample = 1 if isinstance(loss, SoftmaxCrossEntropy) else model.sizes[-1]
                scale = 1 / (len(idx) * per_sample) if reduction == "mean" else 1
                for layer in model.layers:
                    layer.dW += loss.l2 * scale * layer.W
            optimizer.step(model)
            if reduction == "sum":
                total += value
            else:
                total += value * len(idx)
            n_seen += len(idx)
        epoch_loss = total if reduction == "sum" else total / n_seen
        history.record(loss=float(epoch_loss))
    optimizer.finalize(model)
    return history
