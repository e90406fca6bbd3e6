"""A self-check of the harness, run by hand: ``python -m benchmarks.selfcheck [results.json]``.

It checks the logic that decides what gets reported, with fakes where timing
would be slow or noisy: the thread-count choice and rerun rule (sampling.py),
the variant choice (timing.py), the flop count against the products timed,
the data cache, that every installed framework's trainer trains, that the
harness reaches fastfit only through public names, and that the report renders
(from a results JSON if given, e.g. one a ``--smoke`` run wrote). A few
seconds; PyTorch's compile trainer only with ``--compile`` (its first
compilation takes about half a minute).
"""
import math
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def fake_runner(rates, fail=(), timeout=()):
    """run_one(t) that returns the next scripted rate for thread count t."""
    calls = []
    queues = {t: list(v) for t, v in rates.items()}

    def run_one(t):
        calls.append(t)
        if t in timeout:
            return {"ok": False, "error": "timed out after 1 s"}
        if t in fail:
            return {"ok": False, "error": "RuntimeError: no compiler"}
        r = queues[t].pop(0)
        return {"ok": True, "samples_per_s": r, "repeat_spread": 0.02, "max_rss_bytes": 1,
                "other_load": 0.0, "wall_s": 0.1}
    return run_one, calls


def check_sampling():
    from .sampling import measure_pair
    run, calls = fake_runner({1: [100, 101], 2: [150, 149]})
    s = measure_pair(run, [1, 2], procs=2, threshold=0.10)
    check(s["threads"] == 2 and s["procs"] == 2 and calls == [1, 2, 2],
          "the faster thread count wins and gets a second process (3 processes in all)")
    check(abs(s["samples_per_s"] - 149.5) < 1e-9 and not s["rerun"] and not s["flagged"],
          "reported rate = median of the winner's processes; no rerun when quiet")

    run, calls = fake_runner({1: [100, 160, 150, 152], 2: [120, 60]})
    s = measure_pair(run, [1, 2], procs=2, threshold=0.10)
    check(s["threads"] == 1 and calls[:4] == [1, 2, 2, 1],
          "the best count is re-decided after each process (a lucky first one cannot win alone)")

    run, calls = fake_runner({1: [10, 10], 2: [100, 60, 100, 99]})
    s = measure_pair(run, [1, 2], procs=2, threshold=0.10)
    check(s["rerun"] and not s["flagged"] and s["process_rates"] == [100, 99] and len(calls) == 5,
          "a spread above the threshold reruns once and keeps the faster attempt")

    dips = iter([(50, 0.0), (120, 0.36), (110, 0.05), (80, 0.02), (80, 0.02)])

    def run_dips(t):
        rate, within = next(dips)
        return {"ok": True, "samples_per_s": rate, "repeat_spread": within, "max_rss_bytes": 1,
                "other_load": 0.0, "wall_s": 0.1}
    s = measure_pair(run_dips, [1, 2], procs=2, threshold=0.10)
    check(s["rerun"] and s["process_rates"] == [120, 110] and s["flagged"],
          "a rerun that ran slow throughout does not replace a faster attempt that dipped once")

    pilots = {1: iter([(68, 0.06), (68, 0.0)]), 2: iter([(60, 0.68), (106, 0.03), (104, 0.03), (105, 0.03)])}
    order = []

    def run_pilots(t):
        order.append(t)
        rate, within = next(pilots[t])
        return {"ok": True, "samples_per_s": rate, "repeat_spread": within, "max_rss_bytes": 1,
                "other_load": 0.0, "wall_s": 0.1}
    s = measure_pair(run_pilots, [1, 2], procs=2, threshold=0.10)
    check(s["threads"] == 2 and order[:3] == [1, 2, 2],
          "a count whose first process was noisy inside gets a second before the counts are compared")

    run, calls = fake_runner({1: [10, 10], 2: [100, 60, 100, 50]})
    s = measure_pair(run, [1, 2], procs=2, threshold=0.10)
    check(s["rerun"] and s["flagged"] and len(s["attempts"]) == 2, "still noisy after the rerun: flagged")

    run, calls = fake_runner({1: [], 2: []}, fail=(1, 2))
    s = measure_pair(run, [1, 2], procs=2)
    check(not s["ok"] and "no compiler" in s["error"] and calls == [1, 2],
          "a pair that fails at every count reports why, after one try each")

    run, calls = fake_runner({1: [], 2: [5, 5]}, timeout=(1,))
    s = measure_pair(run, [1, 2], procs=2)
    check(not s["ok"] and calls == [1], "a timeout stops the pair (no second hang)")

    run, calls = fake_runner({1: [], 2: [50, 51]}, fail=(1,))
    s = measure_pair(run, [1, 2], procs=2)
    check(s["ok"] and s["threads"] == 2 and any("failed" in n for n in s["notes"]),
          "a count that fails is noted; the other is reported")

    from . import sampling
    rates = {1: [100, 100], 2: [80, 150, 149]}
    slow_at = {(2, 0)}       # the first 2-thread process ran while the machine was slow

    def run_slow(t, seen={1: 0, 2: 0}):
        i = seen[t]
        seen[t] += 1
        return {"ok": True, "samples_per_s": rates[t][i], "repeat_spread": 0.02, "max_rss_bytes": 1,
                "other_load": 0.0, "wall_s": 0.1, "machine_slow": (t, i) in slow_at}
    s = measure_pair(run_slow, [1, 2], procs=2, threshold=0.10)
    check(s["threads"] == 2 and s["process_rates"] == [150, 149] and s["machine_slow_replaced"] == 1
          and not s["rerun"] and len(s["processes"]) == 4,
          "a process the machine probe found slow is measured again and kept only in the record")
    always = {"ok": True, "samples_per_s": 10, "repeat_spread": 0.0, "max_rss_bytes": 1, "other_load": 0.0,
              "wall_s": 0.1, "machine_slow": True}
    s = measure_pair(lambda t: dict(always), [1], procs=1, threshold=0.10)
    check(s["ok"] and len(s["processes"]) == sampling.SLOW_RETRIES + 1,
          "a machine slow throughout: at most SLOW_RETRIES replacements, then the last is kept")


