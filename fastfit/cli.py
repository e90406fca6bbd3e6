"""The command line: ``fastfit demo | fit | predict | info | config``.

``fastfit fit`` reads a text table (or an .npz archive), decides the task,
standardises the features, fits an MLP and saves a complete model: the
standardisation (and, for regression, the target's scaling) is folded into the
first (and last) layer's weights, so ``fastfit.load(path).predict(raw X)`` is
the prediction, in Python as on the command line. The file's ``info`` keeps the
feature names, the target's name, the task and the class labels.

Anything a user can get wrong with files and arguments ends in one line,
``fastfit: error: ...``, and a non-zero exit (2 for arguments, 1 for the rest);
``--debug`` shows the traceback instead.
"""
import argparse
import csv
import math
import os
import sys
import time

import numpy as np

from . import _checks, tables
from .tables import DataError

#: MNIST-1D's published MLP test accuracy (Greydanus, 2020): about 68%.
MNIST1D_MLP_BASELINE = 0.68

#: --task auto: a target of whole numbers is a class label when it takes at most
#: this many distinct values ...
AUTO_MAX_CLASSES = 20
#: ... and each value has at least this many rows on average; otherwise it is a quantity.
AUTO_MIN_ROWS_PER_CLASS = 5

#: The version of the command line's record in a model file's info (the first
#: format, which stored "mean" and "scale" beside unscaled weights, is version 1).
RECORD_VERSION = 2

OPTIMIZERS = ("adam", "sgd", "momentum", "nesterov", "normalized")
LOSSES = ("auto", "cross_entropy", "bce", "mse")
TASKS = ("auto", "classification", "regression")
_LOSS_TASK = {"cross_entropy": "classification", "bce": "classification", "mse": "regression"}
_LOSS_NAMES = {"cross_entropy": "softmax cross-entropy", "bce": "binary cross-entropy on a logit",
               "mse": "squared error"}
#: A model file's messages and the terminal: at most this many characters of one error.
_MAX_MESSAGE = 1000


class CLIError(Exception):
    """A problem with the user's files or arguments: printed as one line (exit status 1)."""


class ArgumentError(CLIError):
    """A flag's value, or a combination of flags, that cannot work: exit status 2, as argparse's."""


def _note(text):
    print(f"note: {text}")


# ---------------------------------------------------------------- argument types

