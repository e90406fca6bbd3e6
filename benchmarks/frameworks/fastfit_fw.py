"""fastfit: ``ff.fit`` over whole epochs (the fused compiled loop), the way a user trains."""
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
        # Given all the machine's cores, fastfit picks its own thread count (one for
        # short steps, all for long ones: fastfit/_threads.py); given fewer, it uses them.
        auto = self.threads >= self.ff._threads.cpu_count()
        self.ff.fit(self.model, self.Xp, self.yp, loss=self.loss, optimizer=self.opt,
                    batch_size=self.wl.batch, epochs=epochs, seed=self.seed,
                    n_threads=None if auto else self.threads, verbose=0)


def describe():
    import fastfit as ff
    return {"blas_info": ff.blas_info()}
