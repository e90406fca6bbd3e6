"""fit() and evaluate(): the public face of training in one process.

``fit`` checks its arguments, plans the threads, and runs the epoch loop of
``fastfit.epochs`` with a ``LocalRunner``; with ``comm=`` it hands over to
``fastfit.distributed``.
"""
from . import _checks, _threads
from .epochs import (LocalRunner, NonFiniteLossError, check_fit_arguments, run_epochs,  # noqa: F401
                     score_rows)
from .losses import get_loss


def evaluate(model, X, y, loss):
    """Loss and score of the model on (X, y): accuracy for classification losses,
    R^2 (averaged over outputs) for squared error. Returns a dict. X may be sparse."""
    loss = get_loss(loss)
    rows = _checks.Rows(X, model.n_inputs, model.dtype)
    Y, labels = loss.targets(y, rows.n, model.n_outputs, model.dtype)
    return score_rows(model, loss, rows, Y, labels, 0, rows.n).result()


def fit(model, X, y, loss=None, optimizer=None, batch_size=64, epochs=10, seed=0, *,
        shuffle=True, drop_last=False, n_threads=None, validation_data=None,
        validation_split=0.0, early_stopping=False, patience=5, min_delta=0.0,
        restore_best=True, callbacks=None, verbose="auto", comm=None, **distributed_options):
    """Fit ``model`` to (X, y) by minibatch descent; returns a History.

    ``loss``: ``SoftmaxCrossEntropy()`` (integer class labels 0..C-1),
    ``SquaredError()`` (regression), ``BinaryCrossEntropy()`` (0/1 targets, one
    column per output), or one of their names ("cross_entropy", "mse", "bce").
    ``optimizer``: ``Adam()`` (the default), ``AdamW``, ``SGD(lr, momentum,
    nesterov)``, ``NormalizedGD``. X may be a NumPy array, a memmap (read in
    place) or a SciPy sparse matrix (densified a run of batches at a time).

    Each epoch draws a permutation from ``numpy.random.default_rng(seed)`` (the
    same generator across epochs) and visits the batches ``order[j*B:(j+1)*B]``:
    every sample once per epoch, without replacement. ``batch_size=None`` is
    full-batch gradient descent; a batch size above N is one batch.

    history["loss"] is the training loss accumulated over each epoch's steps, in
    the loss's reduction: the per-sample mean for "mean", the book's sum over the
    training set for "sum"; classification losses add ``accuracy`` (over the
    epoch's batches, as they were predicted). With validation data
    (``validation_data=(Xv, yv)`` or ``validation_split``, the last fraction of
    the rows) the history also holds ``val_loss`` and ``val_accuracy``
    (classification) or ``val_r2`` (squared error). ``lr`` (the first step's
    learning rate), ``time`` and ``samples_per_s`` are recorded per epoch.

    ``early_stopping``: stop when the monitored loss (val_loss if there is
    validation data, else loss) has not improved by ``min_delta`` for ``patience``
    epochs, and restore the best epoch's parameters (``restore_best``).
    ``callbacks``: callables given each epoch's record (a dict); one returning
    False stops the fit. ``verbose``: 0 silent, 1 a progress display, 2 one line
    per epoch, "auto" (default) the progress display on fits that run longer
    than two seconds in a terminal or a notebook.
    ``n_threads``: threads for BLAS and for fastfit's own (default: all cores, one
    for small steps).

    Whatever stops a fit leaves the parameters of a completed step: a
    non-finite loss or update raises NonFiniteLossError, a failing schedule its
    own error, Ctrl-C KeyboardInterrupt (at the next step boundary); each with
    ``.history`` attached. A model is fitted by one thread at a time.

    ``comm``: an MPI communicator (mpi4py) to train data-parallel across its
    ranks; the call then goes to ``fastfit.distributed.fit`` (which also takes
    ``checkpoint`` and ``timeout``).
    """
    if comm is not None:
        from .distributed import fit as distributed_fit  # optional: needs mpi4py
        return distributed_fit(model, X, y, loss, optimizer, batch_size, epochs, seed, comm=comm,
                               shuffle=shuffle, drop_last=drop_last, n_threads=n_threads,
                               validation_data=validation_data, validation_split=validation_split,
                               early_stopping=early_stopping, patience=patience, min_delta=min_delta,
                               restore_best=restore_best, callbacks=callbacks, verbose=verbose,
                               **distributed_options)
    if distributed_options:
        raise TypeError(f"fit() got unexpected arguments {sorted(distributed_options)} "
                        "(checkpoint, timeout, overlap, compress and exchange go with comm=)")
    a = check_fit_arguments(model, X, y, loss, optimizer, batch_size, epochs, seed, validation_data,
                            validation_split, early_stopping, drop_last, patience, min_delta, callbacks, verbose,
                            as_rows=lambda arr, name: _checks.Rows(arr, model.n_inputs, model.dtype, name))
    if n_threads is None:
        n_threads = _threads.auto_threads(6.0 * model.n_params * a.batch_size)
    else:
        n_threads = _threads.thread_count(n_threads)
    with model.exclusive("fit"):
        with a.optimizer.binding(model):  # raises, before any change, for another model
            runner = LocalRunner(model, a, n_threads)
        model._last_X = None  # the step API's stored activations are not this fit's
        with _threads.single_threaded_blas():
            return run_epochs(model, a, runner, early_stopping, restore_best, verbose, shuffle)
