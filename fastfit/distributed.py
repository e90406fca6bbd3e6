"""Data-parallel training over MPI: ``fastfit.distributed.fit``, the same call as ``fastfit.fit``.

Launch one Python process per rank (``mpirun -n 4 python train.py``); every
rank runs the same script with the same arguments and calls::

    from fastfit import distributed
    history = distributed.fit(model, X, y, loss, optimizer, batch_size=256, comm=MPI.COMM_WORLD)

What happens (docs/distributed.md has the launcher and cluster details):

- Start: rank 0's parameters, optimizer step count and optimizer state are
  broadcast, so every rank starts from the same point. The ranks check that
  they were given the same model shape, loss, optimizer, batch size, epochs,
  seed and data shape (a mismatch is a ValueError on every rank).
- Each epoch every rank draws the same permutation from
  ``numpy.random.default_rng(seed)``: the batches are exactly those of
  ``fastfit.fit`` with the same arguments. ``batch_size`` is the global batch:
  batch j's rows are split into ``comm.size`` contiguous slices, rank r taking
  ``[r*B//size, (r+1)*B//size)`` of them (a ragged last batch gives uneven
  slices; a rank whose slice is empty contributes a zero gradient).
- Each rank gathers only its rows of X (a full array or a ``numpy.memmap``:
  a memmap is read row by row, never loaded whole), runs the compiled forward
  pass, the loss with sum reduction, scales dL/dout by the mean's
  ``1/(global batch rows * elements_per_sample)`` (a linear map, so this equals
  scaling the summed gradient, at B*C instead of n_params multiplications),
  and the compiled backward pass into ``model.grads``. One in-place
  ``Iallreduce(SUM)`` of ``model.grads`` then gives every rank the global
  batch's gradient, and every rank applies the same compiled optimizer update.
  The per-step loss sums travel in a second, 3-number all-reduce started
  before the backward pass.
- ``exchange="factors"`` instead gathers every rank's rows of each layer's
  input and dL/dF on every rank, which forms the layer's gradient over the
  whole batch itself: far fewer bytes than the gradient when the batch is
  small beside the layers (``factor_layers`` says which layers; the others
  still sum their gradient).
- History (loss, validation loss and accuracy or R^2) is reduced across ranks
  and identical on every rank; validation rows are split among the ranks.
  ``checkpoint=path``: rank 0 alone writes ``fastfit.save(model, path,
  optimizer)`` after each epoch (a failed write stops every rank).
- No silent hang: every collective is non-blocking and polled against a
  deadline (``timeout`` seconds). A rank that dies or hangs makes the others
  raise RankFailureError naming the operation, the epoch and step, and the
  ranks that went silent; at interpreter exit MPI_Abort then ends the job (a
  plain exit would hang in MPI_Finalize waiting for the dead rank).

mpi4py is optional: ``pip install mpi4py mpich`` installs it with MPICH.
"""
import atexit
import math
import numbers
import os
import sys
import time
import zlib

import numpy as np

from . import _checks, _core, _threads
from .losses import get_loss
from .epochs import LocalRunner, check_fit_arguments, run_epochs, score_rows

#: Seconds a rank waits in one collective operation before it declares the ranks
#: that have not joined it silent. Generous: the first collectives of a fit also
#: absorb differences in start-up time (imports, loading data) between ranks.
DEFAULT_TIMEOUT = 120.0

#: Point-to-point tag of the "who is still here" messages exchanged after a timeout.
_PROBE_TAG = 31_337

#: Poll loops give the core away between polls where the OS allows it.
_yield = getattr(os, "sched_yield", None)

#: Rows of X checked for finiteness (or validated) per block.
_BLOCK_ROWS = 4096


class RankFailureError(RuntimeError):
    """A collective step did not complete within the timeout: another rank died or hangs.

    Attributes: ``what`` (the operation), ``epoch`` and ``step`` (1-based, or None
    before the first step), ``silent`` (the ranks that sent nothing; a rank
    that is itself stuck is listed too), ``timeout`` (seconds). When this error
    has been raised, MPI_Abort ends the job at interpreter exit.
    """

    def __init__(self, message, what, epoch, step, silent, timeout):
        super().__init__(message)
        self.what, self.epoch, self.step, self.silent, self.timeout = what, epoch, step, silent, timeout


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("fastfit.distributed needs mpi4py and an MPI library: "
                          "pip install mpi4py mpich (mpi4py and the MPICH wheel), "
                          f"or mpi4py built against your cluster's MPI ({exc})") from None
    return MPI


_abort_armed = False


def _abort_at_exit(comm, code):
    """After a rank failure a normal exit would hang in MPI_Finalize: end the job instead."""
    global _abort_armed
    if _abort_armed:
        return
    _abort_armed = True

    def _abort():
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            time.sleep(0.5)  # let the other survivors print their own message first
        finally:
            comm.Abort(code)

    atexit.register(_abort)


