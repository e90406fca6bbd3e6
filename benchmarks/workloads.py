"""The workloads: network sizes, batch sizes, dtypes, and the shared random data.

Every framework trains on exactly the same data: ``make_data`` draws it from a
fixed seed, and a framework that is too slow to go through all of it in one
timed repeat trains on a prefix of it (see timing.py). The dataset of a
workload is kept to about 32 MB of inputs, so peak memory is comparable across
frameworks and the data never dominates it.
"""
from dataclasses import dataclass, field, asdict

DATA_SEED = 1234
DATA_BYTES = 32 << 20  # inputs per workload, about

N_CLASSES = 10


@dataclass(frozen=True)
class Workload:
    name: str            # unique key, e.g. "small-b64" or "medium-f64"
    group: str           # "main", "sweep", "step", "f64"
    sizes: tuple         # layer widths, input first
    batch: int
    dtype: str = "float32"
    label: str = ""      # what the Markdown shows

    @property
    def itemsize(self):
        return 8 if self.dtype == "float64" else 4

    @property
    def n_weights(self):
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def flops_per_sample(self):
        """The matrix products' flops per training sample, exactly: 2 per weight each for
        the forward product, the weight gradient and the input gradient, less the first
        layer's input gradient (no framework computes it). Biases, ReLU, the loss and the
        optimizer's per-parameter work are not counted (the last is per step, not per sample)."""
        fwd = sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        return 2 * (3 * fwd - self.sizes[0] * self.sizes[1])

    @property
    def n_rows(self):
        """Rows in the workload's dataset: about DATA_BYTES of inputs, a multiple of
        every batch size used (1024), at least 8 batches."""
        rows = DATA_BYTES // (self.sizes[0] * self.itemsize)
        rows = max(rows // 1024 * 1024, 1024, 8 * self.batch)
        return -(-rows // self.batch) * self.batch

    def as_dict(self):
        d = asdict(self)
        d["sizes"] = list(self.sizes)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["sizes"] = tuple(d["sizes"])
        return cls(**d)


TINY = (64, 128, 10)
SMALL = (784, 256, 256, 10)
MEDIUM = (784, 1024, 1024, 10)
LARGE = (784, 4096, 4096, 10)

SIZES = {"tiny": TINY, "small": SMALL, "medium": MEDIUM, "large": LARGE}
MAIN_BATCH = {"tiny": 32, "small": 64, "medium": 128, "large": 512}


def _fmt_sizes(sizes):
    return "-".join(str(s) for s in sizes)


def main_workloads(names):
    return [Workload(f"{n}-b{MAIN_BATCH[n]}", "main", SIZES[n], MAIN_BATCH[n],
                     label=f"{n} {_fmt_sizes(SIZES[n])}, batch {MAIN_BATCH[n]}")
            for n in names]


def sweep_workloads(batches):
    """The batch sweep on small; batch 64 is the main 'small' row and is not repeated."""
    return [Workload(f"small-b{b}", "sweep", SMALL, b, label=f"small, batch {b}")
            for b in batches if b != MAIN_BATCH["small"]]


def step_workloads(batches):
    return [Workload(f"tiny-b{b}", "step", TINY, b, label=f"tiny, batch {b}") for b in batches]


def f64_workloads(names):
    return [Workload(f"{n}-b{MAIN_BATCH[n]}-f64", "f64", SIZES[n], MAIN_BATCH[n], dtype="float64",
                     label=f"{n}, batch {MAIN_BATCH[n]}, float64")
            for n in names]


@dataclass
class Plan:
    """What one run measures, and how hard it tries."""
    mode: str                        # "full", "quick" or "smoke"
    workloads: list                  # every throughput workload, in run order
    frameworks: list                 # framework names to try
    repeats: int                     # timed repeats inside each process
    target_s: float                  # seconds per timed repeat
    thread_counts: tuple = (1, 2)    # each framework is measured at each; the best is reported
    procs: int = 2                   # processes at the reported thread count, at least
    spread_threshold: float = 0.10   # above this (max-min over median) a row is flagged and rerun once
    compile_on: tuple = ()           # workloads the torch.compile trainer runs on (compiling is slow)
    restrict: dict = field(default_factory=dict)   # workload name -> the only frameworks run on it
    memory_sizes: tuple = MEDIUM
    memory_batches: tuple = (64, 128, 256, 512, 1024, 2048, 4096)
    peak_n: int = 3072               # square GEMM size for the machine's peak
    peak_repeats: int = 3
    neighbour: dict = field(default_factory=lambda: dict(
        torch_sizes=[784, 256, 256, 10], torch_batch=64, torch_steps=200,
        hgb_rows=20000, hgb_features=20, hgb_iter=50, repeats=3))
    longrun: dict = field(default_factory=lambda: dict(sizes=[64, 128, 10], batch=1, rows=131072, epochs=6))
    notes: list = field(default_factory=list)

    @property
    def quick(self):
        return self.mode != "full"


def make_plan(mode="full", frameworks=None, only=None):
    """The run's plan: "full" (10-15 minutes on 2 cores), "quick" (1-2 minutes) or "smoke" (seconds)."""
    if mode == "full":
        wls = (main_workloads(["tiny", "small", "medium", "large"]) + sweep_workloads([16, 64, 256, 1024])
               + step_workloads([1, 8]) + f64_workloads(["tiny", "small", "medium", "large"]))
        plan = Plan("full", wls, frameworks, repeats=5, target_s=0.2,
                    compile_on=("tiny-b32", "small-b64", "medium-b128", "tiny-b1"))
    elif mode == "quick":
        wls = main_workloads(["tiny", "small"]) + step_workloads([1])
        plan = Plan("quick", wls, frameworks, repeats=3, target_s=0.1, compile_on=("tiny-b32",),
                    restrict={"tiny-b1": ("fastfit", "reference", "jax")},
                    memory_batches=(64,), peak_n=2048, peak_repeats=2)
        plan.neighbour.update(torch_steps=100, repeats=2)
        plan.notes.append("--quick: tiny and small at their main batch, tiny at batch 1 (fastfit and JAX only), "
                          "no float64; torch.compile only if asked for, on tiny; 3 repeats of ~0.1 s per process; "
                          "memory at batch 64 only; neighbour times best of 2")
    elif mode == "smoke":
        wls = main_workloads(["tiny"])
        plan = Plan("smoke", wls, frameworks, repeats=3, target_s=0.02, compile_on=("tiny-b32",),
                    memory_batches=(64,), peak_n=256, peak_repeats=2)
        plan.neighbour.update(torch_sizes=[64, 32, 10], torch_steps=20, hgb_rows=2000, hgb_iter=5, repeats=1)
        plan.longrun.update(rows=2048, epochs=3)
        plan.notes.append("--smoke: a plumbing check, not a measurement (tiny sizes, 3 repeats of ~0.02 s)")
    else:
        raise ValueError(f"mode must be 'full', 'quick' or 'smoke', not {mode!r}")
    if only:
        wanted = set(only)
        plan.workloads = [w for w in plan.workloads if w.name in wanted or w.group in wanted
                          or w.name.split("-")[0] in wanted]
    return plan


def make_data(workload, rows=None):
    """The workload's dataset (X, y): standard normal inputs, uniform labels, fixed seed."""
    import numpy as np
    rows = workload.n_rows if rows is None else rows
    rng = np.random.default_rng(DATA_SEED)
    X = rng.standard_normal((rows, workload.sizes[0]), dtype=np.dtype(workload.dtype).type)
    y = rng.integers(0, workload.sizes[-1], rows).astype(np.intp)
    return X, y


def data_path(directory, workload):
    """Where the run's data cache keeps a workload's dataset (X and y, .npy, by shape and dtype)."""
    import os
    return os.path.join(directory, f"data-{workload.sizes[0]}-{workload.sizes[-1]}-{workload.n_rows}-"
                                   f"{workload.dtype}")


def cached_data(directory, workload):
    """The workload's dataset from the run's cache, made and saved by the first caller.

    Generating 32 MB of normal deviates costs a few tenths of a second, which every
    one of the run's processes would otherwise pay; reading it back costs
    milliseconds. The arrays are the ones make_data returns, bit for bit.
    """
    import os
    import numpy as np
    if not directory:
        return make_data(workload)
    stem = data_path(directory, workload)
    if not os.path.exists(stem + "-y.npy"):
        X, y = make_data(workload)
        for name, arr in (("X", X), ("y", y)):     # y last: its presence means both are complete
            tmp = f"{stem}-{name}.{os.getpid()}.tmp.npy"
            np.save(tmp, arr)
            os.replace(tmp, f"{stem}-{name}.npy")
        return X, y
    return np.load(stem + "-X.npy"), np.load(stem + "-y.npy")
