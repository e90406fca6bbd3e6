"""PyTorch eager: nn.Sequential, CrossEntropyLoss, ``torch.optim.Adam(fused=True)``.

The loop is the idiomatic one without a DataLoader (which would only add
overhead): a ``randperm`` per epoch, ``index_select`` of each batch, then
zero_grad / forward / loss / backward / step. If the fused Adam is refused on
the CPU, the trainer falls back to ``foreach=True`` and says so in its notes.
"""
IMPORTS = ["torch"]


class Trainer:
    def __init__(self, workload, X, y, threads):
        import torch
        from torch import nn
        torch.set_num_threads(threads)
        self.torch, self.wl = torch, workload
        torch.manual_seed(0)
        dtype = torch.float64 if workload.dtype == "float64" else torch.float32
        layers = []
        sizes = list(workload.sizes)
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b, dtype=dtype))
            if k < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers)
        self.loss = nn.CrossEntropyLoss()
        self.notes = []
        self.adam = "fused"
        try:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
            self._step(torch.from_numpy(X[:2]), torch.from_numpy(y[:2]).long())  # fused must also run
        except (RuntimeError, TypeError, ValueError) as exc:
            self.adam = "foreach"
            self.notes.append(f"fused Adam failed on the CPU ({type(exc).__name__}: {exc}); used foreach=True")
            self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, foreach=True)
        self.X = torch.from_numpy(X)           # shares the NumPy buffer
        self.y = torch.from_numpy(y).long()    # intp is int64 already: no copy
        self.gen = torch.Generator().manual_seed(0)

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
        X, y = self.X, self.y
        for _ in range(epochs):
            perm = torch.randperm(n, generator=self.gen)
            for i in range(0, n, B):
                idx = perm[i:i + B]
                self._step(X.index_select(0, idx), y.index_select(0, idx))


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
