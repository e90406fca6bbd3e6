"""Saving and loading models (and, optionally, their optimizer) as one ``.npz`` file.

>>> ff.save(model, "model.npz", optimizer=opt)
>>> model = ff.load("model.npz")
>>> model, opt = ff.load("model.npz", return_optimizer=True)

The file is a plain NumPy ``.npz`` archive, read back with ``allow_pickle=False``
(loading never runs code from the file):

- ``__fastfit__``: a 0-d string array holding JSON metadata: the format name and
  version, the layer sizes, the dtype, the model's seed and, when an optimizer
  was saved, its class name, learning rate (a float, or a fastfit.schedules
  class name with its attributes), step count ``t`` and other hyper-parameters;
- ``params``: the flat parameter buffer (docs/math.md's W_0, b_0, W_1, b_1 ...,
  each W (out, in) row-major);
- ``optimizer.m``, ``optimizer.v``: the optimizer's state buffers (its
  ``state_dict()``; the metadata holds its type, hyper-parameters, step count
  and the model it is bound to). Version-1 files (``optimizer._m`` ...) still load.

Training resumed from a saved (model, optimizer) pair takes exactly the steps the
uninterrupted training would have taken (given the same ``fit`` seeds).

Writes are atomic: the archive goes to a temporary file in the target's
directory, is flushed to disk (fsync) and renamed over the target with
``os.replace``, so a crash mid-save leaves either the old file or the new one,
never a broken one. Loading a file that is truncated, corrupted, not an
``.npz`` archive, or an ``.npz`` that fastfit did not write raises
``ModelFileError`` (a ValueError) naming the file.
"""
import inspect
import json
import os
import secrets

import numpy as np

from . import _checks
from . import optim as _optim
from . import schedules as _schedules
from ._checks import check_sizes
from .network import MLP

FORMAT = "fastfit.MLP"
#: The version this fastfit writes; it reads this version and older ones.
FORMAT_VERSION = 2

_META_KEY = "__fastfit__"
_PARAMS_KEY = "params"
_OPT_PREFIX = "optimizer."


class ModelFileError(ValueError):
    """A file that cannot be loaded as a fastfit model: the message names the path and the reason."""

    def __init__(self, path, reason):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot load {path!r} as a fastfit model: {reason}")


# ---------------------------------------------------------------- encoding values

def _plain(value, what):
    """A JSON-ready form of a hyper-parameter: None, bool, int, float, str, or a tuple/list of those."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic) and value.ndim == 0 and value.dtype.kind in "biuf":
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (tuple, list)):
        items = [_plain(v, what) for v in value]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    raise ValueError(f"cannot save {what}={value!r}: only numbers, strings, booleans, None, "
                     "tuples and arrays can be stored")


def _unplain(value):
    if isinstance(value, dict):
        if set(value) != {"__tuple__"} or not isinstance(value["__tuple__"], list):
            raise ValueError(f"unexpected value {value!r}")
        return tuple(_unplain(v) for v in value["__tuple__"])
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def _schedule_spec(lr):
    """The JSON form of an optimizer's lr: a float, or a fastfit.schedules object by class and attributes."""
    if not callable(lr):
        return float(lr)
    cls = type(lr)
    if cls.__module__ != _schedules.__name__ or getattr(_schedules, cls.__name__, None) is not cls:
        raise ValueError(
            f"cannot save the optimizer: its learning rate {lr!r} is a callable that is not one of "
            "fastfit.schedules' classes (ConstantLR, StepDecay, ExponentialDecay, CosineWithWarmup). "
            "Arbitrary callables are not stored (the file never holds code): save the model alone "
            "(optimizer=None), or use a fastfit schedule")
    return {"schedule": cls.__name__,
            "attrs": {k: _plain(v, f"{cls.__name__}.{k}") for k, v in vars(lr).items()}}


def _build(cls, attrs):
    """cls(**attrs), where attrs must be exactly constructor arguments: nothing from a
    file reaches an object except through its constructor and its checks."""
    params = [name for name, p in inspect.signature(cls.__init__).parameters.items()
              if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(attrs) - set(params))
    if unknown:
        raise ValueError(f"{cls.__name__} takes no {unknown}")
    return cls(**attrs)


def _schedule_from_spec(spec):
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return float(spec)
    if not (isinstance(spec, dict) and isinstance(spec.get("schedule"), str) and isinstance(spec.get("attrs"), dict)):
        raise ValueError(f"the learning rate entry {spec!r} is neither a number nor a schedule")
    cls = getattr(_schedules, spec["schedule"], None)
    if not (isinstance(cls, type) and cls.__module__ == _schedules.__name__):
        raise ValueError(f"unknown learning-rate schedule {spec['schedule']!r}")
    attrs = {k: _unplain(v) for k, v in spec["attrs"].items()}
    return _build(cls, attrs)


# ---------------------------------------------------------------- atomic write

