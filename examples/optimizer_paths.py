"""The book's picture: optimizers on a loss surface, drawn over its contours.

Left: a function with a saddle point and two minima of different depth.
Right: a narrow valley, where plain gradient descent zig-zags and momentum
and Adam make progress along the floor. Every path is fastfit's own
optimizer (the compiled update) run on a 2-D parameter vector.

    python examples/optimizer_paths.py [output.png]
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402

import fastfit as ff  # noqa: E402
from fastfit.plot import optimizer_paths, plot_optimizer_paths  # noqa: E402


def saddle(x, y):
    """Two minima near (-1, 0) (deeper) and (1, 0), a saddle near the origin."""
    return (x ** 2 - 1) ** 2 + 1.5 * y ** 2 + 0.3 * x


def saddle_grad(p):
    x, y = p
    return np.array([4 * x * (x ** 2 - 1) + 0.3, 3.0 * y])


def valley(x, y):
    return 0.05 * x ** 2 + 2.5 * y ** 2


def valley_grad(p):
    x, y = p
    return np.array([0.1 * x, 5.0 * y])


def optimizers(lr):
    return {
        "gradient descent": ff.SGD(lr),
        "SGD (noisy gradients)": None,
        "momentum": ff.SGD(lr, momentum=0.9),
        "Nesterov": ff.SGD(lr, momentum=0.9, nesterov=True),
        "Adam": ff.Adam(lr=0.05),
    }


def main(out="optimizer_paths.png"):
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, f, grad, start, lr, noise, lims, title in (
        (axes[0], saddle, saddle_grad, (0.3, 1.4), 0.05, 1.5, ((-1.8, 1.8), (-1.6, 1.6)), "saddle and two minima"),
        (axes[1], valley, valley_grad, (-3.5, 1.0), 0.37, 0.2, ((-4, 1.5), (-1.3, 1.3)), "narrow valley"),
    ):
        opts = optimizers(lr)
        noisy = optimizer_paths(grad, start, {"SGD (noisy gradients)": ff.SGD(lr)}, steps=80, noise=noise, seed=1)
        del opts["SGD (noisy gradients)"]
        paths = optimizer_paths(grad, start, opts, steps=80)
        paths = {"gradient descent": paths["gradient descent"], **noisy,
                 **{k: v for k, v in paths.items() if k != "gradient descent"}}
        plot_optimizer_paths(f, paths, *lims, ax=ax, title=title)
    fig.suptitle("fastfit's optimizers on two loss surfaces (80 steps each)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
