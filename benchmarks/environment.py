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


def lscpu():
    """lscpu's fields (empty where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def cpu_description(info):
    """'AMD EPYC (family 25, model 17, stepping 1)': lscpu's model name with its numbers, which
    identify the generation where a virtual machine shows only a family name."""
    name = info.get("Model name") or cpu_model()
    ids = [f"{k.lower()} {info[k]}" for k in ("CPU family", "Model", "Stepping") if info.get(k)]
    return name + (f" ({', '.join(ids)})" if ids else "")


def hypervisor():
    return lscpu().get("Hypervisor vendor")


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
    info = lscpu()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_description(info),
        "cpu_flags": cpu_flags(),
        "hypervisor": info.get("Hypervisor vendor"),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads_per_core": info.get("Thread(s) per core"),
        "caches": {k: info[k] for k in ("L1d cache", "L2 cache", "L3 cache") if info.get(k)},
        "hostname": platform.node(),
        "memory_bytes": mem,
        "platform": platform.platform(),
        "fastfit_commit": git_commit(root),
        "fastfit_built": built_core(root),
        "versions": versions(),
        "user_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                    "FASTFIT_BLAS_SELECT", "XLA_FLAGS")},
    }
