"""Thread counts: BLAS's (through threadpoolctl) and our own element-wise loops'.

Only one of the two pools works at a time (BLAS inside a GEMM, OpenMP inside
an optimizer update), and both get the same count, so they never oversubscribe
the cores.
"""
import contextlib
import os

from threadpoolctl import ThreadpoolController

_controller = None

#: Below this many flops per training step (6 per weight per sample), one thread
#: is faster: waking a second thread costs more than it saves (benchmarks/, tiny net).
SINGLE_THREAD_FLOPS = 4e6


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


def auto_threads(flops_per_step):
    """All cores for steps big enough to share, one thread for small ones."""
    return 1 if flops_per_step < SINGLE_THREAD_FLOPS else cpu_count()


@contextlib.contextmanager
def blas_threads(n):
    """Limit every loaded BLAS to n threads inside the block."""
    ctl = controller()
    with ctl.limit(limits=int(n), user_api="blas"):
        yield
