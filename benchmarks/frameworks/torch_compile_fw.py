"""PyTorch with ``torch.compile``: the model's forward and loss, and the optimizer step, compiled.

The way PyTorch's own guidance compiles a training loop: the forward pass and
loss are one compiled function (AOTAutograd compiles the matching backward, which
``loss.backward()`` then runs), and ``optimizer.step()`` is a second compiled
function (Inductor fuses Adam's per-parameter work into a few loops). Shapes are
static (every batch has the same size), so each compiles once. Compilation runs
in the constructor, before any timing, and its duration is noted; if it fails on
this machine the worker reports the error and the row says why.

Adam is the foreach implementation, which is what the compiled optimizer
traces; gathering is chosen like the eager trainer's (see torch_fw.py).
"""
import time

from . import torch_fw
from .torch_fw import build, describe  # noqa: F401  (describe: the same build information, used by the harness)

IMPORTS = ["torch"]


class Trainer(torch_fw.Trainer):
    """torch_fw's trainer (its epoch loop, both ways of gathering batches) with the
    forward+loss and the optimizer's step compiled."""

    def __init__(self, workload, X, y, threads):
        import torch
        from torch import nn
        torch.set_num_threads(threads)
        self.torch, self.wl = torch, workload
        self.model = build(workload, torch)
        loss = nn.CrossEntropyLoss()
        model = self.model
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
        opt = self.opt

        def forward_loss(xb, yb):
            return loss(model(xb), yb)

        def opt_step():
            opt.step()

        self.forward_loss = torch.compile(forward_loss, dynamic=False)
        self.opt_step = torch.compile(opt_step, dynamic=False)
        self.X = torch.from_numpy(X)
        self.y = torch.from_numpy(y).long()
        self.gen = torch.Generator().manual_seed(0)
        B = workload.batch
        t0 = time.perf_counter()
        for _ in range(2):     # the first call compiles; the second checks that nothing recompiles
            self._step(self.X[:B], self.y[:B])
        self.compile_s = time.perf_counter() - t0
        self.notes = []
        self.variants = ["batch gather", "epoch gather"]
        self.use(self.variants[0])
        self.adam = "foreach, compiled"

    def use(self, variant):
        self.gather = variant.split()[0]

    def _step(self, xb, yb):
        self.opt.zero_grad(set_to_none=True)
        loss = self.forward_loss(xb, yb)
        loss.backward()
        self.opt_step()
