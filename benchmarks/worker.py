"""What runs inside each subprocess: ``python -m benchmarks.worker '<json task>'``.

One task per process, so each measurement gets a clean BLAS setup and its own
peak memory (``ru_maxrss``). The worker pins itself to ``threads`` CPUs, the least
busy at its start (the only thread-count control XLA honours, applied to every framework
alike; the neighbour task, which plays a user's script, is not pinned),
imports fastfit first where fastfit or its BLAS is measured (so OpenBLAS picks
the kernels fastfit chose), runs the task and prints its result as one JSON line
after ``@@RESULT``. Nothing heavy is imported before the task asks for it, so the
baseline task measures the interpreter plus the framework's own imports.
"""
import json
import os
import resource
import sys
import time
import traceback

MARK = "@@RESULT "


def _cpu_busy():
    """Busy clock ticks of each CPU so far, from /proc/stat ({} elsewhere)."""
    busy = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *vals = line.split()
                    vals = [int(v) for v in vals]
                    busy[int(name[3:])] = sum(vals[:8]) - vals[3] - (vals[4] if len(vals) > 4 else 0)
    except (OSError, ValueError, IndexError):
        return {}
    return busy


def pin_cpus(threads, window=0.05):
    """Pin this process to ``threads`` CPUs: the least busy ones over a short window.

    Fewer threads than CPUs would otherwise always land on the first CPUs, which on
    a shared machine may be exactly where another process runs.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            b0 = _cpu_busy()
            time.sleep(window)
            b1 = _cpu_busy()
            cpus.sort(key=lambda c: (b1.get(c, 0) - b0.get(c, 0), c))
        os.sched_setaffinity(0, cpus[:max(1, threads)])
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def max_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def blas_view():
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries (kernels, threads)."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads",
            "threading_layer", "filepath")
    return [{k: lib.get(k) for k in keep if k in lib} for lib in threadpoolctl.threadpool_info()]


# ---------------------------------------------------------------- tasks

def task_baseline(spec):
    """Peak RSS of an interpreter that only imports the framework; then its description."""
    from .frameworks import FRAMEWORKS, load
    import importlib
    name = spec.get("framework")
    mods = []
    if name is not None:
        module = load(name)
        mods = module.IMPORTS
        if name in ("fastfit", "reference"):
            importlib.import_module("fastfit")
        for m in mods:
            importlib.import_module(m)
    rss = max_rss_bytes()
    out = {"baseline_bytes": rss, "imports": mods}
    if name is not None:
        out["describe"] = module.describe()
    return out


def task_throughput(spec):
    from .workloads import Workload, cached_data
    from .frameworks import load
    from .timing import measure
    name = spec["framework"]
    wl = Workload.from_dict(spec["workload"])
    if name in ("fastfit", "reference"):
        import fastfit  # noqa: F401  (before NumPy/SciPy load their BLAS)
    module = load(name)
    X, y = cached_data(spec.get("data_dir"), wl)
    trainer = module.Trainer(wl, X, y, spec["threads"])
    res = measure(trainer, wl.n_rows, wl.batch, spec["target_s"], spec["repeats"])
    res["data_bytes"] = int(X.nbytes + y.nbytes)
    res["notes"] = getattr(trainer, "notes", [])
    for attr in ("adam", "compile_s"):
        if getattr(trainer, attr, None) is not None:
            res[attr] = getattr(trainer, attr)
    if res.get("variant") and "Adam" in res["variant"]:
        res["adam"] = res["variant"].split(", ")[1]
    return res


def task_products(spec):
    import fastfit  # noqa: F401  (fastfit's kernel choice, before SciPy's BLAS loads)
    from .products import run
    return run(spec)


def task_peak(spec):
    import fastfit  # noqa: F401  (the kernels fastfit chooses are the fastest OpenBLAS offers here)
    from .peak import run
    return run(spec)


def task_probe(spec):
    import fastfit  # noqa: F401  (the same kernels as the measurements it judges)
    from .peak import probe
    return probe(spec)


def task_neighbour(spec):
    from .neighbour import run         # imports fastfit itself, halfway through
    return run(spec)


def task_longrun(spec):
    from .longrun import run
    return run(spec)


def task_memory(spec):
    import fastfit  # noqa: F401
    from .memory import run
    return run(spec)


TASKS = {"baseline": task_baseline, "throughput": task_throughput, "products": task_products,
         "peak": task_peak, "probe": task_probe, "neighbour": task_neighbour, "longrun": task_longrun, "memory": task_memory}


def main(argv):
    spec = json.loads(argv[1])
    cpus = pin_cpus(spec.get("threads", 1)) if spec.get("pin", True) else None
    t0 = time.perf_counter()
    try:
        result = TASKS[spec["task"]](spec)
        result["ok"] = True
    except Exception as exc:  # reported, not raised: one failure must not stop the run
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    built = sorted(m.__file__ for name, m in list(sys.modules.items())
                   if name.startswith("fastfit.") and str(getattr(m, "__file__", "")).endswith((".so", ".pyd")))
    if built:  # which build of fastfit's compiled modules ran (the tree may change under a run)
        import hashlib
        digest = hashlib.sha256()
        for path in built:
            with open(path, "rb") as f:
                digest.update(f.read())
        result["fastfit_core_sha"] = digest.hexdigest()[:12]
    result["cpus"] = cpus
    result["max_rss_bytes"] = max_rss_bytes()
    result["wall_s"] = time.perf_counter() - t0
    if spec["task"] != "baseline" or spec.get("framework"):
        result["blas"] = blas_view()
    result["env"] = {k: os.environ.get(k) for k in
                     ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                      "MKL_NUM_THREADS", "XLA_FLAGS", "MALLOC_MMAP_THRESHOLD_")}
    sys.stdout.write("\n" + MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
