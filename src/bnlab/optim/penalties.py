"""L1/L2 weight penalties declared per layer in ``layer.regularizers`` (Keras' convention)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # bnlab.layers imports the kernels (Numba): not needed at run time here
    from bnlab.layers.base import Layer

__all__ = ["Penalty", "L1", "L2", "penalty_from_config", "penalty_loss", "add_penalty_grads"]


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


def _layers(model: Layer) -> Iterator[Layer] | list[Layer]:
    """Every leaf layer of ``model``, in forward order (containers hold views only)."""
    from bnlab.layers.base import Layer  # loaded already: model is one

    if type(model).modules is not Layer.modules:  # a container with its own walk
        return (layer for layer in model.modules() if not layer.sublayers())
    # the walk of Layer.modules without a generator per layer (twice per training step)
    leaves: list[Layer] = []
    stack = [model]
    while stack:
        layer = stack.pop()
        subs = layer.sublayers()
        if subs:
            stack.extend(reversed(subs))
        else:
            leaves.append(layer)
    return leaves


def penalty_loss(model: Layer) -> float:
    """``sum over layers, over layer.regularizers {name: penalty}: penalty.loss(params[name])``."""
    return float(
        sum(
            pen.loss(layer.params[name])
            for layer in _layers(model)
            for name, pen in layer.regularizers.items()
            if pen is not None
        )
    )


def add_penalty_grads(model: Layer) -> None:
    """Add ``penalty.grad(w)`` to ``layer.grads[name]`` in place for every declared penalty.

    Call after ``model.backward`` (which overwrites the gradients) and before ``opt.step()``.
    """
    for layer in _layers(model):
        for name, pen in layer.regularizers.items():
            if pen is not None:
                layer.grads[name] += pen.grad(layer.params[name])
