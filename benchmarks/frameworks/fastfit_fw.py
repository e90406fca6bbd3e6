"""fastfit: ``ff.fit`` over whole epochs (the fused compiled loop), the way a user trains.

The thread count is passed as ``n_threads`` (the harness measures 1 and 2 and
reports the faster, as for every framework), so fastfit's own default choice
plays no part in the comparison.
"""
IMPORTS = ["fastfit"]


class Trainer:
    def __init__(self, workload, X, y, threads):
        import fastfit as ff
        import numpy as np
        self.ff, self.wl, self.threads = ff, workload, threads
        self.model = ff.MLP(list(workload.sizes), dtype=np.dtype(workload.dtype).type, seed=0)
        self.opt = ff.Adam(lr=1e-3)
        self.loss = ff.SoftmaxCrossEntropy()
        self.X, self.y = X, y
        self.seed = 0

    def prepare(self, rows):
        self.Xp, self.yp = self.X[:rows], self.y[:rows]

    def run(self, epochs):
        self.seed += 1
        self.ff.fit(self.model, self.Xp, self.yp, loss=self.loss, optimizer=self.opt,
                    batch_size=self.wl.batch, epochs=epochs, seed=self.seed,
                    n_threads=self.threads, verbose=0)


def describe():
    import fastfit as ff
    return {"blas_info": ff.blas_info(), "version": getattr(ff, "__version__", None)}
