"""The epoch loop of fastfit, shared by fit and the distributed fit.

It holds the permutations, Nesterov's prepare/finalize, the history, early
stopping, callbacks, progress, Ctrl-C, validation scores and the stops that
keep the parameters finite. What runs the steps is a *runner*:

- ``LocalRunner`` (here) hands runs of steps to ``_core.train_steps``, which
  gathers, forwards, takes the loss and its gradient, backpropagates and
  updates with the GIL released and no allocation;
- ``fastfit.distributed`` has a runner that runs the same compiled step in its
  two parts with an all-reduce of the gradient between them.

Between runs of steps (each 0.2 to 1 s) Python records history, shows
progress and answers Ctrl-C, so a fit always stops at a step boundary.
"""
import math
import numbers
import signal
import threading
import time
import weakref

import numpy as np

from . import _checks, _core
from .history import History
from .losses import get_loss
from .optim import Adam, Optimizer
from .progress import make_progress


class NonFiniteLossError(FloatingPointError, ValueError):
    """The loss or the parameters stopped being finite during a fit; the model keeps
    the parameters of the last completed finite step. Also a ValueError, which is what
    scikit-learn's estimators raise when a fit diverges.

    Attributes: ``epoch`` and ``step`` (1-based), ``history`` (the epochs completed).
    """

    def __init__(self, message, epoch, step, history):
        super().__init__(message)
        self.epoch, self.step, self.history = epoch, step, history


#: Aim for runs of compiled steps this long, so progress and Ctrl-C stay responsive.
_CHUNK_SECONDS = 0.2
#: ... but long enough that the snapshot and the check around each run (LocalRunner.run)
#: take at most _GUARD_SHARE of it, up to _MAX_CHUNK_SECONDS. For a 20M-parameter model
#: with Adam they pass over 240 MB of parameters and state, 14-28 ms on two threads as the
#: machine's memory runs (30 ms or more as NumPy's copy and sum): up to 9% of a run of one
#: 0.3 s step, up to 3% of a run of three.
_GUARD_SHARE = 0.01
_MAX_CHUNK_SECONDS = 1.0

#: Each model's pace in its last fit: what set it (see LocalRunner.pace_key), the seconds a
#: step took and the seconds of its runs' guard. A later fit of the same model under the
#: same conditions starts with runs of full length instead of one step: a fit called once per
#: epoch, or a short fit, then takes one snapshot and check where it took two (14-28 ms
#: each for the 784-4096-4096-10 network, whose steps take 0.3 s). Weak: an entry goes with
#: its model.
_PACE = weakref.WeakKeyDictionary()


def _batch_size(batch_size, n):
    if batch_size is None:
        bs = n  # full-batch gradient descent
    else:
        bs = min(_checks.positive_int(batch_size, "batch_size"), n)
    if bs > _checks.BLAS_INT_MAX:
        raise ValueError(f"batch_size must be at most {_checks.BLAS_INT_MAX} rows (BLAS's 32-bit sizes), got {bs}")
    return bs


# ---------------------------------------------------------------- scores

class Scores:
    """Additive sums over rows (the loss, the score's parts), turned into the reported dict."""

    def __init__(self, loss, n_outputs, Y_all, sums):
        self.loss, self.n_outputs, self.Y_all, self.sums = loss, n_outputs, Y_all, sums

    def result(self, n_rows=None, prefix=""):
        n = self.n_rows if n_rows is None else n_rows
        out = {prefix + "loss": self.loss.reduce(self.sums[0], n, self.n_outputs)}
        out[prefix + self.loss.score_name] = self.loss.score(self.sums[2:], n, self.n_outputs, self.Y_all)
        return out


