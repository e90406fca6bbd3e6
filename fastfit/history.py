"""The record a fit returns: one list per metric, one entry per epoch (Keras' habit)."""


class History:
    """Per-epoch training record.

    ``history["loss"]`` (or ``history.history["loss"]``) is the list of epoch
    losses; other keys (``val_loss``, ``lr``, ``time`` ...) appear when the fit
    records them. ``history.epochs`` is the number of epochs recorded.
    """

    def __init__(self):
        self.history = {"loss": []}

    def record(self, **values):
        """Append one epoch's values."""
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def keys(self):
        return self.history.keys()

    @property
    def epochs(self):
        return len(self.history.get("loss", []))

    def __repr__(self):
        last = {k: v[-1] for k, v in self.history.items() if v}
        return f"History(epochs={self.epochs}, last={last})"
