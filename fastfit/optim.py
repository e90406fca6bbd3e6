"""Optimizers in the book's form (docs/math.md, "Optimizers"), updating the flat buffer in place.

An optimizer holds hyper-parameters, a step count ``t`` and state buffers
(momentum's ``m``; Adam's ``m`` and ``v``), each one flat buffer the size of
the model's parameters. Its whole state goes out and comes back through
``state_dict()`` / ``load_state_dict()``, which saving, loading and the
distributed fit use. The arithmetic is the compiled core's (csrc/update_impl.h).
``lr`` is a float or a schedule: any callable of the step number t (the number
of steps taken before this one); see schedules.py.
"""
import contextlib
import copy
import math
import numbers
import weakref

import numpy as np

from . import _checks, _core, _threads


def _step_count(value, name="t"):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or not 0 <= value < 2 ** 53:
        raise ValueError(f"{name} must be a whole number of steps in [0, 2^53), got {value!r}")
    return int(value)


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class Optimizer:
    """Common machinery: the learning rate, the step count, state bound to one model.

    Every hyper-parameter goes through the constructor's check whenever it is
    assigned (``opt.lr = 0.01`` included): the core reads them as they are."""

    #: the names of the state buffers this optimizer keeps (each the size of the parameters)
    state_names = ()

    #: attribute -> its check (value -> the value stored), run on every assignment
    _checked = {"lr": _checks.learning_rate,
                "weight_decay": lambda value: _checks.non_negative_float(value, "weight_decay"),
                "t": _step_count}

    def __init__(self, lr, weight_decay=0.0):
        self.lr = lr
        self.weight_decay = weight_decay
        self.t = 0
        self._state = {}
        self._bound = None       # (sizes, dtype) of the model the state belongs to
        self._model = None       # a weak reference to that model

    def __setattr__(self, name, value):
        check = self._checked.get(name)
        object.__setattr__(self, name, value if check is None else check(value))

    # ---- learning rate

    def lr_at(self, t):
        """The learning rate of step t (a float); a schedule's value is checked."""
        if not callable(self.lr):
            return self.lr
        try:
            value = self.lr(t)
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise type(exc)(f"lr schedule failed at step {t}: {exc}") from exc
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"lr schedule returned {value!r} at step {t}, not a number") from None
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"lr schedule returned {value!r} at step {t}: a learning rate must be finite and >= 0")
        return value

    def rates(self, t0, n):
        """Learning rates of steps t0 .. t0+n (n+1 values: the last is Nesterov's look-ahead
        rate), and how many of the n steps can run.

        A schedule that fails at some step gives the steps before it: returns
        (rates, runnable, error) with error the exception (None when all n can run).
        Only look-ahead methods evaluate step t0+n now; the others repeat the
        last value there, unused."""
        if not callable(self.lr):
            return np.full(n + 1, self.lr_at(t0), dtype=np.float64), n, None
        needs_next = self._needs_next_lr()
        values, error = [], None
        for s in range(n + 1 if needs_next else n):
            try:
                values.append(self.lr_at(t0 + s))
            except (ArithmeticError, ValueError, TypeError) as exc:
                error = exc
                break
        runnable = min(n, len(values) - 1 if needs_next else len(values))
        values += values[-1:] * (n + 1 - len(values)) if values else [0.0] * (n + 1)
        return np.array(values, dtype=np.float64), max(runnable, 0), error

    # ---- state

    def bind(self, model):
        """Allocate the state for this model on first use; refuse another model later."""
        key = (tuple(model.sizes), model.dtype)
        if self._bound is None:
            # on 64-byte lines, as the model's parameters are: whole vectors per line in the update
            self._state = {name: _core.line_aligned_zeros(model.n_params, model.dtype) for name in self.state_names}
            self._bound = key
            self._model = weakref.ref(model)
            return
        bound_to = self._model() if self._model is not None else None
        if self._bound != key or (bound_to is not None and bound_to is not model):
            what = f"a {self._bound[1]} model of sizes {list(self._bound[0])}"
            raise ValueError(f"this optimizer holds state for {what}; it cannot step "
                             f"{'another model' if self._bound == key else f'a {key[1]} model of sizes {list(key[0])}'} "
                             "(use a new optimizer, or reset() this one)")
        self._model = weakref.ref(model)

    @contextlib.contextmanager
    def binding(self, model):
        """bind(model) for the block's set-up: when the block raises, a fresh optimizer is
        left unbound again (its state dropped), as it was."""
        before = (self._state, self._bound, self._model)
        self.bind(model)
        try:
            yield
        except BaseException:
            self.__dict__.update(_state=before[0], _bound=before[1], _model=before[2])
            raise

    def reset(self):
        """Forget the state and the step count."""
        self.t = 0
        self._state = {}
        self._bound = None
        self._model = None

    def check_state(self):
        """ValueError when a state buffer holds what no step could have made (written in place
        through state_buffers()): NaN or infinity, or a negative second moment."""
        for name, buffer in self._state.items():
            if not _core.all_finite(buffer):
                raise ValueError(f"the optimizer's state buffer {name!r} holds NaN or infinity: reset() the "
                                 "optimizer, or use a new one")
        v = self._state.get("v")
        if v is not None and v.size and v.min() < 0:
            raise ValueError("the optimizer's state buffer 'v' holds negative values (Adam's second moment is "
                             "never negative): reset() the optimizer, or use a new one")

    def state_buffers(self):
        """The state buffers by name (views: the optimizer's own arrays), empty before binding."""
        return dict(self._state)

    def rule(self, n_threads=1):
        """The compiled core's form of this optimizer (after bind)."""
        empty = np.empty(0, dtype=self._bound[1])
        m = self._state.get("m", empty)
        v = self._state.get("v", empty)
        return _core.UpdateRule(self.kind, m, v, n_threads=n_threads, weight_decay=self.weight_decay,
                                **self._core_hyper())

    def _core_hyper(self):
        return {}

    # ---- explicit state: what saving, loading and the distributed fit use

    def hyper_parameters(self):
        """The constructor's arguments that rebuild this optimizer (lr may be a schedule)."""
        raise NotImplementedError

    def state_dict(self):
        """Everything the optimizer holds: {"type", "hyper", "t", "bound", "buffers", "lookahead"}.

        ``buffers`` are copies; ``bound`` is None or {"sizes", "dtype"} of the model
        the state belongs to; ``lookahead`` is Nesterov's (True when the model
        holds the look-ahead point psi)."""
        bound = None if self._bound is None else {"sizes": list(self._bound[0]), "dtype": self._bound[1].name}
        return {"type": type(self).__name__, "hyper": self.hyper_parameters(), "t": self.t,
                "bound": bound, "buffers": {k: v.copy() for k, v in self._state.items()},
                "lookahead": bool(getattr(self, "_lookahead", True))}

    def load_state_dict(self, state):
        """Take the state of ``state_dict()`` (from this class), checked; nothing changes unless it all checks.

        The hyper-parameters go through the constructor's checks; ``t`` must be
        a whole number below 2^53; the buffers must be exactly this class's,
        finite, and shaped for the bound model. The optimizer binds to the next
        model of those sizes and dtype that it steps."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
        unknown = set(state) - {"type", "hyper", "t", "bound", "buffers", "lookahead"}
        if unknown:
            raise ValueError(f"state has unknown entries {sorted(unknown)}")
        if state.get("type", type(self).__name__) != type(self).__name__:
            raise ValueError(f"state is a {state.get('type')!r} optimizer's; this is a {type(self).__name__}")
        hyper = state.get("hyper", self.hyper_parameters())
        if not isinstance(hyper, dict):
            raise TypeError("state['hyper'] must be a dict of the constructor's arguments")
        try:
            fresh = type(self)(**hyper)
        except TypeError as exc:
            raise TypeError(f"state['hyper'] does not fit {type(self).__name__}: {exc}") from None
        t = _step_count(state.get("t", 0), "state['t']")
        bound, buffers = state.get("bound"), state.get("buffers", {})
        if not isinstance(buffers, dict):
            raise TypeError("state['buffers'] must be a dict of arrays")
        if bound is None:
            if buffers:
                raise ValueError(f"state has buffers {sorted(buffers)} but no model they belong to ('bound')")
            key, arrays = None, {}
        else:
            key = _check_bound(bound)
            if set(buffers) != set(fresh.state_names):
                raise ValueError(f"state['buffers'] must hold exactly {sorted(fresh.state_names)} for this "
                                 f"{type(self).__name__}, got {sorted(buffers)}")
            n = _checks.count_params(key[0])
            arrays = {}
            for name, value in buffers.items():
                arr = _checks._as_numeric_array(value, f"state['buffers'][{name!r}]")
                if arr.shape != (n,):
                    raise ValueError(f"state['buffers'][{name!r}] has shape {arr.shape}; a model of sizes "
                                     f"{list(key[0])} needs ({n},)")
                arr = _checks.finite_array(arr, key[1], f"state['buffers'][{name!r}]")
                if name == "v" and arr.size and arr.min() < 0:
                    raise ValueError("state['buffers']['v'] holds negative values: Adam's second moment is never negative")
                arrays[name] = _core.line_aligned_zeros(n, key[1])  # a copy, on lines as bind's are
                arrays[name][...] = arr
        lookahead = state.get("lookahead", True)
        if not isinstance(lookahead, (bool, np.bool_)):
            raise TypeError(f"state['lookahead'] must be a bool, got {lookahead!r}")
        self.__dict__.update(fresh.__dict__)
        self.__dict__.update(t=t, _state=arrays, _bound=key, _model=None)
        if hasattr(self, "_lookahead"):
            self._lookahead = bool(lookahead)
        return self

    # ---- hooks for look-ahead methods (Nesterov); plain optimizers need none

    def prepare(self, model):
        """Put model.params where the next gradient must be evaluated."""
        self.bind(model)

    def finalize(self, model):
        """Put model.params at the point of the trajectory (phi)."""

    def step(self, model):
        """One update of model.params from model.grads, in place.

        FloatingPointError, with the model and the optimizer as they were, when the
        gradient holds NaN or infinity, or when the update would leave a parameter or a
        state value that is not finite (a learning rate too large)."""
        # the schedule first: a failing one must not leave a fresh optimizer bound to the model
        lr, lr_next = self.lr_at(self.t), self.lr_at(self.t + 1) if self._needs_next_lr() else 0.0
        with model.exclusive("step"), self.binding(model):
            self._check_ready()
            if self.t + 1 >= 2 ** 53:
                raise ValueError(f"t: the step count ({self.t}) cannot grow past 2^53, where it stops being exact")
            rule = self.rule(_threads.allowed_threads())
            # the update run dry first (the same arithmetic, nothing written): one that would leave
            # a value that is not finite changes nothing, and the cause is looked for only then
            if not _core.update_stays_finite(model._net, rule, lr, lr_next, self.t, 0.0):
                if not _core.all_finite(model.grads):
                    raise FloatingPointError("step: model.grads holds NaN or infinity (did the backward pass "
                                             "overflow?); nothing was updated")
                self.check_state()
                raise FloatingPointError(f"step {self.t}: the update would leave a parameter or a state value that "
                                         f"is not finite; the learning rate ({self.lr!r}) is probably too large. "
                                         "Nothing was updated")
            _core.update(model._net, rule, lr, lr_next, self.t, 0.0)
            self.t += 1

    def _check_ready(self):
        pass

    def _needs_next_lr(self):
        return False

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_model"] = None  # a weak reference does not pickle; it binds again on first use
        return state

    def __copy__(self):
        """copy.copy gives an optimizer with its own state buffers, as copy.deepcopy and pickling
        do: a shallow copy would share them, and stepping another model would change this one's."""
        return copy.deepcopy(self)


