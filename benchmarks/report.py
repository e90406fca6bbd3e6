"""The issue's targets, checked, and the Markdown report.

Ratios are always fastfit's throughput over the peer's (above 1: fastfit is
faster). "% of limit" is fastfit's samples/s over the GEMM-bound limit measured
in the same run (gemm_bound.py).
"""
from .frameworks import ORDER, PEERS, label

MiB = 2 ** 20
NOISY = 0.25  # other processes kept this many cores busy: the row's timing is suspect


# ---------------------------------------------------------------- formatting

def fmt_rate(x):
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_ratio(r):
    return "—" if r is None else (f"{r:.1f}x" if r < 10 else f"{r:.0f}x")


def fmt_pct(r):
    return "—" if r is None else f"{100 * r:.0f}%"


def fmt_mib(b):
    return "—" if b is None else f"{b / MiB:.1f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- lookups

def rate(results, wl_name, fw):
    r = results["throughput"].get(wl_name, {}).get("results", {}).get(fw)
    return r["samples_per_s"] if r and r.get("ok") else None


def result(results, wl_name, fw):
    r = results["throughput"].get(wl_name, {}).get("results", {}).get(fw)
    return r if r and r.get("ok") else None


def ratio(results, wl_name, peer):
    a, b = rate(results, wl_name, "fastfit"), rate(results, wl_name, peer)
    return a / b if a and b else None


def limit(results, wl_name):
    g = results.get("gemm") or {}
    if not g.get("ok"):
        return None
    return (g["workloads"].get(wl_name) or {}).get("limit_samples_per_s")


def fraction(results, wl_name):
    a, lim = rate(results, wl_name, "fastfit"), limit(results, wl_name)
    return a / lim if a and lim else None


def workloads(results, group):
    return [(name, slot["workload"]) for name, slot in results["throughput"].items()
            if slot["workload"]["group"] == group]


def frameworks_run(results):
    return [f for f in ORDER if results["frameworks"].get(f, {}).get("available")
            and results["frameworks"][f].get("baseline_ok")]


def us_per_step(results, wl_name, fw):
    r, wl = rate(results, wl_name, fw), results["throughput"].get(wl_name, {}).get("workload")
    return 1e6 * wl["batch"] / r if r and wl else None


def noisy(results, wl_name):
    slot = results["throughput"].get(wl_name, {}).get("results", {})
    lim = ((results.get("gemm") or {}).get("workloads") or {}).get(wl_name) or {}
    loads = [r.get("other_load") or 0 for r in slot.values()] + [lim.get("other_load") or 0]
    return max(loads) > NOISY


# ---------------------------------------------------------------- targets

def _target(what, measured, goal, ok, miss=None):
    status = "not measured" if ok is None else ("met" if ok else "missed" + (f" ({miss})" if miss else ""))
    return {"target": what, "measured": measured, "goal": goal, "status": status}


def evaluate_targets(results):
    T = []

    def vs(wl, peer, need, text):
        r = ratio(results, wl, peer)
        T.append(_target(text, fmt_ratio(r), f">= {need}x", None if r is None else r >= need,
                         None if r is None else f"{r / need:.2f} of the goal"))

    def frac(wl, need, text):
        r = fraction(results, wl)
        T.append(_target(text, fmt_pct(r), f">= {need:.0%}", None if r is None else r >= need,
                         None if r is None else f"{100 * (need - r):.0f} points short"))

    vs("tiny-b32", "jax", 1.5, "tiny b32: fastfit / JAX-scan")
    vs("tiny-b32", "torch", 10, "tiny b32: fastfit / PyTorch")
    us = us_per_step(results, "tiny-b1", "fastfit")
    T.append(_target("tiny b1: fastfit us per step", "—" if us is None else f"{us:.2f} us", "<= 3 us",
                     None if us is None else us <= 3, None if us is None else f"{us / 3:.1f}x the budget"))
    vs("small-b64", "jax", 1.5, "small b64: fastfit / JAX-scan")
    frac("medium-b128", 0.85, "medium b128: fraction of the GEMM-bound limit")
    vs("medium-b128", "jax", 1.3, "medium b128: fastfit / JAX-scan")
    frac("large-b512", 0.90, "large b512: fraction of the GEMM-bound limit")

    mem = [m for m in results.get("memory", []) if m.get("ok")]
    if mem:
        worst = max(mem, key=lambda m: abs(m["training_bytes"] / m["report"]["total"] - 1))
        dev = worst["training_bytes"] / worst["report"]["total"] - 1
        T.append(_target("peak memory of a fit vs memory_report (batches "
                         f"{min(m['batch'] for m in mem)}-{max(m['batch'] for m in mem)})",
                         f"worst {dev:+.1%} (batch {worst['batch']})", "within 10%", abs(dev) <= 0.10,
                         f"{abs(dev):.0%} off"))
    else:
        T.append(_target("peak memory of a fit vs memory_report", "—", "within 10%", None))
    mine = result(results, "medium-b128", "fastfit")
    base = results["frameworks"]
    if mine:
        own = mine["max_rss_bytes"] - base["fastfit"]["baseline_bytes"]
        others = {p: result(results, "medium-b128", p) for p in PEERS}
        others = {p: r["max_rss_bytes"] - base[p]["baseline_bytes"] for p, r in others.items() if r}
        if others:
            least = min(others, key=others.get)
            T.append(_target("medium b128: fastfit's peak RSS over its baseline vs the leanest peer's",
                             f"{own / MiB:.0f} vs {others[least] / MiB:.0f} MiB ({label(least)})",
                             "below every peer", own < others[least]))
    f64 = workloads(results, "f64")
    for name, wl in f64:
        vs(name, "sklearn", 3, f"{name.split('-')[0]} float64: fastfit / scikit-learn")
    if not f64:
        T.append(_target("float64: fastfit / scikit-learn", "—", ">= 3x", None))
    return T


