"""fastfit: fast, checked fitting of ReLU MLPs on the CPU.

A compiled Cython core runs the forward and backward passes, losses, optimizer
updates and the whole training loop, its matrix products through BLAS
(scipy.linalg.cython_blas) or, for large float32 ones on CPUs with AVX-512,
its own; ``fastfit.reference`` is the same mathematics in plain NumPy, the
oracle the core is tested against.
"""


def _not_built(exc):
    """The ImportError to raise when the compiled modules cannot be imported.

    Run from a source checkout that was never built, Python finds this folder's
    .py files but no _core/_cpu extension, and the bare error ("cannot import
    name '_cpu' from partially initialized module 'fastfit' (most likely due to
    a circular import)") hides the cause."""
    import os
    folder = os.path.dirname(os.path.abspath(__file__))
    return ImportError(
        f"fastfit's compiled core (the _core and _cpu extension modules) is not built in {folder}, "
        "or was built for another Python or NumPy. If this is a source checkout, build it from "
        "the project's root with `pip install -e .` (or `python setup.py build_ext --inplace`); "
        "if you meant an installed fastfit, run Python from another folder so that this one "
        f"does not shadow it. (The import failed with: {exc})")


def _ours(exc):
    """True when an ImportError is about fastfit's own modules, not a dependency."""
    import os
    name = exc.name or ""
    if name in (__name__, "_core", "_cpu") or name.startswith(__name__ + "."):
        return True
    folder = os.path.dirname(os.path.abspath(__file__))
    return bool(exc.path) and os.path.dirname(os.path.abspath(exc.path)) == folder


# Before anything loads SciPy's BLAS: choose its AVX-512 kernels where that is safe
# (select_kernels imports _cpu, which loads no BLAS), then load the core.
try:
    from . import _blas_select

    _blas_select.select_kernels()
    from . import _core  # noqa: F401
except ImportError as _exc:
    if not _ours(_exc):
        raise  # a missing dependency (NumPy, SciPy) names itself
    raise _not_built(_exc) from _exc

from .network import MLP, Layer  # noqa: E402
from .losses import BinaryCrossEntropy, Loss, SoftmaxCrossEntropy, SquaredError  # noqa: E402
from .optim import SGD, Adam, AdamW, NormalizedGD, Optimizer  # noqa: E402
from .schedules import ConstantLR, CosineWithWarmup, ExponentialDecay, StepDecay  # noqa: E402
from .training import NonFiniteLossError, evaluate, fit  # noqa: E402
from .history import History  # noqa: E402
from .config import show_config, blas_info  # noqa: E402
from .io import save, load, ModelFileError  # noqa: E402
from . import interop, io  # noqa: E402

from ._version import __version__  # noqa: E402

__all__ = [
    "MLP", "Layer", "Loss", "SquaredError", "SoftmaxCrossEntropy", "BinaryCrossEntropy",
    "SGD", "Adam", "AdamW", "NormalizedGD", "Optimizer", "ConstantLR", "StepDecay", "ExponentialDecay",
    "CosineWithWarmup", "fit", "evaluate", "History", "NonFiniteLossError", "show_config",
    "blas_info", "save", "load", "ModelFileError", "interop", "io", "reference", "__version__",
]


def __getattr__(name):
    # fastfit.reference (the NumPy oracle) is part of the package's face, but most
    # programs never need it: it is imported on first use.
    if name == "reference":
        import importlib
        return importlib.import_module(".reference", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
