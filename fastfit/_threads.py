"""Thread counts: the BLAS fastfit calls (SciPy's, through threadpoolctl) and fastfit's own team.

Only one of the two works at a time (BLAS inside a GEMM, the team inside an
optimizer update), and both get the same count, so they never oversubscribe
the cores. Other libraries' BLAS are never touched, and SciPy's count is
restored when the last fit ends.
"""
import contextlib
import os
import threading

from threadpoolctl import ThreadpoolController

_controller = None
_lock = threading.Lock()
_requests = []        # thread counts asked for by the fits running now
_original = None      # the BLAS thread counts before the first of them

#: Below this many flops per training step (6 per weight per sample), one thread
#: is faster: OpenBLAS synchronises its threads at every product, and for short
#: products that costs more than the second core gives. Measured on 2 cores
#: (samples/s, 1 thread vs 2): 784-256-256-10 at batch 64 (104 MFLOP/step)
#: 52.7k vs 42.6k; at batch 256 (416 MFLOP) 71k vs 119k; 784-1024-1024-10 at
#: batch 128 (1.4 GFLOP) 7.2k vs 13.9k.
SINGLE_THREAD_FLOPS = 2e8


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def controller():
    """The threadpoolctl controller, made once (after SciPy's BLAS has loaded)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


#: Below this many flops per step one thread is faster even with the batch's rows split
#: across fastfit's team (waking a thread costs microseconds).
SPLIT_MIN_FLOPS = 2e7

#: Up to this many flops per step, splitting the batch's rows across fastfit's team
#: (BLAS on one thread in each) beats BLAS's own threads; above it BLAS's threads
#: split each product.
SPLIT_MAX_FLOPS = 1e9

#: Each part of a split batch keeps at least this many rows.
SPLIT_MIN_ROWS = 8


def auto_threads(flops_per_step):
    """All cores for steps big enough to share, one thread for small ones."""
    return 1 if flops_per_step < SPLIT_MIN_FLOPS else cpu_count()


def plan(n_params, batch_size, n_threads):
    """How a step of ``batch_size`` rows uses ``n_threads`` threads: (parts, blas_threads).

    parts > 1: the batch's rows are split into that many parts on fastfit's own team,
    each calling BLAS on one thread; else BLAS's threads split each product."""
    flops = 6.0 * n_params * batch_size
    parts = min(n_threads, batch_size // SPLIT_MIN_ROWS, 16)
    if n_threads > 1 and parts > 1 and flops <= SPLIT_MAX_FLOPS:
        return parts, 1
    return 1, n_threads


def is_scipys(path):
    """SciPy's wheels keep their OpenBLAS in scipy.libs/ (or inside scipy/ on some platforms)."""
    return "scipy.libs" in path or (os.sep + "scipy" + os.sep) in path


def _blas_libs():
    """The BLAS fastfit calls (SciPy's): other libraries' BLAS are left alone."""
    return [lib for lib in controller().lib_controllers if lib.user_api == "blas" and is_scipys(lib.filepath)]


@contextlib.contextmanager
def blas_threads(n):
    """Run the block with BLAS at n threads.

    Fits may run at once in several Python threads: while any is running, BLAS
    uses the largest count asked for, and the count from before the first is
    restored when the last one ends (threadpoolctl's own context manager would
    restore whatever it saw on entry, out of order).
    """
    global _original
    n = int(n)
    with _lock:
        if not _requests:
            _original = [(lib, lib.num_threads) for lib in _blas_libs()]
        _requests.append(n)
        _apply(max(_requests))
    try:
        yield
    finally:
        with _lock:
            _requests.remove(n)
            if _requests:
                _apply(max(_requests))
            else:
                for lib, count in _original:
                    lib.set_num_threads(count)


def _apply(n):
    for lib in _blas_libs():
        if lib.num_threads != n:
            lib.set_num_threads(n)