def _convention(value, allowed):
    if value not in allowed:
        raise ValueError(f"convention must be one of {allowed}, got {value!r}")
    return "book" if value == "seed" else value


def _betas(value):
    try:
        b1, b2 = value
    except TypeError:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {value!r}") from None
    except ValueError:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {value!r}") from None
    return _checks.unit_interval(b1, "betas[0]"), _checks.unit_interval(b2, "betas[1]")


def _check_bound(bound):
    if not isinstance(bound, dict) or set(bound) != {"sizes", "dtype"}:
        raise ValueError("state['bound'] must be None or {'sizes': [...], 'dtype': ...}")
    return _checks.check_sizes(bound["sizes"]), _checks.model_dtype(bound["dtype"])


class SGD(Optimizer):
    """Stochastic gradient descent, with the book's momentum or Nesterov momentum.

    momentum = 0:  phi <- phi - lr * g
    momentum = beta: m <- beta*m + (1-beta)*g;  phi <- phi - lr*m
    nesterov: the same, with g taken at phi - lr*beta*m. The model's parameters
    hold that look-ahead point psi between steps (docs/math.md); ``finalize``
    (which ``fit`` calls at its end) moves them back to phi, ``prepare`` forward
    again. Full-batch SGD is gradient descent. ``weight_decay``: g <- g + wd*p
    before the rule (PyTorch's meaning).

    ``convention="torch"`` takes ``lr`` and ``momentum`` as torch.optim.SGD does
    (dampening 0): b <- beta*b + g (the first step b = g), phi <- phi - lr*b.
    That is the book's rule with lr/(1-beta) and m = (1-beta)*b (docs/math.md,
    "Matching other libraries"), which is how it runs; Nesterov alike.
    """

    CONVENTIONS = ("book", "seed", "torch")
    _checked = {**Optimizer._checked,
                "momentum": lambda value: _checks.unit_interval(value, "momentum"),
                "nesterov": lambda value: _flag(value, "nesterov"),
                "convention": lambda value: _convention(value, SGD.CONVENTIONS)}

    def __init__(self, lr, momentum=0.0, nesterov=False, convention="book", weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = momentum
        self.nesterov = nesterov
        self.convention = convention
        self._lookahead = True  # Nesterov: params hold psi (true for a fresh optimizer: psi_0 = phi_0)

    def __setattr__(self, name, value):
        if name not in ("momentum", "nesterov"):
            return super().__setattr__(name, value)
        value = self._checked[name](value)
        momentum = value if name == "momentum" else getattr(self, "momentum", 0.0)
        nesterov = value if name == "nesterov" else getattr(self, "nesterov", False)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        # the state buffers and the meaning of the parameters (Nesterov keeps psi) follow the
        # rule; once the optimizer holds state for a model, the rule may not change kind
        if getattr(self, "_bound", None) is not None and (momentum > 0, nesterov) != (self.momentum > 0, self.nesterov):
            raise ValueError(f"{name} cannot change from {getattr(self, name)!r} to {value!r} here: the optimizer "
                             "holds state for its rule (momentum 0 or not, Nesterov or not); call reset() first "
                             "or use a new optimizer")
        object.__setattr__(self, name, value)

    def hyper_parameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "convention": self.convention, "weight_decay": self.weight_decay}

    def lr_at(self, t):
        """The book-form learning rate of step t (torch's lr / (1 - momentum) under convention="torch")."""
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
    def state_names(self):
        return ("m",) if self.momentum > 0 else ()

    def _core_hyper(self):
        return {"beta1": self.momentum}

    def _needs_next_lr(self):
        return self.nesterov

    def prepare(self, model):
        self.bind(model)
        if self.nesterov and not self._lookahead:
            # psi_t = phi_t - lr_t * beta * m_t
            model.params = self._moved(model, -1.0, "look-ahead point psi")
            self._lookahead = True

    def finalize(self, model):
        if self.nesterov and self._lookahead and "m" in self._state:
            # phi_t = psi_t + lr_t * beta * m_t
            model.params = self._moved(model, 1.0, "trajectory point phi")
            self._lookahead = False

    def _moved(self, model, sign, what):
        """params + sign * lr_t * beta * m, computed aside: FloatingPointError, and the model
        untouched, when it is not finite in the model's dtype (a learning rate too large)."""
        with np.errstate(over="ignore", invalid="ignore"):
            moved = model.params + (sign * self.lr_at(self.t) * self.momentum) * self._state["m"]
        if not _checks.all_finite(moved):
            sign = "+" if sign > 0 else "-"
            raise FloatingPointError(f"Nesterov momentum at step {self.t}: the {what} (params {sign} lr * momentum "
                                     f"* m) is not finite in {model.dtype}; the learning rate ({self.lr!r}) is "
                                     "probably too large")
        return moved

    def _check_ready(self):
        if self.nesterov and not self._lookahead and self._state["m"].any():
            raise RuntimeError("Nesterov momentum: the model holds the trajectory point phi (after finalize or "
                               "fit), but the gradient must be taken at the look-ahead point: call "
                               "optimizer.prepare(model), then recompute the gradient, then step()")

    def reset(self):
        super().reset()
        self._lookahead = True

    def __repr__(self):
        conv = f", convention={self.convention!r}" if self.convention != "book" else ""
        wd = f", weight_decay={self.weight_decay!r}" if self.weight_decay else ""
        return f"SGD(lr={self.lr!r}, momentum={self.momentum!r}, nesterov={self.nesterov!r}{conv}{wd})"