def _whole(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return value
    return parse


def _number(text):
    """The float the text spells, or NaN (which every range check below refuses)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _positive(text):
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _fraction(text):
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text!r}")
    return value


def _widths(text):
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    try:
        widths = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated layer widths such as 128,128, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1, got {text!r}")
    return widths


def _separator(text):
    try:
        return tables.separator(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _names(text):
    return [p.strip() for p in text.split(",") if p.strip()]


# ---------------------------------------------------------------- memory

def _bytes(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024


def check_memory(sizes, dtype, batch_size, state_buffers, flag="--hidden"):
    """Refuse, before anything is allocated, a network the memory cannot hold."""
    itemsize = np.dtype(dtype).itemsize
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    # parameters, gradients, the optimizer's state, the best epoch's copy; activations
    need = n_params * itemsize * (3 + state_buffers) + 3 * batch_size * sum(sizes[1:]) * itemsize
    have = _checks.available_memory()
    if have is not None and need > have:
        raise CLIError(f"{flag} {','.join(map(str, sizes[1:-1]))}: the fit needs about {_bytes(need)} "
                       f"({n_params:,} {np.dtype(dtype).name} parameters with their gradients and "
                       f"optimizer state) but only {_bytes(have)} of memory is available: use narrower layers")


# ---------------------------------------------------------------- files

def _check_out(path, flag, example):
    """Refuse an output path that cannot be written, before any work is done."""
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise ArgumentError(f"{flag} {path}: is a directory; give a file name such as "
                       f"{os.path.join(path, example)}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ArgumentError(f"{flag} {path}: the directory {os.path.dirname(path) or parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ArgumentError(f"{flag} {path}: cannot write in {os.path.dirname(path) or parent} (permission denied)")


def _check_range(data, dtype, what="column"):
    """Raw features must fit the model's dtype: the saved model takes them as they are."""
    limit = np.finfo(dtype).max
    big = np.abs(data.X) > limit
    if big.any():
        r, c = (int(i) for i in np.argwhere(big)[0])
        raise CLIError(f"{data.path} {data.where(r)}, {what} {data.features[c]!r}: {data.X[r, c]:g} is beyond "
                       f"the range of a {np.dtype(dtype).name} model (about {limit:.3g}): use --dtype float64 "
                       "or rescale the column")


# ---------------------------------------------------------------- the task

def _label(value):
    """A class label as a JSON value: integers stay integers, whole floats become integers."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    return str(value)


def label_text(value):
    """A class label as the command line writes it."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_whole(y):
    return y.dtype.kind in "iub" or (y.dtype.kind == "f" and bool(np.all(y == np.round(y))))


def choose_task(y, task, loss, target):
    """(task, loss, the reason) for the target y. ``task`` and ``loss`` are the user's
    choices ("auto" or a name); the reason is said to the user."""
    multi = y.ndim == 2 and y.shape[1] > 1
    if loss != "auto":
        implied = _LOSS_TASK[loss]
        if task not in ("auto", implied):
            raise ArgumentError(f"--loss {loss} is a {implied} loss, but --task {task} was given")
        task, why = implied, f"--loss {loss}"
    elif task != "auto":
        why = f"--task {task}"
    else:
        flat = y.ravel()
        k = None if multi else len(np.unique(flat))
        if multi:
            task, why = "regression", f"has {y.shape[1]} columns"
        elif y.dtype.kind == "U":
            task, why = "classification", f"holds text labels ({k} distinct)"
        elif y.dtype.kind == "b":
            task, why = "classification", "holds true/false values"
        elif not _is_whole(flat):
            example = flat[np.argmax(flat != np.round(flat))]
            task, why = "regression", f"holds fractional numbers such as {example:g}"
        elif k <= AUTO_MAX_CLASSES and len(flat) >= AUTO_MIN_ROWS_PER_CLASS * k:
            task, why = "classification", (
                f"holds {k} distinct whole numbers in {len(flat):,} rows; at most {AUTO_MAX_CLASSES} distinct "
                f"values with {AUTO_MIN_ROWS_PER_CLASS}+ rows each on average count as classes")
        else:
            task, why = "regression", (
                f"holds {k:,} distinct whole numbers in {len(flat):,} rows; more than {AUTO_MAX_CLASSES} "
                f"distinct values, or fewer than {AUTO_MIN_ROWS_PER_CLASS} rows per value, count as a quantity")
        other = "regression" if task == "classification" else "classification"
        why = f"auto: the target {target!r} {why}; --task {other} overrides"
    if loss == "auto":
        loss = "cross_entropy" if task == "classification" else "mse"
    if task == "classification":
        if multi:
            raise CLIError(f"{why}: classification needs one label per row, but the target has {y.shape[1]} columns")
        if not _is_whole(y.ravel()) and y.dtype.kind != "U":
            flat = y.ravel()
            example = flat[np.argmax(flat != np.round(flat))]
            raise CLIError(f"{why}: classification needs class labels, but the target {target!r} holds "
                           f"fractional numbers such as {example:g}")
    elif y.dtype.kind in "Ub":
        raise CLIError(f"{why}: regression needs numbers, but the target {target!r} holds "
                       f"{'text such as ' + repr(str(y.ravel()[0])) if y.dtype.kind == 'U' else 'true/false values'}")
    return task, loss, why


def _column_stats(X):
    """Mean and scale of each column (the scale of a constant column is left at its size),
    without overflowing on values near float64's limit."""
    from .datasets import Standardizer
    size = np.max(np.abs(X), axis=0)
    size = np.where(size > 0, size, 1.0)
    scaler = Standardizer().fit(X / size)
    return scaler.mean_ * size, scaler.scale_ * size


def _check_foldable(mean, scale, names, dtype, flag):
    """Folding x -> (x - mean) / scale into a first layer computes W/scale @ x - W/scale @ mean:
    where |mean| / scale is large, the two terms cancel and the model's precision goes."""
    ratio = np.abs(mean) / scale
    limit = 1e-3 / np.finfo(dtype).eps
    if np.max(ratio) > limit:
        j = int(np.argmax(ratio))
        raise CLIError(f"{flag} {names[j]!r} has mean {mean[j]:.6g} but spread only {scale[j]:.3g}: "
                       f"a {np.dtype(dtype).name} model taking raw values would lose its precision; "
                       "use --dtype float64, or subtract a constant from the column")


def fold_scaling(model, mean, scale, y_mean=None, y_scale=None):
    """Make ``model`` take raw features (and give raw targets): W' = W / scale column-wise,
    b' = b - W' @ mean in the first layer; W' = y_scale * W, b' = y_scale * b + y_mean in the last."""
    first = model.layers[0]
    W = first.W.astype(np.float64) / scale[None, :]
    b = first.b.astype(np.float64) - W @ mean
    with np.errstate(over="ignore"):
        first.W[...] = W
        first.b[...] = b
    if y_scale is not None:
        last = model.layers[-1]
        W = last.W.astype(np.float64) * y_scale[:, None]
        b = last.b.astype(np.float64) * y_scale + y_mean
        with np.errstate(over="ignore"):
            last.W[...] = W
            last.b[...] = b
    return bool(np.isfinite(model.params).all())


class BestEpoch:
    """A fit callback: early stopping on a validation score that keeps the best epoch's
    parameters. Ties go to the later epoch, which has trained longer."""

    def __init__(self, model, key, patience, higher_is_better):
        self.model, self.key, self.patience, self.higher = model, key, patience, higher_is_better
        self.best, self.epoch, self.params, self.stale = None, 0, None, 0

    def __call__(self, record):
        value = record[self.key]
        if self.best is None or (value >= self.best if self.higher else value <= self.best):
            self.best, self.epoch, self.stale = value, record["epoch"], 0
            self.params = self.model.params.copy()
        else:
            self.stale += 1
            if self.patience and self.stale >= self.patience:
                return False
        return True

    def restore(self):
        if self.params is not None:
            self.model.params[...] = self.params


def _optimizer(ff, name, lr):
    if name == "adam":
        return ff.Adam(lr=lr)
    if name == "sgd":
        return ff.SGD(lr=lr)
    if name == "momentum":
        return ff.SGD(lr=lr, momentum=0.9)
    if name == "nesterov":
        return ff.SGD(lr=lr, momentum=0.9, nesterov=True)
    return ff.NormalizedGD(lr=lr)


def _make_model(ff, sizes, dtype, seed):
    try:
        return ff.MLP(sizes, dtype=dtype, seed=seed)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"--hidden: {exc}") from None


