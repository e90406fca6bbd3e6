"""Training memory against batch size, from memory_report: the activations, the backward scratch
and the gathered batch grow with it.

    python examples/memory.py [output.png]
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import fastfit as ff  # noqa: E402
from fastfit.plot import plot_memory  # noqa: E402


def main(out="memory.png"):
    model = ff.MLP([784, 1024, 1024, 10])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_memory(model, [64, 256, 512, 1024, 2048, 4096], optimizer=ff.Adam(), loss=ff.SoftmaxCrossEntropy(), ax=ax)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