class Adam(Optimizer):
    """Adam with bias correction (docs/math.md): torch.optim.Adam's rule, step for step.

    ``weight_decay``: g <- g + wd*p before the rule (torch.optim.Adam's meaning;
    see AdamW for the decoupled form). ``convention="keras"`` (alias
    ``"sklearn"``) places epsilon as Keras and scikit-learn do,
    ``lr*sqrt(1-beta2^t)/(1-beta1^t) * m/(sqrt(v)+eps)``: the book's rule with
    eps replaced by eps/sqrt(1-beta2^t) (docs/math.md). ``"torch"`` is the book's form.
    """

    state_names = ("m", "v")
    CONVENTIONS = ("book", "seed", "torch", "keras", "sklearn")
    kind = _core.OPT_ADAM
    _decoupled = False
    _checked = {**Optimizer._checked,
                "betas": lambda value: _betas(value),
                "eps": lambda value: _checks.positive_float(value, "eps"),
                "convention": lambda value: _convention(value, Adam.CONVENTIONS)}

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, convention="book", weight_decay=0.0):
        self.convention = convention
        super().__init__(lr, weight_decay)
        self.betas = betas
        self.eps = eps

    def hyper_parameters(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "convention": self.convention,
                "weight_decay": self.weight_decay}

    def _core_hyper(self):
        return {"beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps,
                "eps_hat": self.convention in ("keras", "sklearn"), "decoupled": self._decoupled}

    def __repr__(self):
        conv = f", convention={self.convention!r}" if self.convention != "book" else ""
        wd = f", weight_decay={self.weight_decay!r}" if self.weight_decay or self._decoupled else ""
        return f"{type(self).__name__}(lr={self.lr!r}, betas={self.betas!r}, eps={self.eps!r}{conv}{wd})"


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW's rule): each step first
    shrinks the parameters, p <- p * (1 - lr * weight_decay), then takes Adam's step
    from the gradient alone. Default weight_decay 0.01, as PyTorch's."""

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, convention="book", weight_decay=1e-2):
        super().__init__(lr, betas, eps, convention, weight_decay)