def _run_fit(ff, model, X, y, loss, optimizer, args, validation, callbacks, progress="auto"):
    try:
        return ff.fit(model, X, y, loss=loss, optimizer=optimizer, batch_size=args.batch_size,
                      epochs=args.epochs, seed=args.seed, validation_data=validation, callbacks=callbacks,
                      verbose=0 if args.quiet else progress)
    except ff.NonFiniteLossError as exc:
        raise CLIError(f"the fit diverged: the loss stopped being finite at epoch {exc.epoch}, step {exc.step}, "
                       f"and nothing was saved; lower --lr (now {args.lr:g})") from None
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None


# ---------------------------------------------------------------- fastfit fit

def cmd_fit(args):
    import fastfit as ff

    _check_out(args.out, "--out", "model.npz")
    if args.patience and not args.validation_split:
        raise ArgumentError("--patience stops on the validation score: give --validation-split too (e.g. 0.2)")
    start = time.perf_counter()
    data = tables.training_data(args.data, args.target, sep=args.sep, index_col=args.index_col,
                                drop=_names(args.drop) if args.drop else ())
    for note in data.notes:
        _note(note)
    X, y = data.X, data.y
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    print(f"read {data.path}: {X.shape[0]:,} rows, {X.shape[1]} features, target {data.target!r} "
          f"({time.perf_counter() - start:.2f} s)")
    task, loss_name, why = choose_task(y, args.task, args.loss, data.target)
    print(f"task: {task} ({why})")

    classes = None
    if task == "classification":
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise CLIError(f"the target {data.target!r} holds one value only ({label_text(_label(classes[0]))}): "
                           "a classifier needs at least two classes")
        if loss_name == "bce" and len(classes) != 2:
            raise CLIError(f"--loss bce needs two classes; the target {data.target!r} has {len(classes)}")
        targets = codes.astype(np.float64).reshape(-1, 1) if loss_name == "bce" else codes
        n_out = 1 if loss_name == "bce" else len(classes)
    else:
        targets = np.asarray(y, dtype=np.float64)
        if targets.ndim == 1:
            targets = targets.reshape(-1, 1)
        n_out = targets.shape[1]
    _check_range(data, args.dtype)

    # the validation rows: a seeded draw, since files are often sorted by the target
    n = X.shape[0]
    n_val = int(round(n * args.validation_split))
    if args.validation_split and not 1 <= n_val < n:
        raise ArgumentError(f"--validation-split {args.validation_split} leaves {n_val} of {n} rows for validation: "
                       "both parts need at least one")
    order = np.random.default_rng(args.seed).permutation(n) if n_val else np.arange(n)
    train, val = order[n_val:], order[:n_val]

    mean, scale = _column_stats(X[train])
    _check_foldable(mean, scale, data.features, args.dtype, "feature")
    y_mean = y_scale = None
    if task == "regression":
        if np.max(np.abs(targets)) > np.finfo(args.dtype).max:
            raise CLIError(f"the target {data.target!r} holds values beyond a {np.dtype(args.dtype).name} "
                           "model's range: use --dtype float64 or rescale it")
        y_mean, y_scale = _column_stats(targets[train])
        _check_foldable(y_mean, y_scale, [data.target] * n_out, args.dtype, "target")
    Z = (X - mean) / scale
    T = targets if y_scale is None else (targets - y_mean) / y_scale

    sizes = [X.shape[1]] + args.hidden + [n_out]
    optimizer = _optimizer(ff, args.optimizer, args.lr)
    check_memory(sizes, args.dtype, min(args.batch_size, n), len(optimizer.state_names))
    model = _make_model(ff, sizes, args.dtype, args.seed)
    loss = {"cross_entropy": ff.SoftmaxCrossEntropy, "bce": ff.BinaryCrossEntropy,
            "mse": ff.SquaredError}[loss_name]()
    print(f"model: MLP {'-'.join(map(str, sizes))}, {model.n_params:,} parameters, {model.dtype.name}; "
          f"{_LOSS_NAMES[loss_name]}, {args.optimizer} lr={args.lr:g}, batch {args.batch_size}, "
          f"{args.epochs} epochs" + (f", {n_val:,} rows held out for validation" if n_val else ""))
    keeper = None
    if args.patience:
        keeper = BestEpoch(model, "val_accuracy" if task == "classification" else "val_loss",
                           args.patience, higher_is_better=task == "classification")
    t0 = time.perf_counter()
    history = _run_fit(ff, model, Z[train], T[train], loss, optimizer, args,
                       (Z[val], T[val]) if n_val else None, [keeper] if keeper else None)
    seconds = time.perf_counter() - t0
    if keeper:
        keeper.restore()

    if not fold_scaling(model, mean, scale, y_mean, y_scale):
        raise CLIError(f"the fitted model cannot be stored as {model.dtype.name}: folding the features' scaling "
                       "into its weights overflows; use --dtype float64")
    # scores of the saved model on the raw data: they also prove the folding right
    scores = {}
    for part, rows in (("training", train), ("validation", val)):
        if len(rows):
            if task == "classification":
                scores[part + " accuracy"] = ff.evaluate(model, X[rows], targets[rows], loss)["accuracy"]
            else:
                truth = targets[rows]
                err = model.predict(X[rows]).astype(np.float64) - truth
                scores[part + " RMSE"] = float(np.sqrt(np.mean(err ** 2)))
                spread = np.sum((truth - truth.mean(axis=0)) ** 2)
                if spread > 0:
                    scores[part + " R2"] = float(1 - np.sum(err ** 2) / spread)
    stopped = f" (best epoch {keeper.epoch} restored)" if keeper else ""
    print(f"trained {history.epochs} epochs in {seconds:.2f} s{stopped}: "
          + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
    info = {
        "fastfit_cli": RECORD_VERSION, "task": task, "loss": loss_name,
        "features": list(data.features), "target": data.target,
        "classes": None if classes is None else [_label(c) for c in classes],
        "training": {"data": os.path.basename(str(data.path)), "rows": int(len(train)),
                     "validation_rows": int(n_val), "optimizer": args.optimizer, "lr": args.lr,
                     "batch_size": args.batch_size, "epochs": history.epochs,
                     "best_epoch": keeper.epoch if keeper else None, "seed": args.seed,
                     "scores": {k: v for k, v in scores.items() if math.isfinite(v)}},
    }
    try:
        ff.save(model, args.out, info=info)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"--out {args.out}: {exc}") from None
    print(f"saved to {args.out} (takes raw feature values: ff.load({args.out!r}).predict(X))")
    return 0


