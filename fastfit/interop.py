"""Weights that travel: PyTorch's state_dict convention and scikit-learn's coefs_/intercepts_.

fastfit stores each layer's W as (out, in), as PyTorch's ``nn.Linear`` does, and
scikit-learn stores (in, out) (docs/math.md, "Weight layout"). A fastfit MLP with sizes
(d_0, d_1, ..., d_K) is exactly

    torch.nn.Sequential(Linear(d_0, d_1), ReLU(), Linear(d_1, d_2), ReLU(), ..., Linear(d_{K-1}, d_K))

whose state_dict keys are "0.weight", "0.bias", "2.weight", "2.bias", ... (the
ReLUs hold no parameters but take an index). It is also the network of a
scikit-learn ``MLPClassifier``/``MLPRegressor`` with ``activation="relu"`` up to
the output activation: fastfit's output is the last layer's linear output
(logits), scikit-learn applies softmax, logistic or identity on top.

Nothing here needs PyTorch except :func:`to_torch` and :func:`from_torch`, which
import it when called. Functions that take arrays also take torch tensors.
"""
import numpy as np

from . import _checks
from .network import MLP, as_array as _as_array, check_mapping as _check_mapping, check_sizes
from .network import key_mismatch_message as _key_mismatch_message, sequential_keys as _keys


def _model_from_layers(weights, biases, dtype, seed=None):
    """An MLP from per-layer W (out, in) and b (out,), already checked to chain."""
    sizes = check_sizes([weights[0].shape[1]] + [W.shape[0] for W in weights])
    dtype = _checks.model_dtype(dtype)
    chunks = []
    for W, b in zip(weights, biases):
        chunks.append(np.asarray(W, dtype=dtype).ravel())
        chunks.append(np.asarray(b, dtype=dtype).ravel())
    params = np.concatenate(chunks)
    _checks.check_finite(params, "the weights")
    return MLP.from_params(sizes, params, dtype, seed)


# ---------------------------------------------------------------- PyTorch's convention

def state_dict(model):
    """The model's weights in PyTorch's nn.Sequential(Linear, ReLU, ...) convention (see MLP.state_dict)."""
    return model.state_dict()


def load_state_dict(model, state_dict):
    """Copy weights in that convention into ``model``, checked, in place (see MLP.load_state_dict)."""
    return model.load_state_dict(state_dict)


def from_state_dict(state_dict, dtype=np.float32):
    """A new MLP whose sizes and weights come from a state_dict in the nn.Sequential convention.

    The sizes are read off the weight shapes; keys must be exactly "0.weight",
    "0.bias", "2.weight", ... with consecutive layers chaining (out of layer k =
    in of layer k+1).
    """
    sd = _check_mapping(state_dict)
    n = sum(1 for k in sd.keys() if isinstance(k, str) and k.endswith(".weight"))
    if n == 0:
        raise ValueError("state_dict holds no '<index>.weight' entries: nothing to build a model from")
    keys = _keys(n)
    expected = [k for pair in keys for k in pair]
    msg = _key_mismatch_message(expected, list(sd.keys()), f"an MLP of {n} layers")
    if msg:
        raise ValueError(msg)
    weights, biases = [], []
    for k, (wk, bk) in enumerate(keys):
        W = _as_array(sd[wk], f"state_dict[{wk!r}]")
        b = _as_array(sd[bk], f"state_dict[{bk!r}]")
        if W.ndim != 2:
            raise ValueError(f"state_dict[{wk!r}] must be 2-D (out_features, in_features), got shape {W.shape}")
        if b.shape != (W.shape[0],):
            raise ValueError(f"state_dict[{bk!r}] has shape {b.shape}, but {wk!r} {W.shape} needs ({W.shape[0]},)")
        if weights and W.shape[1] != weights[-1].shape[0]:
            raise ValueError(f"state_dict[{wk!r}] takes {W.shape[1]} inputs, but the layer before it "
                             f"gives {weights[-1].shape[0]} outputs")
        weights.append(W)
        biases.append(b)
    return _model_from_layers(weights, biases, dtype)


# ---------------------------------------------------------------- scikit-learn's layout

def to_sklearn(model):
    """(coefs, intercepts) in scikit-learn's MLP layout: coefs[k] is W_k.T, shape (in, out); copies."""
    coefs = [np.ascontiguousarray(layer.W.T) for layer in model.layers]
    intercepts = [layer.b.copy() for layer in model.layers]
    return coefs, intercepts


