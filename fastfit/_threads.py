"""Thread counts: fastfit's own team, and the BLAS fastfit calls (SciPy's, through threadpoolctl).

A fit's ``n_threads`` is the team's: the core splits each large product into
shares of its output across it, and each share is one BLAS call, so BLAS runs at one
thread while fastfit works (``single_threaded_blas``) and no two thread pools
ever compete for the cores. Other libraries' BLAS are never touched, SciPy's
count is restored when the last fit ends, and a count set before fastfit ran
(by the user, the environment or a launcher) is a ceiling fastfit's automatic
choice never raises.
"""
import contextlib
import os
import sys
import threading

# threadpoolctl sets KMP_DUPLICATE_LIB_OK=True for the whole process when it is first imported
# (Intel's OpenMP runtime then tolerates a second copy of itself). fastfit loads no OpenMP
# runtime, so when this import is what set it, it is taken back: a user's process keeps the
# environment it had.
_kmp_was_set = "threadpoolctl" in sys.modules or "KMP_DUPLICATE_LIB_OK" in os.environ
from threadpoolctl import ThreadpoolController  # noqa: E402
if not _kmp_was_set:
    os.environ.pop("KMP_DUPLICATE_LIB_OK", None)

from . import _checks  # noqa: E402

_controller = None
_lock = threading.Lock()
_requests = []        # thread counts asked for by the fits running now
_original = None      # the BLAS thread counts before the first of them

#: Below this many flops per training step (6 per weight per sample) one thread is
#: as fast or faster: the products are too small to share. Measured on 2 cores,
#: Adam, float32, with the team splitting the products (samples/s, 1 thread vs 2):
#: 784-256-256-10 at batch 4 (6.5 MFLOP/step) 20k vs 22-27k, at batch 8 (13 MFLOP)
#: 24k vs 45-51k, at batch 16 (26 MFLOP) 31-33k vs 42-48k, at batch 32 (52 MFLOP)
#: 44-46k vs 57-67k; 64-128-10 at batch 128 (7.4 MFLOP) 1.32-1.35M vs 1.24-1.29M,
#: at batch 256 (15 MFLOP) 1.40-1.43M vs 1.31-1.46M, at batch 1024 (59 MFLOP)
#: 1.27-1.29M vs 1.13-1.30M. (With BLAS's own threads splitting the products the
#: crossing was at 40 MFLOP, and with OpenMP threads spinning beside them at 200.)
SINGLE_THREAD_FLOPS = 5e6


#: the most threads a fit may ask for: fastfit's team has at most this many (csrc/team.c)
MAX_THREADS = 256


def thread_count(value, name="n_threads"):
    """A checked thread count: a whole number in [1, MAX_THREADS]."""
    value = _checks.positive_int(value, name)
    if value > MAX_THREADS:
        raise ValueError(f"{name} must be at most {MAX_THREADS} (fastfit's thread team), got {value}")
    return value


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
    return max(1, min([cpu_count(), MAX_THREADS] + counts))


def auto_threads(flops_per_step):
    """Every allowed thread for steps big enough to share, one thread for small ones."""
    return 1 if flops_per_step < SINGLE_THREAD_FLOPS else allowed_threads()


def is_scipys(path):
    """SciPy's wheels keep their OpenBLAS in scipy.libs/ (or inside scipy/ on some platforms)."""
    return "scipy.libs" in path or (os.sep + "scipy" + os.sep) in path


def scipy_blas_info():
    """threadpoolctl's description of SciPy's BLAS (a dict: its API, version, kernels,
    threads, path), or None where threadpoolctl does not find it."""
    import scipy.linalg.cython_blas  # noqa: F401  (loaded, so threadpoolctl sees it)
    libs = [lib.info() for lib in _blas_libs()]
    return libs[0] if libs else None


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


def single_threaded_blas():
    """Run the block with SciPy's BLAS at one thread: fastfit's team splits the products itself."""
    return blas_threads(1)


def _apply(n):
    for lib in _blas_libs():
        if lib.num_threads != n:
            lib.set_num_threads(n)
