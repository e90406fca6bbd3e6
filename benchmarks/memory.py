"""fastfit's ``memory_report`` against the memory a fit really takes.

One subprocess per batch size (procs.py starts it with a fixed glibc mmap
threshold, so every array above 128 KiB is its own mapping and is returned to
the OS when freed: RSS then follows live arrays, not the allocator's caching).
In it:

1. import fastfit, make the data (2 batches' worth of rows);
2. run one throwaway fit of the same network at the same batch, then drop it:
   OpenBLAS's packing buffers and the thread pools are now touched, as they are
   in any process after its first product. That one-time cost is reported
   (``blas_and_threads_bytes``) and counted in the baseline, not in training;
3. build the model, reset the kernel's peak-RSS mark (``/proc/self/clear_refs``),
   fit 2 epochs, read the peak (``VmHWM``).

Training memory = peak - RSS before the model was built; it should equal
``model.memory_report(batch, Adam(), SoftmaxCrossEntropy())["total"]``
(parameters, gradients, Adam's two moments, activations, backward scratch and
the gathered batch). Over batch sizes it grows linearly, by the per-row terms
of the report, of which the activations are the largest.
"""
import gc
import re


def _status(field):
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) * 1024


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run(spec):
    import numpy as np
    import fastfit as ff
    from .workloads import Workload, make_data
    sizes, B, threads = tuple(spec["sizes"]), spec["batch"], spec["threads"]
    wl = Workload(f"memory-b{B}", "memory", sizes, B)
    X, y = make_data(wl, rows=2 * B)
    gc.collect()
    rss_import = _status("VmRSS")

    def train(model):
        ff.fit(model, X, y, loss=ff.SoftmaxCrossEntropy(), optimizer=ff.Adam(lr=1e-3), batch_size=B,
               epochs=2, seed=0, n_threads=threads, verbose=0)

    warm = ff.MLP(list(sizes), dtype=np.float32, seed=1)
    train(warm)
    del warm
    gc.collect()
    rss_before = _status("VmRSS")

    model = ff.MLP(list(sizes), dtype=np.float32, seed=0)
    gc.collect()
    rss_model = _status("VmRSS")
    reset = _reset_peak()
    train(model)
    peak = _status("VmHWM")
    report = model.memory_report(B, optimizer=ff.Adam(), loss=ff.SoftmaxCrossEntropy())
    return {
        "batch": B,
        "sizes": list(sizes),
        "report": {k: int(v) for k, v in report.items()},
        "rss_import_bytes": rss_import,
        "blas_and_threads_bytes": rss_before - rss_import,
        "rss_before_model_bytes": rss_before,
        "parameters_resident_bytes": rss_model - rss_before,
        "peak_bytes": peak,
        "training_bytes": peak - rss_before,
        "peak_reset": reset,
        "data_bytes": int(X.nbytes + y.nbytes),
    }
