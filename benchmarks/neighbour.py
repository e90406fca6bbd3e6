"""What importing and using fastfit does to the other libraries in the same process.

A user's script may train a PyTorch model and a scikit-learn model and also
call fastfit. Anything fastfit changes process-wide (environment variables that
OpenMP runtimes read, thread pools left running, BLAS settings) then shows up
as a slower PyTorch or scikit-learn. One process, not pinned, with the user's
environment (none of the harness's thread settings):

1. import torch and scikit-learn; time a PyTorch training epoch (a small MLP,
   Adam, random data, a few hundred steps) and a
   ``HistGradientBoostingClassifier.fit`` (20,000 x 20, 50 iterations), each the
   best of a few runs after a warm-up run (other processes' load only ever adds
   time, while a slowdown that fastfit causes shows in every run, the best too);
2. ``import fastfit``; time both again;
3. run a short fastfit fit; time both again.

Ratios above 1 are slowdowns (time after / time before). A second process
(``order="fastfit first"``) imports fastfit before torch and scikit-learn and
times the same two things, which catches settings that only take effect in a
library loaded after fastfit; it is compared with the first process's
"before" times, so it carries cross-process noise too.
"""
import os
import time

WATCH = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
         "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")


def _env():
    return {k: os.environ.get(k) for k in WATCH}


def run(spec):
    order = spec.get("order", "fastfit last")
    env_at_start = _env()
    if order == "fastfit first":
        import fastfit  # noqa: F401
    import numpy as np
    import torch
    from torch import nn
    from sklearn.ensemble import HistGradientBoostingClassifier

    sizes, B, steps = spec["torch_sizes"], spec["torch_batch"], spec["torch_steps"]
    rng = np.random.default_rng(0)
    Xh = rng.standard_normal((spec["hgb_rows"], spec["hgb_features"])).astype(np.float32)
    yh = rng.integers(0, 2, spec["hgb_rows"])
    g = torch.Generator().manual_seed(0)
    Xt = torch.randn(steps * B, sizes[0], generator=g)
    yt = torch.randint(0, sizes[-1], (steps * B,), generator=g)
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lossf = nn.CrossEntropyLoss()

    def torch_epoch():
        t0 = time.perf_counter()
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            lossf(model(Xt[i * B:(i + 1) * B]), yt[i * B:(i + 1) * B]).backward()
            opt.step()
        return time.perf_counter() - t0

    def hgb_fit():
        t0 = time.perf_counter()
        HistGradientBoostingClassifier(max_iter=spec["hgb_iter"], early_stopping=False,
                                       random_state=0).fit(Xh, yh)
        return time.perf_counter() - t0

    def phase():
        t = [torch_epoch() for _ in range(spec["repeats"])]
        h = [hgb_fit() for _ in range(spec["repeats"])]
        return {"torch_s": min(t), "torch_runs": t, "hgb_s": min(h), "hgb_runs": h, "env": _env()}

    torch_epoch()
    hgb_fit()                                   # warm-up: first-call costs stay out of "before"
    out = {"order": order, "torch_threads": torch.get_num_threads(), "phases": {}, "env_at_start": env_at_start}
    if order == "fastfit first":
        out["phases"]["fastfit imported first"] = phase()
        return out
    out["phases"]["before"] = phase()
    import fastfit as ff
    out["phases"]["after import fastfit"] = phase()
    Xf = rng.standard_normal((4096, 64)).astype(np.float32)
    yf = rng.integers(0, 10, 4096)
    t0 = time.perf_counter()
    # batch 64 of 64-256-10: two threads of fastfit's team by default, and the first layer's
    # products past 10^6 multiply-adds, on fastfit's own product where the CPU has AVX-512
    ff.fit(ff.MLP([64, 256, 10], seed=0), Xf, yf, ff.SoftmaxCrossEntropy(), ff.Adam(lr=1e-3),
           batch_size=64, epochs=2, verbose=0)
    out["fastfit_fit_s"] = time.perf_counter() - t0
    out["phases"]["after a fastfit fit"] = phase()
    return out
