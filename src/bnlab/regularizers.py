"""Weight penalties (Keras' regularizers): ``L1``, ``L2`` and :func:`penalty_from_config`.

A layer declares them per parameter in ``layer.regularizers`` (``Dense(...,
kernel_regularizer=L2(1e-4))``); the training step adds their losses and gradients
(:func:`bnlab.optim.penalty_loss`, :func:`bnlab.optim.add_penalty_grads`). Like
:mod:`bnlab.initializers`, this module imports nothing of bnlab, so that layers can rebuild a
penalty from its config without importing the optimizers.

>>> L2(0.5).loss(np.array([1.0, -2.0]))
2.5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["L1", "L2", "Penalty", "penalty_from_config"]


class Penalty:
    """A weight penalty: ``loss(w)`` is added to the training loss, ``grad(w)`` to ``dL/dw``."""

    def __init__(self, l: float) -> None:  # noqa: E741 (the conventional name)
        if not l >= 0:
            raise ValueError(f"{type(self).__name__}: the coefficient l must be >= 0, got {l}")
        self.l = float(l)

    def loss(self, w: np.ndarray) -> float:
        raise NotImplementedError

    def grad(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, w: np.ndarray) -> float:
        return self.loss(w)

    def get_config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "l": self.l}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.l!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Penalty) and type(self) is type(other) and self.l == other.l

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.l))


class L1(Penalty):
    """``loss = l * sum |w|``, ``grad = l * sign(w)`` (Keras' ``l1(l)``; sign(0) = 0)."""

    def loss(self, w: np.ndarray) -> float:
        return self.l * float(np.abs(w).sum(dtype=np.float64))

    def grad(self, w: np.ndarray) -> np.ndarray:
        return (self.l * np.sign(w)).astype(w.dtype, copy=False)


class L2(Penalty):
    """``loss = l * sum w^2``, ``grad = 2 l w`` (Keras' ``l2(l)``: no 1/2 factor).

    torch's ``weight_decay=wd`` adds ``wd * w`` to the gradient, i.e. ``L2(wd / 2)``.
    """

    def loss(self, w: np.ndarray) -> float:
        return self.l * float(np.square(w, dtype=np.float64).sum())

    def grad(self, w: np.ndarray) -> np.ndarray:
        return (2 * self.l * w).astype(w.dtype, copy=False)


_PENALTIES: dict[str, type[Penalty]] = {"L1": L1, "L2": L2}


def penalty_from_config(config: Mapping[str, Any] | None) -> Penalty | None:
    """Rebuild a penalty from ``{"type": "L1"|"L2", "l": value}`` (None stays None)."""
    if config is None:
        return None
    kind = config.get("type")
    if kind not in _PENALTIES:
        raise ValueError(f"unknown penalty type {kind!r}; known: {sorted(_PENALTIES)}")
    return _PENALTIES[kind](config["l"])
