"""fastfit: fast, checked fitting of ReLU MLPs on the CPU.

A compiled Cython core calls BLAS through scipy.linalg.cython_blas for the
forward and backward passes, losses, optimizer updates and the whole training
loop; ``fastfit.reference`` is the same mathematics in plain NumPy, the oracle
the core is tested against.
"""
# Before anything loads SciPy's BLAS: choose its AVX-512 kernels where that is safe.
from . import _blas_select

_blas_select.select_kernels()

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
