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
        """Training flops per sample: 2 per weight each for the forward product, the
        weight gradient and the input gradient, less the first layer's input gradient."""
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
    """What one run measures."""
    quick: bool
    workloads: list                  # every throughput workload, in run order
    frameworks: list                 # framework names to try
    repeats: int
    target_s: float                  # seconds per timed repeat
    memory_sizes: tuple = MEDIUM
    memory_batches: tuple = (64, 128, 256, 512, 1024, 2048, 4096)
    square_n: int = 4096             # raw sgemm size
    notes: list = field(default_factory=list)


def make_plan(quick=False, frameworks=None, only=None):
    if quick:
        wls = (main_workloads(["tiny", "small", "medium"]) + sweep_workloads([256])
               + step_workloads([1]) + f64_workloads(["tiny", "small"]))
        plan = Plan(True, wls, frameworks, repeats=3, target_s=0.12,
                    memory_batches=(64, 512, 4096), square_n=2048)
        plan.notes.append("--quick: no large workload, sweep at 256 only, per-step at batch 1 only, "
                          "float64 on tiny and small only, 3 repeats of ~0.12 s, memory at 3 batch sizes")
    else:
        wls = (main_workloads(["tiny", "small", "medium", "large"]) + sweep_workloads([16, 64, 256, 1024])
               + step_workloads([1, 8]) + f64_workloads(["tiny", "small", "medium", "large"]))
        plan = Plan(False, wls, frameworks, repeats=5, target_s=1.0)
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
