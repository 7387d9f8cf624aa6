"""Inverted dropout: zero each unit with probability ``rate`` in training, scale the rest."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import as_generator
from bnlab.layers._common import BufferPool, float_input, like_input, output_buffer
from bnlab.layers.base import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Training: y = x * m / (1 - rate) with m ~ Bernoulli(1 - rate) per element; dx = dy * m /
    (1 - rate). Evaluation: the identity (the input itself is returned), as torch and Keras.

    The mask stream is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the
    same masks in the same order. The generator is declared by :meth:`generators`, so that a
    checkpoint saves its state and a resumed run draws the same masks.
    """

    def __init__(
        self,
        rate: float = 0.5,
        *,
        seed: int | np.random.Generator | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.rng = as_generator(seed, f"{type(self).__name__}")
        self.reuse_output = False
        self._pool = BufferPool()
        self._mask: np.ndarray | None = None

    def describe(self) -> str:
        return f"Dropout({self.rate:g})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        arr = float_input(x, self.describe(), np.ndim(x))
        if not self.training or self.rate == 0.0:
            self._mask = None
            return np.asarray(x)
        mask = self._pool.get("mask", arr.shape, arr.dtype)
        self.rng.random(
            out=mask, dtype=mask.dtype
        )  # u ~ U[0, 1), then mask = [u >= rate] / (1 - rate)
        np.multiply(mask >= self.rate, 1.0 / (1.0 - self.rate), out=mask)
        self._mask = mask
        y = output_buffer(self._pool, self.reuse_output, "y", arr.shape, arr.dtype)
        np.multiply(arr, mask, out=y)
        return like_input(y, x)

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray:
        """dx = dy * m / (1 - rate) (dy itself in eval mode); ``need_input_grad`` is ignored."""
        if self._mask is None:
            return np.asarray(dy)
        dy = np.asarray(dy)
        if dy.shape != self._mask.shape:
            raise ValueError(
                f"{self.describe()}.backward: dy must have shape {self._mask.shape}, got {dy.shape}"
            )
        dx = output_buffer(self._pool, self.reuse_output, "dx", dy.shape, self._mask.dtype)
        return np.multiply(dy, self._mask, out=dx)

    def generators(self) -> dict[str, np.random.Generator]:
        return {"rng": self.rng}

    def get_config(self) -> dict[str, Any]:
        seed = self.seed if isinstance(self.seed, (int, type(None))) else None
        return {"rate": self.rate, "seed": seed, "name": self.name}
