"""``fastfit fit | predict | info``: train on a CSV or .npz file, predict with a saved model.

A CSV has a header row and numeric cells; ``--target`` names the column to
predict (the others are the features). An .npz holds arrays ``X`` and ``y``
(``--target`` names another key for y). Features are standardised with the
training data's mean and scale, which the model file keeps for ``predict``.
"""
import csv
import json
import sys

import numpy as np

from .cli import CLIError

OPTIMIZER_CHOICES = ("adam", "sgd", "momentum", "nesterov", "normalized")
LOSS_CHOICES = ("auto", "cross_entropy", "mse", "bce")


# ---------------------------------------------------------------- reading data

def _read_csv(path):
    """(column names, float array (rows, columns)); one clear error for a bad cell."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            try:
                header = [name.strip() for name in next(reader)]
            except StopIteration:
                raise CLIError(f"{path} is empty: a header row and data rows are needed") from None
            rows = []
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise CLIError(f"{path} line {line_no}: {len(row)} cells, but the header has {len(header)}")
                values = []
                for name, cell in zip(header, row):
                    try:
                        values.append(float(cell))
                    except ValueError:
                        raise CLIError(f"{path} line {line_no}, column {name!r}: {cell.strip()!r} "
                                       "is not a number") from None
                rows.append(values)
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CLIError(f"{path} is not a text CSV file") from None
    if not rows:
        raise CLIError(f"{path} has a header but no data rows")
    return header, np.asarray(rows, dtype=np.float64)


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise CLIError(f"{path} is not a readable .npz file: {exc}") from None


def _is_npz(path):
    return path.lower().endswith(".npz")


def read_training_data(path, target):
    """(X, y, feature names, target name) from a CSV or an .npz file."""
    if _is_npz(path):
        arrays = _read_npz(path)
        ykey = target or "y"
        for key in ("X", ykey):
            if key not in arrays:
                raise CLIError(f"{path} has no array {key!r} (it has: {', '.join(sorted(arrays)) or 'none'})")
        X, y = np.asarray(arrays["X"]), np.asarray(arrays[ykey])
        if X.ndim != 2:
            raise CLIError(f"{path}: X must be 2-D (samples, features), got shape {X.shape}")
        if y.shape[0] != X.shape[0]:
            raise CLIError(f"{path}: {ykey} has {y.shape[0]} rows but X has {X.shape[0]}")
        if X.dtype.kind not in "iuf" or y.dtype.kind not in "iuf":
            raise CLIError(f"{path}: X and {ykey} must be numeric")
        return X.astype(np.float64), y, [f"x{i}" for i in range(X.shape[1])], ykey
    if not target:
        raise CLIError("--target is required for CSV data: the name of the column to predict")
    header, table = _read_csv(path)
    if target not in header:
        raise CLIError(f"column {target!r} is not in {path} (columns: {', '.join(header)})")
    t = header.index(target)
    features = [name for i, name in enumerate(header) if i != t]
    if not features:
        raise CLIError(f"{path} has no feature columns besides {target!r}")
    return np.delete(table, t, axis=1), table[:, t], features, target


def read_features(path, features):
    """The feature columns a saved model was trained on, from a CSV or .npz file."""
    if _is_npz(path):
        arrays = _read_npz(path)
        if "X" not in arrays:
            raise CLIError(f"{path} has no array 'X' (it has: {', '.join(sorted(arrays)) or 'none'})")
        X = np.asarray(arrays["X"])
        if X.ndim != 2 or X.dtype.kind not in "iuf":
            raise CLIError(f"{path}: X must be a numeric 2-D array, got {X.dtype} with shape {X.shape}")
        if X.shape[1] != len(features):
            raise CLIError(f"{path}: X has {X.shape[1]} features, the model takes {len(features)}")
        return X.astype(np.float64)
    header, table = _read_csv(path)
    missing = [name for name in features if name not in header]
    if missing:
        raise CLIError(f"column {missing[0]!r}, which the model was trained on, is not in {path} "
                       f"(columns: {', '.join(header)})")
    return table[:, [header.index(name) for name in features]]


# ---------------------------------------------------------------- commands

def _hidden(text):
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CLIError(f"--hidden must be comma-separated widths such as 128,128, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise CLIError(f"--hidden widths must be >= 1, got {text!r}")
    return sizes


def _choose_loss(name, y):
    """The loss, and the class values for classification (None for regression)."""
    integer_valued = y.ndim == 1 and np.all(np.isfinite(y)) and np.array_equal(y, np.round(y))
    if name == "auto":
        name = "cross_entropy" if integer_valued and 2 <= len(np.unique(y)) <= 100 else "mse"
    if name == "cross_entropy":
        if not integer_valued:
            raise CLIError("--loss cross_entropy needs integer class labels in the target")
        return name, np.unique(y)
    if name == "bce":
        if not np.all((y == 0) | (y == 1)):
            raise CLIError("--loss bce needs a target of 0s and 1s")
    return name, None


def _make_optimizer(ff, name, lr):
    if name == "adam":
        return ff.Adam(lr=lr)
    if name == "sgd":
        return ff.SGD(lr=lr)
    if name == "momentum":
        return ff.SGD(lr=lr, momentum=0.9)
    if name == "nesterov":
        return ff.SGD(lr=lr, momentum=0.9, nesterov=True)
    return ff.NormalizedGD(lr=lr)


def cmd_fit(args):
    import fastfit as ff
    from .datasets import Standardizer

    X, y, features, target = read_training_data(args.data, args.target)
    if not np.all(np.isfinite(X)) or not np.all(np.isfinite(np.asarray(y, dtype=np.float64))):
        raise CLIError(f"{args.data} has missing or infinite values")
    loss_name, classes = _choose_loss(args.loss, np.asarray(y, dtype=np.float64))
    if classes is not None:
        targets = np.searchsorted(classes, y)
        n_out = len(classes)
        loss = ff.SoftmaxCrossEntropy()
    else:
        targets = np.asarray(y, dtype=np.float64)
        if targets.ndim == 1:
            targets = targets.reshape(-1, 1)
        n_out = targets.shape[1]
        loss = ff.BinaryCrossEntropy() if loss_name == "bce" else ff.SquaredError()
    scaler = Standardizer().fit(X)
    sizes = [X.shape[1]] + _hidden(args.hidden) + [n_out]
    try:
        model = ff.MLP(sizes, dtype=args.dtype, seed=args.seed)
        optimizer = _make_optimizer(ff, args.optimizer, args.lr)
        history = ff.fit(model, scaler.transform(X), targets, loss=loss, optimizer=optimizer,
                         batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
                         validation_split=args.validation_split, verbose=0 if args.quiet else 1)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    info = {"features": features, "target": target, "loss": loss_name,
            "classes": None if classes is None else classes.tolist(),
            "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()}
    ff.save(model, args.out, optimizer=optimizer, info=info)
    last = {k: v[-1] for k, v in history.history.items()}
    summary = f"trained MLP {'-'.join(map(str, sizes))} for {history.epochs} epochs: loss {last['loss']:.4g}"
    for key in ("val_loss", "val_accuracy", "val_r2"):
        if key in last:
            summary += f", {key} {last[key]:.4g}"
    print(summary)
    print(f"saved to {args.out}")
    return 0


def _load_model(path):
    import fastfit as ff
    try:
        return ff.load(path), ff.io.read_info(path)
    except FileNotFoundError:
        raise CLIError(f"no model file at {path}") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def cmd_predict(args):
    model, info = _load_model(args.model)
    if not info or "features" not in info:
        raise CLIError(f"{args.model} was not saved by 'fastfit fit' (no feature list): "
                       "use the Python API (fastfit.load) to predict with it")
    X = read_features(args.data, info["features"])
    if model.n_inputs != X.shape[1] or len(info["mean"]) != X.shape[1]:
        raise CLIError(f"{args.model} takes {model.n_inputs} features but its record lists "
                       f"{len(info['features'])}: the file is inconsistent")
    X = (X - np.asarray(info["mean"])) / np.asarray(info["scale"])
    out = model.predict(X)
    target = info.get("target", "prediction")
    stream = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(stream)
        if info.get("classes") is not None:
            classes = np.asarray(info["classes"])
            writer.writerow([target])
            for label in classes[out.argmax(axis=1)]:
                writer.writerow([int(label) if float(label).is_integer() else label])
        elif info.get("loss") == "bce":
            writer.writerow([target])
            for row in (out > 0).astype(int):
                writer.writerow(row.tolist())
        else:
            writer.writerow([target] if out.shape[1] == 1 else [f"{target}_{j}" for j in range(out.shape[1])])
            for row in out:
                writer.writerow([f"{v:.6g}" for v in row])
    finally:
        if args.out:
            stream.close()
    if args.out:
        print(f"wrote {len(out)} predictions to {args.out}")
    return 0


def cmd_info(args):
    import fastfit as ff
    try:
        model, optimizer = ff.load(args.model, return_optimizer=True)
        info = ff.io.read_info(args.model)
    except FileNotFoundError:
        raise CLIError(f"no model file at {args.model}") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(f"model:      MLP {'-'.join(map(str, model.sizes))} (ReLU hidden layers, linear output)")
    print(f"parameters: {model.n_params:,} {model.dtype.name} ({model.n_params * model.dtype.itemsize:,} bytes)")
    print(f"optimizer:  {optimizer!r}" + (f", {optimizer.t} steps taken" if optimizer is not None else ""))
    if info:
        if "features" in info:
            print(f"features:   {', '.join(info['features'])}")
            print(f"target:     {info.get('target')}  (loss {info.get('loss')})")
        if info.get("classes") is not None:
            print(f"classes:    {', '.join(str(c) for c in info['classes'])}")
        extra = {k: v for k, v in info.items() if k not in ("features", "target", "loss", "classes", "mean", "scale")}
        if extra:
            print(f"info:       {json.dumps(extra)}")
    return 0


def add_commands(sub):
    fit = sub.add_parser("fit", help="fit an MLP to a CSV or .npz file and save it")
    fit.add_argument("data", help="training data: a CSV with a header row, or an .npz with X and y")
    fit.add_argument("--target", help="the column (CSV) or array (.npz, default y) to predict")
    fit.add_argument("--hidden", default="128,128", help="hidden layer widths, e.g. 128,128 (default)")
    fit.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, default="adam")
    fit.add_argument("--lr", type=float, default=1e-3)
    fit.add_argument("--epochs", type=int, default=20)
    fit.add_argument("--batch-size", type=int, default=64)
    fit.add_argument("--loss", choices=LOSS_CHOICES, default="auto",
                     help="auto: cross-entropy for integer labels (2-100 classes), else squared error")
    fit.add_argument("--validation-split", type=float, default=0.0)
    fit.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", default="model.npz", help="where to save the model (default model.npz)")
    fit.add_argument("--quiet", action="store_true", help="no progress display")
    fit.set_defaults(run=cmd_fit)

    predict = sub.add_parser("predict", help="predict with a model saved by 'fastfit fit'")
    predict.add_argument("model")
    predict.add_argument("data", help="a CSV with the model's feature columns, or an .npz with X")
    predict.add_argument("--out", help="write the predictions to this CSV (default: standard output)")
    predict.set_defaults(run=cmd_predict)

    info = sub.add_parser("info", help="describe a saved model")
    info.add_argument("model")
    info.set_defaults(run=cmd_info)