class _Collectives:
    """The fit's collective operations, each non-blocking and waited for with a deadline."""

    def __init__(self, comm, MPI, timeout):
        self.comm, self.MPI, self.timeout = comm, MPI, timeout
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.where = (None, None)  # (epoch, step) for messages

    def wait(self, requests, what, spin=True):
        """Wait for the requests; RankFailureError after ``timeout`` seconds without completion.

        ``spin=False`` where another thread of this process keeps calling MPI (the
        all-reduce's): that advances these requests too, so this one sleeps between
        checks instead of taking turns with it on the core."""
        MPI = self.MPI
        t0 = time.perf_counter()
        deadline = t0 + self.timeout
        patient_from = t0 + 0.5  # after this, ever longer sleeps: a rank that is far behind
        spin_until = patient_from if spin else t0  # poll flat out first: MPI progresses only inside our calls
        pause = 1e-4 if spin else 5e-5
        try:
            while not MPI.Request.Testall(requests):
                now = time.perf_counter()
                if now >= deadline:
                    self._fail(what, "no answer")
                if now >= spin_until:
                    time.sleep(pause)
                    if now >= patient_from:
                        pause = min(pause * 2, 0.01)
                elif _yield is not None:
                    _yield()  # a rank sharing its core (oversubscribed node) lets the others run
        except MPI.Exception as exc:
            self._fail(what, f"MPI error {exc.Get_error_class()} ({exc.Get_error_string()})")

    def allreduce(self, buf, what):
        """In-place sum over ranks of a contiguous array."""
        self.wait([self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)], what)

    def bcast(self, buf, what):
        """buf from rank 0 to every rank, in place."""
        self.wait([self.comm.Ibcast(buf, root=0)], what)

    def allgather(self, row, what):
        """(size, len(row)) array of every rank's row."""
        row = np.ascontiguousarray(row)
        out = np.empty((self.size,) + row.shape, dtype=row.dtype)
        self.wait([self.comm.Iallgather(row, out)], what)
        return out

    def _silent_ranks(self, epoch, step, grace):
        """Ranks that do not answer a 'still here' message within grace seconds.

        Every rank that times out in the same operation sends one to every
        other rank, so the live ones hear from each other; the dead or stuck
        ones stay silent. O(size) messages per rank, and only after a failure.
        """
        MPI, comm = self.MPI, self.comm
        others = [r for r in range(self.size) if r != self.rank]
        me = np.array([self.rank, -1 if epoch is None else epoch, -1 if step is None else step], dtype=np.int64)
        inbox = {r: np.zeros(3, dtype=np.int64) for r in others}
        try:
            for r in others:
                comm.Isend(me, dest=r, tag=_PROBE_TAG)  # never waited for: the receiver may be dead
            recvs = {r: comm.Irecv(inbox[r], source=r, tag=_PROBE_TAG) for r in others}
            end = time.perf_counter() + grace
            pending = set(others)
            while pending and time.perf_counter() < end:
                pending -= {r for r in pending if recvs[r].Test()}
                time.sleep(0.005)
            return sorted(pending)
        except MPI.Exception:
            return None  # unknown

    def _fail(self, what, why):
        epoch, step = self.where
        grace = min(max(2.0, 0.05 * self.timeout), 30.0)
        silent = self._silent_ranks(epoch, step, grace)
        place = "before the first step" if epoch is None else f"at epoch {epoch}, step {step}"
        if silent:
            who = f"rank{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} of {self.size} " \
                  f"{'have' if len(silent) > 1 else 'has'} not joined it (died or hangs)"
        elif silent == []:
            who = "every other rank answers a direct message, so the collective itself is stuck"
        else:
            who = "the ranks that did not join it could not be determined"
        message = (f"distributed fit, rank {self.rank}: the {what} {place} got {why} within "
                   f"{self.timeout:g} s: {who}. The job will be aborted at exit "
                   f"(raise `timeout=` if a rank is legitimately that slow).")
        _abort_at_exit(self.comm, 1)
        raise RankFailureError(message, what, epoch, step, silent, self.timeout)


# ---------------------------------------------------------------- input checks

class _SharedRows:
    """X as every rank holds it (a full array or a memmap of one file), read only at the
    rows a rank needs: nothing is copied or converted here. Its finiteness is checked
    by the ranks together (``_check_finite_sharded``)."""

    def __init__(self, X, name, n_features, dtype):
        arr = _checks._as_numeric_array(X, name)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D (samples, features), got {arr.ndim}-D with shape {arr.shape}")
        if arr.shape[0] == 0:
            raise ValueError(f"{name} is empty: it has 0 samples")
        if arr.shape[1] != n_features:
            raise ValueError(f"{name} has {arr.shape[1]} features but the model's input layer takes {n_features}")
        self.X, self.n, self.dtype = arr, arr.shape[0], np.dtype(dtype)
        # the core gathers straight from X when it is already in the model's form
        self.array = arr if arr.dtype == self.dtype and arr.flags.c_contiguous else None

    def dense(self, lo, hi):
        return np.ascontiguousarray(self.X[lo:hi], dtype=self.dtype)

    def take(self, rows):
        return np.ascontiguousarray(np.take(self.X, rows, axis=0), dtype=self.dtype)


def _shard(n, rank, size):
    """Rows [lo, hi) of n that rank takes in a contiguous split (uneven allowed, possibly empty)."""
    return (rank * n) // size, ((rank + 1) * n) // size


