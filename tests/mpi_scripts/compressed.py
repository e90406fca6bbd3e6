"""Run under mpiexec -n 2: MNIST-1D fitted with exact and with bfloat16 gradient sums, the latter
overlapped with the backward pass and after it (4 seeds each); rank 0 writes the mean test
accuracies (one JSON object)."""
import json
import sys

import numpy as np
from mpi4py import MPI

import fastfit as ff
from fastfit import datasets, distributed

comm = MPI.COMM_WORLD


def main():
    distributed.BUCKET_BYTES = 64 * 1024  # several buckets for this small network
    X, y, Xt, yt = datasets.mnist1d()
    scores, params = {}, {}
    for name, mode, overlap in (("exact", None, True), ("bfloat16", "bfloat16", True),
                                ("bfloat16_after", "bfloat16", False)):
        accuracies = []
        for seed in range(4):  # one seed's accuracy varies by about a point and a half
            model = ff.MLP([X.shape[1], 128, 128, 10], dtype=np.float32, seed=seed)
            ff.fit(model, X, y, ff.SoftmaxCrossEntropy(), ff.Adam(3e-3), batch_size=100, epochs=20, seed=seed,
                   comm=comm, compress=mode, overlap=overlap, n_threads=1, verbose=0, timeout=120)
            accuracies.append(ff.evaluate(model, Xt, yt, ff.SoftmaxCrossEntropy())["accuracy"])
        scores[name] = float(np.mean(accuracies))
        scores[name + "_each"] = accuracies
        params[name] = model.params.copy()
    every = {name: comm.gather(params[name], root=0) for name in ("bfloat16", "bfloat16_after")}
    if comm.rank == 0:
        scores["differ"] = bool(not np.array_equal(params["bfloat16"], params["exact"])
                                and not np.array_equal(params["bfloat16_after"], params["exact"]))
        scores["ranks_identical"] = all(np.array_equal(p, gathered[0])
                                        for gathered in every.values() for p in gathered)
        with open(sys.argv[1], "w") as f:
            json.dump(scores, f)


if __name__ == "__main__":
    main()
