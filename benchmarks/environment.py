"""The machine and the exact versions, gathered without importing the frameworks.

The BLAS each framework really ran on comes from its own worker processes
(threadpoolctl inside them, ``ff.blas_info()``, ``torch.__config__.show()``):
see the baseline task in worker.py.
"""
import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata

PACKAGES = ("numpy", "scipy", "threadpoolctl", "Cython", "torch", "scikit-learn", "jax", "jaxlib",
            "psutil")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(f for f in flags if f.startswith(("avx512f", "avx512bw", "avx512vl", "avx2", "fma")))
    except OSError:
        pass
    return []


def hypervisor():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Hypervisor vendor"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def versions():
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(root):
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fastfit", "csrc", "setup.py"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+local changes" if dirty else "") if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def built_core(root):
    """Short hashes of the compiled extensions that ran (the tree may have local changes)."""
    import glob
    import hashlib
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "fastfit", "*.so"))):
        with open(path, "rb") as f:
            out[os.path.basename(path).split(".")[0]] = hashlib.sha256(f.read()).hexdigest()[:12]
    return out


def machine(root):
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "hypervisor": hypervisor(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": mem,
        "platform": platform.platform(),
        "fastfit_commit": git_commit(root),
        "fastfit_built": built_core(root),
        "versions": versions(),
        "user_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "FASTFIT_BLAS_SELECT")},
    }