# ---------------------------------------------------------------- reading a model back

class Record:
    """The command line's record of a model: what its inputs and outputs mean."""

    def __init__(self, task, loss, features, target, classes, training, version):
        self.task, self.loss, self.features, self.target = task, loss, features, target
        self.classes, self.training, self.version = classes, training, version


def _is_scalar_label(value):
    return isinstance(value, (str, bool, int, float)) and not (isinstance(value, float) and not math.isfinite(value))


def _parse_record(path, model, info):
    """The Record in a model file's info, checked against the model; None when there is
    none (a model saved from Python). A version 1 record's scaling is folded into model."""
    if not info or "features" not in info:
        return None

    def bad(why):
        return CLIError(f"{path}: the command line's record in this model file is malformed ({why}); "
                        "fit the model again with 'fastfit fit'")

    version = info.get("fastfit_cli", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"record version {version!r}")
    if version > RECORD_VERSION:
        raise CLIError(f"{path} was written by a newer fastfit (command-line record version {version}): "
                       "upgrade fastfit to use it")
    features = info.get("features")
    if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
        raise bad("'features' must be a list of column names")
    if len(features) != model.n_inputs:
        raise bad(f"{len(features)} feature names for a model taking {model.n_inputs} inputs")
    if len(set(features)) != len(features):
        raise bad("a feature name appears twice")
    target = info.get("target")
    if not isinstance(target, str):
        raise bad("'target' must be a column name")
    loss = info.get("loss")
    if loss not in _LOSS_TASK:
        raise bad(f"unknown loss {loss!r}")
    task = info.get("task", _LOSS_TASK[loss]) if version >= 2 else _LOSS_TASK[loss]
    if task != _LOSS_TASK[loss]:
        raise bad(f"task {task!r} with loss {loss!r}")
    classes = info.get("classes")
    if task == "classification":
        if loss == "bce" and classes is None and version == 1:
            classes = [0, 1]
        if not (isinstance(classes, list) and all(_is_scalar_label(c) for c in classes)):
            raise bad("'classes' must be a list of labels")
        want = 2 if loss == "bce" else model.n_outputs
        if len(classes) != want or (loss == "bce" and model.n_outputs != 1):
            raise bad(f"{len(classes)} classes for a {loss} model with {model.n_outputs} outputs")
        if len({label_text(c) for c in classes}) != len(classes):
            raise bad("a class label appears twice")
    elif classes is not None:
        raise bad("a regression model with classes")
    training = info.get("training")
    if training is not None and not isinstance(training, dict):
        raise bad("'training' must be a JSON object")
    if version == 1:
        mean, scale = info.get("mean"), info.get("scale")
        try:
            mean, scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad("'mean' and 'scale' must be lists of numbers") from None
        if mean.shape != (model.n_inputs,) or scale.shape != (model.n_inputs,):
            raise bad(f"'mean' and 'scale' must have {model.n_inputs} entries")
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise bad("'mean' and 'scale' must be finite, with scale > 0")
        if not fold_scaling(model, mean, scale):
            raise bad(f"its scaling overflows {model.dtype.name}")
    return Record(task, loss, features, target, classes, training, version)