class FakeTrainer:
    """Sleeps in proportion to the rows; variant 'b' is four times as fast as 'a' (a margin that
    oversleeping on a busy machine does not erase)."""
    variants = ["a", "b"]
    cost = {"a": 4e-6, "b": 1e-6}

    def __init__(self):
        self.v, self.rows = "a", 0

    def use(self, v):
        self.v = v

    def prepare(self, rows):
        self.rows = rows

    def run(self, epochs):
        time.sleep(self.rows * epochs * self.cost[self.v])


def check_timing():
    from .timing import MIN_STEPS_PER_REPEAT, measure, spread
    res = measure(FakeTrainer(), n_total=16384, batch=32, target_s=0.02, repeats=3)
    check(res["variant"] == "b" and set(res["variant_pilot_rates"]) == {"a", "b"},
          "the fastest variant is kept, every variant's pilot rate recorded")
    check(0.3e6 < res["samples_per_s"] < 1.05e6,
          f"the fake's rate (1e6/s less sleep overshoot) is recovered ({res['samples_per_s']:.3g}/s)")
    check(abs(spread([90, 100, 110]) - 0.2) < 1e-12 and spread([5]) == 0.0, "spread = (max - min) / median")
    slow = measure(FakeTrainer(), n_total=16384, batch=2048, target_s=0.001, repeats=1)
    check(slow["steps_per_repeat"] >= MIN_STEPS_PER_REPEAT,
          f"a repeat holds at least {MIN_STEPS_PER_REPEAT} steps however slow a step is "
          f"({slow['steps_per_repeat']} of batch 2048 at 1e6 samples/s in a 1 ms target)")