# ---------------------------------------------------------------- Markdown

def _throughput_table(results, group_names):
    fws = frameworks_run(results)
    peers = [p for p in fws if p != "fastfit"]
    header = ["workload", "fastfit", "GEMM-bound limit", "% of limit"] + [label(p) for p in peers]
    rows = []
    for group in group_names:
        for name, wl in workloads(results, group):
            cells = [wl["label"] + (" ⚠" if noisy(results, name) else ""), fmt_rate(rate(results, name, "fastfit")),
                     fmt_rate(limit(results, name)), fmt_pct(fraction(results, name))]
            for p in peers:
                r = rate(results, name, p)
                cells.append("—" if r is None else f"{fmt_rate(r)} ({fmt_ratio(ratio(results, name, p))})")
            rows.append(cells)
    return table(header, rows)


def _step_table(results):
    fws = frameworks_run(results)
    names = [n for n, _ in workloads(results, "step")] + (["tiny-b32"] if "tiny-b32" in results["throughput"] else [])
    rows = []
    for name in names:
        wl = results["throughput"][name]["workload"]
        cells = [f"batch {wl['batch']}"]
        for f in fws:
            us = us_per_step(results, name, f)
            cells.append("—" if us is None else (f"{us:.2f}" if us < 10 else f"{us:.0f}"))
        rows.append(cells)
    return table(["tiny 64-128-10"] + [label(f) for f in fws], rows)


def _f64_table(results):
    rows = []
    for name, wl in workloads(results, "f64"):
        rows.append([wl["label"] + (" ⚠" if noisy(results, name) else ""), fmt_rate(rate(results, name, "fastfit")),
                     fmt_rate(rate(results, name, "sklearn")), fmt_ratio(ratio(results, name, "sklearn")),
                     fmt_rate(limit(results, name)), fmt_pct(fraction(results, name))])
    return table(["workload", "fastfit", "scikit-learn", "fastfit / scikit-learn", "GEMM-bound limit (dgemm)",
                  "% of limit"], rows)


def _gemm_table(results):
    g = results["gemm"]
    rows = []
    for name, lim in g["workloads"].items():
        wl = results["throughput"].get(name, {}).get("workload")
        if wl is None:
            continue
        rows.append([wl["label"], len(lim["gemms"]), f"{lim['flops_per_step'] / 1e6:.2f}",
                     f"{lim['step_us']:.1f}", f"{lim['gflops']:.0f}" if lim["gflops"] else "—",
                     fmt_rate(lim["limit_samples_per_s"]), fmt_rate(rate(results, name, "fastfit")),
                     fmt_pct(fraction(results, name))])
    return table(["workload", "GEMMs/step", "MFLOP/step", "GEMM us/step", "GEMM GFLOP/s", "limit samples/s",
                  "fastfit samples/s", "fastfit % of limit"], rows)


