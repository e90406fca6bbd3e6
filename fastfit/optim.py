"""Optimizers in the seed's form (MATH.md, Optimizers), updating the flat buffer in place.

Every optimizer's update is one fused compiled loop over the whole parameter
buffer, whatever the depth of the network; its state (momentum, Adam's m and
v) is one flat buffer each. ``lr`` is a float or a schedule: any callable of
the step number t (the number of steps taken before this one); see schedules.py.
"""
import math

import numpy as np

from . import _checks, _core
from .schedules import ConstantLR, CosineWithWarmup, ExponentialDecay, StepDecay  # noqa: F401 (re-exported)


class Optimizer:
    """Common machinery: the learning rate, the step count, state bound to one model."""

    kind = None
    #: how many parameter-sized state buffers the optimizer keeps
    n_state_buffers = 0

    def __init__(self, lr):
        self.lr = _checks.learning_rate(lr)
        self.t = 0
        self._m = None
        self._v = None
        self._bound = None  # (n_params, dtype) of the model the state belongs to

    # ---- learning rate

    def lr_at(self, t):
        """The learning rate of step t (a float); a schedule's value is checked."""
        if not callable(self.lr):
            return self.lr
        value = self.lr(t)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"lr schedule returned {value!r} at step {t}, not a number") from None
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"lr schedule returned {value!r} at step {t}: a learning rate must be finite and >= 0")
        return value

    def lrs(self, t0, n):
        """Learning rates of steps t0 .. t0+n (n+1 values: the last is the look-ahead's).

        Step t0+n runs in a later call, if at all: only look-ahead methods (Nesterov)
        evaluate the schedule there now; the others repeat step t0+n-1's value, unused.
        """
        if not callable(self.lr):
            return np.full(n + 1, self.lr_at(t0), dtype=np.float64)  # lr_at: a convention may rescale
        upto = n + 1 if n == 0 or self._needs_next_lr() else n
        values = [self.lr_at(t0 + s) for s in range(upto)]
        return np.array(values + values[-1:] * (n + 1 - upto), dtype=np.float64)

    # ---- state

    def bind(self, model):
        """Allocate the state for this model on first use; refuse a different model later."""
        key = (model.n_params, model.dtype)
        if self._bound is None:
            self._bound = key
            if self.n_state_buffers >= 1:
                self._m = np.zeros(model.n_params, dtype=model.dtype)
            if self.n_state_buffers >= 2:
                self._v = np.zeros(model.n_params, dtype=model.dtype)
        elif self._bound != key:
            raise ValueError(f"this optimizer holds state for a model of {self._bound[0]} {self._bound[1]} "
                             f"parameters; it cannot step a model of {key[0]} {key[1]} parameters "
                             "(use a new optimizer, or reset() this one)")

    def reset(self):
        """Forget the state and the step count."""
        self.t = 0
        self._m = self._v = None
        self._bound = None

    def state_buffers(self):
        """The state as the core takes it: (m, v), empty arrays where unused."""
        empty = np.empty(0, dtype=self._bound[1]) if self._bound else np.empty(0)
        return (self._m if self._m is not None else empty,
                self._v if self._v is not None else empty)

    # ---- hooks for look-ahead methods (Nesterov); plain optimizers need none

    def prepare(self, model):
        """Put model.params where the next gradient must be evaluated."""
        self.bind(model)

    def finalize(self, model):
        """Put model.params at the point of the trajectory (phi)."""

    # ---- the core's view of the hyper-parameters

    def core_args(self):
        """(beta1, beta2, eps) for the compiled update."""
        return 0.0, 0.0, 0.0

    def step(self, model):
        """One update of model.params from model.grads, in place."""
        # the schedule first: a failing one must not leave a fresh optimizer bound to the model
        lr, lr_next = self.lr_at(self.t), self.lr_at(self.t + 1) if self._needs_next_lr() else 0.0
        self.bind(model)
        self._check_ready()
        m, v = self.state_buffers()
        b1, b2, eps = self.core_args()
        _core.optimizer_step(self.kind, model.params, model.grads, m, v, lr, lr_next,
                             b1, b2, eps, self.t, 1)
        self.t += 1

    def _check_ready(self):
        pass

    def _needs_next_lr(self):
        return False

    def __getstate__(self):
        return dict(self.__dict__)

    def __setstate__(self, state):
        self.__dict__.update(state)


