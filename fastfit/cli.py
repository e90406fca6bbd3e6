"""The command line: ``fastfit demo | fit | predict | info | config``.

Errors in files or arguments print one line, ``fastfit: error: ...``, and exit
with status 2 (usage) or 1 (data and files).
"""
import argparse
import sys
import time

import numpy as np

#: MNIST-1D's published MLP test accuracy (Greydanus, 2020): about 68%.
MNIST1D_MLP_BASELINE = 0.68


class CLIError(Exception):
    """A problem with the user's files or arguments: printed as one line."""


def _demo(args):
    import fastfit as ff
    from fastfit import datasets

    try:
        X_train, y_train, X_test, y_test = datasets.mnist1d()
        name = "MNIST-1D (4,000 train / 1,000 test, 40 features, 10 classes)"
        baseline = MNIST1D_MLP_BASELINE
    except datasets.MissingDependency:
        print("mnist1d is not installed (pip install 'fastfit[data]'), so the demo uses the built-in "
              "three-arm spirals instead.")
        X_train, y_train, X_test, y_test = datasets.spirals(n_samples=3000, n_classes=3, seed=0)
        name = "three-arm spirals (2,400 train / 600 test, 2 features, 3 classes)"
        baseline = None
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    sizes = [X_train.shape[1], 100, 100, n_classes]
    model = ff.MLP(sizes, dtype=np.float32, seed=args.seed)
    optimizer = ff.Adam(lr=args.lr)
    print(f"dataset: {name}")
    print(f"model:   MLP {'-'.join(map(str, sizes))} (ReLU, He init), {model.n_params:,} parameters, float32")
    print(f"fitting: Adam lr={args.lr}, batch {args.batch_size}, {args.epochs} epochs, softmax cross-entropy")
    start = time.perf_counter()
    history = ff.fit(model, X_train, y_train, loss=ff.SoftmaxCrossEntropy(), optimizer=optimizer,
                     batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
                     validation_data=(X_test, y_test), verbose=0 if args.quiet else 1)
    seconds = time.perf_counter() - start
    test = ff.evaluate(model, X_test, y_test, ff.SoftmaxCrossEntropy())
    samples = args.epochs * len(X_train)
    print(f"trained {samples:,} samples in {seconds:.2f} s ({samples / seconds / 1e3:,.0f}k samples/s, "
          f"validation included)")
    print(f"final training loss {history['loss'][-1]:.3g}")
    line = f"test accuracy: {test['accuracy']:.1%}"
    if baseline is not None:
        line += f"   (published MLP baseline for MNIST-1D: about {baseline:.0%})"
    print(line)
    return 0


def _config(args):
    import fastfit as ff
    ff.show_config()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="fastfit", description="Fast, checked MLP fitting on the CPU.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="fit an MLP on MNIST-1D (or built-in spirals) and report test accuracy")
    demo.add_argument("--epochs", type=int, default=150)
    demo.add_argument("--batch-size", type=int, default=100)
    demo.add_argument("--lr", type=float, default=1e-2)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    demo.set_defaults(run=_demo)

    config = sub.add_parser("config", help="show the BLAS fastfit uses, its kernels and threads")
    config.set_defaults(run=_config)

    from . import cli_data
    cli_data.add_commands(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CLIError as exc:
        print(f"fastfit: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fastfit: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastfit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
