"""The project's performance targets, checked, and the Markdown report.

Ratios are always fastfit's throughput over the peer's (above 1: fastfit is
faster), each framework at its own best thread count. "OpenBLAS products alone"
is the samples/s a workload would reach if only its matrix products took time,
with SciPy's OpenBLAS (products.py); "% of peak" sets samples/s x the products'
flops per sample against the best large-GEMM rate measured on the machine
(peak.py).
"""
from .frameworks import ORDER, PEERS, label
from .timing import MIN_STEPS_PER_REPEAT

MiB = 2 ** 20
LOADED = 0.25  # other processes kept this many cores busy meanwhile: noted in the details


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
    return "—" if r is None else (f"{r:.2f}x" if r < 1 else f"{r:.1f}x" if r < 10 else f"{r:.0f}x")


def fmt_pct(r):
    if r is None:
        return "—"
    return f"{100 * r:.1f}%" if r < 0.1 else f"{100 * r:.0f}%"


def fmt_mib(b):
    return "—" if b is None else f"{b / MiB:.1f}"


def fmt_us(us):
    return "—" if us is None else (f"{us:.2f}" if us < 10 else f"{us:.0f}")


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- lookups

def result(results, wl_name, fw):
    r = results["throughput"].get(wl_name, {}).get("results", {}).get(fw)
    return r if r and r.get("ok") else None


def rate(results, wl_name, fw):
    r = result(results, wl_name, fw)
    return r["samples_per_s"] if r else None


def ratio(results, wl_name, peer):
    a, b = rate(results, wl_name, "fastfit"), rate(results, wl_name, peer)
    return a / b if a and b else None


def products(results, wl_name):
    """Samples/s of the workload's OpenBLAS products alone (None if not measured)."""
    p = results.get("products") or {}
    return ((p.get("workloads") or {}).get(wl_name) or {}).get("samples_per_s")


def of_products(results, wl_name):
    a, lim = rate(results, wl_name, "fastfit"), products(results, wl_name)
    return a / lim if a and lim else None


def peak_gflops(results, dtype):
    p = results.get("peak") or {}
    return ((p.get("peak") or {}).get(dtype) or {}).get("gflops") if p.get("ok") else None


def of_peak(results, wl_name, samples_per_s):
    slot = results["throughput"].get(wl_name)
    if not slot or not samples_per_s:
        return None
    peak = peak_gflops(results, slot["workload"]["dtype"])
    return samples_per_s * slot["flops_per_sample"] / (peak * 1e9) if peak else None


def workloads(results, group):
    return [(name, slot["workload"]) for name, slot in results["throughput"].items()
            if slot["workload"]["group"] == group]


def frameworks_run(results):
    return [f for f in ORDER if results["frameworks"].get(f, {}).get("available")
            and results["frameworks"][f].get("baseline_ok")]


def columns(results, names):
    """The frameworks that have at least one row among ``names``."""
    return [f for f in frameworks_run(results)
            if any(f in results["throughput"][n]["results"] for n in names)]


def us_per_step(results, wl_name, fw):
    r, wl = rate(results, wl_name, fw), results["throughput"].get(wl_name, {}).get("workload")
    return 1e6 * wl["batch"] / r if r and wl else None