class SGD(Optimizer):
    """Stochastic gradient descent, with the seed's momentum or Nesterov momentum.

    momentum = 0:  phi <- phi - lr * g
    momentum = beta: m <- beta*m + (1-beta)*g;  phi <- phi - lr*m
    nesterov: the same, with g taken at phi - lr*beta*m. The model's parameters
    hold that look-ahead point psi between steps (MATH.md); ``finalize`` (which
    ``fit`` calls at its end) moves them back to phi, ``prepare`` forward again.
    Full-batch SGD is gradient descent.

    ``convention="torch"`` takes ``lr`` and ``momentum`` as torch.optim.SGD does
    (dampening 0): b <- beta*b + g (the first step b = g), phi <- phi - lr*b.
    That is the seed's rule with lr/(1-beta) and m = (1-beta)*b (MATH.md,
    "Matching other libraries"), which is how it runs; Nesterov alike.
    """

    CONVENTIONS = ("seed", "torch")

    def __init__(self, lr, momentum=0.0, nesterov=False, convention="seed"):
        super().__init__(lr)
        self.momentum = _checks.unit_interval(momentum, "momentum")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if convention not in self.CONVENTIONS:
            raise ValueError(f"convention must be one of {self.CONVENTIONS}, got {convention!r}")
        self.convention = convention
        self._lookahead = True  # Nesterov: params hold psi (true for a fresh optimizer: psi_0 = phi_0)

    def lr_at(self, t):
        """The seed-form learning rate of step t (torch's lr / (1 - momentum) under convention="torch")."""
        value = super().lr_at(t)
        if self.convention == "torch" and self.momentum > 0:
            return value / (1.0 - self.momentum)
        return value

    @property
    def kind(self):
        if self.nesterov:
            return _core.OPT_NESTEROV
        return _core.OPT_MOMENTUM if self.momentum > 0 else _core.OPT_SGD

    @property
    def n_state_buffers(self):
        return 1 if self.momentum > 0 else 0

    def core_args(self):
        return self.momentum, 0.0, 0.0

    def _needs_next_lr(self):
        return self.nesterov

    def prepare(self, model):
        self.bind(model)
        if self.nesterov and not self._lookahead:
            # psi_t = phi_t - lr_t * beta * m_t
            model.params -= (self.lr_at(self.t) * self.momentum) * self._m
            self._lookahead = True

    def finalize(self, model):
        if self.nesterov and self._lookahead and self._m is not None:
            # phi_t = psi_t + lr_t * beta * m_t
            model.params += (self.lr_at(self.t) * self.momentum) * self._m
            self._lookahead = False

    def _check_ready(self):
        if self.nesterov and not self._lookahead and self._m.any():
            raise RuntimeError("Nesterov momentum: the model holds the trajectory point phi (after finalize or "
                               "fit), but the gradient must be taken at the look-ahead point: call "
                               "optimizer.prepare(model), then recompute the gradient, then step()")

    def reset(self):
        super().reset()
        self._lookahead = True

    def __repr__(self):
        conv = f", convention={self.convention!r}" if self.convention != "seed" else ""
        return f"SGD(lr={self.lr!r}, momentum={self.momentum!r}, nesterov={self.nesterov!r}{conv})"


class Adam(Optimizer):
    """Adam with bias correction (MATH.md): torch.optim.Adam's rule, step for step.

    ``convention="keras"`` (alias ``"sklearn"``) places epsilon as Keras and
    scikit-learn do, ``lr*sqrt(1-beta2^t)/(1-beta1^t) * m/(sqrt(v)+eps)``: the
    seed's rule with eps replaced by eps/sqrt(1-beta2^t) (MATH.md).
    ``"torch"`` is the seed's form.
    """

    n_state_buffers = 2
    CONVENTIONS = ("seed", "torch", "keras", "sklearn")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, convention="seed"):
        if convention not in self.CONVENTIONS:
            raise ValueError(f"convention must be one of {self.CONVENTIONS}, got {convention!r}")
        self.convention = convention
        super().__init__(lr)
        try:
            b1, b2 = betas
        except TypeError:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        except ValueError:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (_checks.unit_interval(b1, "betas[0]"), _checks.unit_interval(b2, "betas[1]"))
        self.eps = _checks.positive_float(eps, "eps")

    @property
    def kind(self):
        return _core.OPT_ADAM_EPS_HAT if self.convention in ("keras", "sklearn") else _core.OPT_ADAM

    def core_args(self):
        return self.betas[0], self.betas[1], self.eps

    def __repr__(self):
        conv = f", convention={self.convention!r}" if self.convention != "seed" else ""
        return f"Adam(lr={self.lr!r}, betas={self.betas!r}, eps={self.eps!r}{conv})"


class NormalizedGD(Optimizer):
    """The seed's normalized gradient: phi <- phi - lr * g / (sqrt(g*g) + eps)."""

    kind = _core.OPT_NORMALIZED

    def __init__(self, lr, eps=1e-8):
        super().__init__(lr)
        self.eps = _checks.positive_float(eps, "eps")

    def core_args(self):
        return 0.0, 0.0, self.eps

    def __repr__(self):
        return f"NormalizedGD(lr={self.lr!r}, eps={self.eps!r})"


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "normalized": NormalizedGD}
