"""The whole run, in order: baselines, GEMM-bound limits, throughput, memory, report."""
import argparse
import json
import os
import sys
import time

from . import environment, frameworks, procs, report
from .workloads import make_plan

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a one-minute smoke run: fewer workloads and repeats")
    p.add_argument("--threads", type=int, default=2, help="threads for every framework (default 2)")
    p.add_argument("--frameworks", default=",".join(frameworks.ORDER),
                   help=f"comma-separated subset of {','.join(frameworks.ORDER)}")
    p.add_argument("--only", default="",
                   help="comma-separated workload names or groups (main, sweep, step, f64, tiny, small, ...)")
    p.add_argument("--repeats", type=int, help="timed repeats per measurement (default 5, --quick 3)")
    p.add_argument("--target-seconds", type=float, help="seconds per timed repeat (default 1.0, --quick 0.12)")
    p.add_argument("--peer-blas", choices=("same", "default"), default="same",
                   help="'same': the peers' OpenBLAS uses the kernels fastfit chose; 'default': their own choice")
    p.add_argument("--wait-idle", type=float,
                   help="before each timed process, wait up to this many seconds for other processes on the "
                        "machine to go quiet (default 60, --quick 0)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory_report check")
    p.add_argument("--out", default=RESULTS_DIR, help="directory for the JSON and Markdown results")
    return p.parse_args(argv)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    t_start = time.perf_counter()
    wanted = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in frameworks.FRAMEWORKS]
    if unknown:
        raise SystemExit(f"unknown framework(s) {unknown}; choose from {frameworks.ORDER}")
    if "fastfit" not in wanted:
        wanted.insert(0, "fastfit")
    plan = make_plan(args.quick, wanted, [o.strip() for o in args.only.split(",") if o.strip()])
    if args.repeats:
        plan.repeats = args.repeats
    if args.target_seconds:
        plan.target_s = args.target_seconds
    threads = args.threads
    wait = args.wait_idle if args.wait_idle is not None else (0.0 if plan.quick else 60.0)
    timeout = 180 if plan.quick else 1200
    command = " ".join(["python -m benchmarks"] + (sys.argv[1:] if argv is None else list(argv)))

    results = {"command": command, "mode": "quick" if plan.quick else "full", "threads": threads,
               "peer_blas": args.peer_blas, "repeats": plan.repeats, "target_s": plan.target_s,
               "machine": environment.machine(procs.REPO_ROOT), "notes": list(plan.notes),
               "frameworks": {}, "throughput": {}, "memory": [], "gemm": None}
    log(f"fastfit benchmarks ({results['mode']}): {threads} threads, {len(plan.workloads)} workloads")

    # ---- which frameworks run, and the empty-interpreter baseline of each
    env_ff = procs.worker_env(threads)
    bare = procs.run_worker({"task": "baseline", "framework": None, "threads": threads}, env_ff, timeout)
    results["interpreter_baseline_bytes"] = bare.get("baseline_bytes")
    ff_base = procs.run_worker({"task": "baseline", "framework": "fastfit", "threads": threads}, env_ff, timeout)
    if not ff_base.get("ok"):
        raise SystemExit(f"fastfit does not import: {ff_base.get('error')}")
    coretype = (ff_base.get("env") or {}).get("OPENBLAS_CORETYPE")
    results["fastfit_coretype"] = coretype
    env_peer = procs.worker_env(threads, coretype if args.peer_blas == "same" else None)
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
            base = ff_base if name == "fastfit" else procs.run_worker(
                {"task": "baseline", "framework": name, "threads": threads},
                env_peer if name != "reference" else env_ff, timeout)
            entry.update(baseline_bytes=base.get("baseline_bytes"), describe=base.get("describe"),
                         blas=base.get("blas"), baseline_ok=base.get("ok"), error=base.get("error"))
            if base.get("ok"):
                active.append(name)
            else:
                results["notes"].append(f"{frameworks.label(name)} skipped: it failed to import ({base.get('error')})")
        results["frameworks"][name] = entry
    log("frameworks: " + ", ".join(active))

    # ---- the raw sgemm rate; then, per workload, its GEMM-bound limit right before its runs
    log("raw sgemm ...")
    if wait:
        procs.wait_idle(wait)
    min_s = 0.02 if plan.quick else 0.1
    gemm = procs.run_worker({"task": "gemm", "threads": threads, "workloads": [], "min_s": min_s,
                             "square_n": plan.square_n, "square_repeats": 3 if plan.quick else 7}, env_ff, timeout)
    results["gemm"] = gemm
    if gemm.get("ok"):
        sq = gemm["square"]["threads"].get(str(threads), {})
        log(f"  sgemm {plan.square_n}^3 at {threads} threads: {sq.get('median_gflops', 0):.0f} GFLOP/s")
    else:
        log(f"  failed: {gemm.get('error')}")

    # ---- throughput: one subprocess per (framework, workload)
    pairs = [(w, f) for w in plan.workloads for f in active if frameworks.supports(f, w)]
    i = 0
    for wl in plan.workloads:
        if gemm.get("ok"):
            if wait:
                procs.wait_idle(wait)
            lim = procs.run_worker({"task": "gemm", "threads": threads, "workloads": [wl.as_dict()],
                                    "min_s": min_s, "square_n": 0}, env_ff, timeout)
            if lim.get("ok"):
                gemm["workloads"][wl.name] = dict(lim["workloads"][wl.name], other_load=lim.get("other_load"))
        for name in active:
            if not frameworks.supports(name, wl):
                continue
            i += 1
            spec = {"task": "throughput", "framework": name, "threads": threads, "workload": wl.as_dict(),
                    "target_s": plan.target_s, "repeats": plan.repeats}
            env = env_ff if name in ("fastfit", "reference") else env_peer
            waited = procs.wait_idle(wait) if wait else 0.0
            res = procs.run_worker(spec, env, timeout)
            res["waited_for_idle_s"] = waited
            slot = results["throughput"].setdefault(wl.name, {"workload": wl.as_dict(), "results": {}})
            slot["results"][name] = res
            if res.get("ok"):
                log(f"[{i}/{len(pairs)}] {wl.name:14s} {name:10s} {report.fmt_rate(res['samples_per_s']):>7s} "
                    f"samples/s ({res['wall_s']:.1f} s, other load {res.get('other_load') or 0:.2f})")
            else:
                log(f"[{i}/{len(pairs)}] {wl.name:14s} {name:10s} failed: {res.get('error')}")

    # ---- memory_report against measured memory
    if not args.no_memory:
        env_mem = procs.worker_env(threads, extra={"MALLOC_MMAP_THRESHOLD_": "131072"})
        for B in plan.memory_batches:
            res = procs.run_worker({"task": "memory", "threads": threads, "sizes": list(plan.memory_sizes),
                                    "batch": B}, env_mem, timeout)
            results["memory"].append(res)
            if res.get("ok"):
                log(f"memory batch {B}: measured {res['training_bytes'] / 2**20:.1f} MiB, "
                    f"report {res['report']['total'] / 2**20:.1f} MiB")
            else:
                log(f"memory batch {B}: failed: {res.get('error')}")

    results["duration_s"] = time.perf_counter() - t_start
    results["targets"] = report.evaluate_targets(results)
    md = report.markdown(results)
    os.makedirs(args.out, exist_ok=True)
    for stem in ("latest", results["mode"]):
        with open(os.path.join(args.out, stem + ".json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        with open(os.path.join(args.out, stem + ".md"), "w") as f:
            f.write(md)
    print(md)
    log(f"wrote {args.out}/latest.json, latest.md (and {results['mode']}.*) in {results['duration_s']:.0f} s")
    return 0
