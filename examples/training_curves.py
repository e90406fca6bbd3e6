"""Training and validation curves of a fit on the built-in three-arm spirals.

    python examples/training_curves.py [output.png]
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import fastfit as ff  # noqa: E402
from fastfit import datasets  # noqa: E402
from fastfit.plot import plot_history  # noqa: E402


def main(out="training_curves.png"):
    X_train, y_train, X_test, y_test = datasets.spirals(n_samples=3000, n_classes=3, seed=0)
    model = ff.MLP([2, 64, 64, 3], seed=0)
    history = ff.fit(model, X_train, y_train, loss=ff.SoftmaxCrossEntropy(), optimizer=ff.Adam(1e-2),
                     batch_size=64, epochs=150, validation_data=(X_test, y_test))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_history(history, ax=ax)
    ax.set_title(f"MLP 2-64-64-3 on spirals: test accuracy {history['val_accuracy'][-1]:.1%}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