def check_workloads():
    import numpy as np
    from .products import step_gemms
    from .workloads import cached_data, make_data, make_plan
    for mode in ("full", "quick", "smoke"):
        for wl in make_plan(mode, ["fastfit"]).workloads:
            flops = sum(2.0 * m * n * k for *_, m, n, k in step_gemms(wl.sizes, wl.batch))
            if not math.isclose(flops / wl.batch, wl.flops_per_sample):
                check(False, f"{mode} {wl.name}: flops per sample {wl.flops_per_sample} vs the products' "
                             f"{flops / wl.batch}")
                return
    check(True, "flops per sample = the products timed by products.py, every workload")
    wl = make_plan("smoke", ["fastfit"]).workloads[0]
    with tempfile.TemporaryDirectory() as d:
        X0, y0 = cached_data(d, wl)
        X1, y1 = cached_data(d, wl)
    X, y = make_data(wl)
    check(np.array_equal(X, X1) and np.array_equal(y, y1) and np.array_equal(X, X0),
          "the data cache returns make_data's arrays, bit for bit")


def check_trainers(with_compile):
    from . import frameworks
    from .workloads import Workload, make_data
    wl = Workload("check", "main", (16, 32, 10), 8)
    X, y = make_data(wl, rows=64)
    for name in frameworks.ORDER:
        if frameworks.missing_modules(name) or (name == "torch-compile" and not with_compile):
            print(f"skip {name}")
            continue
        try:
            trainer = frameworks.load(name).Trainer(wl, X, y, 1)
            for v in getattr(trainer, "variants", None) or [None]:
                if v is not None:
                    trainer.use(v)
                trainer.prepare(32)
                trainer.run(2)
            check(True, f"{name} trains" + (f" ({len(trainer.variants)} variants)"
                                            if getattr(trainer, "variants", None) else ""))
        except Exception as exc:  # reported as a failure of the check
            check(False, f"{name} trains: {type(exc).__name__}: {exc}")


def check_peak_merge():
    from .run import merge_peaks
    a = {"ok": True, "rates": [{"backend": "b", "dtype": "float32", "threads": 1, "gflops": 50.0},
                               {"backend": "b", "dtype": "float32", "threads": 2, "gflops": 20.0}]}
    b = {"ok": True, "rates": [{"backend": "b", "dtype": "float32", "threads": 1, "gflops": 40.0},
                               {"backend": "b", "dtype": "float32", "threads": 2, "gflops": 90.0}]}
    m = merge_peaks(a, b)
    check(m["peak"]["float32"]["gflops"] == 90.0 and len(m["rates"]) == 2,
          "two peak measurements merge to the better rate of each (backend, dtype, threads)")


def check_public_api():
    # mpi_bench.py times fastfit._allreduce itself (a part, against MPI's own): it may name it
    private = re.compile(r"\b(?:ff|fastfit)\._[a-z]")
    bad = []
    for root, _, files in os.walk(HERE):
        for f in files:
            if f.endswith(".py") and f not in ("selfcheck.py", "mpi_bench.py"):
                with open(os.path.join(root, f)) as fh:
                    for i, line in enumerate(fh, 1):
                        if private.search(line):
                            bad.append(f"{f}:{i}")
    check(not bad, "the harness uses fastfit's public names only" + (f" (private: {bad})" if bad else ""))


def check_mpi_bench_launch():
    """mpi_bench's two-host form: rank 1 enters its namespace, each rank names its own veth end."""
    sys.path.insert(0, HERE)
    import mpi_bench
    one = mpi_bench.two_rank_command("mpiexec", ["--fit", "plain"])
    check(one[:3] == ["mpiexec", "-n", "2"] and ":" not in one and one[-2:] == ["--fit", "plain"],
          "mpi_bench: one host, one mpiexec group of 2 ranks")
    two = mpi_bench.two_rank_command("mpiexec", ["--fit", "plain"], other="ns1")
    rank0, rank1 = two[1:two.index(":")], two[two.index(":") + 1:]
    check(rank0[:4] == ["-n", "1", "-env", "FI_TCP_IFACE"] and rank0[4] == mpi_bench.VETH[0]
          and "netns" not in rank0 and rank1[4] == mpi_bench.VETH[1]
          and rank1[5:9] == ["ip", "netns", "exec", "ns1"] and rank1[-3:] == ["--worker", "--fit", "plain"],
          "mpi_bench: two hosts, rank 1 in its namespace, each rank on its own veth end")
    try:
        mpi_bench.main(["--hosts", "two"])
        refused = False
    except SystemExit as exc:
        refused = "needs a simulated link" in str(exc)
    check(refused, "mpi_bench: --hosts two without --link is refused with a reason")