def cell(results, wl_name, fw, value, after=""):
    """A framework's cell: its value, the thread count that won, ``after``, ⚠ if the pair stayed noisy."""
    slot = results["throughput"].get(wl_name, {}).get("results", {}).get(fw)
    if slot is None:
        return "—"
    if not slot.get("ok"):
        return "failed"
    flag = " ⚠" if slot.get("flagged") else ""
    return f"{value} ({slot['threads']}t){after}{flag}"


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

    def best_peer(wl):
        """The faster of PyTorch (eager or compiled) and JAX on this workload."""
        peers = [p for p in ("torch", "torch-compile", "jax") if rate(results, wl, p)]
        return max(peers, key=lambda p: rate(results, wl, p)) if peers else "jax"

    def vs_best(wl, need, text):
        peer = best_peer(wl)
        vs(wl, peer, need, f"{text}: fastfit / the faster of PyTorch and JAX ({label(peer)})")

    def of_machine_peak(wl, need, text):
        mine = rate(results, wl, "fastfit")
        r = of_peak(results, wl, mine) if mine else None
        T.append(_target(text, fmt_pct(r), f">= {need:.0%}", None if r is None else r >= need,
                         None if r is None else f"{100 * (need - r):.0f} points short"))

    vs("tiny-b32", "jax", 2.5, "tiny b32: fastfit / JAX-scan")
    torch_best = max(("torch", "torch-compile"), key=lambda f: rate(results, "tiny-b32", f) or 0)
    vs("tiny-b32", torch_best, 10, f"tiny b32: fastfit / PyTorch (the faster of eager and compile: "
                                   f"{label(torch_best)})")
    us = us_per_step(results, "tiny-b1", "fastfit")
    T.append(_target("tiny b1: fastfit us per step", "—" if us is None else f"{us:.2f} us", "<= 3 us",
                     None if us is None else us <= 3, None if us is None else f"{us / 3:.1f}x the budget"))
    vs_best("small-b64", 1.5, "small b64")
    vs_best("medium-b128", 1.3, "medium b128")
    vs_best("large-b512", 1.1, "large b512")
    of_machine_peak("medium-b128", 0.70, "medium b128: fastfit's share of the machine's peak")
    of_machine_peak("large-b512", 0.85, "large b512: fastfit's share of the machine's peak")

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
    f64 = [name for name, _ in workloads(results, "f64") if name.split("-")[0] in ("small", "medium")]
    for name in f64:
        vs(name, "sklearn", 3, f"{name.split('-')[0]} float64: fastfit / scikit-learn")
    if not f64:
        T.append(_target("float64 on small and medium: fastfit / scikit-learn", "—", ">= 3x", None))
    return T


# ---------------------------------------------------------------- tables

def _throughput_table(results, group_names):
    names = [n for g in group_names for n, _ in workloads(results, g)]
    peers = [p for p in columns(results, names) if p != "fastfit"]
    header = ["workload", "fastfit", "OpenBLAS products alone", "fastfit / products"] + [label(p) for p in peers]
    rows = []
    for name in names:
        wl = results["throughput"][name]["workload"]
        cells = [wl["label"], cell(results, name, "fastfit", fmt_rate(rate(results, name, "fastfit"))),
                 fmt_rate(products(results, name)), fmt_pct(of_products(results, name))]
        for p in peers:
            r = rate(results, name, p)
            cells.append(cell(results, name, p, fmt_rate(r), f" [{fmt_ratio(ratio(results, name, p))}]"))
        rows.append(cells)
    return table(header, rows)


def _step_table(results):
    names = [n for n, _ in workloads(results, "step")] + (["tiny-b32"] if "tiny-b32" in results["throughput"] else [])
    fws = columns(results, names)
    rows = []
    for name in names:
        wl = results["throughput"][name]["workload"]
        rows.append([f"batch {wl['batch']}"] + [cell(results, name, f, fmt_us(us_per_step(results, name, f)))
                                                for f in fws])
    return table(["tiny 64-128-10"] + [label(f) for f in fws], rows)


def _peak_share_table(results):
    names = list(results["throughput"])
    fws = columns(results, names)
    rows = []
    for name in names:
        slot = results["throughput"][name]
        wl = slot["workload"]
        rows.append([wl["label"], f"{slot['flops_per_sample'] / 1e6:.3g}",
                     fmt_pct(of_peak(results, name, products(results, name)))]
                    + [fmt_pct(of_peak(results, name, rate(results, name, f))) for f in fws])
    return table(["workload", "MFLOP/sample", "OpenBLAS products alone"] + [label(f) for f in fws], rows)