def score_rows(model, loss, rows, Y, labels, lo, hi, block=4096):
    """Scores of the model on rows [lo, hi) of (rows, Y, labels); sums kept for all-reducing.

    sums = [sum_i l_i, rows, score parts ...] (float64)."""
    parts = None
    total = 0.0
    for a in range(lo, hi, block):
        b = min(hi, a + block)
        out = model.predict(rows.dense(a, b))
        Yb = Y[a:b] if Y.size else Y
        Lb = labels[a:b] if labels.size else labels
        total += loss.sum_of_losses(out, Yb, Lb)
        s = loss.score_sums(out, Yb, Lb)
        parts = s if parts is None else parts + s
    if parts is None:  # no rows here (a rank's empty share)
        parts = loss.score_sums(np.empty((0, model.n_outputs), model.dtype),
                                Y[:0] if Y.size else Y, labels[:0])
    scores = Scores(loss, model.n_outputs, Y[lo:hi] if Y.size else Y, np.concatenate([[total, hi - lo], parts]))
    scores.n_rows = hi - lo
    return scores


# ---------------------------------------------------------------- Ctrl-C

class InterruptFlag:
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


# ---------------------------------------------------------------- the arguments

class FitArguments:
    """The checked and converted arguments of a fit (see check_fit_arguments)."""

    def __init__(self, **values):
        self.__dict__.update(values)