def _memory_section(results):
    mem = [m for m in results["memory"] if m.get("ok")]
    if not mem:
        return "Not measured."
    sizes = "-".join(str(s) for s in mem[0]["sizes"])
    rows = []
    for m in mem:
        r = m["report"]
        rows.append([m["batch"], fmt_mib(r["parameters"] + r["gradients"] + r["optimizer_state"]),
                     fmt_mib(r["activations"]), fmt_mib(r["backward_scratch"] + r["batch"]), fmt_mib(r["total"]),
                     fmt_mib(m["training_bytes"]), f"{m['training_bytes'] / r['total'] - 1:+.1%}",
                     fmt_mib(m["peak_bytes"]), fmt_mib(m["rss_before_model_bytes"])])
    out = [f"fastfit, {sizes}, float32, Adam. One process per batch size; training memory = peak RSS during "
           "the fit minus RSS before the model was built (see memory.py).", "",
           table(["batch", "params+grads+Adam (MiB)", "activations", "scratch+batch", "report total",
                  "measured", "measured vs report", "process peak RSS", "baseline RSS"], rows)]
    if len(mem) >= 2:
        xs = [m["batch"] for m in mem]
        ys = [m["training_bytes"] for m in mem]
        n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        icpt = my - slope * mx
        resid = max(abs(y - (icpt + slope * x)) for x, y in zip(xs, ys))
        r0, r1 = mem[0], mem[-1]
        per_row = (r1["report"]["total"] - r0["report"]["total"]) / (r1["batch"] - r0["batch"])
        act_row = (r1["report"]["activations"] - r0["report"]["activations"]) / (r1["batch"] - r0["batch"])
        fixed = r0["report"]["parameters"] + r0["report"]["gradients"] + r0["report"]["optimizer_state"]
        out += ["", f"Least-squares line through the measurements: {icpt / MiB:.1f} MiB + {slope:.0f} bytes x batch "
                f"(largest residual {resid / MiB:.2f} MiB). The report's line: {fixed / MiB:.1f} MiB "
                f"(parameters, gradients, Adam state: independent of the batch) + {per_row:.0f} bytes x batch, "
                f"of which the activations are {act_row:.0f} bytes/row and the rest the backward scratch and "
                "the gathered batch."]
        blas = [m["blas_and_threads_bytes"] for m in mem]
        out += ["", f"Not counted as training: OpenBLAS's packing buffers and the thread pools, touched once per "
                f"process by the first products: {min(blas) / MiB:.1f}-{max(blas) / MiB:.1f} MiB here."]
    return "\n".join(out)


def _peak_table(results):
    fws = frameworks_run(results)
    base = results["frameworks"]
    rows = [["empty interpreter + imports"] + [fmt_mib(base[f].get("baseline_bytes")) for f in fws]]
    for name, slot in results["throughput"].items():
        wl = slot["workload"]
        if wl["group"] not in ("main", "f64"):
            continue
        cells = [wl["label"]]
        for f in fws:
            r = result(results, name, f)
            cells.append("—" if r is None else fmt_mib(r["max_rss_bytes"] - base[f]["baseline_bytes"]))
        rows.append(cells)
    return table(["peak RSS, MiB (rows: minus the first row)"] + [label(f) for f in fws], rows)