def _peak_rates_table(results):
    p = results["peak"]
    threads = sorted({r["threads"] for r in p["rates"]})
    keys = []
    for r in p["rates"]:
        if (r["backend"], r["dtype"]) not in keys:
            keys.append((r["backend"], r["dtype"]))
    rows = []
    for backend, dtype in keys:
        row = [backend, dtype]
        for t in threads:
            r = next((r for r in p["rates"] if (r["backend"], r["dtype"], r["threads"]) == (backend, dtype, t)), None)
            best = r is not None and p["peak"].get(dtype) == r
            row.append("—" if r is None else (f"**{r['gflops']:.0f}**" if best else f"{r['gflops']:.0f}"))
        rows.append(row)
    return table(["backend", "dtype"] + [f"{t} thread{'s' if t > 1 else ''}, GFLOP/s" for t in threads], rows)


def _f64_table(results):
    rows = []
    for name, wl in workloads(results, "f64"):
        rows.append([wl["label"], cell(results, name, "fastfit", fmt_rate(rate(results, name, "fastfit"))),
                     cell(results, name, "sklearn", fmt_rate(rate(results, name, "sklearn"))),
                     fmt_ratio(ratio(results, name, "sklearn")), fmt_rate(products(results, name)),
                     fmt_pct(of_products(results, name))])
    return table(["workload", "fastfit", "scikit-learn", "fastfit / scikit-learn", "OpenBLAS products alone (dgemm)",
                  "fastfit / products"], rows)


def _products_table(results):
    rows = []
    for name, lim in (results.get("products") or {}).get("workloads", {}).items():
        wl = results["throughput"].get(name, {}).get("workload")
        if wl is None:
            continue
        rows.append([wl["label"], len(lim["gemms"]), f"{lim['flops_per_step'] / 1e6:.2f}",
                     f"{lim['step_us']:.1f}", lim["threads"], f"{lim['gflops']:.0f}" if lim["gflops"] else "—",
                     fmt_rate(lim["samples_per_s"]), fmt_rate(rate(results, name, "fastfit")),
                     fmt_pct(of_products(results, name))])
    return table(["workload", "GEMMs/step", "MFLOP/step", "GEMM us/step", "threads", "GEMM GFLOP/s",
                  "products alone, samples/s", "fastfit samples/s", "fastfit / products"], rows)


def _details_table(results):
    counts = results["thread_counts"]
    rows = []
    for name, slot in results["throughput"].items():
        for f in ORDER:
            r = slot["results"].get(f)
            if r is None:
                continue
            if not r.get("ok"):
                rows.append([name, label(f)] + ["—"] * len(counts) + ["failed", "—", "—", "—", "—", "—",
                                                                       str(r.get("error"))[:120]])
                continue
            by = r.get("by_threads") or {}
            per_t = [f"{fmt_rate(by[str(t)]['samples_per_s'])} ({by[str(t)]['procs']})" if str(t) in by else "—"
                     for t in counts]
            load = r.get("other_load") or 0.0
            variant = r.get("variant") or ""
            comp = [p["compile_s"] for p in r.get("processes", []) if p.get("compile_s") is not None]
            if comp:
                lo, hi = min(comp), max(comp)
                variant += f"; compiling took {lo:.0f} s" if round(lo) == round(hi) else \
                    f"; compiling took {lo:.0f}-{hi:.0f} s"
            rows.append([name, label(f)] + per_t + [
                f"{fmt_rate(r['samples_per_s'])} ({r['threads']}t)", r["procs"],
                f"{100 * r['spread']:.0f}%", f"{100 * r['repeat_spread']:.0f}%",
                ("yes" if r["rerun"] else "no") + (" ⚠" if r["flagged"] else ""),
                str(r.get("machine_slow_replaced", "—")),
                f"{load:.2f}" + (" (loaded)" if load > LOADED else ""), variant])
    return table(["workload", "framework"] + [f"{t} thread{'s' if t > 1 else ''} (processes)" for t in counts]
                 + ["reported", "processes", "spread across processes", "largest spread of repeats",
                    "rerun", "replaced (machine slow)", "other load (cores)", "variant kept"], rows)