def _load(path):
    """(model, optimizer or None, Record or None) from a model file; errors are CLIErrors."""
    import fastfit as ff
    try:
        model, optimizer = ff.load(path, return_optimizer=True)
        info = ff.io.read_info(path)
    except FileNotFoundError:
        raise CLIError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise CLIError(f"{path} is a directory, not a model file") from None
    except PermissionError:
        raise CLIError(f"{path}: permission denied") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return model, optimizer, _parse_record(path, model, info)


# ---------------------------------------------------------------- fastfit predict

def _softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z):
    z = z.astype(np.float64)
    return np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))


def predictions(model, record, X, proba=False):
    """(header, rows) of what `fastfit predict` writes for raw features X."""
    out = model.predict(X)
    if record.task == "classification":
        classes = [label_text(c) for c in record.classes]
        if record.loss == "bce":
            p1 = _sigmoid(out[:, 0])
            probs = np.column_stack([1 - p1, p1])
        else:
            probs = _softmax(out)
        if proba:
            return classes, probs.astype(model.dtype)
        picks = np.argmax(probs, axis=1)
        return [record.target], [[classes[k]] for k in picks]
    if proba:
        raise ArgumentError("--proba gives class probabilities, but this is a regression model")
    header = [record.target] if out.shape[1] == 1 else [f"{record.target}_{j}" for j in range(out.shape[1])]
    return header, out