class NormalizedGD(Optimizer):
    """The book's normalized gradient: phi <- phi - lr * g / (sqrt(g*g) + eps)."""

    kind = _core.OPT_NORMALIZED
    _checked = {**Optimizer._checked, "eps": lambda value: _checks.positive_float(value, "eps")}

    def __init__(self, lr, eps=1e-8):
        super().__init__(lr)
        self.eps = eps

    def hyper_parameters(self):
        return {"lr": self.lr, "eps": self.eps}

    def _core_hyper(self):
        return {"eps": self.eps}

    def __repr__(self):
        return f"NormalizedGD(lr={self.lr!r}, eps={self.eps!r})"


#: The optimizer classes by name, for files and for names users pass.
OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW, NormalizedGD)}


def from_state_dict(state):
    """A new optimizer of the class ``state["type"]`` names, holding that state (checked)."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
    cls = OPTIMIZERS.get(state.get("type"))
    if cls is None:
        raise ValueError(f"unknown optimizer type {state.get('type')!r}; expected one of {sorted(OPTIMIZERS)}")
    hyper = state.get("hyper")
    if not isinstance(hyper, dict) or "lr" not in hyper:
        raise ValueError("state['hyper'] must be a dict holding at least 'lr'")
    try:
        optimizer = cls(**hyper)
    except TypeError as exc:
        raise TypeError(f"state['hyper'] does not fit {cls.__name__}: {exc}") from None
    return optimizer.load_state_dict(state)


def state_buffers_of(optimizer):
    """How many parameter-sized state buffers an optimizer (or an optimizer's name) keeps."""
    if isinstance(optimizer, Optimizer):
        return len(optimizer.state_names)
    names = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2, "normalized": 0, "normalizedgd": 0}
    if isinstance(optimizer, str) and optimizer.lower() in names:
        return names[optimizer.lower()]
    raise TypeError(f"optimizer must be a fastfit optimizer or one of {sorted(names)}, got {optimizer!r}")