def _neighbour_section(results):
    nb = results.get("neighbour") or {}
    last = nb.get("fastfit last") or {}
    if not last.get("ok"):
        return "Not measured" + (f": {last.get('error')}" if last.get("error") else ".")
    phases = last["phases"]
    before = phases["before"]
    thr = results.get("spread_threshold", 0.10)

    def show(ph, key):
        runs = ph[key.replace("_s", "_runs")]
        noisy = len(runs) > 1 and (max(runs) - min(runs)) / min(runs) > thr
        return f"{ph[key]:.3f} s" + ("" if ph is before else f" ({ph[key] / before[key]:.2f}x)") + (" ⚠" if noisy else "")

    rows = []
    for key, what in (("torch_s", "PyTorch epoch"), ("hgb_s", "HistGradientBoostingClassifier.fit")):
        cells = [what] + [show(ph, key) for ph in phases.values()]
        first = nb.get("fastfit first") or {}
        if first.get("ok"):
            cells.append(show(first["phases"]["fastfit imported first"], key))
        rows.append(cells)
    header = ["in one process"] + list(phases)
    if (nb.get("fastfit first") or {}).get("ok"):
        header.append("another process, fastfit imported first")
    changed = {}
    for proc in (last, nb.get("fastfit first") or {}):
        if proc.get("ok"):
            start = proc.get("env_at_start") or list(proc["phases"].values())[0]["env"]
            end = list(proc["phases"].values())[-1]["env"]
            changed.update({f"{k}={v} ({proc['order']})": None for k, v in end.items() if start.get(k) != v})
    out = [table(header, rows), "",
           f"Times: best of {len(before['torch_runs'])} run(s) after a warm-up (all runs are in the JSON); in "
           "brackets, over the first column (above 1: slower). PyTorch ran "
           + f"{last['torch_threads']} threads, in the user's environment (no thread settings from the harness). "
           + f"⚠: its runs spread by more than {thr:.0%}. "
           + ("Environment variables changed by importing or running fastfit: "
              + ", ".join(changed) if changed
              else "fastfit changed none of the OpenMP/BLAS environment variables watched.")]
    drifts = last.get("import_drifts")
    if drifts:
        out.append("")
        out.append(f"The first process ran {len(drifts)} times: importing fastfit changes nothing the others read, "
                   "so a gap between the first two columns above the spread threshold is the machine changing "
                   "speed mid-process; the steadiest attempt is shown (gaps: "
                   + ", ".join(f"{d:.0%}" for d in drifts) + ").")
    return "\n".join(out)


def _longrun_section(results):
    lr = results.get("longrun") or {}
    if not lr.get("ok"):
        return "Not measured" + (f": {lr.get('error')}" if lr.get("error") else ".")
    rows = [[e + 1, f"{u:.2f}", "—" if lr["loss"][e] is None else f"{lr['loss'][e]:.4f}"]
            for e, u in enumerate(lr["us_per_step"])]
    sub = f"{lr['subnormal_params']} of {lr['n_params']} parameters"
    if "subnormal_state" in lr:
        sub += f" and {lr['subnormal_state']} of {lr['state_entries']} Adam state entries"
    return "\n".join([
        f"fastfit, {'-'.join(map(str, lr['sizes']))}, batch {lr['batch']}, Adam, random labels, {lr['rows']} rows: "
        f"{lr['epochs']} one-epoch fits of the same model and optimizer, 1 thread.", "",
        table(["epoch", "us per step", "training loss"], rows), "",
        f"Epoch {lr['epochs']} over epoch 1: **{lr['ratio_last_first']:.2f}x**. Subnormal at the end: {sub}."])


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
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
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


