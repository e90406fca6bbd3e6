"""fit(): epochs of minibatches drawn without replacement, run by the compiled loop.

Python checks the inputs once, draws each epoch's permutation, and hands runs
of steps to ``_core.train_batches``, which gathers, forwards, takes the loss
and its gradient, backpropagates and updates with the GIL released and no
allocation. Between runs of steps Python records history, shows progress and
answers Ctrl-C, so a fit always stops at a step boundary.
"""
import math
import numbers
import signal
import threading
import time

import numpy as np

from . import _blas_select, _checks, _core, _threads
from .history import History
from .losses import BinaryCrossEntropy, SoftmaxCrossEntropy, get_loss
from .optim import Adam, Optimizer
from .progress import make_progress


class NonFiniteLossError(FloatingPointError):
    """The loss stopped being finite during a fit; the model keeps the last finite parameters.

    Attributes: ``epoch`` and ``step`` (1-based), ``history`` (the epochs completed).
    """

    def __init__(self, message, epoch, step, history):
        super().__init__(message)
        self.epoch, self.step, self.history = epoch, step, history


#: Aim for runs of compiled steps this long, so progress and Ctrl-C stay responsive.
_CHUNK_SECONDS = 0.2


def _batch_size(batch_size, n):
    if batch_size is None:
        bs = n  # full-batch gradient descent
    else:
        bs = min(_checks.positive_int(batch_size, "batch_size"), n)
    if bs > _checks.BLAS_INT_MAX:
        raise ValueError(f"batch_size must be at most {_checks.BLAS_INT_MAX} rows (BLAS's 32-bit sizes), got {bs}")
    return bs


def evaluate(model, X, y, loss):
    """Loss and score of the model on (X, y): accuracy for classification losses,
    R^2 (averaged over outputs) for squared error. Returns a dict."""
    loss = get_loss(loss)
    X = _checks.features(X, model.n_inputs, model.dtype)
    Y, labels = loss.targets(y, X.shape[0], model.n_outputs, model.dtype)
    return _evaluate_checked(model, X, Y, labels, loss)


def _evaluate_checked(model, X, Y, labels, loss):
    out = model.predict(X)
    grad = np.empty_like(out)
    total = _core.loss_value_and_grad(loss.kind, loss.mean, out, Y, labels, grad)
    result = {"loss": loss.reduce(total, X.shape[0], model.n_outputs)}
    if isinstance(loss, SoftmaxCrossEntropy):
        result["accuracy"] = float(np.mean(out.argmax(axis=1) == labels))
    elif isinstance(loss, BinaryCrossEntropy):
        result["accuracy"] = float(np.mean((out > 0) == (Y > 0.5)))
    else:
        ss_res = ((Y - out) ** 2).sum(axis=0, dtype=np.float64)
        ss_tot = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 0.0)
        result["r2"] = float(r2.mean())
    return result


