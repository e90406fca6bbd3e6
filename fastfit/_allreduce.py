"""Chunked, pipelined all-reduce over MPI point-to-point messages, with background progress.

The distributed fit sums every rank's gradient once per step. MPI's own
``Allreduce`` does that, but a non-blocking ``Iallreduce`` advances only while
the caller is inside an MPI call, so it cannot overlap the backward pass, and
MPI has no way to send a gradient in half the bytes. This module sums a float
buffer across the ranks of a communicator with its own schedules:

- ``"pair"`` (2 ranks, the default there): each rank sends the other its whole
  buffer at once, cut into chunks of about ``chunk_bytes``, and adds each chunk
  the moment it arrives. Each rank sends and receives the buffer once, the
  bound of any 2-rank all-reduce, and nothing waits for the peer's partial
  result, so every message is posted at the start.
- ``"ring"`` (any number of ranks): ring reduce-scatter + all-gather, each step
  cut into the same chunks; a rank adds a chunk the moment it arrives and sends
  it on at once, and the rank that completes a segment's sum starts its
  all-gather at once. Each rank sends and receives ``2 (size-1)/size`` times the
  buffer, again the bound.
- ``"mpi"``: MPI's own ``Iallreduce``, progressed by this module's thread.

Every receive is posted before the first send. A message that arrives before
its receive is posted stalls the TCP provider's byte stream, and every
completion queued behind it, until the receive appears: measured 3-4x slower.

**Background progress.** With ``progress="thread"`` a thread (one per
``AllReduce`` object) posts the messages, polls them with ``Testsome`` and
short sleeps (``poll_s``), and does the additions. The compiled core and NumPy
release the GIL during their work, so the thread runs while the caller
computes: ``start`` returns at once and the sum proceeds during the rest of the
backward pass. The thread sleeps when no operation is under way. MPI must be
initialised with MPI_THREAD_MULTIPLE (mpi4py's default). With
``progress="wait"`` there is no thread: messages move only inside ``start``,
``test`` and ``wait`` (or in MPI's own progress thread, if one runs).

Two modes:

- ``compress=None`` (exact): float32 or float64, summed in that type; the
  result has the same bits on every rank. For 2 ranks it is ``g0 + g1``
  element by element on both ranks (IEEE addition is commutative), which is
  what ``MPI_Allreduce(SUM)`` gives, bit for bit. On more ranks each segment's
  sum is formed by one rank and copied to the others.
- ``compress="bfloat16"``: float32 buffers only. Every message carries bfloat16
  (the top 16 bits of a float32, rounded to nearest even): half the bytes. The
  sums are formed in float32. ``pair``: both ranks add the two rounded values,
  so both form the same sum. ``ring``: the rank that completes a segment's sum
  rounds it to bfloat16 once, sends those bits and keeps them itself. Either
  way every rank ends with the same bits. bfloat16 rather than float16: it
  keeps float32's 8-bit exponent, so small and large gradients neither flush
  to zero nor overflow, and no loss scaling is needed; the price is an 8-bit
  significand: each rounding is off by at most 2**-8 (0.4%) of the value,
  against 2**-11 for float16. A value is rounded at most ``size`` times (each
  hop of the ring, then once more), twice on 2 ranks. NaN and infinity survive.
  The conversions are compiled (``fastfit._bfloat16``: about 0.13 ms per
  million values to encode, 0.09 ms to widen and add), small beside the bytes
  they save on any link slower than memory.

Use::

    ar = AllReduce(comm)                        # collective: every rank, same order
    h = ar.start(model.grads[a:b])              # returns at once; the thread works
    ...                                         # compute
    ar.wait(h, timeout=120)                     # the slice now holds the sum
    ar.allreduce(buf)                           # start + wait
    ar.close()                                  # collective too; or `with AllReduce(comm) as ar:`

Every rank must start the same operations (same sizes, dtypes and modes) in
the same order; operations may overlap (one per layer, say) and be waited for
in any order. A buffer must not be read or written between ``start`` and the
end of its ``wait``. ``wait`` raises TimeoutError when the sum is not complete
within ``timeout`` seconds (a rank that never starts it, or died); the
operation stays under way and a later ``wait`` may still complete it.
"""
import threading
import time

import numpy as np

from . import _bfloat16

__all__ = ["AllReduce", "Handle", "bfloat16_encode", "bfloat16_decode", "DEFAULT_CHUNK_BYTES"]

