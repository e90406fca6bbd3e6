"""The whole run, in order: baselines, machine peak, then per workload the OpenBLAS products
alone and every framework at every thread count, then the long run, the neighbour
processes, memory, and the report."""
import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time

from . import environment, frameworks, procs, report
from .sampling import measure_pair
from .workloads import cached_data, make_plan

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
LOCAL_DIR = os.path.join(RESULTS_DIR, "local")   # untracked (results/.gitignore)
PARTS = ("peak", "products", "longrun", "neighbour", "memory")


#: A process is measured again when the machine probe after it gives less than this
#: share of the best probe at that thread count so far.
PROBE_SLOW = 0.8


class MachineProbe:
    """The machine's speed after each measured process (peak.probe): a 1024^3 product at the
    process's thread count, against the best such probe of the run (two probes per count at
    the start set the first reference)."""

    def __init__(self, run_probe, thread_counts):
        self.run_probe, self.best, self.history = run_probe, {}, []
        for t in thread_counts:
            for _ in range(2):
                self._probe(t)

    def _probe(self, t):
        res = self.run_probe(t)
        rate = res.get("gflops") if res.get("ok") else None
        self.history.append({"threads": t, "gflops": rate})
        if rate:
            self.best[t] = max(self.best.get(t, 0.0), rate)
        return rate

    def judge(self, t):
        """{"machine_probe": share of the best probe, "machine_slow": below PROBE_SLOW}."""
        rate = self._probe(t)
        if not rate or not self.best.get(t):
            return {"machine_probe": None, "machine_slow": False}
        share = rate / self.best[t]
        return {"machine_probe": round(share, 3), "machine_slow": share < PROBE_SLOW}

def _int_list(text, what):
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise SystemExit(f"{what} must be comma-separated whole numbers, not {text!r}")
    if not values or values[0] < 1:
        raise SystemExit(f"{what} must be at least 1, not {text!r}")
    return values


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a run of about 2 minutes: fewer workloads, shorter repeats")
    mode.add_argument("--smoke", action="store_true",
                      help="a plumbing check in seconds (tiny sizes; its numbers mean nothing)")
    p.add_argument("--threads", default=None,
                   help="thread counts every framework is measured at, comma-separated (default 1,2, "
                        "capped at the CPUs this process may use); the best is reported")
    p.add_argument("--procs", type=int, default=2,
                   help="processes at each pair's reported thread count, at least (default 2)")
    p.add_argument("--spread", type=float, default=0.10,
                   help="noise threshold: a pair whose spread across processes or across the repeats in "
                        "one process exceeds it is rerun once, then flagged (default 0.10)")
    p.add_argument("--no-rerun", action="store_true", help="flag noisy pairs without running them again")
    p.add_argument("--frameworks", default=None,
                   help=f"comma-separated subset of {','.join(frameworks.ORDER)} (default all; --quick: all but "
                        "reference and torch-compile; --smoke: fastfit,reference); fastfit always runs. The neighbour rows need torch and sklearn "
                        "among them, the peak's torch.mm needs torch")
    p.add_argument("--only", default="",
                   help="comma-separated workload names or groups (main, sweep, step, f64, tiny, small, ...)")
    p.add_argument("--skip", default="",
                   help=f"comma-separated parts to leave out: {','.join(PARTS)}")
    p.add_argument("--repeats", type=int, help="timed repeats per process (default 5, --quick 3)")
    p.add_argument("--target-seconds", type=float, help="seconds per timed repeat (default 0.2, --quick 0.1)")
    p.add_argument("--peer-blas", choices=("same", "default"), default="same",
                   help="'same': the peers' OpenBLAS uses the kernels fastfit chose; 'default': their own choice")
    p.add_argument("--wait-idle", type=float,
                   help="before each timed process, wait up to this many seconds for other processes on the "
                        "machine to go quiet, 120 s in all at most (default 10 in the full run, else 0)")
    p.add_argument("--save", action="store_true",
                   help="also write the tracked benchmarks/results/latest.{md,json} and <mode>.{md,json}")
    p.add_argument("--out", default=None,
                   help=f"directory for this run's JSON and Markdown (default benchmarks/results/local, untracked)")
    args = p.parse_args(argv)
    if args.procs < 1:
        p.error("--procs must be at least 1")
    if not 0 < args.spread < 10:
        p.error("--spread must be a fraction such as 0.10")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - set(PARTS):
        p.error(f"--skip takes {','.join(PARTS)}, not {','.join(sorted(args.skip - set(PARTS)))}")
    if args.save and args.smoke:
        p.error("--save writes the tracked results; a --smoke run is not a measurement")
    return args


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Idle:
    """Waiting for a quiet machine, per process and over the whole run."""

    def __init__(self, per_call, budget=120.0):
        self.per_call, self.left = per_call, budget

    def __call__(self):
        if self.per_call <= 0 or self.left <= 0:
            return 0.0
        waited = procs.wait_idle(min(self.per_call, self.left))
        self.left -= waited
        return waited


