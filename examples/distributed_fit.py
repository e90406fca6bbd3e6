"""Data-parallel training over MPI on the built-in spirals.

    mpirun -n 2 python examples/distributed_fit.py            # (or mpiexec)
    mpirun -n 4 python examples/distributed_fit.py --epochs 100 --batch-size 128
    mpirun -n 2 python examples/distributed_fit.py --exchange factors   # send rows of H and dL/dF

Every rank runs this same script. Each builds the same data (here: generated
from a seed; in real use, every rank opens the same file, e.g. with
numpy.load(path, mmap_mode="r"), and reads only its rows), the ranks train one
model together with a global batch of --batch-size rows split among them, and
rank 0 prints. The result equals, to float rounding, ``fastfit.fit`` in one
process with the same batch size and seed (tests/test_distributed.py).
"""
import argparse

import numpy as np

import fastfit as ff
from fastfit import datasets, distributed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split among the ranks")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--checkpoint", default=None, help="path rank 0 saves the model to after each epoch")
    parser.add_argument("--exchange", choices=distributed.EXCHANGES, default="gradient",
                        help="what the ranks send each step: the gradient's sum, or the rows it is formed "
                             "from (docs/distributed.md, 'The factor exchange')")
    args = parser.parse_args(argv)

    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size

    X_train, y_train, X_test, y_test = datasets.spirals(n_samples=2000, n_classes=3, seed=0)
    model = ff.MLP([2, 64, 64, 3], dtype=np.float64, seed=0)
    optimizer = ff.Adam(args.lr)

    def report(record):
        if rank == 0 and (record["epoch"] == 1 or record["epoch"] % 10 == 0):
            print(f"epoch {record['epoch']:3d}  loss {record['loss']:.4f}  "
                  f"val_accuracy {record['val_accuracy']:.3f}  "
                  f"{record['samples_per_s'] / 1e3:.1f}k samples/s  "
                  f"{record['allreduce_s'] / record['time']:.0%} of it waiting for the other ranks", flush=True)

    if rank == 0:
        print(f"fitting {model} on {len(X_train)} spiral points with {size} ranks, "
              f"global batch {args.batch_size} (about {args.batch_size // size} rows per rank), "
              f"exchanging {args.exchange}", flush=True)
    history = distributed.fit(model, X_train, y_train, "cross_entropy", optimizer,
                              batch_size=args.batch_size, epochs=args.epochs, seed=0, comm=comm,
                              validation_split=0.1, callbacks=[report], checkpoint=args.checkpoint,
                              exchange=args.exchange, verbose=0)
    # evaluation split across ranks too; every rank gets the same numbers
    scores = distributed.evaluate(model, X_test, y_test, "cross_entropy", comm=comm)
    if rank == 0:
        print(f"after {history.epochs} epochs: test loss {scores['loss']:.4f}, "
              f"test accuracy {scores['accuracy']:.3f}")
        if args.checkpoint:
            print(f"checkpoint: {args.checkpoint} (fastfit.load reads it)")


if __name__ == "__main__":
    main()