#: Bytes of float data per message. MPICH's TCP provider completes about one
#: message per progress call, so the chunks must be large enough that a
#: gradient is a few messages (1 MiB: 0.84 ms on a 10 Gbit/s link; measured
#: faster than 256 KiB over TCP, and as fast as MPI's blocking Allreduce), yet
#: small enough that the additions of early chunks overlap the later ones'
#: transfer.
DEFAULT_CHUNK_BYTES = 1 << 20

#: The progress thread sleeps this long between polls while messages are in flight,
#: doubling while nothing completes, up to DEFAULT_MAX_POLL_S (a 1 MiB chunk takes
#: 0.84 ms on a 10 Gbit/s link, 8.4 ms on 1 Gbit/s).
DEFAULT_POLL_S = 50e-6
DEFAULT_MAX_POLL_S = 400e-6

COMPRESS_MODES = (None, "bfloat16")
ALGORITHMS = ("auto", "pair", "ring", "mpi")


# ---------------------------------------------------------------- bfloat16

def bfloat16_encode(x, out):
    """Round float32 ``x`` to bfloat16 (nearest, ties to even) into uint16 ``out``; returns out.

    NaN stays NaN (the rounding carry could otherwise turn a NaN's payload into
    an infinity or a zero); values beyond bfloat16's largest finite value round
    to infinity."""
    _bfloat16.encode(x, out)
    return out


def bfloat16_decode(h, out):
    """Widen bfloat16 bits ``h`` (uint16) to float32 ``out`` exactly; returns out."""
    _bfloat16.decode(h, out)
    return out


# ---------------------------------------------------------------- one operation

class Handle:
    """One all-reduce under way. ``done`` tells whether it has finished;
    ``seconds`` is the time from ``start`` to completion (None before)."""

    __slots__ = ("buf", "_event", "_error", "_t0", "seconds", "_op")

    def __init__(self, buf):
        self.buf = buf
        self._event = threading.Event()
        self._error = None
        self._t0 = time.perf_counter()
        self.seconds = None
        self._op = None

    @property
    def done(self):
        return self._event.is_set()

    def _finish(self, error=None):
        self._error = error
        self.seconds = time.perf_counter() - self._t0
        self._event.set()