def _import_drift(nb):
    """How far a neighbour process's times after ``import fastfit`` are from its times before
    (the larger relative difference of PyTorch's and scikit-learn's), or None when the process
    failed or has no such pair of phases (the process that imports fastfit first)."""
    phases = (nb.get("phases") or {}) if nb.get("ok") else {}
    before, after = phases.get("before"), phases.get("after import fastfit")
    if not before or not after:
        return None
    return max(abs(after[k] / before[k] - 1) for k in ("torch_s", "hgb_s"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    t_start = time.perf_counter()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    default = {"smoke": ["fastfit", "reference"],
               "quick": [f for f in frameworks.ORDER if f not in ("reference", "torch-compile")],
               "full": frameworks.ORDER}[mode]
    chosen = args.frameworks or ",".join(default)
    wanted = [f.strip() for f in chosen.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in frameworks.FRAMEWORKS]
    if unknown:
        raise SystemExit(f"unknown framework(s) {unknown}; choose from {frameworks.ORDER}")
    if "fastfit" not in wanted:
        wanted.insert(0, "fastfit")
    plan = make_plan(mode, wanted, [o.strip() for o in args.only.split(",") if o.strip()])
    if args.repeats:
        plan.repeats = args.repeats
    if args.target_seconds:
        plan.target_s = args.target_seconds
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    counts = _int_list(args.threads, "--threads") if args.threads else [1, 2]
    plan.thread_counts = tuple(t for t in counts if t <= cores) or (1,)
    if len(plan.thread_counts) < len(counts):
        plan.notes.append(f"thread counts above the {cores} CPUs available were dropped: {counts}")
    plan.procs, plan.spread_threshold = args.procs, args.spread
    top = max(plan.thread_counts)
    idle = Idle(args.wait_idle if args.wait_idle is not None else (10.0 if mode == "full" else 0.0))
    timeout = {"smoke": 120, "quick": 300, "full": 600}[mode]
    command = " ".join(["python -m benchmarks"] + argv)

    results = {"command": command, "mode": mode, "thread_counts": list(plan.thread_counts), "procs": plan.procs,
               "spread_threshold": plan.spread_threshold, "rerun": not args.no_rerun,
               "peer_blas": args.peer_blas, "repeats": plan.repeats, "target_s": plan.target_s,
               "machine": environment.machine(procs.REPO_ROOT), "notes": list(plan.notes),
               "frameworks": {}, "throughput": {}, "products": None, "peak": None, "longrun": None,
               "neighbour": {}, "memory": []}
    log(f"fastfit benchmarks ({mode}): threads {','.join(map(str, plan.thread_counts))}, "
        f"{len(plan.workloads)} workloads, >= {plan.procs} processes per pair")

    # ---- which frameworks run, and the empty-interpreter baseline of each
    env_ff = {t: procs.worker_env(t) for t in plan.thread_counts}
    bare = procs.run_worker({"task": "baseline", "framework": None, "threads": top}, env_ff[top], timeout)
    results["interpreter_baseline_bytes"] = bare.get("baseline_bytes")
    ff_base = procs.run_worker({"task": "baseline", "framework": "fastfit", "threads": top}, env_ff[top], timeout)
    if not ff_base.get("ok"):
        raise SystemExit(f"fastfit does not import: {ff_base.get('error')}")
    coretype = (ff_base.get("env") or {}).get("OPENBLAS_CORETYPE")
    results["fastfit_coretype"] = coretype
    env_peer = {t: procs.worker_env(t, coretype if args.peer_blas == "same" else None) for t in plan.thread_counts}
    if args.peer_blas == "same" and coretype:
        results["notes"].append(f"peers' OpenBLAS (NumPy's, for scikit-learn) ran with OPENBLAS_CORETYPE={coretype}, "
                                "the kernels fastfit chose (--peer-blas default lets it choose itself)")
    active = []
    for name in wanted:
        missing = frameworks.missing_modules(name)
        entry = {"label": frameworks.label(name), "available": not missing, "missing": missing}
        if missing:
            results["notes"].append(f"{frameworks.label(name)} skipped: {', '.join(missing)} not installed")
        else:
            env = env_ff if name in ("fastfit", "reference") else env_peer
            same_imports = {"torch-compile": "torch"}.get(name)     # the same imports: the same baseline
            if name == "fastfit":
                base = ff_base
            elif same_imports in results["frameworks"] and results["frameworks"][same_imports].get("baseline_ok"):
                base = dict(results["frameworks"][same_imports], ok=True)
            else:
                base = procs.run_worker({"task": "baseline", "framework": name, "threads": top}, env[top], timeout)
            entry.update(baseline_bytes=base.get("baseline_bytes"), describe=base.get("describe"),
                         blas=base.get("blas"), baseline_ok=base.get("ok"), error=base.get("error"))
            if base.get("ok"):
                active.append(name)
            else:
                results["notes"].append(f"{frameworks.label(name)} skipped: it failed to import ({base.get('error')})")
        results["frameworks"][name] = entry
    log("frameworks: " + ", ".join(active))

    data_dir = tempfile.mkdtemp(prefix="fastfit-bench-data-")
    try:
        _measure(plan, args, results, active, env_ff, env_peer, idle, timeout, data_dir, wanted)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    results["duration_s"] = time.perf_counter() - t_start
    results["targets"] = report.evaluate_targets(results)
    md = report.markdown(results)
    for path in _write(results, md, args):
        log(f"wrote {path}")
    print(md)
    log(f"done in {results['duration_s']:.0f} s")
    return 0


def _measure(plan, args, results, active, env_ff, env_peer, idle, timeout, data_dir, wanted):
    top = max(plan.thread_counts)
    min_s = {"smoke": 0.005, "quick": 0.02, "full": 0.1}[plan.mode]

    # ---- the machine's peak: large square products, every backend, every thread count
    peak_spec = {"task": "peak", "threads": top, "n": plan.peak_n, "repeats": plan.peak_repeats,
                 "thread_counts": list(plan.thread_counts), "torch": "torch" in active}
    if "peak" not in args.skip:
        log(f"machine peak: {plan.peak_n}^3 products ...")
        idle()
        results["peak"] = _log_peak(procs.run_worker(peak_spec, env_ff[top], timeout))

    # ---- throughput: per workload, its products alone, then each framework at each thread count
    probes = MachineProbe(lambda t: procs.run_worker({"task": "probe", "threads": t}, env_ff[t], 120),
                          plan.thread_counts)
    results["machine_probes"] = probes.history
    pairs = [(w, f) for w in plan.workloads for f in active if frameworks.supports(f, w, plan)]
    results["products"] = {"ok": True, "workloads": {}, "skipped": "products" in args.skip}
    done = 0
    for wl in plan.workloads:
        cached_data(data_dir, wl)                    # made once here, read by every worker
        slot = results["throughput"].setdefault(
            wl.name, {"workload": wl.as_dict(), "flops_per_sample": wl.flops_per_sample, "results": {}})
        if "products" not in args.skip:
            idle()
            lim = procs.run_worker({"task": "products", "threads": top, "workloads": [wl.as_dict()],
                                    "min_s": min_s}, env_ff[top], timeout)
            if lim.get("ok"):
                results["products"]["workloads"][wl.name] = dict(lim["workloads"][wl.name],
                                                                 other_load=lim.get("other_load"))
                results["products"]["call_overhead_us"] = lim.get("call_overhead_us")
            else:
                results["products"].setdefault("errors", {})[wl.name] = lim.get("error")
        for name in active:
            if not frameworks.supports(name, wl, plan):
                continue
            done += 1
            env = env_ff if name in ("fastfit", "reference") else env_peer
            tag = f"[{done}/{len(pairs)}] {wl.name:13s} {name:13s}"

            def run_one(t, name=name, env=env, tag=tag):
                spec = {"task": "throughput", "framework": name, "threads": t, "workload": wl.as_dict(),
                        "target_s": plan.target_s, "repeats": plan.repeats, "data_dir": data_dir}
                waited = idle()
                res = procs.run_worker(spec, env[t], timeout * (2 if name == "torch-compile" else 1))
                res["waited_for_idle_s"] = waited
                if res.get("ok"):
                    res.update(probes.judge(t))
                    log(f"{tag} {t} thr: {report.fmt_rate(res['samples_per_s']):>6s}/s  repeats ±"
                        f"{100 * res['repeat_spread']:.0f}%  load {res.get('other_load') or 0:.2f}  "
                        f"{res['wall_s']:.1f} s" + ("  machine slow: measured again" if res["machine_slow"] else ""))
                else:
                    log(f"{tag} {t} thr: failed: {str(res.get('error'))[:200]}")
                return res

            summary = measure_pair(run_one, plan.thread_counts, plan.procs, plan.spread_threshold,
                                   rerun=not args.no_rerun)
            slot["results"][name] = summary
            if summary.get("ok"):
                log(f"{tag} => {report.fmt_rate(summary['samples_per_s'])}/s at {summary['threads']} thr, "
                    f"{summary['procs']} processes ±{100 * summary['spread']:.0f}%"
                    + (" (rerun)" if summary["rerun"] else "") + (" FLAGGED" if summary["flagged"] else ""))

    # ---- the long run at batch 1
    if "longrun" not in args.skip:
        log(f"long run: {plan.longrun['epochs']} epochs of {plan.longrun['rows']} steps at batch 1 ...")
        idle()
        lr = procs.run_worker(dict(plan.longrun, task="longrun", threads=1), env_ff[1] if 1 in env_ff
                              else procs.worker_env(1), timeout)
        results["longrun"] = lr
        if lr.get("ok"):
            log("  us/step: " + ", ".join(f"{u:.2f}" for u in lr["us_per_step"])
                + f"; last/first {lr['ratio_last_first']:.2f}")
        else:
            log(f"  failed: {lr.get('error')}")

    # ---- neighbours: PyTorch and scikit-learn in the same process as fastfit
    if "neighbour" not in args.skip:
        if not {"torch", "sklearn"} <= set(active):
            results["notes"].append("neighbour rows skipped: they need both PyTorch and scikit-learn in the run")
        else:
            for order in ("fastfit last", "fastfit first"):
                log(f"neighbour ({order}) ...")
                attempts = []
                # Importing fastfit alone changes nothing the others read (tests/test_neighbour.py), so
                # "before" and "after import" differing by more than the spread threshold means the
                # machine changed speed mid-process (its slow stretches, see README): run it again,
                # at most twice, and keep the steadiest attempt.
                while True:
                    idle()
                    nb = procs.run_worker(dict(plan.neighbour, task="neighbour", order=order, pin=False),
                                          procs.user_env(), timeout)
                    attempts.append(nb)
                    drift = _import_drift(nb)
                    if drift is None or drift <= plan.spread_threshold or len(attempts) == 3 or not results["rerun"]:
                        break
                    log(f"  the machine's speed changed between 'before' and 'after import' ({drift:.0%}): again")
                nb = min(attempts, key=lambda a: _import_drift(a) or 0.0)
                if len(attempts) > 1:
                    nb = dict(nb, import_drifts=[_import_drift(a) for a in attempts])
                results["neighbour"][order] = nb
                if nb.get("ok"):
                    log("  " + "; ".join(f"{k}: torch {v['torch_s']:.3f} s, HGB {v['hgb_s']:.3f} s"
                                         for k, v in nb["phases"].items()))
                else:
                    log(f"  failed: {nb.get('error')}")

    # ---- memory_report against measured memory
    if "memory" not in args.skip and plan.memory_batches:
        env_mem = procs.worker_env(top, extra={"MALLOC_MMAP_THRESHOLD_": "131072"})
        for B in plan.memory_batches:
            res = procs.run_worker({"task": "memory", "threads": top, "sizes": list(plan.memory_sizes),
                                    "batch": B}, env_mem, timeout)
            results["memory"].append(res)
            if res.get("ok"):
                log(f"memory batch {B}: measured {res['training_bytes'] / 2**20:.1f} MiB, "
                    f"report {res['report']['total'] / 2**20:.1f} MiB")
            else:
                log(f"memory batch {B}: failed: {res.get('error')}")

    # ---- the peak once more at the end (full run): a peak taken while the machine was busy would
    # flatter every share of it, so each rate is the better of the two measurements
    if "peak" not in args.skip and plan.mode == "full" and (results["peak"] or {}).get("ok"):
        log("machine peak, second measurement ...")
        idle()
        again = _log_peak(procs.run_worker(peak_spec, env_ff[top], timeout))
        if again.get("ok"):
            results["peak"] = merge_peaks(results["peak"], again)


def _log_peak(peak):
    if peak.get("ok"):
        for dt, r in peak["peak"].items():
            log(f"  {dt}: {r['gflops']:.0f} GFLOP/s ({r['backend']}, {r['threads']} threads), "
                f"other load {peak.get('other_load') or 0:.2f}")
    else:
        log(f"  failed: {peak.get('error')}")
    return peak


def merge_peaks(a, b):
    """Two peak measurements as one: each (backend, dtype, threads) at the better of its two rates."""
    best = {}
    for r in a["rates"] + b["rates"]:
        key = (r["backend"], r["dtype"], r["threads"])
        if key not in best or r["gflops"] > best[key]["gflops"]:
            best[key] = r
    rates = list(best.values())
    peak = {dt: max((r for r in rates if r["dtype"] == dt), key=lambda r: r["gflops"])
            for dt in ("float32", "float64") if any(r["dtype"] == dt for r in rates)}
    return dict(a, rates=rates, peak=peak, measurements=2, errors=a.get("errors", []) + b.get("errors", []),
                other_load=[a.get("other_load"), b.get("other_load")])


def _write(results, md, args):
    """Where the results go: an untracked folder unless --out or --save says otherwise."""
    paths = []

    def put(directory, stem):
        os.makedirs(directory, exist_ok=True)
        for ext, text in (("json", json.dumps(results, indent=1, default=str)), ("md", md)):
            path = os.path.join(directory, f"{stem}.{ext}")
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
            paths.append(path)

    out = args.out or LOCAL_DIR
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    put(out, "latest")
    put(out, f"{results['mode']}-{stamp}" if args.out is None else results["mode"])
    if args.save:
        if args.only or args.skip or args.frameworks:
            log("note: --save with --only/--skip/--frameworks writes a partial run to the tracked results")
        put(RESULTS_DIR, "latest")
        put(RESULTS_DIR, results["mode"])
    return paths
