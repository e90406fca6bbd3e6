"""Run under mpiexec: rank 1 dies (or hangs) at its 5th step; the others must not hang.

    mpiexec -n 2 python tests/mpi_scripts/dead_rank.py exit|hang TIMEOUT

``exit``: rank 1 calls os._exit(3) just before its 5th optimizer update.
``hang``: rank 1 sleeps for 10 minutes there instead.
The surviving ranks' distributed.fit raises RankFailureError after TIMEOUT
seconds; the message goes to stderr and MPI_Abort ends the job.
"""
import os
import sys
import time

import numpy as np
from mpi4py import MPI

import fastfit as ff
from fastfit import _core, distributed

mode, timeout = sys.argv[1], float(sys.argv[2])
comm = MPI.COMM_WORLD

if comm.rank == 1:
    real_step = _core.update
    calls = [0]

    def failing_step(*args):
        calls[0] += 1
        if calls[0] == 5:
            if mode == "exit":
                os._exit(3)
            time.sleep(600)
        return real_step(*args)

    _core.update = failing_step

rng = np.random.default_rng(0)
X, y = rng.standard_normal((256, 4)), rng.integers(0, 3, 256)
model = ff.MLP([4, 8, 3], dtype=np.float64)
try:
    distributed.fit(model, X, y, "cross_entropy", ff.Adam(0.01), batch_size=32, epochs=2, comm=comm,
                    timeout=timeout, n_threads=1, verbose=0)
except distributed.RankFailureError as exc:
    print(f"RANK {comm.rank} CAUGHT: {exc}", file=sys.stderr, flush=True)
    print(f"silent={exc.silent} epoch={exc.epoch} step={exc.step}", file=sys.stderr, flush=True)
    sys.exit(2)  # the armed MPI_Abort ends the job at exit, instead of a hang in MPI_Finalize
print(f"rank {comm.rank}: fit finished, which it should not have", flush=True)
