"""What a fit shows while it runs.

verbose=0: nothing. verbose=1: a progress display on stderr (tqdm when it is
installed, else one line rewritten in place). verbose=2: one line per epoch on
stdout, as Keras prints them (epoch, time, loss, scores), for logs and
notebooks. verbose="auto": the progress display, once a fit has run two
seconds, when stderr is a terminal or the code runs in a Jupyter kernel
(tqdm.auto then draws a notebook widget); nothing otherwise, so batch jobs and
piped output stay clean.
"""
import math
import sys
import time


class _Silent:
    def update_steps(self, epoch, done, total):
        pass

    def end_epoch(self, record):
        pass

    def close(self):
        pass


def _summary(record):
    parts = [f"loss {record['loss']:.4g}"]
    for key in ("val_loss", "val_accuracy", "val_r2"):
        if key in record:
            parts.append(f"{key} {record[key]:.4g}")
    rate = record.get("samples_per_s")
    if rate is not None and rate != float("inf"):
        parts.append(f"{rate / 1e3:.1f}k samples/s")
    return "  ".join(parts)


class _PlainLine:
    """One line on stderr, rewritten in place: epoch, loss, validation score, samples/s."""

    def __init__(self, epochs, stream):
        self.epochs, self.stream = epochs, stream
        self.last = ""

    def _write(self, text):
        pad = max(0, len(self.last) - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self.last = text

    def update_steps(self, epoch, done, total):
        if done < total:
            self._write(f"epoch {epoch}/{self.epochs}  step {done}/{total}  {self.last_summary}")

    last_summary = ""

    def end_epoch(self, record):
        self.last_summary = _summary(record)
        self._write(f"epoch {record['epoch']}/{self.epochs}  {self.last_summary}")

    def close(self):
        if self.last:
            self.stream.write("\n")
            self.stream.flush()


class _Tqdm:
    def __init__(self, epochs, stream, started=None):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=epochs, unit="epoch", file=stream, dynamic_ncols=True, leave=True)
        if started is not None:  # shown late (verbose="auto"): its clock starts with the fit's
            self.bar.start_t = self.bar.last_print_t = started

    def update_steps(self, epoch, done, total):
        pass

    def end_epoch(self, record):
        self.bar.set_postfix_str(_summary(record), refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


#: The record's entries verbose=2 prints after the time, in this order (when present).
_LINE_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_r2")


def _number(value):
    """Keras's habit: four decimals, or four significant digits for small values."""
    if not isinstance(value, float) or not math.isfinite(value) or value == 0 or abs(value) >= 1e-3:
        return f"{value:.4f}"
    return f"{value:.4e}"


def _duration(seconds):
    return f"{seconds * 1e3:.3g}ms" if seconds < 1 else f"{seconds:.1f}s"


class _EpochLines:
    """verbose=2: "Epoch 3/10 - 0.4s - loss: 0.2311 - accuracy: 0.9350 - val_loss: ...", one per epoch."""

    def __init__(self, epochs, stream):
        self.epochs, self.stream = epochs, stream

    def update_steps(self, epoch, done, total):
        pass

    def end_epoch(self, record):
        parts = [f"Epoch {record['epoch']}/{self.epochs}"]
        if "time" in record:
            parts.append(_duration(record["time"]))
        parts += [f"{key}: {_number(float(record[key]))}" for key in _LINE_KEYS if key in record]
        self.stream.write(" - ".join(parts) + "\n")
        self.stream.flush()

    def close(self):
        pass


class _Delayed:
    """verbose="auto": show the display only once a fit has run 2 s."""

    def __init__(self, make, delay=2.0):
        self.make, self.delay = make, delay
        self.start = time.perf_counter()
        self.started = time.time()  # the clock tqdm keeps
        self.inner = None
        self.records = []

    def _ready(self):
        if self.inner is None and time.perf_counter() - self.start >= self.delay:
            self.inner = self.make(self.started)
            for record in self.records:
                self.inner.end_epoch(record)
        return self.inner

    def update_steps(self, epoch, done, total):
        if self._ready():
            self.inner.update_steps(epoch, done, total)

    def end_epoch(self, record):
        self.records.append(record)
        if self.inner is not None:
            self.inner.end_epoch(record)
        else:
            self._ready()

    def close(self):
        if self.inner is not None:
            self.inner.close()


def in_notebook():
    """True inside a Jupyter (IPython) kernel, where stderr is no terminal but a display is wanted."""
    ipython = sys.modules.get("IPython")  # never imported here: a kernel has already loaded it
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too old or too broken to ask
        return False
    if shell is None:
        return False
    return type(shell).__name__ == "ZMQInteractiveShell" or "IPKernelApp" in getattr(shell, "config", {})


def make_progress(verbose, epochs, samples_per_epoch, stream=None):
    """A display for a fit of ``epochs`` epochs (see the module's docstring for ``verbose``).

    ``stream`` replaces the stream the display writes to (stderr; stdout for verbose=2)."""
    if not verbose:
        return _Silent()
    if verbose == 2:
        return _EpochLines(epochs, stream or sys.stdout)
    stream = stream or sys.stderr

    def make(started=None):
        try:
            return _Tqdm(epochs, stream, started)
        except ImportError:  # no tqdm, or tqdm's notebook widget without ipywidgets
            return _PlainLine(epochs, stream)

    if verbose == "auto":
        if in_notebook() or getattr(stream, "isatty", lambda: False)():
            return _Delayed(make)
        return _Silent()
    return make()