def _peak_rss_table(results):
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
    caches = ", ".join(f"{k.split()[0]} {val}" for k, val in (m.get("caches") or {}).items())
    lines = [f"- Machine: {m['cpu']}, {m['cores']} cores"
             + (f" ({m['hypervisor']} guest)" if m.get("hypervisor") else "")
             + (f", caches {caches}" if caches else "")
             + f", {m['memory_bytes'] / 2**30:.0f} GiB; {m['platform']}; AVX flags: {' '.join(m['cpu_flags'])}",
             f"- Date: {m['date']}. Command: `{results['command']}`",
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
    j = fw.get("jax", {}).get("describe") or {}
    if j:
        lines.append(f"- JAX {j.get('jax')} / jaxlib {j.get('jaxlib')}, backend {j.get('backend')} "
                     f"({j.get('platform_version')}), devices {', '.join(j.get('devices', []))}")
    s = fw.get("sklearn", {}).get("describe") or {}
    if s:
        lines.append(f"- scikit-learn {s.get('sklearn')}")
    p = results.get("products") or {}
    if p.get("call_overhead_us"):
        lines.append(f"- f2py call overhead subtracted from the products-alone times: "
                     f"{p['call_overhead_us']['float32']:.2f} us per call")
    counts = ", ".join(map(str, results["thread_counts"]))
    lines.append(f"- Threads: every framework at {counts} (each count in its own processes: CPU affinity pinned to "
                 "that many CPUs; OMP/OpenBLAS/MKL_NUM_THREADS; fastfit n_threads; torch.set_num_threads; "
                 "scikit-learn threadpoolctl; XLA's Eigen pool on above 1 thread, off at 1)")
    return "\n".join(lines)


def _method(results):
    thr = results["spread_threshold"]
    return (f"`{results['command']}` on {results['machine']['date']}, {results['duration_s']:.0f} s, "
            f"{results['machine']['cpu']}, {results['machine']['cores']} cores. float32 unless marked, Adam "
            f"(lr 1e-3), softmax cross-entropy, random data. Every framework ran at "
            f"{' and '.join(map(str, results['thread_counts']))} thread(s), each in its own processes; a cell "
            "shows its best, with the winning count as (1t)/(2t). A cell's value is the median over "
            f"at least {results['procs']} processes at that count of each process's median of "
            f"{results['repeats']} repeats of ~{results['target_s']:g} s and at least {MIN_STEPS_PER_REPEAT} steps "
            "(after a warm-up epoch). "
            f"In square brackets: fastfit's speed over that peer. ⚠: the spread across processes or across one "
            f"process's repeats stayed above {thr:.0%} " + ("after one rerun" if results.get("rerun") else "")
            + " (see Measurement details)." + (
                " After each process a 1024^3 product probed the machine's speed at that thread count; a "
                "process followed by a probe under 80% of the run's best was measured again "
                "(\"replaced (machine slow)\")." if results.get("machine_probes") else ""))


def markdown(results):
    out = [f"# fastfit benchmarks ({results['mode']})", "", _method(results), ""]
    out += ["## Throughput, samples/s", "", _throughput_table(results, ["main", "sweep"]), ""]
    if workloads(results, "step") or "tiny-b32" in results["throughput"]:
        out += ["## Per step, microseconds (tiny network)", "", _step_table(results), ""]
    if workloads(results, "f64"):
        out += ["## float64 against scikit-learn", "", _f64_table(results), ""]
    if (results.get("peak") or {}).get("ok"):
        pk = results["peak"]
        best = "; ".join(f"{dt}: {r['gflops']:.0f} GFLOP/s ({r['backend']}, {r['threads']} thread"
                         f"{'s' if r['threads'] > 1 else ''})" for dt, r in pk["peak"].items())
        out += ["## Share of the machine's peak", "",
                f"The machine's measured peak is the best rate any backend reached on a {pk['n']}x{pk['n']}x"
                f"{pk['n']} product: {best}. Each cell is samples/s x the matrix products' flops per sample / "
                "that peak (of the workload's dtype). The flops are counted exactly, products only: "
                "2 x (3 x sum of d_in x d_out - d_0 x d_1) per sample (forward, weight gradient, input gradient "
                "less the first layer's, which no framework computes); biases, ReLU, the loss and the "
                "optimizer's per-parameter work are left out, so batch-1 rows understate the work done.", "",
                _peak_share_table(results), ""]
        over = [n for n in results["throughput"] for f in ORDER
                if (of_peak(results, n, rate(results, n, f)) or 0) > 1 or (of_peak(results, n, products(results, n)) or 0) > 1]
        loads = pk.get("other_load")
        loads = loads if isinstance(loads, list) else [loads]
        if over:
            out += [f"⚠ Some shares exceed 100% ({', '.join(sorted(set(over)))}): the peak was measured while "
                    "the machine was busier than during those rows, so every share here is too high.", ""]
        out += [f"Rates measured (best of {pk['repeats']} after a warm-up"
                + (", the better of a measurement at the start and one at the end of the run"
                   if pk.get("measurements") == 2 else "")
                + "; other processes kept " + " and ".join(f"{x or 0:.2f}" for x in loads)
                + " cores busy meanwhile):", "", _peak_rates_table(results), ""]
        if pk.get("errors"):
            out += ["Failed: " + "; ".join(pk["errors"]), ""]
    if (results.get("products") or {}).get("workloads"):
        out += ["## OpenBLAS products alone", "",
                "The matrix products of one training step at the workload's shapes, timed by themselves with "
                "SciPy's OpenBLAS (the library and kernels fastfit calls), warm, at 1 thread and at "
                f"{max(results['thread_counts'])}, the faster kept: the samples/s the workload would reach on this "
                "library if nothing but its products took time. Other libraries use other GEMM kernels, so "
                "this is fastfit's yardstick, not a bound on the peers.", "", _products_table(results), ""]
    out += ["## Long run at batch 1", "", _longrun_section(results), "",
            "## Neighbours: PyTorch and scikit-learn in the same process as fastfit", "",
            _neighbour_section(results), "",
            "## Measurement details", "",
            "Every (workload, framework) pair: the median at each thread count over its processes (how many), "
            "what is reported, the spreads ((max - min) / median) that judge the noise, whether it was rerun, "
            "the cores other processes kept busy meanwhile (from /proc/stat), and, for PyTorch, the loop "
            "variant its pilot found fastest.", "", _details_table(results), "",
            "## Memory: `memory_report` against measurement", "", _memory_section(results), "",
            "## Peak memory per process", "",
            "Peak RSS (`ru_maxrss`) of each throughput process at its reported thread count (median over its "
            "processes) minus the peak of an interpreter that only imported the same framework. All "
            "processes of a workload hold the same data (about 32 MiB of inputs).", "",
            _peak_rss_table(results), "",
            "## Targets", "",
            table(["target", "measured", "goal", "status"],
                  [[t["target"], t["measured"], t["goal"], t["status"]] for t in results["targets"]]), "",
            "## Environment", "", _env_section(results), ""]
    notes = list(results.get("notes", []))
    shas = {p.get("fastfit_core_sha") for slot in results["throughput"].values() for r in slot["results"].values()
            for p in r.get("processes", []) if p.get("fastfit_core_sha")}
    if len(shas) > 1:
        notes.append(f"fastfit's compiled core changed during the run (builds {', '.join(sorted(shas))}): "
                     "its rows do not all measure the same code")
    for name, slot in results["throughput"].items():
        for f, r in slot["results"].items():
            if not r.get("ok"):
                notes.append(f"{label(f)} on {name} failed: {r.get('error')}")
            for n in r.get("notes", []) or []:
                text = f"{label(f)}: {n}"
                if text not in notes:
                    notes.append(text)
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