def from_sklearn(coefs, intercepts=None, dtype=np.float32):
    """A new MLP from scikit-learn's ``coefs_`` (each (in, out)) and ``intercepts_`` (each (out,)).

    ``coefs`` may also be a fitted scikit-learn MLPClassifier/MLPRegressor (or a
    fastfit.sklearn estimator), with ``intercepts`` left None; its hidden
    activation must be ReLU. The model's output is the last layer's linear output:
    scikit-learn's output activation (softmax, logistic) is not part of it.
    """
    if intercepts is None:
        est = coefs
        if not (hasattr(est, "coefs_") and hasattr(est, "intercepts_")):
            raise TypeError("from_sklearn takes (coefs, intercepts) lists, or a fitted scikit-learn MLP estimator")
        activation = getattr(est, "activation", "relu")
        if activation != "relu":
            raise ValueError(f"the estimator's hidden layers use activation={activation!r}; fastfit's are ReLU, "
                             "so its weights would compute a different function")
        coefs, intercepts = est.coefs_, est.intercepts_
    coefs, intercepts = list(coefs), list(intercepts)
    if not coefs:
        raise ValueError("coefs is empty: a network needs at least one layer")
    if len(coefs) != len(intercepts):
        raise ValueError(f"coefs has {len(coefs)} layers but intercepts has {len(intercepts)}")
    weights, biases = [], []
    for k, (c, b) in enumerate(zip(coefs, intercepts)):
        c = _as_array(c, f"coefs[{k}]")
        b = _as_array(b, f"intercepts[{k}]")
        if c.ndim != 2:
            raise ValueError(f"coefs[{k}] must be 2-D (in, out), got shape {c.shape}")
        if b.shape != (c.shape[1],):
            raise ValueError(f"intercepts[{k}] has shape {b.shape}, but coefs[{k}] {c.shape} needs ({c.shape[1]},)")
        if weights and c.shape[0] != weights[-1].shape[0]:
            raise ValueError(f"coefs[{k}] takes {c.shape[0]} inputs, but coefs[{k - 1}] gives "
                             f"{weights[-1].shape[0]} outputs")
        weights.append(c.T)
        biases.append(b)
    return _model_from_layers(weights, biases, dtype)


# ---------------------------------------------------------------- PyTorch itself

def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError("this needs PyTorch, which is not installed (pip install torch)") from exc
    return torch


def to_torch(model):
    """A ``torch.nn.Sequential(Linear, ReLU, ..., Linear)`` holding copies of the model's weights.

    Its dtype is the model's (float32 or float64), on the CPU. Needs PyTorch.
    """
    torch = _torch()
    nn = torch.nn
    tdtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[model.dtype]
    modules = []
    for layer in model.layers:
        modules.append(nn.Linear(layer.in_features, layer.out_features, bias=True, dtype=tdtype))
        if layer.relu:
            modules.append(nn.ReLU())
    seq = nn.Sequential(*modules)
    seq.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict(model).items()}, strict=True)
    return seq


def from_torch(module, dtype=None):
    """A new MLP from a ``torch.nn.Sequential`` of ``Linear`` (with bias) and ``ReLU`` layers.

    The Sequential must alternate Linear and ReLU and end with a Linear, as
    :func:`to_torch` builds it. ``dtype`` defaults to the weights' (float32 or
    float64; other float types give float32).
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"from_torch takes a torch.nn.Sequential, got {type(module).__name__}")
    mods = list(module)
    for i, m in enumerate(mods):
        want = nn.Linear if i % 2 == 0 else nn.ReLU
        if type(m) is not want:
            raise ValueError(f"module [{i}] is {type(m).__name__}; fastfit's MLP is "
                             "Sequential(Linear, ReLU, Linear, ReLU, ..., Linear)")
        if want is nn.Linear and m.bias is None:
            raise ValueError(f"module [{i}] is a Linear without bias; fastfit's layers all have biases")
    if not mods or len(mods) % 2 == 0:
        raise ValueError("the Sequential must end with a Linear layer")
    if dtype is None:
        dtype = np.float64 if mods[0].weight.dtype == torch.float64 else np.float32
    return from_state_dict(module.state_dict(), dtype=dtype)