def _env_section(results):
    m = results["machine"]
    v = m["versions"]
    lines = [f"- Machine: {m['cpu']}, {m['cores']} cores" + (f" ({m['hypervisor']} guest)" if m["hypervisor"] else "")
             + f", {m['memory_bytes'] / 2**30:.0f} GiB; {m['platform']}; AVX flags: {' '.join(m['cpu_flags'])}",
             f"- Versions: Python {v['python']}, fastfit {m['fastfit_commit'] or '?'} (built core "
             + ", ".join(f"{k} {h}" for k, h in (m.get("fastfit_built") or {}).items()) + "), "
             + ", ".join(f"{k} {val}" for k, val in v.items() if k != "python" and val)]
    fw = results["frameworks"]
    ff = (fw.get("fastfit", {}).get("describe") or {}).get("blas_info") or {}
    lib = ff.get("scipy_blas") or {}
    lines.append(f"- fastfit's BLAS (SciPy's): {lib.get('internal_api')} {lib.get('version')}, kernels "
                 f"{lib.get('architecture')}, threading {lib.get('threading_layer')}; kernel choice: "
                 f"{ff.get('kernel_decision')}")
    for name in frameworks_run(results):
        blas = [b for b in (fw[name].get("blas") or []) if b.get("user_api") in ("blas", "openmp")]
        desc = "; ".join(f"{b.get('internal_api')} {b.get('version') or ''} {b.get('architecture') or ''} "
                         f"({b.get('prefix')})".replace("  ", " ") for b in blas)
        lines.append(f"- {label(name)} process, threadpoolctl: {desc or 'no BLAS/OpenMP library loaded'}")
    t = fw.get("torch", {}).get("describe") or {}
    if t:
        lines.append(f"- PyTorch {t.get('torch')}: " + "; ".join(s.lstrip("- ") for s in t.get("config_summary", [])))
        r = result(results, "tiny-b32", "torch")
        if r:
            lines.append(f"- PyTorch optimizer: torch.optim.Adam({r.get('adam')}=True)")
    j = fw.get("jax", {}).get("describe") or {}
    if j:
        lines.append(f"- JAX {j.get('jax')} / jaxlib {j.get('jaxlib')}, backend {j.get('backend')} "
                     f"({j.get('platform_version')}), devices {', '.join(j.get('devices', []))}")
    s = fw.get("sklearn", {}).get("describe") or {}
    if s:
        lines.append(f"- scikit-learn {s.get('sklearn')}")
    g = results.get("gemm") or {}
    if g.get("ok"):
        sq = g["square"]
        rates = ", ".join(f"{t} thread{'s' if t != '1' else ''}: {d['median_gflops']:.0f} GFLOP/s "
                          f"(best {d['best_gflops']:.0f})" for t, d in sq["threads"].items())
        lines.append(f"- Raw sgemm, SciPy's OpenBLAS, {sq['n']}x{sq['n']}x{sq['n']}: {rates}. "
                     f"f2py call overhead subtracted from the per-step GEMM times: "
                     f"{g['call_overhead_us']['float32']:.2f} us per call")
    lines.append(f"- Threads: {results['threads']} for every framework (worker CPU affinity, OMP/OpenBLAS/MKL_NUM_THREADS, "
                 "torch.set_num_threads, threadpoolctl, fastfit n_threads)")
    return "\n".join(lines)


def markdown(results):
    out = [f"# fastfit benchmarks ({results['mode']})", "",
           f"`{results['command']}` on {results['machine']['date']}, {results['duration_s']:.0f} s. "
           f"float32 unless marked, Adam (lr 1e-3), softmax cross-entropy, random data, "
           f"{results['threads']} threads for every framework, each (framework, workload) in its own process. "
           f"samples/s: median of {results['repeats']} repeats of ~{results['target_s']:g} s after a warm-up epoch. "
           "In brackets: fastfit's speed over that peer.", ""]
    if any(noisy(results, n) for n in results["throughput"]):
        out += [f"⚠ marks rows measured while other processes kept more than {NOISY} cores of this machine busy: "
                "their multi-threaded timings are unreliable.", ""]
    out += ["## Throughput, samples/s", "", _throughput_table(results, ["main", "sweep"]), "",
            "## Per step, microseconds (tiny network)", "", _step_table(results), ""]
    if workloads(results, "f64"):
        out += ["## float64 against scikit-learn", "", _f64_table(results), ""]
    if (results.get("gemm") or {}).get("ok"):
        out += ["## GEMM-bound limit", "",
                "The GEMMs of one training step at the workload's shapes, timed alone with SciPy's OpenBLAS "
                "(the library and kernels fastfit uses) at the same thread count: the samples/s the workload "
                "would reach if nothing but its products took time.", "", _gemm_table(results), ""]
    out += ["## Memory: `memory_report` against measurement", "", _memory_section(results), "",
            "## Peak memory per process", "",
            "Peak RSS (`ru_maxrss`) of each throughput process minus the peak of an interpreter that only imported "
            "the same framework. All processes of a workload hold the same data (about 32 MiB of inputs).", "",
            _peak_table(results), "",
            "## Targets (issue 3)", "",
            table(["target", "measured", "goal", "status"],
                  [[t["target"], t["measured"], t["goal"], t["status"]] for t in results["targets"]]), "",
            "## Environment", "", _env_section(results), ""]
    notes = list(results.get("notes", []))
    shas = {r.get("fastfit_core_sha") for slot in results["throughput"].values() for r in slot["results"].values()
            if r.get("fastfit_core_sha")}
    if len(shas) > 1:
        notes.append(f"fastfit's compiled core changed during the run (builds {', '.join(sorted(shas))}): "
                     "its rows do not all measure the same code")
    for name, slot in results["throughput"].items():
        for f, r in slot["results"].items():
            if not r.get("ok"):
                notes.append(f"{label(f)} on {name} failed: {r.get('error')}")
            for n in r.get("notes", []) or []:
                if n not in notes:
                    notes.append(f"{label(f)}: {n}")
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
