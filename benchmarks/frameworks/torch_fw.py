"""PyTorch eager, written the way someone who tunes PyTorch on the CPU would write it.

nn.Sequential, CrossEntropyLoss, no DataLoader (it only adds overhead for
in-memory tensors). Two choices have no single right answer on a CPU, so the
trainer offers both of each as variants and timing.py keeps the fastest
(the pilot rates of all four are in the JSON):

- gathering: ``batch`` indexes the data tensor by each batch's slice of a
  ``randperm`` (``index_select``, one small copy per step); ``epoch`` permutes
  the whole tensor once per epoch and then takes contiguous slices (views, no
  copy per step; one big copy per epoch);
- Adam: ``fused=True`` (one kernel over all parameters, on the CPU since 2.4)
  or ``foreach=True`` (multi-tensor ops). A fused optimizer the build refuses is
  dropped with a note.

The thread count is ``torch.set_num_threads`` (in its own process, pinned to
as many CPUs, with OMP/MKL_NUM_THREADS set to match before torch loads).
"""
IMPORTS = ["torch"]


def build(workload, torch):
    from torch import nn
    torch.manual_seed(0)
    dtype = torch.float64 if workload.dtype == "float64" else torch.float32
    layers = []
    sizes = list(workload.sizes)
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, dtype=dtype))
        if k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Trainer:
    def __init__(self, workload, X, y, threads):
        import torch
        from torch import nn
        torch.set_num_threads(threads)
        self.torch, self.wl = torch, workload
        self.model = build(workload, torch)
        self.loss = nn.CrossEntropyLoss()
        self.notes = []
        self.X = torch.from_numpy(X)           # shares the NumPy buffer
        self.y = torch.from_numpy(y).long()    # intp is int64 already: no copy
        self.gen = torch.Generator().manual_seed(0)
        self.opts = {}
        for kind in ("fused", "foreach"):
            try:
                opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, **{kind: True})
                self.opt = opt
                self._step(self.X[:2], self.y[:2])          # the kernel must also run, not just construct
                self.opts[kind] = opt
            except (RuntimeError, TypeError, ValueError) as exc:
                self.notes.append(f"Adam({kind}=True) failed on the CPU ({type(exc).__name__}: {exc})")
        if not self.opts:
            raise RuntimeError("neither fused nor foreach Adam runs: " + "; ".join(self.notes))
        self.variants = [f"{g} gather, {k} Adam" for g in ("batch", "epoch") for k in self.opts]
        self.use(self.variants[0])

    def use(self, variant):
        gather, _, rest = variant.partition(" gather, ")
        self.gather, self.adam = gather, rest.split()[0]
        self.opt = self.opts[self.adam]

    def _step(self, xb, yb):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(xb), yb)
        loss.backward()
        self.opt.step()
        return loss

    def prepare(self, rows):
        self.rows = rows

    def run(self, epochs):
        torch, B, n = self.torch, self.wl.batch, self.rows
        X, y = self.X[:n], self.y[:n]
        step = self._step
        for _ in range(epochs):
            perm = torch.randperm(n, generator=self.gen)
            if self.gather == "epoch":
                Xp, yp = X.index_select(0, perm), y.index_select(0, perm)
                for i in range(0, n, B):
                    step(Xp[i:i + B], yp[i:i + B])
            else:
                for i in range(0, n, B):
                    idx = perm[i:i + B]
                    step(X.index_select(0, idx), y.index_select(0, idx))


def describe():
    import torch
    cfg = torch.__config__.show()
    par = torch.__config__.parallel_info()
    lines = ("CPU capability usage", "Math Kernel Library Version", "MKL-DNN", "OpenMP 2", "ATen parallel backend",
             "at::get_num_threads", "at::get_num_interop_threads")
    settings = ("BLAS_INFO", "LAPACK_INFO", "USE_MKL", "USE_MKLDNN", "USE_OPENMP")
    summary = []
    for ln in (cfg + "\n" + par).splitlines():
        ln = ln.strip().lstrip("- ")
        if ln.startswith("Build settings:"):
            for part in ln[len("Build settings:"):].split(","):
                if part.strip().split("=")[0] in settings:
                    summary.append(part.strip())
        elif any(k in ln for k in lines) and ln not in summary:
            summary.append(ln)
    return {"torch": torch.__version__, "config_summary": summary, "config": cfg, "parallel_info": par,
            "num_threads": torch.get_num_threads(), "mkldnn_available": torch.backends.mkldnn.is_available(),
            "mkl_available": torch.backends.mkl.is_available()}