def _atomic_write(path, write):
    """Call write(file) on a temporary file beside path, fsync it, and rename it over path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    if not base:
        raise ValueError(f"{path!r} names a directory, not a file")
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
        try:
            # 0o666 less the umask: the same permissions an ordinary open() would give
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # make the rename itself durable (POSIX); not possible everywhere, and not needed for atomicity
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ---------------------------------------------------------------- save

def _optimizer_entries(optimizer, model):
    """(JSON metadata, {array name: array}) from the optimizer's state_dict()."""
    if not isinstance(optimizer, _optim.Optimizer):
        raise TypeError(f"optimizer must be a fastfit optimizer (SGD, Adam, AdamW, NormalizedGD), got {optimizer!r}")
    cls = type(optimizer)
    if _optim.OPTIMIZERS.get(cls.__name__) is not cls:
        raise ValueError(f"cannot save an optimizer of class {cls.__qualname__}: only fastfit.optim's "
                         "own optimizer classes can be stored")
    state = optimizer.state_dict()
    bound = state["bound"]
    if bound is not None and (tuple(bound["sizes"]) != tuple(model.sizes) or bound["dtype"] != model.dtype.name):
        raise ValueError(f"the optimizer holds state for a {bound['dtype']} model of sizes {bound['sizes']}, "
                         f"not for this model ({model!r}): save it with the model it trains")
    hyper = {k: (_schedule_spec(v) if k == "lr" else _plain(v, f"{cls.__name__}.{k}"))
             for k, v in state["hyper"].items()}
    arrays = {_OPT_PREFIX + name: np.ascontiguousarray(arr) for name, arr in state["buffers"].items()}
    meta = {"type": state["type"], "hyper": hyper, "t": state["t"], "bound": bound,
            "lookahead": state["lookahead"], "buffers": sorted(state["buffers"])}
    return meta, arrays