def check_factor_model():
    """mpi_bench's model of the factor exchange, on made-up parts worked out by hand (ms)."""
    sys.path.insert(0, HERE)
    import mpi_bench
    parts = {"head": 4.0, "dx2": 0.1, "dx1": 2.0, "dw2": 0.1, "dw1": 3.0, "dw0": 2.0, "update2": 0.0,
             "update1": 0.5, "update0": 0.5, "factor_layers": [True, True, False], "rows": 64}
    # values: H_1 65,536, then the output layer's gradient 10,250, dF_1 65,536, dF_0 65,536
    per_value = 1e-3  # ms: a very slow link, so the messages decide
    slow = mpi_bench.predict_factors(dict(parts, exchange=per_value * 206_858, exchange_cpu_s=0.0))
    # the link: H_1 4 -> 69.5, gradient -> 79.8, dF_1 -> 145.3, dF_0 (posted at 6.2) -> 210.9;
    # dW_1 waits for dF_1 (145.3) and the update ends 148.8; dW_0 waits for dF_0: 210.9 + 2.5
    check(abs(slow["timeline_s"] - 213.358) < 1e-6, f"mpi_bench: factor model, slow link ({slow})")
    fast = mpi_bench.predict_factors(dict(parts, exchange=0.0, exchange_cpu_s=0.001))
    check(abs(fast["compute_s"] - 12.2) < 1e-9 and abs(fast["step_s"] - 12.201) < 1e-9,
          f"mpi_bench: factor model, fast link: the compute plus the messages' CPU time ({fast})")


def check_report(path):
    import json
    from . import report
    if path:
        with open(path) as f:
            results = json.load(f)
    else:
        results = _synthetic()
    results["targets"] = report.evaluate_targets(results)
    md = report.markdown(results)
    check("## Throughput, samples/s" in md and "## Measurement details" in md, "the report renders")
    check("GEMM-bound" not in md, "no 'GEMM-bound' left in the report")


def _synthetic():
    from .workloads import make_plan
    plan = make_plan("smoke", ["fastfit"])
    wl = plan.workloads[0]
    summary = {"ok": True, "samples_per_s": 1e6, "threads": 1, "procs": 2, "process_rates": [1e6, 1e6],
               "spread": 0.01, "repeat_spread": 0.02, "flagged": False, "rerun": False, "attempts": [],
               "by_threads": {"1": {"samples_per_s": 1e6, "procs": 2, "process_rates": [1e6, 1e6]}},
               "variant": None, "other_load": 0.0, "max_rss_bytes": 100 << 20, "notes": [], "processes": []}
    machine = {"cpu": "test CPU", "cores": 2, "date": "today", "hypervisor": None, "memory_bytes": 1 << 30,
               "platform": "test", "cpu_flags": [], "fastfit_commit": "abc", "fastfit_built": {},
               "versions": {"python": "3"}}
    return {"command": "python -m benchmarks --smoke", "mode": "smoke", "thread_counts": [1, 2], "procs": 2,
            "spread_threshold": 0.1, "rerun": True, "repeats": 3, "target_s": 0.02, "duration_s": 1.0,
            "machine": machine, "notes": [],
            "frameworks": {"fastfit": {"available": True, "baseline_ok": True, "baseline_bytes": 50 << 20}},
            "throughput": {wl.name: {"workload": wl.as_dict(), "flops_per_sample": wl.flops_per_sample,
                                     "results": {"fastfit": summary}}},
            "products": {"ok": True, "workloads": {}}, "peak": None, "longrun": None, "neighbour": {},
            "memory": []}


def main(argv):
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return 0
    with_compile = "--compile" in argv
    paths = [a for a in argv if not a.startswith("--")]
    t0 = time.perf_counter()
    check_sampling()
    check_timing()
    check_workloads()
    check_peak_merge()
    check_public_api()
    check_mpi_bench_launch()
    check_factor_model()
    check_report(paths[0] if paths else None)
    check_trainers(with_compile)
    print(f"{len(failures)} failed, in {time.perf_counter() - t0:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