class _InterruptFlag:
    """Turns the first Ctrl-C during a fit into a flag checked at step boundaries;
    a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # not in the main interpreter
                self._previous = None
        return self

    def _handler(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class FitArguments:
    """The checked and converted arguments of a fit (see check_fit_arguments)."""

    def __init__(self, **values):
        self.__dict__.update(values)


def check_fit_arguments(model, X, y, loss, optimizer, batch_size, epochs, seed, validation_data,
                        validation_split, drop_last, patience, min_delta, callbacks, verbose, as_rows):
    """Check and convert fit()'s arguments, touching neither model nor optimizer.

    ``as_rows(array, name)`` turns X (and validation X) into the rows the caller
    trains on: a checked contiguous array here, a lazily read one in
    distributed.py. Shared by fit and distributed.fit, so both refuse the same
    input the same way.
    """
    loss = get_loss(loss)
    if optimizer is None:
        optimizer = Adam()
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastfit optimizer (SGD, Adam, NormalizedGD), got {optimizer!r}")
    X = as_rows(X, "X")
    Y, labels = loss.targets(y, X.shape[0], model.n_outputs, model.dtype)
    epochs = _checks.positive_int(epochs, "epochs")
    if not (isinstance(validation_split, numbers.Real) and 0 <= validation_split < 1):
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if validation_data is not None and validation_split:
        raise ValueError("give validation_data or validation_split, not both")
    val = None
    if validation_data is not None:
        try:
            Xv, yv = validation_data
        except (TypeError, ValueError):
            raise ValueError("validation_data must be a pair (X_val, y_val)") from None
        Xv = as_rows(Xv, "validation_data[0]")
        Yv, Lv = loss.targets(yv, Xv.shape[0], model.n_outputs, model.dtype, name="validation_data[1]")
        val = (Xv, Yv, Lv)
    elif validation_split:
        n_val = int(round(X.shape[0] * validation_split))
        if n_val < 1 or n_val >= X.shape[0]:
            raise ValueError(f"validation_split={validation_split} leaves {n_val} validation rows "
                             f"of {X.shape[0]}: both parts need at least one")
        cut = X.shape[0] - n_val
        val = (X[cut:], Y[cut:] if Y.size else Y, labels[cut:] if labels.size else labels)
        X, Y, labels = X[:cut], (Y[:cut] if Y.size else Y), (labels[:cut] if labels.size else labels)
    N = X.shape[0]
    bs = _batch_size(batch_size, N)
    n_batches = max(N // bs if drop_last else -(-N // bs), 1)
    patience = _checks.positive_int(patience, "patience")
    if not (isinstance(min_delta, numbers.Real) and min_delta >= 0):
        raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}")
    if callbacks is None:
        callbacks = []
    elif callable(callbacks):
        callbacks = [callbacks]
    else:
        try:
            callbacks = list(callbacks)
        except TypeError:
            raise TypeError(f"callbacks must be a list of callables, got {callbacks!r}") from None
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables taking the epoch's record, got {cb!r}")
    if verbose not in (0, 1, 2, "auto", True, False):
        raise ValueError(f"verbose must be 0, 1 or 'auto', got {verbose!r}")
    optimizer.lrs(optimizer.t, 0)  # a schedule that fails, fails now
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"seed must be a non-negative integer, got {seed!r} ({exc})") from None
    return FitArguments(loss=loss, optimizer=optimizer, X=X, Y=Y, labels=labels, val=val, N=N,
                        batch_size=bs, n_batches=n_batches, epochs=epochs, patience=patience,
                        min_delta=min_delta, callbacks=callbacks, rng=rng)


class EpochEnd:
    """What happens after each epoch's record: early stopping and callbacks.

    Calling it with the record returns True when the fit should stop: the
    monitored loss has not improved by ``min_delta`` for ``patience`` epochs, or
    a callback returned False. It keeps the best epoch's parameters for
    ``restore_best_params``.
    """

    def __init__(self, early_stopping, patience, min_delta, restore_best, callbacks, monitor):
        self.early_stopping, self.patience, self.min_delta = early_stopping, patience, min_delta
        self.restore_best, self.callbacks, self.monitor = restore_best, callbacks, monitor
        self.best, self.best_params, self.stale = math.inf, None, 0

    def __call__(self, record, model):
        stop = False
        if self.early_stopping:
            if record[self.monitor] < self.best - self.min_delta:
                self.best, self.stale = record[self.monitor], 0
                if self.restore_best:
                    self.best_params = model.params.copy()
            else:
                self.stale += 1
                stop = self.stale >= self.patience
        for cb in self.callbacks:
            if cb(dict(record)) is False:
                stop = True
        return stop

    def restore_best_params(self, model):
        if self.early_stopping and self.restore_best and self.best_params is not None:
            model.params[...] = self.best_params


def fit(model, X, y, loss, optimizer=None, batch_size=64, epochs=10, seed=0, *,
        shuffle=True, drop_last=False, n_threads=None, validation_data=None,
        validation_split=0.0, early_stopping=False, patience=5, min_delta=0.0,
        restore_best=True, callbacks=None, verbose="auto", comm=None, **distributed_options):
    """Fit ``model`` to (X, y) by minibatch descent; returns a History.

    Each epoch draws a permutation from ``numpy.random.default_rng(seed)`` (the
    same generator across epochs) and visits the batches ``order[j*B:(j+1)*B]``:
    every sample once per epoch, without replacement. ``batch_size=None`` is
    full-batch gradient descent; a batch size above N is one batch.

    history["loss"] is the training loss accumulated over each epoch's steps, in
    the loss's reduction: the per-sample mean for "mean", the seed's sum over the
    training set for "sum". With validation data (``validation_data=(Xv, yv)`` or
    ``validation_split``, the last fraction of the rows) the history also holds
    ``val_loss`` and ``val_accuracy`` (classification) or ``val_r2`` (squared
    error). ``lr`` (the first step's learning rate), ``time`` and
    ``samples_per_s`` are recorded per epoch.

    ``early_stopping``: stop when the monitored loss (val_loss if there is
    validation data, else loss) has not improved by ``min_delta`` for ``patience``
    epochs, and restore the best epoch's parameters (``restore_best``).
    ``callbacks``: callables given each epoch's record (a dict); one returning
    False stops the fit. ``verbose``: 0 silent, 1 a progress display, "auto"
    (default) shows it on fits that run longer than two seconds in a terminal.
    ``n_threads``: BLAS and update threads (default: all cores, one for small steps).

    A non-finite loss raises NonFiniteLossError, leaving the parameters of the
    last finite step. Ctrl-C stops at the next step boundary and raises
    KeyboardInterrupt with ``.history`` attached; the model is consistent.

    ``comm``: an MPI communicator (mpi4py) to train data-parallel across its
    ranks; the call then goes to ``fastfit.distributed.fit`` (which also takes
    ``checkpoint`` and ``timeout``).
    """
    if comm is not None:
        from .distributed import fit as distributed_fit
        return distributed_fit(model, X, y, loss, optimizer, batch_size, epochs, seed, comm=comm,
                               shuffle=shuffle, drop_last=drop_last, n_threads=n_threads,
                               validation_data=validation_data, validation_split=validation_split,
                               early_stopping=early_stopping, patience=patience, min_delta=min_delta,
                               restore_best=restore_best, callbacks=callbacks, verbose=verbose,
                               **distributed_options)
    if distributed_options:
        raise TypeError(f"fit() got unexpected arguments {sorted(distributed_options)} "
                        "(checkpoint and timeout go with comm=)")
    # ---- check everything before touching the model or the optimizer
    a = check_fit_arguments(model, X, y, loss, optimizer, batch_size, epochs, seed, validation_data,
                            validation_split, drop_last, patience, min_delta, callbacks, verbose,
                            as_rows=lambda arr, name: _checks.features(arr, model.n_inputs, model.dtype, name=name))
    loss, optimizer, X, Y, labels, val = a.loss, a.optimizer, a.X, a.Y, a.labels, a.val
    N, bs, n_batches, epochs, rng = a.N, a.batch_size, a.n_batches, a.epochs, a.rng
    if n_threads is None:
        n_threads = _threads.auto_threads(6.0 * model.n_params * bs)
    else:
        n_threads = _checks.positive_int(n_threads, "n_threads")
    optimizer.bind(model)  # raises, before any change, for a model of another shape

    # ---- the fit
    ws = model.workspace(bs, target_cols=Y.shape[1] if Y.size else 0, labels=bool(labels.size))
    model._last_X = None  # the step API's stored activations are not this fit's
    history = History()
    progress = make_progress(verbose, epochs, n_batches * bs if drop_last else N)
    epoch_end = EpochEnd(early_stopping, a.patience, a.min_delta, restore_best, a.callbacks,
                         monitor="val_loss" if val is not None else "loss")
    b1, b2, eps = optimizer.core_args()
    update_threads = n_threads if _blas_select.PARALLEL_UPDATES else 1
    chunk = 1
    optimizer.prepare(model)
    try:
        with _InterruptFlag() as interrupt, _threads.blas_threads(n_threads):
            for epoch in range(1, epochs + 1):
                order = rng.permutation(N) if shuffle else np.arange(N)
                order = np.ascontiguousarray(order, dtype=np.intp)
                t_epoch = time.perf_counter()
                lr_first = optimizer.lr_at(optimizer.t)
                total, rows, done = 0.0, 0, 0
                while done < n_batches:
                    if interrupt.raised:
                        raise KeyboardInterrupt
                    n = min(chunk, n_batches - done)
                    m, v = optimizer.state_buffers()
                    t0 = time.perf_counter()
                    chunk_total, steps, nonfinite = _core.train_batches(
                        X, Y, labels, order, bs, done, n, model.params, model.grads,
                        model._dims, model._woff, model._boff, ws.acts, ws.scratch,
                        ws.xbuf, ws.ybuf, ws.lbuf, loss.kind, loss.mean, optimizer.kind,
                        m, v, optimizer.lrs(optimizer.t, n), b1, b2, eps, optimizer.t, update_threads)
                    elapsed = time.perf_counter() - t0
                    optimizer.t += steps
                    total += chunk_total
                    rows += min(N, (done + steps) * bs) - done * bs
                    done += steps
                    if nonfinite:
                        raise NonFiniteLossError(
                            f"the loss is not finite at epoch {epoch}, step {done + 1} of {n_batches}; "
                            f"the fit stopped and the model keeps the parameters of the last finite step. "
                            f"The learning rate ({optimizer.lr!r}) is probably too large: try a smaller one.",
                            epoch, done + 1, history)
                    # grow or shrink the next run of steps towards _CHUNK_SECONDS
                    per_step = elapsed / max(steps, 1)
                    chunk = max(1, min(n_batches, int(_CHUNK_SECONDS / max(per_step, 1e-9))))
                    progress.update_steps(epoch, done, n_batches)
                seconds = time.perf_counter() - t_epoch
                record = {"epoch": epoch, "loss": loss.reduce(total, rows, model.n_outputs)}
                need_phi = val is not None or early_stopping or a.callbacks
                if need_phi:
                    optimizer.finalize(model)  # judge the trajectory's phi, not Nesterov's look-ahead
                if val is not None:
                    scores = _evaluate_checked(model, *val, loss)
                    record.update({"val_" + k: v for k, v in scores.items()})
                record.update(lr=lr_first, time=seconds, samples_per_s=rows / seconds if seconds > 0 else math.inf)
                history.record(**record)
                progress.end_epoch(record)
                stop = epoch_end(record, model)
                if need_phi:
                    optimizer.prepare(model)
                if stop:
                    break
    except KeyboardInterrupt as exc:
        exc.history = history
        raise
    finally:
        optimizer.finalize(model)
        progress.close()
    epoch_end.restore_best_params(model)
    return history
