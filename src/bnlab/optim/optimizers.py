"""SGD, RMSprop and Adam, updating parameter arrays in place (see :mod:`bnlab.optim`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import numpy as np

from bnlab._checks import check_bool, check_int, check_real
from bnlab.optim.schedules import Schedule, schedule_from_config

if TYPE_CHECKING:  # bnlab.layers imports the kernels (Numba): not needed at run time here
    from bnlab.layers.base import Layer

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "OPTIMIZERS", "LR"]

LR: TypeAlias = "float | Callable[[int], float]"


_KERNELS: list[Any] = []


def _fused() -> Any:
    """:mod:`bnlab.kernels.sgd`, imported on the first update (it compiles Numba kernels)."""
    if not _KERNELS:
        from bnlab.kernels import sgd

        _KERNELS.append(sgd)
    return _KERNELS[0]


# -- optimizers -----------------------------------------------------------------------------
class Optimizer:
    """Base class: holds ``params``/``grads``, the step count and per-parameter slot arrays."""

    slot_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], lr: LR
    ) -> None:
        where = type(self).__name__
        if set(params) != set(grads):
            raise KeyError(
                f"{where}: params and grads must have the same keys; only in params: "
                f"{sorted(set(params) - set(grads))}, only in grads: "
                f"{sorted(set(grads) - set(params))}"
            )
        for k, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"{where}: parameter '{k}' must be a float ndarray, got {p!r:.60}")
        if not callable(lr):
            check_real(lr, "lr", where=where, low=0, low_open=True)
        self.params = params
        self._grads_source: Callable[[], Mapping[str, np.ndarray]] = lambda: grads
        self.lr: LR = lr if callable(lr) else float(lr)
        self.iterations = 0
        self._tmp: dict[str, np.ndarray] = {}
        self.slots: dict[str, dict[str, np.ndarray]] = {
            s: {k: np.zeros_like(p) for k, p in params.items()} for s in self.slot_names
        }

    @classmethod
    def from_model(cls, model: Layer, **kwargs: Any) -> Optimizer:
        """Build the optimizer on ``model.params`` / ``model.grads`` (re-read at every step).

        Refuses a model with lazy layers not built yet (their parameters do not exist)."""
        lazy = ("in_features", "in_channels", "num_features", "num_channels")
        for layer in getattr(model, "modules", list)():  # duck-typed models have no modules()
            if any(k in (config := layer.get_config()) and config[k] is None for k in lazy):
                raise ValueError(
                    f"{cls.__name__}.from_model: {layer.describe()} '{layer.name}' has no "
                    "parameters yet (its input size is inferred); call model.build(input_shape) "
                    "or run one forward pass first"
                )
        opt = cls(model.params, model.grads, **kwargs)
        opt._grads_source = lambda: model.grads
        return opt

    @property
    def grads(self) -> Mapping[str, np.ndarray]:
        return self._grads_source()

    def current_lr(self) -> float:
        """The learning rate the next :meth:`step` uses."""
        return float(self.lr(self.iterations)) if callable(self.lr) else float(self.lr)

    def step(self) -> None:
        """Apply one update to every parameter in place, then increment ``iterations``."""
        grads = self.grads
        for k, p in self.params.items():
            g = grads[k]
            if g.shape != p.shape:
                raise ValueError(
                    f"{type(self).__name__}.step: gradient '{k}' has shape {g.shape}, "
                    f"parameter has shape {p.shape}"
                )
        lr = self.current_lr()
        for k, p in self.params.items():
            self._update(k, p, grads[k], lr)
        self.iterations += 1

    def _update(self, key: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def _scratch(self, key: str, like: np.ndarray) -> np.ndarray:
        """A reusable temporary shaped like parameter ``key`` (no allocation per step)."""
        tmp = self._tmp.get(key)
        if tmp is None or tmp.shape != like.shape or tmp.dtype != like.dtype:
            tmp = self._tmp[key] = np.empty_like(like)
        return tmp

    # -- serialization ---------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        lr = self.lr.get_config() if isinstance(self.lr, Schedule) else self.lr
        if callable(lr):
            raise TypeError(
                f"{type(self).__name__}: a plain callable lr cannot be saved; use a "
                "bnlab.optim.Schedule (StepDecay, ExponentialDecay) or subclass Schedule"
            )
        return {"lr": lr}

    def state_dict(self) -> dict[str, Any]:
        """``{"type", "config", "iterations", "slots": {slot: {param: array copy}}}``."""
        return {
            "type": type(self).__name__,
            "config": self.get_config(),
            "iterations": self.iterations,
            "slots": {s: {k: v.copy() for k, v in d.items()} for s, d in self.slots.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore slots, ``iterations`` and hyperparameters; everything is checked first."""
        where = f"{type(self).__name__}.load_state_dict"
        if state.get("type") != type(self).__name__:
            raise ValueError(f"{where}: state is for optimizer {state.get('type')!r}")
        slots = state["slots"]
        if set(slots) != set(self.slots):
            raise KeyError(f"{where}: expected slots {sorted(self.slots)}, got {sorted(slots)}")
        for s, d in slots.items():
            if set(d) != set(self.params):
                raise KeyError(
                    f"{where}: slot '{s}' has parameters {sorted(d)}, "
                    f"the optimizer has {sorted(self.params)}"
                )
            for k, v in d.items():
                if np.shape(v) != self.params[k].shape:
                    raise ValueError(
                        f"{where}: slot '{s}' of '{k}' has shape {np.shape(v)}, "
                        f"expected {self.params[k].shape}"
                    )
        config = dict(state["config"])
        lr = config.pop("lr")
        unknown = [name for name in config if not hasattr(self, name)]
        if unknown:
            raise KeyError(f"{where}: unknown hyperparameters {unknown} in the state's config")
        lr = schedule_from_config(lr) if isinstance(lr, Mapping) else lr
        # the constructor's checks on an optimizer without parameters: NaN, Inf, "yes" refused
        probe = type(self)({}, {}, lr=lr, **config)
        iterations = check_int(state["iterations"], "iterations", where=where)
        self.lr = probe.lr
        for name in config:
            setattr(self, name, getattr(probe, name))
        for s, d in slots.items():
            for k, v in d.items():
                self.slots[s][k][...] = v
        self.iterations = iterations

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with torch.optim.SGD's momentum (dampening 0)::

        b_t = g                      (first step)
        b_t = momentum * b_{t-1} + g (later steps)
        d   = g + momentum * b_t  if nesterov else  b_t
        p  -= lr_t * d

    With ``momentum=0`` it is ``p -= lr_t * g``. Keras' SGD keeps ``v = m v - lr g`` instead;
    the two agree for a constant learning rate.
    """

    slot_names = ("momentum_buffer",)

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        lr: LR = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        check_real(momentum, "momentum", where="SGD", low=0)
        check_bool(nesterov, "nesterov", where="SGD")
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov=True requires momentum > 0")
        super().__init__(params, grads, lr)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self._views: dict[str, tuple[np.ndarray, np.ndarray, bool, tuple[np.ndarray, ...]]] = {}

    def _flat_views(self, key: str, p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, ...]:
        """1-D views of ``p``, ``g`` (and the momentum buffer) for the one-pass kernels of
        :mod:`bnlab.kernels.sgd`, or ``()`` where they do not apply; kept while the arrays
        stay the same objects (checking them costs more than the update of a bias)."""
        plain = self.momentum == 0
        cached = self._views.get(key)
        if cached is None or cached[0] is not p or cached[1] is not g or cached[2] != plain:
            arrays = (p, g) if plain else (p, g, self.slots["momentum_buffer"][key])
            views = tuple(a.reshape(-1) for a in arrays) if _fused().fusable(*arrays) else ()
            cached = self._views[key] = (p, g, plain, views)
        if not p.flags.writeable:  # made read-only since: NumPy's path raises its error
            return ()
        return cached[3]

    def _update(self, key: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        views = self._flat_views(key, p, g)
        if views:  # the same bits as the NumPy lines below, in one pass (bnlab.kernels.sgd)
            if self.momentum == 0:
                _fused().sgd_update(*views, lr)
            else:
                first = self.iterations == 0
                _fused().sgd_momentum_update(
                    *views, lr, self.momentum, first=first, nesterov=self.nesterov
                )
            return
        tmp = self._scratch(key, p)
        if self.momentum == 0:
            np.multiply(g, lr, out=tmp)
            p -= tmp
            return
        buf = self.slots["momentum_buffer"][key]
        if self.iterations == 0:
            buf[...] = g
        else:
            buf *= self.momentum
            buf += g
        if self.nesterov:  # d = g + momentum * buf
            np.multiply(buf, self.momentum, out=tmp)
            tmp += g
        else:
            tmp[...] = buf
        tmp *= lr
        p -= tmp

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    """RMSprop as Keras 2 (``keras.optimizers.RMSprop(lr, rho, epsilon, decay)``)::

        lr_t = lr / (1 + decay * t)
        a_t  = rho * a_{t-1} + (1 - rho) * g^2          (a_0 = 0)
        p   -= lr_t * g / (sqrt(a_t) + eps)

    eps placement: Keras 2 and torch.optim.RMSprop both add eps OUTSIDE the square root
    (``sqrt(a) + eps``); TF2's ``tf.keras`` RMSprop and Keras 1 do the same. So with
    ``decay=0`` this equals ``torch.optim.RMSprop(lr, alpha=rho, eps=eps)`` (momentum 0,
    centered False, weight_decay 0) exactly. The defaults differ: Keras eps=1e-7 (bnlab's
    default), torch eps=1e-8; torch alpha=0.99, Keras rho=0.9. ``decay > 0`` equals torch with
    a ``LambdaLR(lambda t: 1 / (1 + decay * t))`` scheduler stepped after every update.
    """

    slot_names = ("square_avg",)

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        lr: LR = 1e-3,
        rho: float = 0.9,
        eps: float = 1e-7,
        decay: float = 0.0,
    ) -> None:
        check_real(rho, "rho", where="RMSprop", low=0, high=1, high_open=True)
        check_real(eps, "eps", where="RMSprop", low=0)
        check_real(decay, "decay", where="RMSprop", low=0)
        super().__init__(params, grads, lr)
        self.rho, self.eps, self.decay = float(rho), float(eps), float(decay)

    def current_lr(self) -> float:
        return super().current_lr() / (1.0 + self.decay * self.iterations)

    def _update(self, key: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        a, tmp = self.slots["square_avg"][key], self._scratch(key, p)
        a *= self.rho
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.rho
        a += tmp
        np.sqrt(a, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)  # p -= lr * (g / (sqrt(a) + eps)), torch's rounding order
        tmp *= lr
        p -= tmp

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "eps": self.eps, "decay": self.decay}


class Adam(Optimizer):
    """Adam as torch.optim.Adam (Kingma & Ba 2015, eps outside the square root)::

    m_t = beta1 m + (1 - beta1) g;   v_t = beta2 v + (1 - beta2) g^2
    p  -= (lr_t / (1 - beta1^(t+1))) * m_t / (sqrt(v_t) / sqrt(1 - beta2^(t+1)) + eps)
    """

    slot_names = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        lr: LR = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            check_real(beta, name, where="Adam", low=0, high=1, high_open=True)
        check_real(eps, "eps", where="Adam", low=0)
        super().__init__(params, grads, lr)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update(self, key: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        m, v = self.slots["exp_avg"][key], self.slots["exp_avg_sq"][key]
        tmp = self._scratch(key, p)
        t = self.iterations + 1
        m *= self.beta1
        np.multiply(g, 1 - self.beta1, out=tmp)
        m += tmp
        v *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.beta2
        v += tmp
        step_size = lr / (1 - self.beta1**t)
        np.sqrt(v, out=tmp)  # denom = sqrt(v) / sqrt(1 - beta2^t) + eps
        tmp /= math.sqrt(1 - self.beta2**t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        p -= tmp

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


OPTIMIZERS: dict[str, type[Optimizer]] = {"SGD": SGD, "RMSprop": RMSprop, "Adam": Adam}