def cmd_predict(args):
    model, _, record = _load(args.model)
    if record is None:
        raise CLIError(f"{args.model} holds no command-line record (feature names, task): it was saved from "
                       "Python; predict with fastfit.load(path).predict(X) there, or fit one with 'fastfit fit'")
    if args.out:
        _check_out(args.out, "--out", "predictions.csv")
    data = tables.feature_data(args.data, record.features, sep=args.sep, index_col=args.index_col)
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    _check_range(data, model.dtype)
    raw = model.predict(data.X)
    finite = np.isfinite(raw).all(axis=1)
    if not finite.all():
        r = int(np.argmin(finite))
        raise CLIError(f"{data.path} {data.where(r)}: the model's output is not finite (the features are far "
                       "outside the range it was trained on)")
    header, rows = predictions(model, record, data.X, proba=args.proba)
    stream = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        if isinstance(rows, np.ndarray):
            # each value's shortest text that reads back as the same number of its dtype
            writer.writerows([str(v) for v in row] for row in rows)
        else:
            writer.writerows(rows)
    finally:
        if args.out:
            stream.close()
    if args.out:
        print(f"wrote {len(data.X):,} predictions to {args.out}")
    return 0


# ---------------------------------------------------------------- fastfit info

def cmd_info(args):
    model, optimizer, record = _load(args.model)
    print(f"model:      MLP {'-'.join(map(str, model.sizes))} (ReLU hidden layers, linear output)")
    print(f"parameters: {model.n_params:,} {model.dtype.name} ({model.n_params * model.dtype.itemsize:,} bytes)")
    if optimizer is not None:
        print(f"optimizer:  {optimizer!r}, {optimizer.t} steps taken")
    if record is None:
        print("record:     none (saved from Python: no feature names or task)")
        return 0
    print(f"task:       {record.task} ({_LOSS_NAMES[record.loss]})")
    print(f"target:     {record.target}")
    if record.classes is not None:
        print(f"classes:    {', '.join(label_text(c) for c in record.classes)}")
    print(f"features:   {', '.join(record.features)}")
    if record.version == 1:
        print("scaling:    stored beside the weights (an older fastfit's file); applied on loading")
    else:
        print("scaling:    folded into the weights: the model takes raw feature values")
    t = record.training or {}
    if t:
        parts = [f"{t.get('optimizer')} lr={t.get('lr')}", f"batch {t.get('batch_size')}",
                 f"{t.get('epochs')} epochs"]
        if t.get("best_epoch"):
            parts.append(f"best epoch {t['best_epoch']} kept")
        parts.append(f"{t.get('rows')} rows of {t.get('data')}")
        if t.get("validation_rows"):
            parts.append(f"{t['validation_rows']} more held out for validation")
        print(f"trained:    {', '.join(str(p) for p in parts)}")
        scores = t.get("scores")
        if isinstance(scores, dict) and scores:
            print(f"scores:     {', '.join(f'{k} {v:.4g}' for k, v in scores.items() if isinstance(v, (int, float)))}")
    return 0


# ---------------------------------------------------------------- fastfit demo

