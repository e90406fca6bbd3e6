"""The progress display of long fits: tqdm when it is installed, a plain line otherwise."""
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
    def __init__(self, epochs, stream):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=epochs, unit="epoch", file=stream, dynamic_ncols=True, leave=True)

    def update_steps(self, epoch, done, total):
        pass

    def end_epoch(self, record):
        self.bar.set_postfix_str(_summary(record), refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


class _Delayed:
    """verbose="auto": show the display only once a fit in a terminal has run 2 s."""

    def __init__(self, make, stream, delay=2.0):
        self.make, self.stream, self.delay = make, stream, delay
        self.start = time.perf_counter()
        self.inner = None
        self.records = []

    def _ready(self):
        if self.inner is None and time.perf_counter() - self.start >= self.delay:
            self.inner = self.make()
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


def make_progress(verbose, epochs, samples_per_epoch, stream=None):
    """A display for a fit of ``epochs`` epochs; silent for verbose=0."""
    stream = stream or sys.stderr
    if not verbose:
        return _Silent()

    def make():
        try:
            return _Tqdm(epochs, stream)
        except ImportError:
            return _PlainLine(epochs, stream)

    if verbose == "auto":
        isatty = getattr(stream, "isatty", lambda: False)()
        return _Delayed(make, stream) if isatty else _Silent()
    return make()
