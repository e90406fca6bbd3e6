"""Reading the command line's data files: text tables (CSV and its cousins) and ``.npz`` archives.

A text table has a header line naming the columns. The separator is one of
``,`` tab ``;`` ``|`` (found by looking at the first lines) unless the caller
names it. The reading itself is ``pandas.read_csv`` with its C parser, so a
large file costs little more than pandas alone; around it this module adds
what a person needs when the file is wrong: every problem is a ``DataError``
whose one-line message names the file, the line and the column.

An ``.npz`` archive holds ``X`` (rows, features) and a target array (``y``
unless told otherwise). Nothing is unpickled.

Nothing here imports the command line; the command line imports this.
"""
import bz2
import csv
import gzip
import lzma
import os
import re
import warnings

import numpy as np

#: The separators tried, in order of preference when several fit equally well.
SEPARATORS = (",", "\t", ";", "|")
_SEP_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe", " ": "space"}
#: How much of the file's start the separator and header are judged on.
_SAMPLE_LINES = 50
_SAMPLE_BYTES = 1 << 20
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
#: Longest cell text quoted back in a message.
_SHOW_CHARS = 40


class DataError(ValueError):
    """A data file the command line cannot use; the message is one line naming file, line and column."""


class Data:
    """What a data file gave: ``X`` (float64, rows x features), ``y`` (or None), their names,
    and where each row came from (``where(i)``: "line 12" of a text file, "row 12" of an array)."""

    def __init__(self, path, X, features, y=None, target=None, lines=None, notes=()):
        self.path, self.X, self.features, self.y, self.target = path, X, features, y, target
        self.lines = lines
        self.notes = list(notes)

    def where(self, i):
        if self.lines is not None:
            return f"line {int(self.lines[i])}"
        return f"row {int(i) + 1}"


def show(text):
    """A cell's text, shortened for a message."""
    text = str(text)
    if len(text) > _SHOW_CHARS:
        return repr(text[:_SHOW_CHARS]) + f"... ({len(text):,} characters)"
    return repr(text)


def _list(names, limit=12):
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} columns)" if len(names) > limit else "")


def is_npz(path):
    return str(path).lower().endswith(".npz")


# ---------------------------------------------------------------- text tables

def _pandas():
    try:
        import pandas
    except ImportError:
        raise DataError("reading CSV files needs pandas, which is not installed: pip install pandas") from None
    return pandas


def _head_bytes(path, n=8192):
    opener = _OPENERS.get(os.path.splitext(str(path))[1].lower(), open)
    try:
        with opener(path, "rb") as f:
            return f.read(n)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a data file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None


def _check_text(path, head):
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"{path} is a NumPy .npy file, not a text table: save X and y together "
                        "with numpy.savez('data.npz', X=X, y=y)")
    if head.startswith(b"PK\x03\x04"):
        raise DataError(f"{path} is a zip archive, not a text table (an .npz archive needs a name "
                        "ending in .npz)")
    if b"\0" in head:
        raise DataError(f"{path} is not a text file (it holds binary data)")


def _sample_lines(path, encoding):
    """The first lines of the file as text (without line ends)."""
    opener = _OPENERS.get(os.path.splitext(str(path))[1].lower(), open)
    lines, size = [], 0
    with opener(path, "rt", encoding=encoding, newline="") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line.strip():
                lines.append(line)
            size += len(line)
            if len(lines) >= _SAMPLE_LINES or size >= _SAMPLE_BYTES:
                break
    return lines


def split_line(line, sep):
    """The fields of one line, quotes honoured, names stripped."""
    if len(sep) > 1:  # a regular expression, as pandas takes it
        return [f.strip() for f in re.split(sep, line.strip())]
    try:
        return [f.strip() for f in next(csv.reader([line], delimiter=sep, skipinitialspace=True))]
    except (csv.Error, StopIteration):  # a field past the csv module's size limit, say
        return [f.strip().strip('"') for f in line.split(sep)]


def detect_separator(lines):
    """The separator that splits every sampled line into the same number (> 1) of fields;
    among those, the one giving the most fields. A comma when none does."""
    best, best_fields = ",", 1
    for sep in SEPARATORS:
        counts = {len(split_line(line, sep)) for line in lines}
        if len(counts) == 1:
            fields = counts.pop()
            if fields > best_fields:
                best, best_fields = sep, fields
    return best


