"""scikit-learn: MLPClassifier(solver="adam"), one ``partial_fit`` per epoch.

``partial_fit`` validates X and one-hot encodes y on every call. That is input
checking, not training, so the trainer runs the real validation once per data
size and then hands the validated arrays back on later calls (it replaces the
instance's ``_validate_input``), which keeps the timing to the training loop:
shuffling, batch gathering, forward, backward and Adam. alpha=0 (no L2 term),
as in the other frameworks. Its BLAS is NumPy's OpenBLAS, limited with threadpoolctl.
"""
IMPORTS = ["sklearn.neural_network"]


class Trainer:
    def __init__(self, workload, X, y, threads):
        import numpy as np
        import threadpoolctl
        from sklearn.neural_network import MLPClassifier
        self._limits = threadpoolctl.threadpool_limits(threads)  # kept for the process's life
        self.wl, self.X, self.y, self.np = workload, X, y, np
        self.clf = MLPClassifier(hidden_layer_sizes=tuple(workload.sizes[1:-1]), activation="relu",
                                 solver="adam", alpha=0.0, batch_size=workload.batch,
                                 learning_rate_init=1e-3, max_iter=1, shuffle=True, random_state=0,
                                 tol=0.0, n_iter_no_change=10 ** 9)
        self.classes = np.arange(workload.sizes[-1])
        self.notes = []
        self.bypass = hasattr(type(self.clf), "_validate_input")
        if not self.bypass:
            self.notes.append("MLPClassifier has no _validate_input: its input validation is in the timing")

    def prepare(self, rows):
        Xp, yp = self.X[:rows], self.y[:rows]
        clf = self.clf
        clf.__dict__.pop("_validate_input", None)              # the real validation, once
        if not hasattr(clf, "coefs_"):
            clf.partial_fit(Xp, yp, classes=self.classes)
        if self.bypass:
            validated = type(clf)._validate_input(clf, Xp, yp, incremental=True, reset=False)
            clf._validate_input = lambda X, y, incremental, reset: validated
        self.Xp, self.yp = Xp, yp

    def run(self, epochs):
        for _ in range(epochs):
            self.clf.partial_fit(self.Xp, self.yp)


def describe():
    import sklearn
    import threadpoolctl
    return {"sklearn": sklearn.__version__, "threadpoolctl": threadpoolctl.threadpool_info()}