def _first_bad_row(X, lo, hi, dtype):
    """(row, col, code) of the first non-finite (code 1) or too-large-for-dtype (code 2) value in rows [lo, hi)."""
    for a in range(lo, hi, _BLOCK_ROWS):
        block = np.asarray(X[a:min(hi, a + _BLOCK_ROWS)])
        if block.dtype.kind != "f":
            continue  # integers: finite, and within float32's range
        with np.errstate(over="ignore"):
            conv = block.astype(dtype, copy=False)
        if conv.dtype.kind == "f" and not np.isfinite(conv).all():
            orig_bad = ~np.isfinite(block) if block.dtype.kind == "f" else np.zeros(block.shape, bool)
            if orig_bad.any():
                i, j = np.argwhere(orig_bad)[0]
                return a + int(i), int(j), 1
            i, j = np.argwhere(~np.isfinite(conv))[0]
            return a + int(i), int(j), 2
    return -1, -1, 0


def _check_finite_sharded(coll, X, name, dtype):
    """Every rank checks its contiguous share of X's rows; the first bad value is reported on all ranks."""
    lo, hi = _shard(X.shape[0], coll.rank, coll.size)
    found = coll.allgather(np.array(_first_bad_row(X, lo, hi, dtype), dtype=np.int64),
                           f"finiteness check of {name}")
    for row, col, code in found:
        if code == 1:
            raise ValueError(f"{name} contains NaN or infinity (first at index [{row}, {col}])")
        if code == 2:
            raise ValueError(f"{name} holds values too large for {np.dtype(dtype)} (first at index [{row}, {col}])")


def _fingerprint(items):
    """int64 row: each item's value if it is a small int, else the CRC32 of its repr."""
    row = []
    for _, value in items:
        if isinstance(value, (bool, np.bool_)):
            row.append(int(value))
        elif isinstance(value, numbers.Integral) and abs(int(value)) < 2 ** 62:
            row.append(int(value))
        else:
            row.append(zlib.crc32(repr(value).encode()))
    return np.array(row, dtype=np.int64)


def _check_same_everywhere(coll, items):
    """ValueError on every rank when the ranks were given different settings or data shapes.

    Returns how many ranks of the communicator run on this host (same processor name)."""
    host = zlib.crc32(coll.MPI.Get_processor_name().encode())
    row = np.concatenate([_fingerprint(items), [host]])
    table = coll.allgather(row, "consistency check of the fit's arguments")
    same_host = int(np.count_nonzero(table[:, -1] == host))
    table = table[:, :-1]
    differ = [name for k, (name, _) in enumerate(items) if np.any(table[:, k] != table[0, k])]
    if differ:
        ranks = sorted({int(r) for r in range(coll.size) if np.any(table[r] != table[0])})
        raise ValueError(f"distributed fit: the ranks were given different {', '.join(differ)} "
                         f"(ranks {ranks} differ from rank 0); every rank must call fit with the same "
                         "model shape, loss, optimizer, batch size, epochs, seed and data shape")
    return same_host


def _optimizer_signature(opt):
    """The hyper-parameters that must agree across ranks; a callable lr by its type and its
    values at a spread of steps (a schedule that fails at one of them, by where it fails)."""
    hyper = opt.hyper_parameters()
    if callable(hyper.get("lr")):
        values = []
        for t in (0, 1, 2, 10, 100, 1000, 10 ** 4, 10 ** 5, 10 ** 6):
            try:
                values.append(float(opt.lr_at(t)))
            except (ArithmeticError, ValueError, TypeError):
                values.append(f"fails at step {t}")
                break
        hyper["lr"] = (type(hyper["lr"]).__name__, tuple(values))
    return type(opt).__name__, tuple(sorted(hyper.items()))


def _sampled_rows_crc(rows, n_samples=64):
    """CRC32 of a spread of rows (the first and last among them), in the model's dtype: ranks
    handed different data (another file, another shard) differ here, at the cost of a few rows."""
    if rows.n == 0:
        return 0
    picks = np.unique(np.linspace(0, rows.n - 1, min(rows.n, n_samples)).astype(np.intp))
    return zlib.crc32(rows.take(picks).tobytes())


def _agreed(coll, check, what):
    """check()'s result on every rank, or an error on every rank: the refusing rank's own, the
    others a ValueError naming the ranks that refused (each reports why)."""
    try:
        result, refused = check(), None
    except Exception as exc:  # told to the other ranks, then raised here
        result, refused = None, exc
    flags = coll.allgather(np.array([refused is not None], dtype=np.int64), f"agreement on {what}")
    if refused is not None:
        raise refused
    if flags.any():
        ranks = [int(r) for r in np.flatnonzero(flags[:, 0])]
        raise ValueError(f"distributed fit: rank(s) {ranks} refused {what} (each reports why); every rank stops")
    return result


