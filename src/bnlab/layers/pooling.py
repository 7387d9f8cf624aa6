"""Pooling layers over channels-last images: MaxPool2D, AvgPool2D and GlobalAveragePool2D."""

from __future__ import annotations

from collections.abc import Iterator
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

__all__ = ["MaxPool2D", "GlobalAveragePool2D", "AvgPool2D"]


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


class AvgPool2D(Layer):
    """y[n, i, j, c] = mean of x[n, ., ., c] over the window at (i*sh, j*sw); Keras' arguments.

    ``strides`` defaults to ``pool_size``. ``padding="valid"`` drops what does not fill a
    window (torch's ``AvgPool2d``); ``"same"`` pads to ``ceil(H / sh)`` outputs (the odd pixel
    at the bottom/right) and averages over the real pixels only (Keras; torch's
    ``count_include_pad=False``). Backward: each dy is shared equally by its window's pixels,
    ``dx[pixel] = sum over the windows holding it of dy / count``.
    """

    def __init__(
        self,
        pool_size: int | tuple[int, int] = 2,
        strides: int | tuple[int, int] | None = None,
        padding: str = "valid",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.pool_size = pair(pool_size, "pool_size", "AvgPool2D")
        self.strides = self.pool_size if strides is None else pair(strides, "strides", "AvgPool2D")
        if padding not in ("valid", "same"):
            raise ValueError(f"AvgPool2D: padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding
        self._geometry: tuple[tuple[int, ...], tuple[int, int, int, int], np.ndarray] | None = None

    def describe(self) -> str:
        return f"AvgPool2D({self.pool_size[0]}x{self.pool_size[1]})"

    def _pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zeros; none for "valid"."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        out = []
        for size, k, s in zip((h, w), self.pool_size, self.strides, strict=True):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            out += [total // 2, total - total // 2]
        return (out[0], out[1], out[2], out[3])

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        ph, pw = self.pool_size
        if len(input_shape) != 4 or (
            self.padding == "valid" and (input_shape[1] < ph or input_shape[2] < pw)
        ):
            raise InputShapeError(self.describe(), f"(N, H>={ph}, W>={pw}, C)", input_shape)
        n, h, w, c = input_shape
        t, b, left, r = self._pads(h, w)
        (sh, sw) = self.strides
        return (n, (h + t + b - ph) // sh + 1, (w + left + r - pw) // sw + 1, c)

    def _windows(self, a: np.ndarray, shape: tuple[int, ...]) -> Iterator[tuple[Any, ...]]:
        """Index of every window offset (p, q) into the padded array, as strided slices."""
        _, ho, wo, _ = shape
        (sh, sw) = self.strides
        for p in range(self.pool_size[0]):
            for q in range(self.pool_size[1]):
                yield (
                    slice(None),
                    slice(p, p + sh * (ho - 1) + 1, sh),
                    slice(q, q + sw * (wo - 1) + 1, sw),
                )

    def forward(self, x: np.ndarray) -> np.ndarray:
        arr = float_input(x, self.describe(), 4)
        shape = self.output_shape(arr.shape)
        pads = self._pads(arr.shape[1], arr.shape[2])
        width = ((0, 0), pads[:2], pads[2:], (0, 0))
        xp = np.pad(arr, width) if any(pads) else arr
        ones = np.pad(np.ones((1, *arr.shape[1:3], 1)), width)
        # sums in float64: a mean of finite values never overflows (float32 sums gave inf)
        acc = np.zeros(shape, np.promote_types(arr.dtype, np.float64))
        count = np.zeros((1, *shape[1:3], 1))
        for idx in self._windows(xp, shape):
            acc += xp[idx]
            count += ones[idx]
        y = (acc / count).astype(arr.dtype)
        self._geometry = (arr.shape, pads, count)
        return like_input(y, x)

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray:
        if self._geometry is None:
            raise RuntimeError(f"{self.describe()}.backward called before forward")
        in_shape, (t, b, left, r), count = self._geometry
        shape = self.output_shape(in_shape)
        if np.shape(dy) != shape:
            raise ValueError(
                f"{self.describe()}.backward: dy must have shape {shape}, got {np.shape(dy)}"
            )
        dy = float_input(dy, f"{self.describe()}.backward", 4)
        g = dy / count.astype(dy.dtype)  # dx in dy's dtype (float64 counts would promote it)
        n, h, w, c = in_shape
        dxp = np.zeros((n, h + t + b, w + left + r, c), g.dtype)
        for idx in self._windows(dxp, shape):
            dxp[idx] += g
        return dxp[:, t : t + h, left : left + w, :].copy()

    def get_config(self) -> dict[str, Any]:
        return {
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "name": self.name,
        }
