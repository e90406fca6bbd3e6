"""Starting workers: one subprocess per task, all with the same thread settings.

Every worker at a given thread count gets the same environment: OMP/OpenBLAS/MKL
thread counts set to ``threads``, XLA's matrix products on its thread pool (which
it sizes from the CPU affinity that the worker pins) at more than one thread and
off it at one, and, for the peers, the OpenBLAS kernel choice that fastfit made
(``OPENBLAS_CORETYPE``; ``--peer-blas default`` lets their OpenBLAS choose by
itself instead). fastfit's own processes get no kernel choice from us, so
fastfit makes its choice as it would for a user.
"""
import json
import os
import resource
import subprocess
import sys
import time

from .worker import MARK

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_env(threads, coretype=None, extra=None):
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    flags = env.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        multi = "true" if threads > 1 else "false"
        env["XLA_FLAGS"] = (flags + f" --xla_cpu_multi_thread_eigen={multi}").strip()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def _busy_seconds():
    """CPU seconds all processes on the machine have spent busy, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_idle(max_s, threshold=0.25, window=0.5):
    """Wait (up to max_s) until other processes use less than ``threshold`` cores; seconds waited."""
    t0 = time.perf_counter()
    while True:
        b0 = _busy_seconds()
        if b0 is None:
            return 0.0
        time.sleep(window)
        if (_busy_seconds() - b0) / window < threshold or time.perf_counter() - t0 >= max_s:
            return time.perf_counter() - t0
        time.sleep(2.0)


def user_env():
    """The environment a user's own script would have: ours, less the thread settings we add."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_worker(spec, env, timeout):
    """Run one task in a fresh interpreter; its result dict (``ok`` False on any failure).

    Also records ``other_load``: the cores that other processes on the machine kept
    busy meanwhile (machine busy time less the worker's own CPU time, over wall time).
    A shared machine makes multi-threaded timings unreliable; the report flags it.
    """
    cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
    busy0, own0, t0 = _busy_seconds(), _children_cpu(), time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s"}
    wall, own = time.perf_counter() - t0, _children_cpu() - own0
    busy = None if busy0 is None else _busy_seconds() - busy0
    other = None if busy is None else max(0.0, busy - own) / wall
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
            result["other_load"] = other
            return result
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
    return {"ok": False, "other_load": other,
            "error": f"worker exited {proc.returncode} without a result: " + " | ".join(tail)}
