"""One trainer per framework, each with ``prepare(rows)`` and ``run(epochs)`` (see timing.py).

``FRAMEWORKS`` maps a framework's name to its module and to the Python modules
it needs; a framework whose modules are not installed is skipped with a note.
Each module has ``IMPORTS`` (what its empty-process baseline imports),
``Trainer(workload, X, y, threads)`` and ``describe()`` (its versions and
configuration, a dict).
"""
import importlib
import importlib.util

#: name -> (module in this package, modules it needs, how the Markdown names it)
FRAMEWORKS = {
    "fastfit": ("fastfit_fw", ["fastfit"], "fastfit"),
    "reference": ("reference_fw", ["fastfit"], "NumPy reference"),
    "torch": ("torch_fw", ["torch"], "PyTorch eager"),
    "torch-compile": ("torch_compile_fw", ["torch"], "PyTorch compile"),
    "sklearn": ("sklearn_fw", ["sklearn"], "scikit-learn"),
    "jax": ("jax_fw", ["jax", "jaxlib"], "JAX jit+scan"),
}

ORDER = list(FRAMEWORKS)
PEERS = [name for name in ORDER if name != "fastfit"]


def label(name):
    return FRAMEWORKS[name][2]


def missing_modules(name):
    """The modules ``name`` needs that are not installed (found without importing them)."""
    return [m for m in FRAMEWORKS[name][1] if importlib.util.find_spec(m) is None]


def load(name):
    return importlib.import_module(f"{__name__}.{FRAMEWORKS[name][0]}")


def supports(name, workload, plan=None):
    """Which (framework, workload) pairs are run: everything in float32, except that
    torch.compile (slow to compile) runs only on the plan's ``compile_on`` and a plan
    may limit a workload to some frameworks (``plan.restrict``); float64 rows compare
    fastfit with scikit-learn, the float64 peer its users would pick."""
    if workload.dtype == "float64":
        return name in ("fastfit", "sklearn")
    if plan is not None:
        if name == "torch-compile" and workload.name not in plan.compile_on:
            return False
        allowed = plan.restrict.get(workload.name)
        if allowed is not None and name not in allowed:
            return False
    return True
