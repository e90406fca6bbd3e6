"""Thread counts: the BLAS fastfit calls (SciPy's, through threadpoolctl) and fastfit's own team.

Only one of the two works at a time (BLAS inside a GEMM, the team inside an
optimizer update), and both get the same count, so they never oversubscribe
the cores. Other libraries' BLAS are never touched, SciPy's count is restored
when the last fit ends, and a count set before fastfit ran (by the user, the
environment or a launcher) is a ceiling fastfit's automatic choice never raises.
"""
import contextlib
import os
import threading

from threadpoolctl import ThreadpoolController

_controller = None
_lock = threading.Lock()
_requests = []        # thread counts asked for by the fits running now
_original = None      # the BLAS thread counts before the first of them

#: Below this many flops per training step (6 per weight per sample) one thread is
#: faster: BLAS's threads meet at every product, and for short products that costs
#: more than the second core gives. Measured on 2 cores, Adam, float32 (samples/s,
#: 1 thread vs 2): 64-128-10 at batch 32 (1.8 MFLOP/step) 1.00M vs 1.03M, at batch
#: 256 (15 MFLOP) 1.29M vs 0.84M; 784-256-256-10 at batch 16 (26 MFLOP) 27.7k vs
#: 29.0k, at batch 32 (52 MFLOP) 39.7k vs 52.1k, at batch 64 (103 MFLOP) 53k vs 62-80k.
#: (With OpenMP threads spinning beside BLAS's, as fastfit once had, the crossing
#: was at 200 MFLOP.)
SINGLE_THREAD_FLOPS = 4e7


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


def allowed_threads():
    """The most threads fastfit uses on its own account: the cores this process may run on,
    and no more than SciPy's BLAS had before fastfit touched it.

    A count the user or launcher set (``threadpoolctl.threadpool_limits(1)``,
    ``OPENBLAS_NUM_THREADS=1``, one rank per core under MPI) is thus never raised: two
    processes each running 2 BLAS threads on 2 cores slow each other down many times over."""
    with _lock:
        counts = [count for _, count in _original] if _requests else [lib.num_threads for lib in _blas_libs()]
    return max(1, min([cpu_count()] + counts))


def auto_threads(flops_per_step):
    """Every allowed thread for steps big enough to share, one thread for small ones."""
    return 1 if flops_per_step < SINGLE_THREAD_FLOPS else allowed_threads()


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