def cmd_demo(args):
    import fastfit as ff
    from fastfit import datasets, schedules

    start = time.perf_counter()
    try:
        X_train, y_train, X_test, y_test = datasets.mnist1d()
        name = "MNIST-1D (4,000 train / 1,000 test, 40 features, 10 classes)"
        baseline = MNIST1D_MLP_BASELINE
    except datasets.MissingDependency:
        print("mnist1d is not installed (pip install mnist1d), so the demo uses the built-in "
              "three-arm spirals instead.")
        X_train, y_train, X_test, y_test = datasets.spirals(n_samples=3000, n_classes=3, seed=0)
        name = "three-arm spirals (2,400 train / 600 test, 2 features, 3 classes)"
        baseline = None
    made = time.perf_counter() - start
    # validation rows come out of the training set; the test set is only scored at the end
    n_val = int(round(len(X_train) * args.validation_split))
    if not 1 <= n_val < len(X_train):
        raise ArgumentError(f"--validation-split {args.validation_split} leaves {n_val} validation rows")
    order = np.random.default_rng(args.seed).permutation(len(X_train))
    val, train = order[:n_val], order[n_val:]
    mean, scale = _column_stats(X_train[train])
    Z_train, Z_val, Z_test = ((X - mean) / scale for X in (X_train[train], X_train[val], X_test))
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    sizes = [X_train.shape[1]] + args.hidden + [n_classes]
    check_memory(sizes, np.float32, args.batch_size, 2)
    model = _make_model(ff, sizes, np.float32, args.seed)
    steps = args.epochs * -(-len(train) // args.batch_size)
    optimizer = ff.Adam(lr=schedules.CosineWithWarmup(args.lr, total_steps=steps))
    keeper = BestEpoch(model, "val_accuracy", args.patience, higher_is_better=True)
    print(f"dataset: {name}, made in {made:.2f} s")
    print(f"model:   MLP {'-'.join(map(str, sizes))} (ReLU, He init), {model.n_params:,} parameters, float32")
    print(f"fitting: Adam lr={args.lr:g} with cosine decay over {args.epochs} epochs, batch {args.batch_size}, "
          f"softmax cross-entropy; early stopping on the accuracy of {n_val:,} validation rows held out of "
          f"the training set (patience {args.patience}), best epoch restored")
    start = time.perf_counter()
    # the demo shows its progress at once (it takes about a second): the display on a terminal,
    # a line per epoch elsewhere (a log)
    history = _run_fit(ff, model, Z_train, y_train[train], ff.SoftmaxCrossEntropy(), optimizer, args,
                       (Z_val, y_train[val]), [keeper], progress=1 if sys.stderr.isatty() else 2)
    keeper.restore()
    test = ff.evaluate(model, Z_test, y_test, ff.SoftmaxCrossEntropy())
    seconds = time.perf_counter() - start
    print(f"trained {history.epochs} epochs in {seconds:.2f} s (validation and test scoring included); "
          f"best validation accuracy {keeper.best:.1%} at epoch {keeper.epoch}, restored")
    line = f"test accuracy: {test['accuracy']:.1%}"
    if baseline is not None:
        line += f"   (published MLP baseline for MNIST-1D: about {baseline:.0%})"
    print(line)
    return 0


def cmd_config(args):
    import fastfit as ff
    ff.show_config()
    return 0


# ---------------------------------------------------------------- the parser

class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error."""

    def error(self, message):
        self.exit(2, f"fastfit: error: {message} (see '{self.prog} --help')\n")


def build_parser():
    from ._version import __version__

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="fastfit", formatter_class=fmt,
                     description="Fast, checked MLP fitting on the CPU: fit a table, predict with the model, "
                                 "inspect it, or run the MNIST-1D demo.")
    parser.add_argument("--version", action="version", version=f"fastfit {__version__}",
                        help="print fastfit's version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name, run, help, description=None):
        p = sub.add_parser(name, help=help, description=description or help, formatter_class=fmt)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, show the full traceback instead of one line (default: False)")
        p.set_defaults(run=run)
        return p

    def table_options(p):
        p.add_argument("--sep", default=None, type=_separator,
                       help="the column separator of a text table (tab may be written \\t); "
                            "None: found from the first lines among , tab ; |")
        p.add_argument("--index-col", default="auto", metavar="COLUMN",
                       help="a column holding row names, left out of the features; auto: a first column "
                            "with an empty header (DataFrame.to_csv's index); none: keep every column")

    fit = command("fit", cmd_fit, "fit an MLP to a CSV (or .npz) file and save it",
                  "Fit an MLP to a text table with a header line (or an .npz holding X and y) and save it. "
                  "Features are standardised for the fit; the saved model takes raw values.")
    fit.add_argument("data", help="training data: a text table (CSV, TSV, ...) with a header line, "
                                  "or an .npz archive holding X and y")
    fit.add_argument("--target", default=None,
                     help="the column to predict (for an .npz: the array, y when not given)")
    fit.add_argument("--drop", default=None, metavar="COLUMNS",
                     help="comma-separated columns to leave out of the features (ids, text)")
    table_options(fit)
    fit.add_argument("--task", choices=TASKS, default="auto",
                     help=f"auto: text or true/false targets, and whole numbers with at most "
                          f"{AUTO_MAX_CLASSES} distinct values and {AUTO_MIN_ROWS_PER_CLASS}+ rows per value, "
                          "are classification; other numbers regression")
    fit.add_argument("--loss", choices=LOSSES, default="auto",
                     help="auto: cross_entropy (softmax) for classification, mse for regression; bce: "
                          "two classes, one logit")
    fit.add_argument("--hidden", type=_widths, default="128,128",
                     help="hidden layer widths, comma-separated (empty for a linear model)")
    fit.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="the update rule")
    fit.add_argument("--lr", type=_positive, default=1e-3, help="learning rate")
    fit.add_argument("--epochs", type=_whole(1), default=20, help="passes over the training rows")
    fit.add_argument("--batch-size", type=_whole(1), default=64, help="rows per step")
    fit.add_argument("--validation-split", type=_fraction, default=0.0,
                     help="fraction of the rows (drawn at random with --seed) held out to score each epoch")
    fit.add_argument("--patience", type=_whole(1), default=None,
                     help="stop after this many epochs without a better validation score (accuracy, or "
                          "loss for regression) and keep the best epoch; needs --validation-split")
    fit.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="the model's precision")
    fit.add_argument("--seed", type=_whole(0), default=0,
                     help="seed of the initial weights, the validation draw and the batch order")
    fit.add_argument("--out", default="model.npz", help="where to save the model")
    fit.add_argument("--quiet", action="store_true", help="no progress display")

    predict = command("predict", cmd_predict, "predict with a model saved by 'fastfit fit'",
                      "Predict with a model saved by 'fastfit fit'. Its feature columns are found by name; "
                      "other columns are ignored. Writes CSV.")
    predict.add_argument("model", help="a model file written by 'fastfit fit'")
    predict.add_argument("data", help="a text table with the model's feature columns, or an .npz holding X")
    table_options(predict)
    predict.add_argument("--proba", action="store_true",
                         help="write class probabilities, one column per class, instead of labels")
    predict.add_argument("--out", default=None, help="the CSV file to write; None: standard output")

    info = command("info", cmd_info, "describe a saved model")
    info.add_argument("model", help="a model file written by 'fastfit fit' or fastfit.save")

    demo = command("demo", cmd_demo, "fit an MLP on MNIST-1D (or built-in spirals) and report test accuracy",
                   "Fit an MLP on MNIST-1D (the built-in spirals without the mnist1d package), with early "
                   "stopping on validation rows held out of the training set, and report the test accuracy "
                   "beside the published MLP baseline.")
    demo.add_argument("--hidden", type=_widths, default="256,256", help="hidden layer widths, comma-separated")
    demo.add_argument("--epochs", type=_whole(1), default=40, help="most epochs (the cosine decay's length)")
    demo.add_argument("--batch-size", type=_whole(1), default=50, help="rows per step")
    demo.add_argument("--lr", type=_positive, default=1e-2, help="Adam's peak learning rate")
    demo.add_argument("--patience", type=_whole(1), default=20,
                      help="stop after this many epochs without a better validation accuracy")
    demo.add_argument("--validation-split", type=_fraction, default=0.1,
                      help="fraction of the training set held out for early stopping")
    demo.add_argument("--seed", type=_whole(0), default=0,
                      help="seed of the initial weights, the validation draw and the batch order")
    demo.add_argument("--quiet", action="store_true", help="no progress display")

    command("config", cmd_config, "show the BLAS fastfit uses, its kernels and threads")
    return parser


# ---------------------------------------------------------------- main

def _one_line(text):
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + " ..."


def _report(exc):
    """The one line (and exit status) for an exception that ended a command."""
    from .training import NonFiniteLossError
    if isinstance(exc, ArgumentError):
        return str(exc), 2
    if isinstance(exc, (CLIError, DataError)):
        return str(exc), 1
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; nothing was saved", 130
    if isinstance(exc, MemoryError):
        return "out of memory: use a smaller --batch-size or narrower --hidden layers, or a smaller file", 1
    if isinstance(exc, NonFiniteLossError):
        return f"the fit diverged ({exc}); lower --lr", 1
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", 1
    return (f"unexpected {type(exc).__name__}: {exc} (this is a fastfit bug: run again with --debug for "
            "the traceback and report it)"), 1


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors have printed their text
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.run(args)
    except BrokenPipeError:
        # the reader of our output went away (| head): not an error, and no traceback at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        message, status = _report(exc)
    except KeyboardInterrupt as exc:
        if getattr(args, "debug", False):
            raise
        message, status = _report(exc)
    sys.stdout.flush()
    print(f"fastfit: error: {_one_line(message)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