class _RingOp:
    """The message schedule of one ring all-reduce (``size`` >= 2), driven by completions.

    Rank r, left neighbour r-1, right neighbour r+1 (mod size). Reduce-scatter
    step s (0 .. size-2): send segment (r-s) right, receive segment (r-s-1)
    from the left and add it in. After the last step rank r holds the sum of
    segment (r+1). All-gather step s: send segment (r+1-s) right, receive
    segment (r-s) from the left. Each step is cut into the same chunks, and
    chunk k of a step waits only for chunk k of the step before it.

    Every receive is posted before the first send. A message that arrives
    before its receive is posted stalls the TCP provider's byte stream (and
    every completion queued behind it) until the receive appears, which
    measured as a 3-4x slower all-reduce. So the all-gather lands in its own
    scratch buffer (``gather``), and in the exact mode a chunk is copied into
    the caller's buffer once both its all-gather has arrived and the
    reduce-scatter send that reads the same place has completed.
    """

    def __init__(self, engine, handle, tag0):
        self.engine, self.handle = engine, handle
        buf = handle.buf
        comm = engine.comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.left, self.right = (self.rank - 1) % self.size, (self.rank + 1) % self.size
        self.buf = buf
        n, size = buf.size, self.size
        self.bounds = [(j * n) // size for j in range(size + 1)]
        longest = max(self.bounds[j + 1] - self.bounds[j] for j in range(size))
        self.nchunks = _chunks(longest, buf.itemsize, engine.chunk_bytes)
        self.tag0 = tag0
        self.compress = engine.compress
        wire = np.uint16 if self.compress else buf.dtype
        self.borrowed = []
        take = lambda n, dtype: engine.scratch(self, n, dtype)  # noqa: E731
        self.inbox = take(n, wire)    # reduce-scatter chunks before they are added
        self.gather = take(n, wire)   # all-gather chunks: the finished sums
        if self.compress:
            self.wire = take(n, np.uint16)  # this rank's bfloat16 payloads
        else:
            self.arrived = set()  # (s, k): all-gather chunk arrived, or its place in buf is free;
                                  # the second of the two events copies it into buf
        self.pending = 0
        self.error = None

    def chunk(self, j, k):
        """Chunk k of segment j (mod size): [lo, hi)."""
        lo, hi = self.bounds[j % self.size], self.bounds[j % self.size + 1]
        length = hi - lo
        return lo + (k * length) // self.nchunks, lo + ((k + 1) * length) // self.nchunks

    def tag(self, phase, s, k):
        # phase 0 = reduce-scatter, 1 = all-gather; unique within the operation, so
        # messages match whatever order the chunks are posted in
        return self.tag0 + ((phase * (self.size - 1) + s) * self.nchunks + k)

    def _send(self, arr, tag, on_done):
        self.pending += 1
        self.engine.post(self.engine.comm.Isend(arr, dest=self.right, tag=tag), self, on_done)

    def _recv(self, arr, tag, on_done):
        self.pending += 1
        self.engine.post(self.engine.comm.Irecv(arr, source=self.left, tag=tag), self, on_done)

    def begin(self):
        r, steps = self.rank, self.size - 1
        for s in range(steps):
            for k in range(self.nchunks):
                lo, hi = self.chunk(r - s - 1, k)
                self._recv(self.inbox[lo:hi], self.tag(0, s, k), (self.rs_received, s, k))
        for s in range(steps):
            for k in range(self.nchunks):
                lo, hi = self.chunk(r - s, k)
                self._recv(self.gather[lo:hi], self.tag(1, s, k), (self.ag_received, s, k))
        for k in range(self.nchunks):
            lo, hi = self.chunk(r, k)
            self._send(self._payload(lo, hi), self.tag(0, 0, k), None if self.compress else (self.rs_sent, 0, k))

    def _payload(self, lo, hi):
        """What goes on the wire for buf[lo:hi] in the reduce-scatter."""
        if not self.compress:
            return self.buf[lo:hi]
        return bfloat16_encode(self.buf[lo:hi], self.wire[lo:hi])

    def rs_received(self, s, k):
        lo, hi = self.chunk(self.rank - s - 1, k)
        part = self.buf[lo:hi]
        if self.compress:
            _bfloat16.add(part, self.inbox[lo:hi])
        else:
            np.add(part, self.inbox[lo:hi], out=part)
        if s < self.size - 2:
            self._send(self._payload(lo, hi), self.tag(0, s + 1, k),
                       None if self.compress else (self.rs_sent, s + 1, k))
        elif self.compress:  # this chunk's sum is complete here: round it once and share those bits
            bfloat16_encode(part, self.wire[lo:hi])
            bfloat16_decode(self.wire[lo:hi], part)
            self._send(self.wire[lo:hi], self.tag(1, 0, k), None)
        else:
            self._send(part, self.tag(1, 0, k), None)

    def ag_received(self, s, k):
        lo, hi = self.chunk(self.rank - s, k)
        if s < self.size - 2:  # forwarded as received: no second rounding
            self._send(self.gather[lo:hi], self.tag(1, s + 1, k), None)
        if self.compress:
            bfloat16_decode(self.gather[lo:hi], self.buf[lo:hi])
        else:
            self._settle(s, k)

    def rs_sent(self, s, k):
        self._settle(s, k)

    def _settle(self, s, k):
        """Exact mode: all-gather chunk (s, k) goes into buf once the reduce-scatter send
        that reads the same place (step s sends segment r-s) has completed."""
        if (s, k) not in self.arrived:
            self.arrived.add((s, k))
            return
        lo, hi = self.chunk(self.rank - s, k)
        self.buf[lo:hi] = self.gather[lo:hi]

    def completed(self, action):
        """One of this operation's requests finished; run its follow-up."""
        self.pending -= 1
        if action is not None and self.error is None:
            fn, s, k = action
            try:
                fn(s, k)
            except Exception as exc:  # reported by wait(); the messages still drain
                self.error = exc
        if self.pending == 0:
            self.engine.release(self)
            self.handle._finish(self.error)


def _chunks(longest, itemsize, chunk_bytes):
    """Chunks per segment: the longest segment cut into pieces of at most chunk_bytes."""
    return max(1, -(-longest * itemsize // chunk_bytes))


class _PairOp:
    """Two ranks: each sends the other its whole buffer at once and adds each chunk as it arrives.

    The same bytes per rank as the ring (the buffer once each way), but no step
    waits for another rank's partial result, so every message is posted at the
    start and the additions run while later chunks are still on the wire. Exact
    chunks are sent straight from the caller's buffer, and a chunk's sum is
    written once its receive and its send have both completed; compressed
    chunks are encoded into a send buffer first, so their sums never wait. Rank 0
    computes ``g0 + g1`` and rank 1 ``g1 + g0``: the same bits, since IEEE
    addition is commutative. Compressed, both ranks add the two bfloat16-rounded
    values in float32, so both again form the same sum.
    """

    def __init__(self, engine, handle, tag0):
        self.engine, self.handle = engine, handle
        buf = handle.buf
        comm = engine.comm
        self.peer = 1 - comm.Get_rank()
        self.buf = buf
        n = buf.size
        self.nchunks = _chunks(n, buf.itemsize, engine.chunk_bytes)
        self.bounds = [(k * n) // self.nchunks for k in range(self.nchunks + 1)]
        self.tag0 = tag0
        self.compress = engine.compress
        wire = np.uint16 if self.compress else buf.dtype
        self.borrowed = []
        take = lambda n, dtype: engine.scratch(self, n, dtype)  # noqa: E731
        self.inbox = take(n, wire)
        self.outbox = take(n, wire) if self.compress else buf  # exact: sent straight from buf
        self.halfway = set()  # exact: chunks whose send or receive (not both) has completed
        self.pending = 0
        self.error = None

    def begin(self):
        comm, post = self.engine.comm, self.engine.post
        for k in range(self.nchunks):
            lo, hi = self.bounds[k], self.bounds[k + 1]
            self.pending += 1
            post(comm.Irecv(self.inbox[lo:hi], source=self.peer, tag=self.tag0 + k), self, (self.received, k, 0))
        for k in range(self.nchunks):
            lo, hi = self.bounds[k], self.bounds[k + 1]
            if self.compress:
                bfloat16_encode(self.buf[lo:hi], self.outbox[lo:hi])
            self.pending += 1
            post(comm.Isend(self.outbox[lo:hi], dest=self.peer, tag=self.tag0 + k), self,
                 None if self.compress else (self.received, k, 1))

    def received(self, k, _):
        """Chunk k arrived (or, exact, also: its send completed); add it once both happened."""
        if not self.compress:  # sent straight from buf: add only once the chunk has also left
            if k not in self.halfway:
                self.halfway.add(k)
                return
        lo, hi = self.bounds[k], self.bounds[k + 1]
        part = self.buf[lo:hi]
        if self.compress:
            # this rank's own value, rounded as the peer sees it, plus the peer's
            _bfloat16.sum_into(part, self.outbox[lo:hi], self.inbox[lo:hi])
        else:
            np.add(part, self.inbox[lo:hi], out=part)

    completed = _RingOp.completed  # the same bookkeeping


class _MpiOp:
    """MPI's own non-blocking all-reduce, progressed by the same thread."""

    def __init__(self, engine, handle):
        self.engine, self.handle = engine, handle
        self.pending = 0

    def begin(self):
        from mpi4py import MPI
        self.pending = 1
        self.engine.post(self.engine.comm.Iallreduce(MPI.IN_PLACE, self.handle.buf, op=MPI.SUM), self, None)

    def completed(self, action):
        self.pending -= 1
        self.handle._finish()


# ---------------------------------------------------------------- the engine

class AllReduce:
    """Sums float buffers across the ranks of ``comm``, in place, in the background.

    Constructing one is collective (it duplicates ``comm``, so its messages
    never mix with the caller's). Parameters:

    - ``compress``: None (exact) or ``"bfloat16"`` (half the bytes; see the module doc).
    - ``algorithm``: ``"auto"`` (``"pair"`` on 2 ranks, else ``"ring"``), ``"pair"``
      (2 ranks: each sends the other everything once), ``"ring"`` (chunked ring
      reduce-scatter + all-gather, any number of ranks) or ``"mpi"``
      (``Iallreduce``, exact only: MPI's schedule with this module's progress).
    - ``chunk_bytes``: float bytes per message of the ring.
    - ``progress``: ``"thread"`` (a background thread advances every operation;
      ``start`` returns at once) or ``"wait"`` (no thread: the operation
      advances only inside ``wait`` and ``test``).
    - ``poll_s``: the thread's sleep between polls while messages are in flight.
    """

    def __init__(self, comm, *, compress=None, algorithm="auto", chunk_bytes=DEFAULT_CHUNK_BYTES,
                 progress="thread", poll_s=DEFAULT_POLL_S):
        from mpi4py import MPI
        if compress not in COMPRESS_MODES:
            raise ValueError(f"compress must be one of {COMPRESS_MODES}, got {compress!r}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if algorithm == "pair" and comm.Get_size() != 2:
            raise ValueError(f"algorithm='pair' needs exactly 2 ranks, the communicator has {comm.Get_size()}")
        if algorithm == "mpi" and compress:
            raise ValueError("compress needs one of this module's algorithms, not 'mpi': MPI's Iallreduce "
                             "sums the buffer's own type")
        if not isinstance(chunk_bytes, int) or isinstance(chunk_bytes, bool) or chunk_bytes < 64:
            raise ValueError(f"chunk_bytes must be an integer of at least 64 bytes, got {chunk_bytes!r}")
        if progress not in ("thread", "wait"):
            raise ValueError(f"progress must be 'thread' or 'wait', got {progress!r}")
        if not (isinstance(poll_s, (int, float)) and 0 <= poll_s <= 0.1):
            raise ValueError(f"poll_s must be a number of seconds in [0, 0.1], got {poll_s!r}")
        if progress == "thread" and MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            raise RuntimeError("a progress thread needs MPI initialised with MPI_THREAD_MULTIPLE "
                               "(mpi4py's default; check mpi4py.rc.thread_level), or use progress='wait'")
        self.MPI = MPI
        self.comm = comm.Dup()
        self.size = self.comm.Get_size()
        self.compress, self.algorithm = compress, algorithm
        self.chunk_bytes, self.poll_s = chunk_bytes, float(poll_s)
        self.max_poll_s = max(self.poll_s, DEFAULT_MAX_POLL_S)
        tag_ub = self.comm.Get_attr(MPI.TAG_UB)
        self._tag_limit = int(tag_ub) if tag_ub else 32767
        self._next_tag = 0
        self._reqs, self._acts = [], []  # requests in flight and (operation, follow-up) of each
        self._new = []                   # operations started but not yet posted
        self._lock = threading.Lock()
        self._pool, self._pool_lock = {}, threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread_error = None
        self._thread = None
        if progress == "thread":
            self._thread = threading.Thread(target=self._run, name="fastfit-allreduce", daemon=True)
            self._thread.start()

    # ---- public

    def start(self, buf):
        """Begin summing ``buf`` (a contiguous 1-D float array) across the ranks, in place; a Handle."""
        if self._closed:
            raise RuntimeError("this AllReduce is closed")
        if not isinstance(buf, np.ndarray) or buf.ndim != 1 or not buf.flags.c_contiguous:
            raise ValueError("buf must be a contiguous 1-D numpy array (a slice of the flat gradient)")
        if buf.dtype not in (np.float32, np.float64):
            raise ValueError(f"buf must be float32 or float64, got {buf.dtype}")
        if self.compress and buf.dtype != np.float32:
            raise ValueError(f"compress={self.compress!r} needs a float32 buffer, got {buf.dtype}")
        if not buf.flags.writeable:
            raise ValueError("buf must be writeable: the sum is written into it")
        handle = Handle(buf)
        if self.size == 1 or buf.size == 0:
            handle._finish()
            return handle
        if self.algorithm == "mpi":
            op = _MpiOp(self, handle)
        else:
            pair = self.algorithm == "pair" or (self.algorithm == "auto" and self.size == 2)
            op = (_PairOp if pair else _RingOp)(self, handle, self._take_tags(buf, pair))
        handle._op = op
        with self._lock:
            self._new.append(op)
            self._wake.notify()
        if self._thread is None:
            self._step()  # post now: MPI's own progress (an async thread, a NIC) may move it from here on
        return handle

    def wait(self, handle, timeout=None):
        """Block until ``handle``'s sum is in its buffer; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        if self._thread is None:
            while not handle.done:
                self._step()
                if deadline is not None and time.perf_counter() > deadline:
                    break
        else:
            while True:
                left = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.perf_counter()))
                if handle._event.wait(left):
                    break
                if self._thread_error is not None or not self._thread.is_alive():
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    break
        if not handle.done:
            if self._thread_error is not None:
                raise RuntimeError(f"the all-reduce progress thread failed: {self._thread_error!r}")
            raise TimeoutError(f"all-reduce of {handle.buf.size} values not complete after {timeout} s "
                               "(another rank did not start the same operation, or died)")
        if handle._error is not None:
            raise handle._error
        return handle

    def test(self, handle):
        """True once ``handle``'s sum is in its buffer (advances it without a thread)."""
        if not handle.done and self._thread is None:
            self._step()
        if handle.done and handle._error is not None:
            raise handle._error
        return handle.done

    def allreduce(self, buf, timeout=None):
        """Sum ``buf`` across the ranks, in place, and return it."""
        self.wait(self.start(buf), timeout)
        return buf

    def close(self, timeout=10.0):
        """Stop the thread and free the duplicated communicator (collective): call it after every
        started operation has been waited for. If operations are still under way after ``timeout``
        seconds (a rank died mid-sum), TimeoutError; the thread is left to its daemon fate and
        the communicator is not freed (MPI forbids freeing one with messages in flight)."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"AllReduce.close: operations still under way after {timeout} s")
        elif self._reqs or self._new:
            raise RuntimeError("AllReduce.close: operations started but not waited for")
        try:
            self.comm.Free()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        try:
            self.close()
        except (TimeoutError, RuntimeError):
            if exc_type is None:
                raise  # else the error already propagating says more

    # ---- engine

    def _take_tags(self, buf, pair):
        """A block of tags for one operation. Every rank starts the same operations in the
        same order, so every rank takes the same block."""
        if pair:
            need = _chunks(buf.size, buf.itemsize, self.chunk_bytes)
        else:
            need = 2 * (self.size - 1) * _chunks(-(-buf.size // self.size), buf.itemsize, self.chunk_bytes)
        if need >= self._tag_limit:
            raise ValueError(f"a buffer of {buf.size} values needs {need} message tags but MPI allows "
                             f"{self._tag_limit}: raise chunk_bytes")
        if self._next_tag + need > self._tag_limit:
            self._next_tag = 0  # wrap: blocks far apart in time, long finished
        tag0 = self._next_tag
        self._next_tag += need
        return tag0

    def scratch(self, op, n, dtype):
        """A scratch array for op, from the pool: the same sizes recur every step, and reused
        memory spares each step the page faults of fresh allocations."""
        with self._pool_lock:
            free = self._pool.get((n, np.dtype(dtype)))
            arr = free.pop() if free else None
        if arr is None:
            arr = np.empty(n, dtype)
        op.borrowed.append(arr)
        return arr

    def release(self, op):
        with self._pool_lock:
            for arr in op.borrowed:
                self._pool.setdefault((arr.size, arr.dtype), []).append(arr)
        op.borrowed = []

    def post(self, request, op, action):
        """Called by an operation (inside the engine) for each request it posts."""
        self._reqs.append(request)
        self._acts.append((op, action))

    def _step(self):
        """Post new operations, then handle whatever completed. True if anything happened."""
        with np.errstate(all="ignore"):  # a sum that overflows is infinity, as in MPI's, not a warning
            return self._step_quietly()

    def _step_quietly(self):
        with self._lock:
            new, self._new = self._new, []
        for op in new:
            op.begin()
        if not self._reqs:
            return bool(new)
        done = self.MPI.Request.Testsome(self._reqs)
        if not done:
            return bool(new)
        finished = [self._acts[i] for i in done]
        keep = set(range(len(self._reqs))) - set(done)
        self._reqs = [self._reqs[i] for i in sorted(keep)]
        self._acts = [self._acts[i] for i in sorted(keep)]
        for op, action in finished:
            op.completed(action)
        return True

    def _run(self):
        idle = 0
        try:
            while True:
                with self._lock:
                    while not self._closed and not self._new and not self._reqs:
                        self._wake.wait()
                    if self._closed and not self._reqs and not self._new:
                        return
                if self._step():
                    idle = 0
                elif self.poll_s:
                    # back off while nothing completes (a slow link), up to max_poll_s: fewer
                    # wake-ups take less CPU time from the computing thread
                    time.sleep(min(self.poll_s * (1 << min(idle, 16)), self.max_poll_s))
                    idle += 1
        except BaseException as exc:  # surfaced by wait()
            self._thread_error = exc
            with self._lock:
                ops = {id(op): op for op, _ in self._acts}
                ops.update((id(op), op) for op in self._new)
            for op in ops.values():
                op.handle._finish(exc)
