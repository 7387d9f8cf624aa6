"""Flatten: (N, d1, d2, ...) -> (N, d1*d2*...), in C order (channels-last images flatten as
Keras does, which differs from PyTorch's NCHW order)."""

from __future__ import annotations

import numpy as np

from bnlab.layers._common import InputShapeError, float_input
from bnlab.layers.base import Layer

__all__ = ["Flatten"]


class Flatten(Layer):
    """y = x.reshape(N, -1) (a view when x is contiguous); dx = dy.reshape(x.shape)."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._in_shape: tuple[int, ...] | None = None

    def describe(self) -> str:
        return "Flatten"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 2:
            raise InputShapeError(self.describe(), "(N, ...) of rank >= 2", input_shape)
        return (input_shape[0], int(np.prod(input_shape[1:])))

    def forward(self, x: np.ndarray) -> np.ndarray:
        arr = np.asarray(x)
        float_input(arr[:0], self.describe(), max(arr.ndim, 2))  # dtype check only
        self._in_shape = arr.shape
        return arr.reshape(self.output_shape(arr.shape))

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray:
        if self._in_shape is None:
            raise RuntimeError("Flatten.backward called before forward")
        dy = np.asarray(dy)
        if dy.size != int(np.prod(self._in_shape)) or dy.shape[0] != self._in_shape[0]:
            raise ValueError(
                f"Flatten.backward: dy of shape {dy.shape} does not match the forward output "
                f"{self.output_shape(self._in_shape)}"
            )
        return dy.reshape(self._in_shape)
