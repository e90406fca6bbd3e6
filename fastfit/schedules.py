"""Learning-rate schedules: callables of the step number t (steps taken before this one).

Pure Python, shared by the compiled path and the reference. An optimizer's
``lr`` may be a float or any callable ``t -> float``; these are the common ones.
"""
import math

from ._checks import positive_float as _check_positive_float
from ._checks import positive_int as _check_positive_int


def _check_positive(name, value):
    return _check_positive_float(value, name)


class ConstantLR:
    """alpha_t = lr."""

    def __init__(self, lr):
        self.lr = _check_positive("lr", lr)

    def __call__(self, t):
        return self.lr

    def __repr__(self):
        return f"ConstantLR(lr={self.lr!r})"


class StepDecay:
    """alpha_t = lr * gamma ** (t // step_size): multiply by gamma every step_size steps."""

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _check_positive("lr", lr)
        self.step_size = _check_positive_int(step_size, "step_size")
        self.gamma = _check_positive("gamma", gamma)

    def __call__(self, t):
        return self.lr * self.gamma ** (t // self.step_size)

    def __repr__(self):
        return f"StepDecay(lr={self.lr!r}, step_size={self.step_size!r}, gamma={self.gamma!r})"


class ExponentialDecay:
    """alpha_t = lr * gamma ** t."""

    def __init__(self, lr, gamma):
        self.lr = _check_positive("lr", lr)
        self.gamma = _check_positive("gamma", gamma)

    def __call__(self, t):
        return self.lr * self.gamma ** t

    def __repr__(self):
        return f"ExponentialDecay(lr={self.lr!r}, gamma={self.gamma!r})"


class CosineWithWarmup:
    """Linear warm-up from lr/warmup_steps to lr over warmup_steps, then a cosine
    decay to min_lr at total_steps; min_lr after that."""

    def __init__(self, lr, total_steps, warmup_steps=0, min_lr=0.0):
        self.lr = _check_positive("lr", lr)
        self.total_steps = _check_positive_int(total_steps, "total_steps")
        warmup_steps = _check_positive_int(warmup_steps, "warmup_steps", minimum=0)
        if warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps), got {warmup_steps!r}")
        self.warmup_steps = warmup_steps
        if isinstance(min_lr, bool) or not isinstance(min_lr, (int, float)) or not math.isfinite(min_lr) \
                or not 0 <= min_lr <= self.lr:
            raise ValueError(f"min_lr must be a number in [0, lr], got {min_lr!r}")
        self.min_lr = float(min_lr)

    def __call__(self, t):
        if t < self.warmup_steps:
            return self.lr * (t + 1) / self.warmup_steps
        if t >= self.total_steps:
            return self.min_lr
        progress = (t - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def __repr__(self):
        return (f"CosineWithWarmup(lr={self.lr!r}, total_steps={self.total_steps!r}, "
                f"warmup_steps={self.warmup_steps!r}, min_lr={self.min_lr!r})")