def check_fit_arguments(model, X, y, loss, optimizer, batch_size, epochs, seed, validation_data,
                        validation_split, early_stopping, drop_last, patience, min_delta, callbacks, verbose, as_rows):
    """Check and convert fit()'s arguments, touching neither model nor optimizer.

    ``as_rows(array, name)`` turns X (and validation X) into the rows the caller
    trains on (a ``_checks.Rows``-like object with ``n``, ``dense`` and
    ``take``). Shared by fit and the distributed fit, so both refuse the same
    input the same way.
    """
    loss = get_loss(loss)
    if optimizer is None:
        optimizer = Adam()
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastfit optimizer (SGD, Adam, AdamW, NormalizedGD), got {optimizer!r}")
    optimizer_was_unbound = optimizer._bound is None  # no state yet: a failed start unbinds it again
    rows = as_rows(X, "X")
    Y, labels = loss.targets(y, rows.n, model.n_outputs, model.dtype)
    epochs = _checks.positive_int(epochs, "epochs")
    if not (isinstance(validation_split, numbers.Real) and 0 <= validation_split < 1):
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if validation_data is not None and validation_split:
        raise ValueError("give validation_data or validation_split, not both")
    val = None
    n_train = rows.n
    if validation_data is not None:
        try:
            Xv, yv = validation_data
        except (TypeError, ValueError):
            raise ValueError("validation_data must be a pair (X_val, y_val)") from None
        vrows = as_rows(Xv, "validation_data[0]")
        Yv, Lv = loss.targets(yv, vrows.n, model.n_outputs, model.dtype, name="validation_data[1]")
        val = (vrows, Yv, Lv, 0, vrows.n)
    elif validation_split:
        n_val = int(round(rows.n * validation_split))
        if n_val < 1 or n_val >= rows.n:
            raise ValueError(f"validation_split={validation_split} leaves {n_val} validation rows "
                             f"of {rows.n}: both parts need at least one")
        n_train = rows.n - n_val  # the last n_val rows validate; the fit draws from the first n_train
        val = (rows, Y, labels, n_train, rows.n)
    bs = _batch_size(batch_size, n_train)
    n_batches = max(n_train // bs if drop_last else -(-n_train // bs), 1)
    if optimizer.t + epochs * n_batches >= 2 ** 53:
        raise ValueError(f"epochs: {epochs} epochs of {n_batches} steps would take the optimizer's step count "
                         f"(now {optimizer.t}) past 2^53, where it stops being exact")
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
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    _, _, error = optimizer.rates(optimizer.t, 1)  # a schedule that fails at once, fails now
    if error is not None:
        raise error
    rng = _checks.random_generator(seed)
    return FitArguments(loss=loss, optimizer=optimizer, optimizer_was_unbound=optimizer_was_unbound,
                        rows=rows, Y=Y, labels=labels, val=val, N=n_train,
                        early_stopping=bool(early_stopping),
                        batch_size=bs, n_batches=n_batches, epochs=epochs, patience=patience,
                        min_delta=min_delta, callbacks=callbacks, rng=rng)


# ---------------------------------------------------------------- the epoch machinery

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
            answer = cb(dict(record))
            # False stops, NumPy's False_ too (what a comparison in the callback gives); None,
            # True and anything else go on
            if answer is False or (isinstance(answer, np.bool_) and not answer):
                stop = True
        return stop

    def restore_best_params(self, model):
        if self.early_stopping and self.restore_best and self.best_params is not None:
            model.params[...] = self.best_params


class RunResult:
    """What a run of steps did: sum of l_i, outputs predicted right, rows, steps, and why it stopped."""

    CONTINUE, LOSS_NOT_FINITE, UPDATE_NOT_FINITE = 0, 1, 2

    def __init__(self, total, hits, rows, steps, stop):
        self.total, self.hits, self.rows, self.steps, self.stop = total, hits, rows, steps, stop


class LocalRunner:
    """Runs of steps in this process: ``_core.train_steps`` over the checked rows.

    After each run the parameters and optimizer state are checked for a value that is
    not finite; when an update overflowed, the run is replayed from a snapshot of its
    start a step at a time, and the step that overflowed is undone. The snapshot and
    the check are compiled passes split across the fit's threads (``_core.copy_into``,
    ``_core.all_finite``).
    """

    def __init__(self, model, a, n_threads):
        self.model, self.a = model, a
        self.objective = a.loss.objective(model.n_outputs)
        self.rule = a.optimizer.rule(n_threads)
        Y, labels = a.Y, a.labels
        self.ws = model.workspace(a.batch_size, target_cols=Y.shape[1] if Y.size else 0, labels=bool(labels.size),
                                  threads=n_threads)
        self.data = None if a.rows.array is None else _core.Dataset(a.rows.array, Y, labels)
        self.buffers = [model.params] + list(a.optimizer.state_buffers().values())
        self.snapshot = [np.empty_like(b) for b in self.buffers]
        # Nesterov's phi is needed between epochs only when something looks at the parameters
        self.needs_phi = bool(a.val is not None or a.callbacks or a.early_stopping)

    def _steps(self, order, first, n, lrs, t0):
        a = self.a
        if self.data is not None:
            return _core.train_steps(self.model._net, self.ws, self.data, self.objective, self.rule, order,
                                     a.batch_size, first, n, lrs, t0)
        # sparse X: densify just this run's rows, in batch order
        idx = order[first * a.batch_size:min(a.N, (first + n) * a.batch_size)]
        data = _core.Dataset(a.rows.take(idx), np.ascontiguousarray(a.Y[idx]) if a.Y.size else a.Y,
                             np.ascontiguousarray(a.labels[idx]) if a.labels.size else a.labels)
        return _core.train_steps(self.model._net, self.ws, data, self.objective, self.rule,
                                 np.arange(len(idx), dtype=np.intp), a.batch_size, 0, n, lrs, t0)

    #: seconds the last run spent on its snapshot and its check
    guard_s = 0.0

    @property
    def pace_key(self):
        """What a step's time depends on besides the model: the runner, the batch size, the
        threads, and whether the rows are densified run by run (sparse X)."""
        return (type(self), self.a.batch_size, self.ws.threads, self.data is None)

    def _save(self):
        for saved, live in zip(self.snapshot, self.buffers):
            _core.copy_into(saved, live, self.ws.threads)

    def _restore(self):
        for saved, live in zip(self.snapshot, self.buffers):
            _core.copy_into(live, saved, self.ws.threads)

    def _all_finite(self):
        return all(_core.all_finite(b, self.ws.threads) for b in self.buffers)

    def run(self, order, first, n, lrs, t0):
        t_guard = time.perf_counter()
        self._save()
        self.guard_s = time.perf_counter() - t_guard
        total, hits, steps, loss_stopped = self._steps(order, first, n, lrs, t0)
        stop = RunResult.LOSS_NOT_FINITE if loss_stopped else RunResult.CONTINUE
        t_guard = time.perf_counter()
        overflowed = not self._all_finite()
        self.guard_s += time.perf_counter() - t_guard
        if overflowed:
            replayed = self._replay_to_last_finite_step(order, first, steps, lrs, t0)
            if replayed is not None:
                total, hits, steps = replayed
                stop = RunResult.UPDATE_NOT_FINITE
        rows = min(self.a.N, (first + steps) * self.a.batch_size) - first * self.a.batch_size
        return RunResult(total, hits, rows, steps, stop)

    def _replay_to_last_finite_step(self, order, first, steps, lrs, t0):
        """Back to the run's start, then its steps one at a time until one leaves a
        parameter or a state value that is not finite: that step is undone. Returns
        (sum of l_i, hits, steps) of the steps kept, or None when every step was finite.
        The numbers are those of the run: the same compiled steps on the same data."""
        self._restore()
        total, hits = 0.0, 0
        for s in range(steps):
            self._save()
            step_total, step_hits, _, _ = self._steps(order, first + s, 1, lrs[s:], t0 + s)
            if not self._all_finite():
                self._restore()
                return total, hits, s
            total, hits = total + step_total, hits + step_hits
        return None

    def validate(self, val):
        rows, Y, labels, lo, hi = val
        return score_rows(self.model, self.a.loss, rows, Y, labels, lo, hi).result(prefix="val_")

    def complete_record(self, epoch, record):
        pass

    def agree_on_run(self, steps):
        """The steps of the next run, as every process running this fit will take them."""
        return steps

    def agree_to_stop(self, epoch, stop):
        return stop

    def interrupted(self, interrupt):
        return interrupt.raised


def _refuse_a_damaged_start(model, a):
    """A fit whose very first step failed may have started from values written into the buffers
    in place (a layer's W[i, j] = nan, a state buffer through state_buffers()), which nothing
    checks when they are written: ValueError then, rather than blaming the learning rate. No step
    was kept, so the model is as it was; an optimizer the fit bound is unbound again. Asked only
    on this failure: a check of every buffer before each fit would cost a pass over them."""
    try:
        if not _core.all_finite(model.params):
            raise ValueError("the model's parameters held NaN or infinity before the fit (written into "
                             "model.params or a layer's W or b in place?): assign finite values, or build a new model")
        a.optimizer.check_state()
    except ValueError:
        if a.optimizer_was_unbound:
            a.optimizer.__dict__.update(_state={}, _bound=None, _model=None)
        raise


def _not_finite_message(result, epoch, step, n_batches, optimizer):
    what = ("the loss is not finite" if result.stop == RunResult.LOSS_NOT_FINITE
            else "an update made the parameters infinite or NaN")
    return (f"{what} at epoch {epoch}, step {step} of {n_batches}; the fit stopped and the model keeps "
            f"the parameters of the last completed finite step. The learning rate ({optimizer.lr!r}) "
            "is probably too large: try a smaller one.")


def _step_seconds(elapsed, steps, guard_s):
    """Seconds per step of a run that took `elapsed`, `guard_s` of it on its guard."""
    return max((elapsed - guard_s) / max(steps, 1), 1e-9)


def _chunk_for(per_step, guard_s, n_batches):
    """Steps in a run: towards _CHUNK_SECONDS, or longer (up to _MAX_CHUNK_SECONDS)
    when the run's snapshot and check would otherwise take more than _GUARD_SHARE of it."""
    seconds = max(_CHUNK_SECONDS, min(_MAX_CHUNK_SECONDS, guard_s / _GUARD_SHARE))
    return max(1, min(n_batches, int(seconds / per_step)))


def _next_chunk(elapsed, steps, guard_s, n_batches):
    """Steps in the next run, after one that took `elapsed` (see _chunk_for)."""
    return _chunk_for(_step_seconds(elapsed, steps, guard_s), guard_s, n_batches)


def _run_length(chunk, remaining):
    """Steps in the next run: `chunk`, or all `remaining` steps when at most half a chunk
    would be left after it. A short last run's snapshot and check cost as much as a full
    run's: a 4-step fit of the 784-4096-4096-10 network ran as 3 + 1 steps, and the second
    run's guard took 23 ms of its 0.35 s."""
    return remaining if remaining - chunk <= chunk // 2 else chunk


def run_epochs(model, a, runner, early_stopping, restore_best, verbose, shuffle, rank0=True):
    """The epoch loop shared by fit and the distributed fit; returns the History."""
    loss, optimizer, N, n_batches = a.loss, a.optimizer, a.N, a.n_batches
    history = History()

    def move(to_point, epoch, step, at_start=False):
        """Nesterov's prepare or finalize; a point not finite in the model's dtype stops the fit."""
        try:
            to_point(model)
        except NonFiniteLossError:
            raise
        except FloatingPointError as exc:
            if at_start:
                _refuse_a_damaged_start(model, a)
            raise NonFiniteLossError(f"{exc}; the fit stopped and the model keeps the parameters of the last "
                                     "completed step", epoch, step, history) from None

    move(optimizer.prepare, 1, 1, at_start=True)
    progress = make_progress(verbose if rank0 else 0, a.epochs, N)
    epoch_end = EpochEnd(early_stopping, a.patience, a.min_delta, restore_best, a.callbacks,
                         monitor="val_loss" if a.val is not None else "loss")
    pace_key = runner.pace_key
    known = _PACE.get(model)
    # the first run is one step, to time it, unless this model's last fit was timed alike
    chunk = _chunk_for(known[1], known[2], n_batches) if known is not None and known[0] == pace_key else 1
    epoch, done = 1, 0
    try:
        with InterruptFlag() as interrupt:
            for epoch in range(1, a.epochs + 1):
                order = a.rng.permutation(N) if shuffle else np.arange(N)
                order = np.ascontiguousarray(order, dtype=np.intp)
                t_epoch = time.perf_counter()
                lr_first = optimizer.lr_at(optimizer.t)
                total, hits, rows, done = 0.0, 0, 0, 0
                while done < n_batches:
                    if runner.interrupted(interrupt):
                        raise KeyboardInterrupt
                    n = runner.agree_on_run(_run_length(chunk, n_batches - done))
                    lrs, runnable, schedule_error = optimizer.rates(optimizer.t, n)
                    t0 = time.perf_counter()
                    result = runner.run(order, done, runnable, lrs, optimizer.t) if runnable else \
                        RunResult(0.0, 0, 0, 0, RunResult.CONTINUE)
                    elapsed = time.perf_counter() - t0
                    optimizer.t += result.steps
                    total, hits, rows, done = total + result.total, hits + result.hits, rows + result.rows, \
                        done + result.steps
                    if result.stop != RunResult.CONTINUE:
                        if epoch == 1 and done == 0:
                            _refuse_a_damaged_start(model, a)
                        raise NonFiniteLossError(_not_finite_message(result, epoch, done + 1, n_batches, optimizer),
                                                 epoch, done + 1, history)
                    if schedule_error is not None:
                        raise schedule_error
                    if result.steps:
                        _PACE[model] = (pace_key, _step_seconds(elapsed, result.steps, runner.guard_s),
                                        runner.guard_s)
                    chunk = _next_chunk(elapsed, result.steps, runner.guard_s, n_batches)
                    progress.update_steps(epoch, done, n_batches)
                seconds = time.perf_counter() - t_epoch
                record = {"epoch": epoch, "loss": loss.reduce(total, rows, model.n_outputs)}
                if loss.score_name == "accuracy":
                    per_row = 1 if loss.uses_labels else model.n_outputs
                    record["accuracy"] = hits / (rows * per_row)
                if runner.needs_phi:
                    move(optimizer.finalize, epoch, n_batches)  # judge (and save) phi, not Nesterov's look-ahead
                if a.val is not None:
                    record.update(runner.validate(a.val))
                record.update(lr=lr_first, time=seconds, samples_per_s=rows / seconds if seconds > 0 else math.inf)
                runner.complete_record(epoch, record)
                history.record(**record)
                progress.end_epoch(record)
                stop = runner.agree_to_stop(epoch, epoch_end(record, model))
                if runner.needs_phi:
                    move(optimizer.prepare, epoch + 1, 1)
                if stop:
                    break
    except (KeyboardInterrupt, ArithmeticError, ValueError, TypeError) as exc:
        exc.history = history
        raise
    finally:
        try:
            move(optimizer.finalize, epoch, max(done, 1))
        finally:
            progress.close()
    epoch_end.restore_best_params(model)
    return history
