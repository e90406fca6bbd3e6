"""Pictures (matplotlib, the optional ``plot`` extra): training curves, optimizer paths, memory.

- ``plot_history(history)``: training and validation loss (and score) per epoch.
- ``optimizer_paths(grad, start, optimizers, steps)``: the trajectories of
  fastfit's own optimizers on a 2-D function, and ``plot_optimizer_paths`` to
  draw them over its contours (the book's picture of gradient descent, SGD,
  momentum, Nesterov and Adam on a loss surface).
- ``plot_memory(model, batch_sizes, optimizer)``: ``memory_report`` against
  the batch size: the activations, the backward scratch and the gathered batch
  grow with it.
"""
import numpy as np

from . import _checks
from .network import MLP


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("fastfit.plot needs matplotlib: pip install matplotlib") from exc
    return plt


def plot_history(history, ax=None):
    """Loss (and validation loss) against epoch; the validation score on a second axis."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], label="training loss")
    if "val_loss" in history:
        ax.plot(epochs, history["val_loss"], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    lines, labels = ax.get_legend_handles_labels()
    for key, name in (("val_accuracy", "validation accuracy"), ("val_r2", "validation R²")):
        if key in history:
            twin = ax.twinx()
            twin.plot(epochs, history[key], color="tab:green", label=name)
            twin.set_ylabel(name)
            more = twin.get_legend_handles_labels()
            lines, labels = lines + more[0], labels + more[1]
    ax.legend(lines, labels, loc="center right", framealpha=0.95)
    return ax


def _point(start):
    """A point in the plane as a model fastfit's optimizers step: the 1-1 MLP has two
    parameters (one weight, one bias), which hold the point's coordinates."""
    return MLP.from_params([1, 1], np.asarray(start, dtype=np.float64))


def optimizer_paths(grad, start, optimizers, steps=100, noise=0.0, seed=0):
    """Run each of fastfit's optimizers from ``start`` on a 2-D function.

    ``grad(p)`` returns the gradient at p (shape (2,)); ``optimizers`` maps a
    name to an optimizer; ``noise`` adds Gaussian noise of that scale to each
    gradient (SGD's minibatch noise). Returns {name: array (steps+1, 2)} of the
    trajectory phi (for Nesterov, the trajectory point, not the look-ahead).
    """
    rng = np.random.default_rng(seed)
    paths = {}
    for name, opt in optimizers.items():
        point = _point(start)
        opt.prepare(point)
        trail = [np.array(start, dtype=np.float64)]
        for _ in range(steps):
            point.grads[:] = grad(point.params) + noise * rng.standard_normal(2)
            opt.step(point)
            opt.finalize(point)           # record phi ...
            trail.append(point.params.copy())
            opt.prepare(point)            # ... and go back to where the next gradient is taken
        opt.finalize(point)
        paths[name] = np.array(trail)
    return paths


def plot_optimizer_paths(f, paths, xlim, ylim, ax=None, title=None, levels=30):
    """Draw trajectories over the contours of f(x, y) (vectorized over arrays)."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    xs, ys = np.linspace(*xlim, 300), np.linspace(*ylim, 300)
    XX, YY = np.meshgrid(xs, ys)
    ZZ = f(XX, YY)
    ax.contourf(XX, YY, ZZ, levels=levels, cmap="Greys", alpha=0.55)
    ax.contour(XX, YY, ZZ, levels=levels, colors="grey", linewidths=0.4)
    for name, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], marker=".", markersize=3, linewidth=1.3, label=name)
        ax.plot(path[-1, 0], path[-1, 1], marker="*", markersize=10, color=ax.lines[-1].get_color())
    first = next(iter(paths.values()))
    ax.plot(first[0, 0], first[0, 1], "ko", label="start")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("phi_0")
    ax.set_ylabel("phi_1")
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return ax


def plot_memory(model, batch_sizes, optimizer=None, loss=None, ax=None):
    """Stacked bytes of training memory (every term of memory_report) against batch size."""
    plt = _pyplot()
    batch_sizes = [_checks.positive_int(b, "batch_sizes") for b in batch_sizes]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    reports = [model.memory_report(b, optimizer, loss) for b in batch_sizes]
    parts = [term for term in reports[0] if term != "total"]  # every term the report counts
    stack = np.array([[r[p] / 2 ** 20 for r in reports] for p in parts])
    ax.stackplot(batch_sizes, stack, labels=[p.replace("_", " ") for p in parts])
    ax.set_xlabel("batch size")
    ax.set_ylabel("MiB")
    ax.set_title(f"training memory, MLP {'-'.join(map(str, model.sizes))} ({model.dtype.name})")
    ax.legend(loc="upper left", fontsize=8)
    return ax
