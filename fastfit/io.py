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
never a broken one. A temporary file left by a save that was killed is removed
by a later save of the same target once it is ten minutes old.

Loading a file that is truncated, corrupted, not an ``.npz`` archive, or an
``.npz`` that fastfit did not write raises ``ModelFileError`` (a ValueError)
naming the file. A file is not trusted: loading reads only the members it
needs (``__fastfit__``, ``params`` and the optimizer's buffers), refuses a
member whose declared size, dtype or shape is not what the metadata requires
before decompressing it, bounds the metadata (4 Mi characters of JSON, nested
at most 32 deep), and builds the optimizer through its constructor and
``load_state_dict`` checks (hyper-parameters, step count, finite buffers of the
model's size, a learning rate that works at the saved step).
"""
import inspect
import json
import math
import os
import re
import secrets
import time
import zipfile

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

#: Bounds on the metadata (a JSON text): its length in characters and how deeply it
#: nests. save refuses what load would refuse.
_MAX_META_CHARS = 4 << 20
_MAX_META_DEPTH = 32
#: Room allowed for a member's .npy header (NumPy's savez writes 128 bytes for a flat array).
_NPY_HEADER_MAX = 4096
_READ_CHUNK = 1 << 24
#: A save's temporary file untouched this long belongs to a save that was killed:
#: the next save of the same target removes it.
_STALE_TMP_SECONDS = 600


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
    _remove_stale_temporaries(directory, base)
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


def _remove_stale_temporaries(directory, base):
    """Delete temporary files of earlier saves of this target that were killed mid-write
    (left untouched for _STALE_TMP_SECONDS; a save still running keeps its file fresh)."""
    pattern = re.compile(r"\." + re.escape(base) + r"\.[0-9a-f]{16}\.tmp")
    cutoff = time.time() - _STALE_TMP_SECONDS
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:
            pass  # gone already, or not ours to remove


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
    for name, buffer in state["buffers"].items():
        if not _checks.all_finite(buffer):
            raise ValueError(f"cannot save the optimizer: its state {name!r} holds NaN or infinity, and load "
                             "refuses such a file (a learning rate or inputs too large for the dtype?)")
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
    with model.exclusive("save"):  # parameters and state of one step, not half-way through another thread's
        arrays = {_PARAMS_KEY: model.params.copy()}
        if optimizer is not None:
            meta["optimizer"], opt_arrays = _optimizer_entries(optimizer, model)
            arrays.update(opt_arrays)
    text = json.dumps(meta)
    if len(text) > _MAX_META_CHARS:
        raise ValueError(f"the metadata (info and optimizer) takes {len(text):,} characters of JSON; "
                         f"a file holds at most {_MAX_META_CHARS:,}: store large data elsewhere")
    if _depth(meta) > _MAX_META_DEPTH:
        raise ValueError(f"info nests deeper than a file allows ({_MAX_META_DEPTH} levels in all)")
    arrays[_META_KEY] = np.array(text)
    _atomic_write(path, lambda f: np.savez(f, **arrays))


# ---------------------------------------------------------------- load

class _Archive:
    """The archive at path, read member by member: only the members the metadata says
    fastfit needs, each checked for its declared size, dtype and shape before its
    data is decompressed, so a small file cannot make loading allocate much more
    than the model it describes."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:  # FileNotFoundError, IsADirectoryError, PermissionError pass through
            head = f.read(6)
        if not head:
            raise ModelFileError(path, "the file is empty")
        if head.startswith(b"\x93NUMPY"):
            raise ModelFileError(path, "it holds a single .npy array, not a .npz archive written by fastfit.save")
        if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise ModelFileError(path, f"it is not an .npz archive (those are zip files; this one starts with {head!r})")
        try:
            self.zip = zipfile.ZipFile(path)
        except MemoryError:
            raise
        except Exception as exc:
            raise ModelFileError(path, f"the archive is truncated or corrupted ({type(exc).__name__}: {exc})") from exc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()
        return False

    def has(self, key):
        try:
            self.zip.getinfo(key + ".npy")
        except KeyError:
            return False
        return True

    def array(self, key, dtype, shape, what, memory=None):
        """The member ``key`` as a new array, which must be of exactly this dtype and shape.

        ``dtype`` may be a dtype kind ("U") with an itemsize limit: (kind, max_itemsize).
        ``memory``: (bytes, what) the caller will need, checked once the member's
        declared size is known to fit."""
        path = self.path
        try:
            info = self.zip.getinfo(key + ".npy")
        except KeyError:
            raise ModelFileError(path, f"the '{key}' entry is missing") from None
        if isinstance(dtype, tuple):
            kind, max_itemsize = dtype
            if info.file_size > max_itemsize + _NPY_HEADER_MAX:
                raise ModelFileError(path, f"its entry {key!r} declares {info.file_size:,} bytes uncompressed; "
                                           f"{what} takes at most {max_itemsize:,} bytes and a header: refused unread")
        else:
            nbytes = math.prod(shape) * dtype.itemsize
            if not nbytes <= info.file_size <= nbytes + _NPY_HEADER_MAX:
                declares = "holds" if info.file_size < nbytes else "declares"
                raise ModelFileError(path, f"its entry {key!r} {declares} {info.file_size:,} bytes uncompressed; "
                                           f"{what} must be {nbytes:,} bytes ({dtype} of shape {shape}) and a "
                                           "header" + ("" if info.file_size < nbytes else ": refused unread"))
        if memory is not None:
            _checks.check_memory(*memory)
        try:
            with self.zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0(f, max_header_size=_NPY_HEADER_MAX)
                elif version == (2, 0):
                    header = np.lib.format.read_array_header_2_0(f, max_header_size=_NPY_HEADER_MAX)
                else:
                    raise ValueError(f".npy format version {version} is not one NumPy's savez writes")
                got_shape, _, got_dtype = header
                if isinstance(dtype, tuple):
                    if got_dtype.kind != kind or got_dtype.itemsize > max_itemsize or got_shape != shape:
                        raise _Refused(f"its entry {key!r} is not {what} (it holds an array of dtype "
                                       f"{got_dtype} and shape {got_shape})")
                    dtype = got_dtype
                elif got_dtype != dtype or got_shape != shape:
                    raise _Refused(f"its entry {key!r} holds an array of dtype {got_dtype} and shape "
                                   f"{got_shape}; {what} must be {dtype} of shape {shape}")
                out = np.empty(shape, dtype=dtype)
                view = memoryview(out.reshape(-1).view(np.uint8)) if out.size else memoryview(b"")
                filled = 0
                while filled < len(view):
                    n = f.readinto(view[filled:filled + _READ_CHUNK])
                    if not n:
                        raise ValueError("the entry ends before its data does")
                    filled += n
                if f.read(1):  # also completes the CRC check of the whole entry
                    raise ValueError("the entry holds more data than its header says")
        except _Refused as exc:
            raise ModelFileError(path, str(exc)) from None
        except MemoryError:
            raise
        except Exception as exc:
            raise ModelFileError(path, f"the archive is truncated or corrupted: its entry {key!r} cannot be "
                                       f"read ({type(exc).__name__}: {exc})") from exc
        return out

    def meta(self):
        """The metadata: a JSON object, at most _MAX_META_CHARS long and _MAX_META_DEPTH deep."""
        path = self.path
        if not self.has(_META_KEY):
            names = sorted(n[:-4] if n.endswith(".npy") else n for n in self.zip.namelist())
            raise ModelFileError(path, f"it is an .npz archive but not one fastfit wrote (no '{_META_KEY}' "
                                       f"entry; it holds {names[:10]})")
        arr = self.array(_META_KEY, ("U", 4 * _MAX_META_CHARS), (), f"a JSON string of at most "
                                                                      f"{_MAX_META_CHARS:,} characters")
        try:
            meta = json.loads(str(arr[()]))
        except RecursionError:
            raise ModelFileError(path, f"the '{_META_KEY}' entry nests deeper than {_MAX_META_DEPTH} levels") from None
        except ValueError as exc:
            raise ModelFileError(path, f"the '{_META_KEY}' entry is not valid JSON ({exc})") from None
        if _depth(meta) > _MAX_META_DEPTH:
            raise ModelFileError(path, f"the '{_META_KEY}' entry nests deeper than {_MAX_META_DEPTH} levels")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(path, f"its metadata does not describe a {FORMAT} file")
        version = meta.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ModelFileError(path, f"its format version {version!r} is not valid")
        if version > FORMAT_VERSION:
            raise ModelFileError(path, f"it was written by a newer fastfit (file format version {version}; this "
                                       f"fastfit reads up to version {FORMAT_VERSION}): upgrade fastfit to load it")
        return meta


class _Refused(Exception):
    pass


def _depth(value):
    """How deeply lists and dicts nest in a JSON value (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth <= _MAX_META_DEPTH:
                stack.extend((v, depth + 1) for v in value)
    return deepest


def _model_from(path, meta, archive):
    try:
        sizes = check_sizes(meta.get("sizes"))
        if not isinstance(meta.get("dtype"), str):
            raise TypeError(f"dtype must be a string, got {meta.get('dtype')!r}")
        dtype = _checks.model_dtype(meta.get("dtype"))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path, f"its architecture is not valid ({exc})") from None
    n = _checks.count_params(sizes)
    # the model's buffers and the copy read from the file, checked before any of them is allocated
    params = archive.array(_PARAMS_KEY, dtype, (n,), f"the parameters of sizes {list(sizes)}",
                           memory=(3 * n * dtype.itemsize, f"the model in {path!r} (sizes {list(sizes)}, "
                                                            f"{n:,} parameters)"))
    seed = meta.get("seed")
    if not (seed is None or (isinstance(seed, int) and not isinstance(seed, bool))):
        seed = None
    try:
        return MLP.from_params(sizes, params, dtype, seed)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path, f"its parameters cannot be loaded ({exc})") from None


#: The attributes a version-1 file stores for an optimizer besides its constructor's arguments.
_VERSION_1_STATE = ("t", "_m", "_v", "_lookahead")


def _state_from_version_1(meta, model):
    """The optimizer entry of a version-1 file (its attributes as saved) as a state_dict
    whose buffers are the archive keys to read."""
    attrs = meta.get("attrs")
    if not isinstance(attrs, dict):
        raise ValueError("its optimizer entry is malformed")
    name = meta.get("class")
    cls = _optim.OPTIMIZERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer class {name!r}")
    arguments = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "lr")]
    unknown = sorted(set(attrs) - set(arguments) - set(_VERSION_1_STATE))
    if unknown:
        # only what the constructor checks, and the state checked below, comes from a file
        raise ValueError(f"{cls.__name__} has no saved attributes {unknown}")
    hyper = {"lr": meta.get("lr")}
    hyper.update((k, attrs[k]) for k in arguments if k in attrs)
    buffers = {}
    for key, buffer in (("_m", "m"), ("_v", "v")):
        value = attrs.get(key)
        if isinstance(value, dict) and set(value) == {"__array__"}:
            if value["__array__"] != _OPT_PREFIX + key:
                raise ValueError(f"the optimizer's state {key!r} names the entry {value['__array__']!r}, "
                                 f"not {_OPT_PREFIX + key!r}")
            buffers[buffer] = _OPT_PREFIX + key
        elif value is not None:
            raise ValueError(f"the optimizer's state {key!r} is malformed")
    bound = meta.get("bound", False)
    if not isinstance(bound, bool):
        raise ValueError(f"the optimizer's 'bound' entry must be true or false, got {bound!r}")
    return {"type": cls.__name__, "hyper": hyper, "t": attrs.get("t", 0),
            "bound": ({"sizes": list(model.sizes), "dtype": model.dtype.name} if bound else None),
            "lookahead": attrs.get("_lookahead", True), "buffers": buffers}


def _optimizer_from(path, meta, archive, model, version):
    try:
        if not isinstance(meta, dict):
            raise ValueError("its optimizer entry is malformed")
        if version == 1:
            state = _state_from_version_1(meta, model)
        else:
            unknown = sorted(set(meta) - {"type", "hyper", "t", "bound", "lookahead", "buffers"})
            if unknown:
                raise ValueError(f"its optimizer entry has unknown fields {unknown}")
            names = meta.get("buffers", [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
                    or len(set(names)) != len(names):
                raise ValueError("its list of optimizer buffers is malformed")
            state = {"type": meta.get("type"), "hyper": meta.get("hyper"), "t": meta.get("t", 0),
                     "bound": meta.get("bound"), "lookahead": meta.get("lookahead", True),
                     "buffers": {n: _OPT_PREFIX + n for n in names}}
        if not isinstance(state["type"], str) or state["type"] not in _optim.OPTIMIZERS:
            raise ValueError(f"unknown optimizer type {state['type']!r}; expected one of {sorted(_optim.OPTIMIZERS)}")
        hyper = state["hyper"]
        if not isinstance(hyper, dict):
            raise ValueError("its optimizer's hyper-parameters are malformed")
        state["hyper"] = {k: (_schedule_from_spec(v) if k == "lr" else _unplain(v)) for k, v in hyper.items()}
        # the state buffers: only the names this optimizer keeps (none before it is bound to a
        # model), each read as a model-sized array
        keys = state["buffers"]
        if keys and state["bound"] is None:
            raise ValueError(f"it has state buffers {sorted(keys)} but no model they belong to ('bound')")
        expected = _optim.OPTIMIZERS[state["type"]](**state["hyper"]).state_names if state["bound"] else ()
        if sorted(keys) != sorted(expected):
            raise ValueError(f"it lists the state buffers {sorted(keys)}, but the optimizer it describes "
                             f"({state['type']}) keeps {sorted(expected) if expected else 'none'}")
        state["buffers"] = {name: archive.array(key, model.dtype, (model.n_params,),
                                                f"the optimizer's state {name!r}")
                            for name, key in keys.items()}
        optimizer = _optim.from_state_dict(state)
        if optimizer._bound is not None:
            optimizer.bind(model)
        _, _, error = optimizer.rates(optimizer.t, 1)
        if error is not None:
            raise ValueError(f"its learning rate fails at the saved step ({error})")
        return optimizer
    except ModelFileError as exc:
        raise ModelFileError(path, f"its optimizer cannot be restored ({exc.reason})") from None
    except (TypeError, ValueError, AttributeError, ArithmeticError) as exc:
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
    with _Archive(path_str) as archive:
        meta = archive.meta()
        model = _model_from(path_str, meta, archive)
        if not return_optimizer:
            return model
        opt_meta = meta.get("optimizer")
        optimizer = None if opt_meta is None else _optimizer_from(path_str, opt_meta, archive, model, meta["version"])
    return model, optimizer


def read_info(path):
    """The ``info`` dict saved with the model at ``path`` (None when there is none)."""
    path = os.fspath(path)
    with _Archive(path) as archive:
        meta = archive.meta()
    info = meta.get("info")
    if info is not None and not isinstance(info, dict):
        raise ModelFileError(path, "its 'info' entry is not a JSON object")
    return info
