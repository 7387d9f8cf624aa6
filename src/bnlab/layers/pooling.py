"""Pooling layers over channels-last images: MaxPool2D and GlobalAveragePool2D."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.kernels.pooling import max_pool_backward, max_pool_forward, pool_output_shape
from bnlab.layers._common import (
    BufferPool,
    InputShapeError,
    float_input,
    like_input,
    output_buffer,
    pair,
)
from bnlab.layers.base import Layer

__all__ = ["MaxPool2D", "GlobalAveragePool2D"]


class MaxPool2D(Layer):
    """y[n, i, j, c] = max over the pool window at (i*sh, j*sw) of x[n, ., ., c], no padding.

    ``stride`` defaults to ``pool_size`` (non-overlapping windows, as Keras and torch);
    rows/columns that do not fill a window are dropped ("valid", torch's floor mode).
    Backward routes each dy to the position of its window's maximum.
    """

    def __init__(
        self,
        pool_size: int | tuple[int, int] = 2,
        stride: int | tuple[int, int] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.pool_size = pair(pool_size, "pool_size", "MaxPool2D")
        self.stride = self.pool_size if stride is None else pair(stride, "stride", "MaxPool2D")
        self.reuse_output = False
        self._pool = BufferPool()
        self._argmax: np.ndarray | None = None
        self._in_shape: tuple[int, int, int, int] | None = None

    def describe(self) -> str:
        return f"MaxPool2D({self.pool_size[0]}x{self.pool_size[1]})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if (
            len(input_shape) != 4
            or input_shape[1] < self.pool_size[0]
            or input_shape[2] < self.pool_size[1]
        ):
            ph, pw = self.pool_size
            raise InputShapeError(self.describe(), f"(N, H>={ph}, W>={pw}, C)", input_shape)
        return pool_output_shape(input_shape, self.pool_size, self.stride)

    def forward(self, x: np.ndarray) -> np.ndarray:
        arr = float_input(x, self.describe(), 4)
        shape = self.output_shape(arr.shape)
        y = output_buffer(self._pool, self.reuse_output, "y", shape, arr.dtype)
        argmax = self._pool.get("argmax", shape, np.int32)
        max_pool_forward(arr, self.pool_size, self.stride, out=y, argmax=argmax)
        self._argmax, self._in_shape = argmax, arr.shape
        return like_input(y, x)

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray:
        if self._argmax is None or self._in_shape is None:
            raise RuntimeError(f"{self.describe()}.backward called before forward")
        dy = np.asarray(dy)
        if dy.shape != self._argmax.shape:
            raise ValueError(
                f"{self.describe()}.backward: dy must have shape {self._argmax.shape}, "
                f"got {dy.shape}"
            )
        dt = np.float64 if dy.dtype == np.float64 else np.float32
        dx = output_buffer(self._pool, self.reuse_output, "dx", self._in_shape, dt)
        return max_pool_backward(dy.astype(dt, copy=False), self._argmax, self._in_shape, out=dx)

    def get_config(self) -> dict[str, Any]:
        return {"pool_size": list(self.pool_size), "stride": list(self.stride), "name": self.name}


class GlobalAveragePool2D(Layer):
    """y[n, c] = mean over (h, w) of x[n, h, w, c]; dx = dy[n, c] / (H W) at every pixel."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._in_shape: tuple[int, ...] | None = None

    def describe(self) -> str:
        return "GlobalAveragePool2D"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 4:
            raise InputShapeError(self.describe(), "(N, H, W, C)", input_shape)
        return (input_shape[0], input_shape[3])

    def forward(self, x: np.ndarray) -> np.ndarray:
        arr = float_input(x, self.describe(), 4)
        if arr.shape[1] * arr.shape[2] == 0 and arr.shape[0] * arr.shape[3] > 0:
            raise ValueError(
                f"{self.describe()}: the mean over H x W needs at least one pixel, got input "
                f"shape {arr.shape}"
            )
        self._in_shape = arr.shape
        y = arr.mean(axis=(1, 2))
        return like_input(y, x)

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray:
        if self._in_shape is None:
            raise RuntimeError(f"{self.describe()}.backward called before forward")
        n, h, w, c = self._in_shape
        dy = np.asarray(dy)
        if dy.shape != (n, c):
            raise ValueError(
                f"{self.describe()}.backward: dy must have shape {(n, c)}, got {dy.shape}"
            )
        return np.broadcast_to(dy[:, None, None, :] / (h * w), self._in_shape).copy()
