"""How many processes a (framework, workload) pair gets, at which thread counts, and what is reported.

1. One process at each thread count (1 and 2 by default), so every framework
   runs at the count that suits it best for that workload: short steps often
   run faster on one thread, long ones on all. A count whose process's repeats
   spread past the threshold gets a second process before the counts are
   compared (a 2-thread process that hit a slow stretch once lost its count
   to 1 thread at 12% less).
2. More processes at the best count so far (the highest median of its
   processes' medians) until it has ``procs`` of them (2 by default); the best
   count is re-decided after each, so a lucky first process cannot win alone.
3. The reported rate is the median over the best count's processes of each
   process's median repeat. Two spreads judge the noise, each (max - min) / median:
   across those processes, and of the repeats inside each (the largest). If either
   exceeds the threshold (10%), the pair is run again once: ``procs`` fresh
   processes at the same count. Of the two attempts the faster is reported
   (noise only ever makes a run slower; an attempt that ran slow throughout can
   even look tighter than a fast one that dipped once); if its spread is still
   above the threshold, the row is flagged. Both attempts are kept in the JSON.

4. A process after which the machine-speed probe (run.py) found the machine
   slower than ``run.PROBE_SLOW`` of its best is replaced by a fresh one, at most
   ``SLOW_RETRIES`` times per pair; it stays in the JSON, marked ``machine_slow``.
   A virtual machine can run for minutes at 60% of its speed (its two cores on
   one physical core's hyper-threads), which no load figure shows.

``run_one(threads)`` runs one worker process and returns its result dict.
"""
import statistics

from .timing import spread

#: per-process fields kept in the JSON (the rest, such as the BLAS view, is the same in every process)
KEEP = ("ok", "error", "samples_per_s", "repeat_spread", "rates", "rows", "epochs_per_repeat",
        "steps_per_repeat", "variant", "variant_pilot_rates", "other_load", "wall_s", "max_rss_bytes",
        "cpus", "compile_s", "waited_for_idle_s", "fastfit_core_sha", "machine_probe", "machine_slow")

#: processes judged slow by the machine probe that a pair may replace
SLOW_RETRIES = 3


def _compact(threads, res):
    out = {k: res[k] for k in KEEP if k in res}
    out["threads"] = threads
    return out


def _median_rate(results):
    return statistics.median(r["samples_per_s"] for r in results)


def _judge(results):
    """(spread across processes, largest spread of repeats inside one)."""
    return (spread([r["samples_per_s"] for r in results]),
            max((r.get("repeat_spread") or 0.0) for r in results))


def measure_pair(run_one, thread_counts, procs=2, threshold=0.10, rerun=True):
    thread_counts = list(thread_counts)
    good = {t: [] for t in thread_counts}
    processes = []          # every process run for this pair, in order
    first_ok = None

    slow_left = SLOW_RETRIES

    def launch(t):
        nonlocal first_ok, slow_left
        res = run_one(t)
        processes.append(_compact(t, res))
        if res.get("ok") and res.get("machine_slow") and slow_left > 0:
            slow_left -= 1
            return launch(t)        # the machine was slow while it ran: measure again
        if res.get("ok"):
            good[t].append(res)
            if first_ok is None:
                first_ok = res
        return res

    def best():
        meds = {t: _median_rate(rs) for t, rs in good.items() if rs}
        return max(meds, key=meds.get) if meds else None

    for t in thread_counts:
        res = launch(t)
        if not res.get("ok") and "timed out" in str(res.get("error")):
            break                           # a hang at one count would cost as much again at the next
    for t in thread_counts:
        # a count whose first process was noisy inside (its repeats spread past the threshold) gets a
        # second before the counts are compared: one slow stretch must not decide the thread count
        if good[t] and len(good[t]) < procs and (good[t][0].get("repeat_spread") or 0.0) > threshold:
            launch(t)
    while True:
        b = best()
        if b is None or len(good[b]) >= procs:
            break
        if not launch(b).get("ok"):
            break                           # it ran before and fails now: report what there is
    b = best()
    if b is None:
        errors = [p.get("error") for p in processes if not p.get("ok")]
        return {"ok": False, "error": errors[0] if errors else "no process ran", "processes": processes}

    chosen = list(good[b])
    cross, within = _judge(chosen)
    attempts = [{"process_rates": [r["samples_per_s"] for r in chosen], "spread": cross,
                 "repeat_spread": within}]
    reran = False
    if rerun and max(cross, within) > threshold:
        reran = True
        before = len(good[b])
        for _ in range(procs):
            launch(b)
        fresh = good[b][before:]
        if fresh:
            f_cross, f_within = _judge(fresh)
            attempts.append({"process_rates": [r["samples_per_s"] for r in fresh], "spread": f_cross,
                             "repeat_spread": f_within})
            if _median_rate(fresh) > _median_rate(chosen):
                chosen, cross, within = fresh, f_cross, f_within
    by_threads = {str(t): {"samples_per_s": _median_rate(rs), "procs": len(rs),
                           "process_rates": [r["samples_per_s"] for r in rs]}
                  for t, rs in good.items() if rs}
    variants = [r.get("variant") for r in chosen if r.get("variant")]
    notes = []
    for r in chosen:
        for n in r.get("notes") or []:
            if n not in notes:
                notes.append(n)
    slow = [p for p in processes if p.get("ok") and p.get("machine_slow")]
    if slow:
        notes.append(f"{len(slow)} process(es) replaced: the machine probe found it slow after them")
    failed = [p for p in processes if not p.get("ok")]
    if failed:
        notes.append(f"{len(failed)} of {len(processes)} processes failed: {failed[0].get('error')}")
    summary = {
        "ok": True,
        "samples_per_s": _median_rate(chosen),
        "threads": b,
        "procs": len(chosen),
        "process_rates": [r["samples_per_s"] for r in chosen],
        "spread": cross,
        "repeat_spread": within,
        "flagged": max(cross, within) > threshold,
        "rerun": reran,
        "machine_slow_replaced": len(slow),
        "attempts": attempts,
        "by_threads": by_threads,
        "variant": max(set(variants), key=variants.count) if variants else None,
        "variant_pilot_rates": chosen[0].get("variant_pilot_rates") or {},
        "other_load": max((r.get("other_load") or 0.0) for r in chosen),
        "max_rss_bytes": int(statistics.median(r["max_rss_bytes"] for r in chosen)),
        "wall_s": sum(p.get("wall_s") or 0.0 for p in processes),
        "notes": notes,
        "processes": processes,
    }
    for key in ("adam", "data_bytes", "blas", "env", "fastfit_core_sha"):
        if key in first_ok:
            summary[key] = first_ok[key]
    compile_s = [r["compile_s"] for r in chosen if r.get("compile_s") is not None]
    if compile_s:
        summary["compile_s"] = compile_s
    return summary
