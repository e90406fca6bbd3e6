"""fastfit.reference: the plain-NumPy implementation of the same mathematics (``ref.fit``).

It is what a careful NumPy training loop costs: a few array temporaries per
operation, one Python-level step per batch.
"""
IMPORTS = ["fastfit.reference"]


class Trainer:
    def __init__(self, workload, X, y, threads):
        import numpy as np
        from fastfit import reference as ref
        self.ref, self.wl = ref, workload
        self.model = ref.MLP(list(workload.sizes), dtype=np.dtype(workload.dtype).type, seed=0)
        self.opt = ref.Adam(lr=1e-3)
        self.loss = ref.SoftmaxCrossEntropy()
        self.X, self.y = X, y
        self.seed = 0

    def prepare(self, rows):
        self.Xp, self.yp = self.X[:rows], self.y[:rows]

    def run(self, epochs):
        self.seed += 1
        self.ref.fit(self.model, self.Xp, self.yp, self.loss, self.opt,
                     batch_size=self.wl.batch, epochs=epochs, seed=self.seed)


def describe():
    import numpy as np
    return {"numpy": np.__version__}