def save(model, path, optimizer=None, info=None):
    """Write ``model`` (and, if given, ``optimizer``'s full state) to ``path`` as one ``.npz`` file.

    ``info``: an optional dict of JSON-serialisable values kept with the model
    (the command line stores feature names, classes and scaling there); read it
    back with ``read_info(path)``.

    The path is used as given (no ``.npz`` is appended). The write is atomic: a
    temporary file in the same directory, fsync, then ``os.replace`` over ``path``.

    With ``optimizer``, the file also holds the optimizer's class, hyper-parameters,
    step count and state buffers, so that ``load(path, return_optimizer=True)``
    resumes training exactly. A learning-rate schedule is stored by its
    fastfit.schedules class name and attributes; any other callable ``lr`` is
    refused (ValueError), since the file never holds code.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"save expects a fastfit.MLP, got {type(model).__name__}")
    from ._version import __version__
    seed = model.seed
    if isinstance(seed, np.integer):
        seed = int(seed)
    if not (seed is None or (isinstance(seed, int) and not isinstance(seed, bool))):
        seed = None  # a Generator or SeedSequence seed is not worth storing
    if info is not None:
        if not isinstance(info, dict):
            raise TypeError(f"info must be a dict of JSON values, got {type(info).__name__}")
        try:
            json.dumps(info, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"info must hold only JSON values (numbers, strings, lists, dicts): {exc}") from None
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "fastfit_version": __version__,
            "sizes": list(model.sizes), "dtype": model.dtype.str, "seed": seed, "optimizer": None,
            "info": info}
    arrays = {_PARAMS_KEY: np.ascontiguousarray(model.params)}
    if optimizer is not None:
        meta["optimizer"], opt_arrays = _optimizer_entries(optimizer, model)
        arrays.update(opt_arrays)
    arrays[_META_KEY] = np.array(json.dumps(meta))
    _atomic_write(path, lambda f: np.savez(f, **arrays))


# ---------------------------------------------------------------- load

def _read_archive(path):
    """{name: array} of every member, read (and CRC-checked) in full; ModelFileError on any failure."""
    with open(path, "rb") as f:  # FileNotFoundError, IsADirectoryError, PermissionError pass through
        head = f.read(6)
    if not head:
        raise ModelFileError(path, "the file is empty")
    if head.startswith(b"\x93NUMPY"):
        raise ModelFileError(path, "it holds a single .npy array, not a .npz archive written by fastfit.save")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise ModelFileError(path, f"it is not an .npz archive (those are zip files; this one starts with {head!r})")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ModelFileError(path, f"the archive is truncated or corrupted ({type(exc).__name__}: {exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):  # pragma: no cover - excluded by the checks above
        raise ModelFileError(path, "it is not an .npz archive")
    with npz:
        if _META_KEY not in npz.files:
            raise ModelFileError(path, f"it is an .npz archive but not one fastfit wrote (no '{_META_KEY}' "
                                       f"entry; it holds {sorted(npz.files)[:10]})")
        out = {}
        for key in npz.files:
            try:
                value = npz[key]
            except Exception as exc:
                raise ModelFileError(path, f"the archive is truncated or corrupted: its entry {key!r} cannot be "
                                           f"read ({type(exc).__name__}: {exc})") from exc
            if not isinstance(value, np.ndarray):
                raise ModelFileError(path, f"its entry {key!r} is not a NumPy array")
            out[key] = value
        return out


def _parse_meta(path, arr):
    if arr.ndim != 0 or arr.dtype.kind != "U":
        raise ModelFileError(path, f"the '{_META_KEY}' entry is not a JSON string")
    try:
        meta = json.loads(str(arr[()]))
    except ValueError as exc:
        raise ModelFileError(path, f"the '{_META_KEY}' entry is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(path, f"its metadata does not describe a {FORMAT} file")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(path, f"its format version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise ModelFileError(path, f"it was written by a newer fastfit (file format version {version}; this "
                                   f"fastfit reads up to version {FORMAT_VERSION}): upgrade fastfit to load it")
    return meta


def _model_from(path, meta, arrays):
    try:
        sizes = check_sizes(meta.get("sizes"))
        dtype = _checks.model_dtype(meta.get("dtype"))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path, f"its architecture is not valid ({exc})") from None
    if _PARAMS_KEY not in arrays:
        raise ModelFileError(path, f"the '{_PARAMS_KEY}' entry is missing")
    params = arrays[_PARAMS_KEY]
    if params.dtype != dtype:
        raise ModelFileError(path, f"params are {params.dtype}, the metadata says {dtype}")
    seed = meta.get("seed")
    if not (seed is None or (isinstance(seed, int) and not isinstance(seed, bool))):
        seed = None
    try:
        return MLP.from_params(sizes, params, dtype, seed)
    except (TypeError, ValueError, MemoryError) as exc:
        raise ModelFileError(path, f"its parameters cannot be loaded ({exc})") from None


def _state_from_version_1(meta, model):
    """The optimizer entry of a version-1 file (its attributes as saved) as a state_dict."""
    attrs = meta.get("attrs")
    if not isinstance(attrs, dict):
        raise ValueError("its optimizer entry is malformed")
    name = meta.get("class")
    cls = _optim.OPTIMIZERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer class {name!r}")
    hyper = {"lr": meta.get("lr")}
    for key in inspect.signature(cls.__init__).parameters:
        if key not in ("self", "lr") and key in attrs:
            hyper[key] = attrs[key]
    buffers = {}
    for key, buffer in (("_m", "m"), ("_v", "v")):
        value = attrs.get(key)
        if isinstance(value, dict) and set(value) == {"__array__"}:
            buffers[buffer] = value["__array__"]
    return {"type": cls.__name__, "hyper": hyper, "t": attrs.get("t", 0),
            "bound": ({"sizes": list(model.sizes), "dtype": model.dtype.name} if meta.get("bound") else None),
            "lookahead": attrs.get("_lookahead", True), "buffers": buffers}


def _optimizer_from(path, meta, arrays, model, version):
    try:
        if not isinstance(meta, dict):
            raise ValueError("its optimizer entry is malformed")
        if version == 1:
            meta = _state_from_version_1(meta, model)
            names = meta["buffers"]
        else:
            names = meta.get("buffers", [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("its list of optimizer buffers is malformed")
            names = {n: _OPT_PREFIX + n for n in names}
        buffers = {}
        for name, key in names.items():
            if key not in arrays:
                raise ValueError(f"the optimizer's state array {key!r} is missing")
            buffers[name] = arrays[key]
        hyper = meta.get("hyper")
        if not isinstance(hyper, dict):
            raise ValueError("its optimizer's hyper-parameters are malformed")
        hyper = {k: (_schedule_from_spec(v) if k == "lr" else _unplain(v)) for k, v in hyper.items()}
        state = {"type": meta.get("type"), "hyper": hyper, "t": meta.get("t", 0), "bound": meta.get("bound"),
                 "lookahead": meta.get("lookahead", True), "buffers": buffers}
        optimizer = _optim.from_state_dict(state)
        if optimizer._bound is not None:
            optimizer.bind(model)
        return optimizer
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ModelFileError(path, f"its optimizer cannot be restored ({exc})") from None


def load(path, return_optimizer=False):
    """Read a model written by :func:`save`.

    Returns the model; with ``return_optimizer=True``, a pair ``(model, optimizer)``
    where ``optimizer`` is None if the file holds none. A file that is missing
    raises FileNotFoundError; one that is truncated, corrupted, not an ``.npz``,
    not written by fastfit, or inconsistent (e.g. params of the wrong size) raises
    ModelFileError, a ValueError whose message names the file. Nothing in the file
    is unpickled.
    """
    path_str = os.fspath(path)
    arrays = _read_archive(path_str)
    meta = _parse_meta(path_str, arrays[_META_KEY])
    model = _model_from(path_str, meta, arrays)
    if not return_optimizer:
        return model
    opt_meta = meta.get("optimizer")
    optimizer = None if opt_meta is None else _optimizer_from(path_str, opt_meta, arrays, model, meta["version"])
    return model, optimizer


def read_info(path):
    """The ``info`` dict saved with the model at ``path`` (None when there is none)."""
    arrays = _read_archive(path)
    meta = _parse_meta(path, arrays[_META_KEY])
    info = meta.get("info")
    if info is not None and not isinstance(info, dict):
        raise ModelFileError(path, "its 'info' entry is not a JSON object")
    return info