def _default_threads(local_batch, model, ranks_here):
    """BLAS threads per rank: one for small steps; otherwise this rank's share of the host's cores
    (all the cores it is bound to, when the launcher pinned it to fewer than the host has)."""
    if _threads.auto_threads(6.0 * model.n_params * max(local_batch, 1)) == 1:
        return 1
    cores = _threads.cpu_count()  # the cores this process may run on
    if cores < (os.cpu_count() or cores):
        return _threads.allowed_threads()
    return max(1, min(cores // max(1, ranks_here), _threads.allowed_threads()))


# ---------------------------------------------------------------- the runner

#: What the ranks send each step: "gradient" (an all-reduce of the gradient) or "factors" (every
#: rank's rows of each layer's input and output gradient, from which each rank forms the gradient).
EXCHANGES = ("gradient", "factors")

#: Layers whose gradients together hold fewer bytes than this are sent as one message.
BUCKET_BYTES = 1 << 20


def factor_layers(sizes, batch):
    """Per layer of a network of ``sizes``, whether the factor exchange sends its factors (else its
    gradient is summed): when they are fewer values. Each rank receives (p-1)/p x batch x
    (d_k + d_{k+1}) values of the factors (d_0 not: every rank reads X itself), against
    2 (p-1)/p x (d_k + 1) d_{k+1} for an all-reduce of the gradient."""
    return [batch * ((sizes[k] if k else 0) + sizes[k + 1]) < 2 * (sizes[k] + 1) * sizes[k + 1]
            for k in range(len(sizes) - 1)]


class DistributedRunner(LocalRunner):
    """Runs of steps across the ranks: each step is the compiled batch gradient of this
    rank's slice of the global batch, an all-reduce of the gradient buffer, and the
    compiled update, identical on every rank. The epoch loop is fastfit.epochs'.

    With ``allreduce`` (a ``fastfit._allreduce.AllReduce``) and ``overlap``, the
    backward pass runs a layer at a time, from the last: each bucket of layers (at
    least BUCKET_BYTES, or the rest) starts its sum as soon as its gradient is final,
    the sum proceeds on the AllReduce's thread while the earlier layers are computed,
    and each bucket is updated once its own sum is in. With ``allreduce`` alone, the
    buckets' sums all start after the whole backward pass (where every core
    computes, overlap only makes the sums and the compute take turns), and each
    bucket is again updated once its sum is in. Otherwise one MPI all-reduce of the
    whole buffer follows the whole backward pass. With ``factors``, each step is the
    factor exchange instead (``_factor_step``)."""

    def __init__(self, model, a, n_threads, coll, checkpoint, allreduce=None, overlap=False, factors=False):
        self.coll, self.checkpoint, self.allreduce = coll, checkpoint, allreduce
        self.overlap = bool(overlap) and allreduce is not None
        self.factors = bool(factors)
        # the largest slice a rank gets; the factor exchange holds the whole batch's activations
        self.capacity = a.batch_size if self.factors else -(-a.batch_size // coll.size)
        super().__init__(model, a, n_threads)
        self.plan = self._bucket_plan()
        self.needs_phi = self.needs_phi or checkpoint is not None
        Y, labels = a.Y, a.labels
        self.ws = model.workspace(self.capacity, target_cols=Y.shape[1] if Y.size else 0, labels=bool(labels.size),
                                  threads=n_threads, deltas=self.factors)
        self.mpi_type = coll.MPI.DOUBLE if model.params.dtype == np.float64 else coll.MPI.FLOAT
        self.stats = np.zeros(4, dtype=np.float64)  # [loss sum, hits, non-finite ranks, interrupted ranks]
        self.interrupt = None
        self.stopped_by_interrupt = False
        self.wait_s = 0.0

    def _rank_data(self, idx):
        """The Dataset and local row indices of this rank's slice."""
        a = self.a
        if self.data is not None:
            return self.data, idx
        return (_core.Dataset(a.rows.take(idx), np.ascontiguousarray(a.Y[idx]) if a.Y.size else a.Y,
                              np.ascontiguousarray(a.labels[idx]) if a.labels.size else a.labels),
                np.arange(len(idx), dtype=np.intp))

    def _steps(self, order, first, n, lrs, t0):
        a, coll, model, stats = self.a, self.coll, self.model, self.stats
        total, hits = 0.0, 0
        step = self._factor_step if self.factors else self._gradient_step
        for s in range(n):
            j = first + s
            coll.where = (self.epoch, j + 1)
            start, stop = j * a.batch_size, min((j + 1) * a.batch_size, a.N)
            penalty = a.loss.l2 * a.loss.grad_scale(stop - start, model.n_outputs)
            self.wait_s += step(order[start:stop], lrs[s], lrs[s + 1], t0 + s, penalty)
            if stats[2]:
                return total, hits, s, True
            total += stats[0]
            hits += int(stats[1])
            if stats[3]:  # Ctrl-C on some rank: every rank stops after this same step
                self.stopped_by_interrupt = True
                return total, hits, s + 1, False
        return total, hits, n, False

    def _gradient_step(self, idx, lr, lr_next, t, penalty):
        """One step that sums the gradient: this rank's slice of the batch ``idx`` through the
        compiled batch gradient, the all-reduce (one of the whole buffer, or one per bucket), and
        the update (per bucket as soon as its sum is in). Returns the seconds spent waiting."""
        coll, model, MPI, stats = self.coll, self.model, self.coll.MPI, self.stats
        lo, hi = _shard(len(idx), coll.rank, coll.size)
        data, rows = self._rank_data(idx[lo:hi])
        # The step's loss sums go out before the gradient: queued behind it on the
        # same connection, these few bytes would wait for the whole gradient.
        if not self.overlap:
            local, local_hits = _core.batch_gradient(model._net, self.ws, data, self.objective, rows, len(idx))
            t_wait = time.perf_counter()
            requests = [self._start_stats(local, local_hits)]
            buckets = None if self.allreduce is None else self._sending_after_backward()
        else:
            local, local_hits = _core.gradient_head(model._net, self.ws, data, self.objective, rows, len(idx))
            requests = [self._start_stats(local, local_hits)]
            buckets = self._backward_sending()
            t_wait = time.perf_counter()
        if buckets is None:
            requests.append(coll.comm.Iallreduce(MPI.IN_PLACE, model.grads, op=MPI.SUM))
            coll.wait(requests, "gradient all-reduce")
            if not stats[2]:
                _core.update(model._net, self.rule, lr, lr_next, t, penalty)
        else:  # each bucket's update as soon as its sum is in (every bucket is waited for)
            for i, (first_layer, end_layer, handle) in enumerate(buckets):
                self._wait_sum(handle)
                if i == 0:  # sent first, so in by now: no spinning beside the sums' thread
                    coll.wait(requests, "loss all-reduce", spin=False)
                if not stats[2]:
                    _core.update(model._net, self.rule, lr, lr_next, t, penalty, first_layer, end_layer)
        return time.perf_counter() - t_wait

    def _factor_step(self, idx, lr, lr_next, t, penalty):
        """One step of the factor exchange (docs/distributed.md). This rank runs its rows [lo, hi)
        of the batch ``idx`` forward and back to every layer's dL/dF. For a layer that sends factors,
        every rank's rows of its input H_k and of dL/dF_k are gathered on every rank as soon as
        they are final, and every rank forms the layer's gradient over the whole batch; any other
        layer's gradient is formed over this rank's rows and summed. Each layer is updated once
        its messages are in. Returns the seconds spent waiting for them."""
        net, ws, coll = self.model._net, self.ws, self.coll
        B, L = len(idx), net.n_layers
        lo, hi = _shard(B, coll.rank, coll.size)
        data, rows = self._rank_data(idx)
        local, local_hits = _core.slice_head(net, ws, data, self.objective, rows, lo, hi)
        stats = [self._start_stats(local, local_hits)]
        factors = factor_layers(self.model.sizes, B)
        shards = [_shard(B, r, coll.size) for r in range(coll.size)]
        acts, deltas = self._layer_blocks(ws.acts, B), self._layer_blocks(ws.deltas, B)
        sent = {k: [] for k in range(L)}  # each layer's messages
        for k in range(1, L):  # H_k, layer k-1's output, is final now
            if factors[k]:
                sent[k].append(self._gather_rows(acts[k - 1], shards))
        for k in range(L - 1, -1, -1):  # dL/dF_k is final here
            if factors[k]:
                sent[k].append(self._gather_rows(deltas[k], shards))
            else:
                _core.rows_weight_gradient(net, ws, B, lo, hi, k)
                first, end = int(net.woff[k]), int(net.boff[k]) + net.sizes[k + 1]  # W_k, then b_k
                sent[k].append(coll.comm.Iallreduce(coll.MPI.IN_PLACE, self.model.grads[first:end],
                                                    op=coll.MPI.SUM))
            if k:
                _core.slice_input_gradient(net, ws, B, lo, hi, k)
            coll.MPI.Request.Testall([r for layer in sent.values() for r in layer])  # MPI moves them only in its calls
        waited = 0.0
        for k in range(L - 1, -1, -1):
            t_wait = time.perf_counter()
            coll.wait(sent[k] + stats, "activation and gradient exchange")
            waited += time.perf_counter() - t_wait
            if factors[k]:
                _core.rows_weight_gradient(net, ws, B, 0, B, k)
            if not self.stats[2]:
                _core.update(net, self.rule, lr, lr_next, t, penalty, k, k + 1)
        return waited

    def _layer_blocks(self, buf, B):
        """Flat views of each layer's (B, d_{k+1}) block in a buffer laid out like the activations."""
        net = self.model._net
        return [buf[B * int(net.aoff[k]):B * (int(net.aoff[k]) + net.sizes[k + 1])] for k in range(net.n_layers)]

    def _gather_rows(self, block, shards):
        """Start gathering every rank's rows of a flat (B, d) block into it, in place."""
        d = block.size // shards[-1][1] if block.size else 0
        counts = [(hi - lo) * d for lo, hi in shards]
        displs = [lo * d for lo, _ in shards]
        return self.coll.comm.Iallgatherv(self.coll.MPI.IN_PLACE, [block, counts, displs, self.mpi_type])

    def _start_stats(self, local, local_hits):
        """Start the all-reduce of [loss sum, hits, non-finite ranks, interrupted ranks]."""
        bad = not math.isfinite(local)
        self.stats[:] = (0.0 if bad else local, local_hits, float(bad),
                         float(self.interrupt is not None and self.interrupt.raised))
        return self.coll.comm.Iallreduce(self.coll.MPI.IN_PLACE, self.stats, op=self.coll.MPI.SUM)

    def _bucket_plan(self):
        """[(first layer, end layer, first parameter, end parameter)], last layers first: each
        bucket the fewest layers that hold at least BUCKET_BYTES of gradient (or the rest)."""
        net, grads = self.model._net, self.model.grads
        plan, end = [], net.n_layers
        for k in range(net.n_layers - 1, -1, -1):
            lo = int(net.woff[k])
            hi = int(net.woff[end]) if end < net.n_layers else grads.shape[0]
            if (hi - lo) * grads.itemsize >= BUCKET_BYTES or k == 0:
                plan.append((k, end, lo, hi))
                end = k
        return plan

    def _backward_sending(self):
        """The backward pass a layer at a time, each bucket's sum started as soon as it is final.
        Returns [(first layer, end layer, handle)], last layers first."""
        net, ws, grads = self.model._net, self.ws, self.model.grads
        buckets = []
        plan = iter(self.plan)
        first, end, lo, hi = next(plan)
        for k in range(net.n_layers - 1, -1, -1):
            _core.gradient_layer(net, ws, k)
            if k == first:
                buckets.append((first, end, self.allreduce.start(grads[lo:hi])))
                first, end, lo, hi = next(plan, (None, None, None, None))
        return buckets

    def _sending_after_backward(self):
        """Every bucket's sum started at once, after the whole backward pass: they cross the link
        one after another, and a bucket's update runs while the next one is still on its way."""
        grads = self.model.grads
        return [(first, end, self.allreduce.start(grads[lo:hi])) for first, end, lo, hi in self.plan]

    def _wait_sum(self, handle):
        try:
            self.allreduce.wait(handle, timeout=self.coll.timeout)
        except TimeoutError:
            self.coll._fail("gradient all-reduce", "no answer")

    def interrupted(self, interrupt):
        self.interrupt = interrupt
        return self.stopped_by_interrupt

    def run(self, order, first, n, lrs, t0):
        self.epoch = self.epoch if first else self.epoch + 1
        return super().run(order, first, n, lrs, t0)

    epoch = 0

    def validate(self, val):
        rows, Y, labels, lo, hi = val
        a, b = _shard(hi - lo, self.coll.rank, self.coll.size)
        scores = score_rows(self.model, self.a.loss, rows, Y, labels, lo + a, lo + b)
        self.coll.allreduce(scores.sums, "validation all-reduce")
        scores.Y_all = Y[lo:hi] if Y.size else Y
        return scores.result(n_rows=hi - lo, prefix="val_")

    def complete_record(self, epoch, record):
        """The same numbers on every rank: the slowest rank's time, the mean all-reduce
        wait; and a check that the ranks still hold bit-identical parameters."""
        coll = self.coll
        coll.where = (epoch, self.a.n_batches)
        crc = zlib.crc32(self.model.params)
        table = coll.allgather(np.array([record["time"], self.wait_s, crc], dtype=np.float64),
                               "end-of-epoch exchange")
        self.wait_s = 0.0
        if np.any(table[:, 2] != table[0, 2]):
            why = ("with exchange='factors' every rank forms the gradient itself, and these ranks' BLAS "
                   "(different CPUs or libraries) did not form the same bits: use exchange='gradient'"
                   if self.factors else
                   "the MPI library's sum is not the same on every rank, which fastfit.distributed relies on")
            raise RuntimeError(
                f"distributed fit: after epoch {epoch} the ranks' parameters differ (checksums "
                f"{[int(c) for c in table[:, 2]]}); {why}")
        seconds = float(table[:, 0].max())
        rows = record["samples_per_s"] * record["time"] if math.isfinite(record["samples_per_s"]) else 0
        record.update(time=seconds, samples_per_s=rows / seconds if seconds > 0 else math.inf,
                      allreduce_s=float(table[:, 1].mean()))

    def agree_on_run(self, steps):
        """The fewest steps any rank would run next. Each rank sizes its runs from its own
        timing, and a run's end is where an update that overflowed is found and the run
        replayed step by step: the ranks must end their runs together, or one rank's replayed
        steps would meet another's new ones in the all-reduce."""
        return int(self.coll.allgather(np.array([steps], dtype=np.int64), "run-length agreement").min())

    def agree_to_stop(self, epoch, stop):
        """Rank 0 writes the checkpoint; every rank stops when any rank wants to, or when the write failed."""
        failed = None
        if self.checkpoint is not None and self.coll.rank == 0:
            try:
                from .io import save
                save(self.model, self.checkpoint, optimizer=self.a.optimizer)
            except Exception as exc:  # reported on every rank below
                failed = exc
        flags = self.coll.allgather(np.array([stop, failed is not None], dtype=np.int64), "end-of-epoch agreement")
        if failed is not None:
            raise failed
        if flags[0, 1]:
            raise RuntimeError(f"distributed fit: rank 0 could not write the checkpoint {self.checkpoint!r} "
                               f"after epoch {epoch}; every rank stops (rank 0 reports why)")
        return bool(flags[:, 0].any())


def _check_timeout(timeout):
    if isinstance(timeout, (bool, np.bool_)) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def evaluate(model, X, y, loss, comm=None, timeout=DEFAULT_TIMEOUT):
    """``fastfit.evaluate`` across ranks: each rank predicts its share of the rows
    (X full on every rank, or a memmap); the same dict on every rank."""
    MPI = _mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    coll = _Collectives(comm, MPI, _check_timeout(timeout))
    loss = get_loss(loss)
    rows = _SharedRows(X, "X", model.n_inputs, model.dtype)
    Y, labels = loss.targets(y, rows.n, model.n_outputs, model.dtype)
    _check_finite_sharded(coll, rows.X, "X", model.dtype)
    a, b = _shard(rows.n, coll.rank, coll.size)
    scores = score_rows(model, loss, rows, Y, labels, a, b)
    coll.allreduce(scores.sums, "evaluation all-reduce")
    return scores.result(n_rows=rows.n)


# ---------------------------------------------------------------- the fit

def _check_checkpoint_folder(coll, checkpoint):
    """ValueError on every rank, before any training, when rank 0 (which writes the checkpoint
    after each epoch) has no folder for it that it can write."""
    problem = ""
    if checkpoint is not None and coll.rank == 0:
        folder = os.path.dirname(os.path.abspath(os.fspath(checkpoint)))
        if os.path.isdir(checkpoint):
            problem = f"checkpoint {os.fspath(checkpoint)!r} is a folder; give a file name in it"
        elif not os.path.isdir(folder):
            problem = f"checkpoint {os.fspath(checkpoint)!r}: the folder {folder!r} does not exist"
        elif not os.access(folder, os.W_OK):
            problem = f"checkpoint {os.fspath(checkpoint)!r}: the folder {folder!r} cannot be written"
    flags = coll.allgather(np.array([bool(problem)], dtype=np.int64), "checkpoint check")
    if problem:
        raise ValueError(problem)
    if flags.any():
        raise ValueError("distributed fit: rank 0 cannot write the checkpoint file; every rank stops "
                         "(rank 0 reports why)")


def fit(model, X, y, loss, optimizer=None, batch_size=64, epochs=10, seed=0, *, comm=None,
        shuffle=True, drop_last=False, n_threads=None, validation_data=None, validation_split=0.0,
        early_stopping=False, patience=5, min_delta=0.0, restore_best=True, callbacks=None,
        checkpoint=None, timeout=DEFAULT_TIMEOUT, verbose="auto", overlap=False, compress=None,
        exchange="gradient"):
    """``fastfit.fit`` across the ranks of ``comm`` (default ``MPI.COMM_WORLD``); returns a History.

    Call it on every rank with the same arguments. ``batch_size`` is the global
    batch: with the same seed, the parameters after the fit equal (to float
    rounding) those of ``fastfit.fit`` in one process, whatever the number of
    ranks. X (full on every rank, or a numpy.memmap of one file) is read only
    at the rows each rank needs; y is small and read whole.

    The history is identical on every rank: ``loss`` and the validation scores
    are reduced over all ranks; ``time`` is the slowest rank's epoch time and
    ``allreduce_s`` the mean time per rank spent waiting for the gradient
    all-reduce in the epoch. Callbacks run on every rank with the same record
    (print from one rank only: ``comm.rank == 0``); one returning False on any
    rank stops every rank. ``checkpoint``: a path that rank 0 writes with
    ``fastfit.save(model, path, optimizer)`` after every epoch. ``n_threads``:
    threads per rank (default: one for small steps, else the node's cores
    shared among its ranks). ``timeout``: seconds any collective may wait for
    the other ranks before RankFailureError (then the job is aborted at exit).

    ``overlap=True`` sends each bucket of layers' gradient as soon as the backward
    pass has produced it, on a thread of fastfit._allreduce, while the earlier
    layers are computed; the result is the same as without it (the same sums,
    docs/distributed.md); it pays where a core is free for the communication
    (fewer compute threads than cores) or the link is slow. ``compress="bfloat16"``
    (float32 models; with or without overlap) sends the gradient as bfloat16,
    summed in float32: half the bytes, no longer bit-equal to one process (each
    value rounded to 8 significant bits on the wire), tested to converge like the
    exact fit.

    ``exchange="factors"`` sends no gradient where it can avoid it: a layer's
    gradient over the batch is dF_k^T H_k, so each rank sends its rows of H_k and
    dL/dF_k as soon as the passes produce them, and every rank forms the product
    over the whole batch itself (the product one process runs). A layer whose
    gradient is fewer values than those rows (``factor_layers``) has its
    gradient summed instead. Each rank reads the batch's every row of X and
    holds the whole batch's activations; the ranks must run the same BLAS
    kernels (one kind of CPU), or their parameters drift apart (checked after
    every epoch). It pays where the link is slow against the compute and the
    global batch is small beside the layers' widths (docs/distributed.md); it
    takes neither ``compress`` nor ``overlap``: its messages are exact and
    always overlap the compute.
    """
    MPI = _mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    coll = _Collectives(comm, MPI, _check_timeout(timeout))

    # ---- local checks: deterministic, so every rank given the same arguments agrees; a rank
    # that refuses its own arguments says so to the others, which stop too (not at the timeout)
    def checked():
        if seed is None:
            raise ValueError("distributed fit needs an explicit seed: every rank must draw the same batches")
        if compress not in (None, "bfloat16"):
            raise ValueError(f"compress must be None or 'bfloat16', got {compress!r}")
        if compress is not None and np.dtype(model.dtype) != np.float32:
            raise ValueError("compress='bfloat16' needs a float32 model (its sums are formed in float32)")
        if not isinstance(overlap, (bool, np.bool_)):
            raise TypeError(f"overlap must be True or False, got {overlap!r}")
        if not (isinstance(exchange, str) and exchange in EXCHANGES):
            raise ValueError(f"exchange must be one of {EXCHANGES}, got {exchange!r}")
        if exchange == "factors" and (compress is not None or overlap):
            raise ValueError("exchange='factors' sends activations and output gradients, exactly and as soon as each "
                             "is final: compress and overlap apply to the gradient all-reduce (exchange='gradient')")
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path (str or os.PathLike), got {checkpoint!r}")
        threads = None if n_threads is None else _threads.thread_count(n_threads)
        return check_fit_arguments(model, X, y, loss, optimizer, batch_size, epochs, seed, validation_data,
                                   validation_split, early_stopping, drop_last, patience, min_delta, callbacks,
                                   verbose, as_rows=lambda arr, name: _SharedRows(arr, name, model.n_inputs,
                                                                                  model.dtype)), threads

    a, n_threads = _agreed(coll, checked, "the fit's arguments")
    optimizer = a.optimizer

    with model.exclusive("distributed fit"):
        with optimizer.binding(model):  # a fresh optimizer is left unbound when a check fails
            # ---- the ranks agree on what they are doing, and on the data's finiteness
            items = [("model sizes", model.sizes), ("dtype", model.dtype.str), ("loss", repr(a.loss)),
                     ("optimizer", _optimizer_signature(optimizer)), ("batch_size", a.batch_size),
                     ("epochs", a.epochs), ("seed", repr(seed)), ("training rows", a.N),
                     ("targets", (a.Y.shape, a.labels.shape, zlib.crc32(a.labels if a.labels.size else a.Y))),
                     ("shuffle", bool(shuffle)), ("drop_last", bool(drop_last)),
                     ("validation rows", -1 if a.val is None else a.val[4] - a.val[3]),
                     ("early_stopping", (bool(early_stopping), a.patience, float(a.min_delta), bool(restore_best))),
                     ("checkpoint", checkpoint is not None), ("overlap", bool(overlap)), ("compress", repr(compress)),
                     ("exchange", exchange), ("X (sampled rows)", _sampled_rows_crc(a.rows)),
                     ("validation X (sampled rows)", 0 if a.val is None else _sampled_rows_crc(a.val[0]))]
            ranks_here = _check_same_everywhere(coll, items)
            _check_finite_sharded(coll, a.rows.X, "X", model.dtype)
            if a.val is not None and a.val[0] is not a.rows:
                _check_finite_sharded(coll, a.val[0].X, "validation X", model.dtype)
            _check_checkpoint_folder(coll, checkpoint)

        # ---- rank 0's starting point everywhere: parameters, step count, optimizer state, received
        # into copies and checked (on every rank alike) before they replace this rank's own
        state = optimizer.state_dict()  # its buffers are copies
        head = np.array([state["t"], int(state["lookahead"])], dtype=np.int64)
        coll.bcast(head, "broadcast of the step count")
        params = model.params.copy()
        coll.bcast(params, "broadcast of the parameters")
        for buf in state["buffers"].values():
            coll.bcast(buf, "broadcast of the optimizer state")
        state.update(t=int(head[0]), lookahead=bool(head[1]))
        received = type(optimizer)(**optimizer.hyper_parameters()).load_state_dict(state)  # checks it all
        model.params = params  # checked: finite in the model's dtype
        optimizer.load_state_dict(received.state_dict())
        optimizer.bind(model)

        if n_threads is None:
            n_threads = _default_threads(-(-a.batch_size // coll.size), model, ranks_here)
        model._last_X = None
        sums = None
        if overlap or compress is not None:
            from ._allreduce import AllReduce  # its progress thread only when asked for
            sums = AllReduce(comm, compress=compress)
        if exchange == "factors":  # every rank must split its products alike to form the same gradient
            n_threads = int(coll.allgather(np.array([n_threads], dtype=np.int64), "thread-count agreement").min())
        runner = DistributedRunner(model, a, n_threads, coll, checkpoint, sums, overlap, exchange == "factors")
        try:
            with _threads.single_threaded_blas():
                return run_epochs(model, a, runner, early_stopping, restore_best, verbose, shuffle,
                                  rank0=coll.rank == 0)
        finally:
            coll.where = (None, None)
            if sums is not None:
                sums.close(timeout=coll.timeout)