def separator(sep):
    """The user's --sep, with the names people type for a tab: one character, or a regular
    expression (longer), as pandas takes it; ValueError for what neither reads."""
    if sep in ("\\t", "tab", "TAB"):
        return "\t"
    if sep in ("space", "whitespace"):
        return r"\s+"
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"the separator must be one character or a regular expression, got {sep!r}")
    if len(sep) > 1:
        try:
            re.compile(sep)
        except re.error as exc:
            raise ValueError(f"the separator {sep!r} is longer than one character, so it is read as a "
                             f"regular expression, and it is not one ({exc})") from None
    return sep


def _looks_numeric(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Table:
    """A parsed text table: the pandas frame (columns by position), names, file lines of the rows."""

    def __init__(self, path, frame, names, notes):
        self.path, self.frame, self.names, self.notes = path, frame, names, notes
        self.lines = np.asarray(frame.index, dtype=np.int64) + 2  # the header is line 1

    def missing_column(self, name, what):
        hint = ""
        if len(self.names) == 1:
            hint = (" (only one column was found: if the file uses another separator than "
                    "comma, tab, semicolon or pipe, name it with --sep)")
        elif all(_looks_numeric(n) for n in self.names):
            hint = " (the first line looks like data: fastfit needs a header line naming the columns)"
        return DataError(f"{what} {name!r} is not a column of {self.path} "
                         f"(columns: {_list(self.names)}){hint}")

    def positions(self, wanted, what):
        index = {name: k for k, name in enumerate(self.names)}
        out = []
        for name in wanted:
            if name not in index:
                raise self.missing_column(name, what)
            out.append(index[name])
        return out

    def check_present(self, positions):
        """No missing values in these columns."""
        sub = self.frame.iloc[:, positions]
        na = sub.isna().to_numpy()
        bad_rows = na.any(axis=1)
        if bad_rows.any():
            r = int(np.argmax(bad_rows))
            c = int(np.argmax(na[r]))
            n = int(bad_rows.sum())
            raise DataError(
                f"{self.path} line {self.lines[r]}, column {self.names[positions[c]]!r}: missing value "
                f"({n:,} row{'s' if n > 1 else ''} in all {'have' if n > 1 else 'has'} a missing value in the "
                "columns used): fill them in or "
                "delete those rows; fastfit does not guess values")

    def numbers(self, positions):
        """The columns as a float64 array; non-numbers and infinities are named by line and column.
        Call check_present first."""
        pd = _pandas()
        columns = []
        for p in positions:
            col = self.frame.iloc[:, p]
            if pd.api.types.is_bool_dtype(col.dtype):
                col = col.astype(np.float64)
            elif not pd.api.types.is_numeric_dtype(col.dtype):
                converted = pd.to_numeric(col, errors="coerce")
                bad = converted.isna().to_numpy()
                if bad.any():
                    r = int(np.argmax(bad))
                    raise DataError(f"{self.path} line {self.lines[r]}, column {self.names[p]!r}: "
                                    f"{show(col.iloc[r])} is not a number (feature columns must be numeric; "
                                    "leave a column out with --drop)")
                col = converted
            columns.append(col.to_numpy(dtype=np.float64))
        X = np.column_stack(columns) if columns else np.empty((len(self.frame), 0))
        finite = np.isfinite(X)
        if not finite.all():
            r, c = (int(i) for i in np.argwhere(~finite)[0])
            raise DataError(f"{self.path} line {self.lines[r]}, column {self.names[positions[c]]!r}: "
                            f"{X[r, c]} is not a finite number (an infinity, or a number beyond float64's "
                            "range such as 1e400)")
        return X

    def labels(self, p):
        """A target column as a NumPy array: numbers, booleans or strings. Call check_present first."""
        pd = _pandas()
        col = self.frame.iloc[:, p]
        if pd.api.types.is_bool_dtype(col.dtype):
            return col.to_numpy(dtype=bool)
        if pd.api.types.is_numeric_dtype(col.dtype):
            y = col.to_numpy()
            if y.dtype.kind == "f" and not np.isfinite(y).all():
                r = int(np.argmax(~np.isfinite(y)))
                raise DataError(f"{self.path} line {self.lines[r]}, column {self.names[p]!r}: {y[r]} is not "
                                "a finite number (an infinity, or a number beyond float64's range)")
            return y
        # text labels, kept as written (integers too long for int64 land here as well)
        return np.asarray(col.astype(str).to_numpy(), dtype=str)


def _read_frame(pd, path, sep, encoding, n_columns):
    # a separator of several characters is a regular expression, which only the python engine reads
    engine = {"engine": "python"} if len(sep) > 1 else {"engine": "c", "low_memory": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.read_csv(path, sep=sep, header=None, skiprows=1, names=list(range(n_columns)),
                           index_col=False, skip_blank_lines=False, skipinitialspace=True,
                           encoding=encoding, **engine)


def read_table(path, sep=None, index_col="auto"):
    """A text table: header names, a pandas frame of the data rows, notes for the user.

    ``index_col``: "auto" leaves out a first column whose header is empty (the
    row index DataFrame.to_csv writes); "none" keeps every column; a column
    name leaves that column out.
    """
    pd = _pandas()
    _check_text(path, _head_bytes(path))
    notes = []
    encoding = "utf-8-sig"
    try:
        lines = _sample_lines(path, encoding)
    except UnicodeDecodeError:
        encoding = "latin-1"
        lines = _sample_lines(path, encoding)
        notes.append(f"{path} is not UTF-8 text: read as Latin-1")
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None
    if not lines:
        raise DataError(f"{path} is empty: a header line naming the columns and data rows are needed")
    sep = detect_separator(lines) if sep is None else separator(sep)
    names = split_line(lines[0], sep)
    seen = {}
    for k, name in enumerate(names):
        if name and name in seen:
            raise DataError(f"{path}: the header names column {name!r} twice (columns {seen[name] + 1} and "
                            f"{k + 1}): rename one of them")
        seen.setdefault(name, k)
    try:
        frame = _read_frame(pd, path, sep, encoding, len(names))
    except UnicodeDecodeError:
        if encoding == "latin-1":
            raise
        encoding = "latin-1"
        notes.append(f"{path} is not UTF-8 text: read as Latin-1")
        frame = _read_frame(pd, path, sep, encoding, len(names))
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} has a header line but no data rows") from None
    except pd.errors.ParserError as exc:
        text = str(exc)
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
        if m:
            raise DataError(f"{path} line {m.group(2)}: {m.group(3)} fields, but the header line has "
                            f"{len(names)} ({_SEP_NAMES.get(sep, repr(sep))}-separated; --sep names "
                            "another separator)") from None
        raise DataError(f"{path} cannot be parsed: {text.strip().splitlines()[-1]}") from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None
    except (ValueError, csv.Error) as exc:  # the python engine's own complaints
        raise DataError(f"{path} cannot be parsed: {str(exc).strip().splitlines()[-1]}") from None
    # a row with every cell empty is a blank line: not data
    empty = frame.isna().all(axis=1).to_numpy()
    if empty.any():
        frame = frame[~empty]
    if len(frame) == 0:
        raise DataError(f"{path} has a header line but no data rows")
    keep = list(range(len(names)))
    if index_col == "auto":
        if names[0] == "" and len(names) > 1:
            keep.remove(0)
            notes.append(f"the first column of {path} has no name: taken as the row index written by "
                         "DataFrame.to_csv and left out (--index-col none keeps it)")
    elif index_col != "none":
        if index_col not in names:
            raise DataError(f"--index-col {index_col!r} is not a column of {path} (columns: {_list(names)})")
        keep.remove(names.index(index_col))
    # columns that trailing separators make: no name, no values
    for k in list(keep):
        if names[k] == "" and frame.iloc[:, k].isna().all():
            keep.remove(k)
    if keep != list(range(len(names))):
        frame = frame.iloc[:, keep]
        names = [names[k] for k in keep]
    return _Table(path, frame, names, notes)


# ---------------------------------------------------------------- .npz archives

def read_npz(path):
    """{name: array} of an .npz archive, every problem one DataError."""
    head = _head_bytes(path, 8)
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"{path} is a single NumPy .npy array, not an .npz archive: save X and y "
                        "together with numpy.savez('data.npz', X=X, y=y)")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DataError(f"{path} is not an .npz archive (those are zip files written by numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            out = {}
            for key in archive.files:
                try:
                    out[key] = archive[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc):
                        raise DataError(f"{path}: array {key!r} holds Python objects, which fastfit does not "
                                        "load: store numbers or strings") from None
                    raise
            return out
    except DataError:
        raise
    except Exception as exc:  # zipfile, zlib and format errors alike: the file is damaged
        raise DataError(f"{path} cannot be read as an .npz archive ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _npz_features(path, arrays):
    if "X" not in arrays:
        raise DataError(f"{path} has no array 'X' (it has: {', '.join(sorted(arrays)) or 'none'})")
    X = arrays["X"]
    if X.dtype.kind not in "iufb":
        raise DataError(f"{path}: X must be numeric, got {X.dtype}")
    if X.ndim != 2:
        raise DataError(f"{path}: X must be 2-D (rows, features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError(f"{path}: X has 0 rows")
    if X.shape[1] == 0:
        raise DataError(f"{path}: X has 0 features (shape {X.shape})")
    X = X.astype(np.float64)
    finite = np.isfinite(X)
    if not finite.all():
        r, c = (int(i) for i in np.argwhere(~finite)[0])
        raise DataError(f"{path}: X[{r}, {c}] is {X[r, c]}: missing and infinite values cannot be used")
    return X


def training_data(path, target=None, sep=None, index_col="auto", drop=()):
    """X, y and their names from a text table (``target`` names y's column) or an .npz archive."""
    if is_npz(path):
        arrays = read_npz(path)
        key = target or "y"
        X = _npz_features(path, arrays)
        if key not in arrays:
            raise DataError(f"{path} has no array {key!r} (it has: {', '.join(sorted(arrays))}); "
                            "--target names the target array")
        y = arrays[key]
        if y.ndim == 0:
            raise DataError(f"{path}: {key} is a single value (0-d); it needs one entry per row of X")
        if y.ndim > 2:
            raise DataError(f"{path}: {key} must be 1-D (or 2-D for several outputs), got shape {y.shape}")
        if y.shape[0] != X.shape[0]:
            raise DataError(f"{path}: {key} has {y.shape[0]} rows but X has {X.shape[0]}")
        if y.dtype.kind == "S":
            y = np.char.decode(y, "utf-8", errors="replace")
        if y.dtype.kind not in "iufbU":
            raise DataError(f"{path}: {key} must hold numbers, booleans or strings, got {y.dtype}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            bad = np.argwhere(~np.isfinite(y))[0]
            raise DataError(f"{path}: {key}[{', '.join(map(str, bad))}] is {y[tuple(bad)]}: missing and "
                            "infinite values cannot be used")
        if y.dtype.kind == "U" and y.ndim != 1:
            raise DataError(f"{path}: string labels {key} must be 1-D, got shape {y.shape}")
        return Data(path, X, [f"x{j}" for j in range(X.shape[1])], y, key)
    if not target:
        raise DataError("--target is needed for a text table: the name of the column to predict")
    table = read_table(path, sep, index_col)
    t = table.positions([target], "the target")[0]
    dropped = set(table.positions(drop, "--drop: the column")) if drop else set()
    if t in dropped:
        raise DataError(f"--drop leaves out {target!r}, the target")
    feature_pos = [k for k in range(len(table.names)) if k != t and k not in dropped]
    if not feature_pos:
        raise DataError(f"{path} has no feature columns besides the target {target!r}")
    for k in feature_pos:
        if table.names[k] == "":
            raise DataError(f"{path}: column {k + 1} has no name in the header line: name it, "
                            "or remove the column")
    table.check_present(feature_pos + [t])
    y = table.labels(t)
    X = table.numbers(feature_pos)
    return Data(path, X, [table.names[k] for k in feature_pos], y, target, table.lines, table.notes)


def feature_data(path, features, sep=None, index_col="auto"):
    """The named feature columns (for a model trained on them) from a text table or an .npz."""
    if is_npz(path):
        X = _npz_features(path, read_npz(path))
        if X.shape[1] != len(features):
            raise DataError(f"{path}: X has {X.shape[1]} features, the model takes {len(features)}")
        return Data(path, X, list(features))
    table = read_table(path, sep, index_col)
    positions = table.positions(features, "the model's feature")
    table.check_present(positions)
    return Data(path, table.numbers(positions), list(features), lines=table.lines, notes=table.notes)
