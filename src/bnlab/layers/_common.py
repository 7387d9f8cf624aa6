"""Helpers shared by the built-in layers: input checks, shape errors, reusable buffers."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import as_float_array

__all__ = [
    "InputShapeError",
    "BufferPool",
    "fmt_shape",
    "float_input",
    "last_axis",
    "like_input",
    "output_buffer",
    "pair",
    "store_grads",
]


_FAST = (np.dtype(np.float32), np.dtype(np.float64))


class InputShapeError(ValueError):
    """A layer got an input of the wrong shape; ``expected`` describes what it wanted."""

    def __init__(self, where: str, expected: str, got: tuple[int, ...]) -> None:
        self.where = where
        self.expected = expected
        self.got = tuple(got)
        super().__init__(f"{where} expected input {expected}, got shape {self.got}")


def fmt_shape(shape: tuple[Any, ...], batch: bool = True) -> str:
    """(N, 784) style: the batch dimension is written N."""
    dims = ["N", *map(str, shape[1:])] if batch else list(map(str, shape))
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def float_input(x: Any, where: str, ndim: int) -> np.ndarray:
    """``x`` as a float array of rank ``ndim``; float16 is widened to float32 for computing."""
    if type(x) is np.ndarray and x.ndim == ndim and x.dtype in _FAST:
        return x  # the hot path of a training step: nothing to convert
    arr = as_float_array(x, "input", where=where)
    if arr.ndim != ndim:
        raise InputShapeError(where, f"of rank {ndim}", arr.shape)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr


def pair(value: int | tuple[int, int] | list[int], name: str, where: str) -> tuple[int, int]:
    """An int or a 2-sequence of positive ints as a (height, width) tuple."""
    items = (value, value) if isinstance(value, (int, np.integer)) else value
    ints = isinstance(items, (tuple, list)) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items
    )  # no bool (True is not a size), no float or str (int("2"), int(2.5) would pass)
    out: tuple[int, ...] = tuple(int(v) for v in items) if ints else ()
    if len(out) != 2 or min(out) < 1:
        raise ValueError(f"{where}: {name} must be a positive int or a pair of them, got {value!r}")
    return (out[0], out[1])


def last_axis(input_shape: Any, where: str) -> int:
    """The size of ``input_shape``'s last axis (the features a lazy layer is built for): a
    positive int, else ValueError naming ``where`` and the shape."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else ()
    c = shape[-1] if shape else None
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
        raise ValueError(
            f"{where}: built from input shape {input_shape!r}, whose last axis (the features) "
            "must be a positive int"
        )
    return int(c)


class BufferPool:
    """Arrays reused between calls, keyed by purpose, shape and dtype.

    Only the most recent ``keep`` shapes per purpose are kept, so alternating a training and
    an evaluation batch size does not reallocate, while a stream of odd sizes cannot grow
    memory without bound.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._arrays: dict[tuple[str, tuple[int, ...], Any], np.ndarray] = {}

    def get(self, purpose: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        key = (purpose, tuple(shape), dtype)
        arr = self._arrays.get(key)
        if arr is None:
            same = [k for k in self._arrays if k[0] == purpose]
            for k in same[: max(len(same) - self.keep + 1, 0)]:
                del self._arrays[k]
            arr = self._arrays[key] = np.empty(shape, dtype=dtype)
        return arr

    def clear(self) -> None:
        self._arrays.clear()


def output_buffer(
    pool: BufferPool, reuse: bool, purpose: str, shape: tuple[int, ...], dtype: Any
) -> np.ndarray:
    """A reused array from ``pool`` if ``reuse`` (set by Sequential), else a fresh one.

    Layers used on their own return fresh arrays, as a PyTorch user expects; inside a
    Sequential every intermediate output is owned by its layer and overwritten by the next
    forward/backward call, which is what makes a training step allocation-free.
    """
    if reuse:
        return pool.get(purpose, shape, dtype)
    return np.empty(shape, dtype=dtype)


def like_input(y: np.ndarray, x: Any) -> np.ndarray:
    """``y`` cast back to float16 when the layer's input was float16 (computed in float32)."""
    return y.astype(np.float16) if getattr(x, "dtype", None) == np.float16 else y


def store_grads(grads: dict[str, np.ndarray], values: dict[str, np.ndarray], where: str) -> None:
    """``grads[k][...] = v`` for each ``k, v`` of ``values`` once every ``v`` fits its gradient's
    dtype (a float64 input's gradients rounded into a float32 layer can overflow): else a
    FloatingPointError, nothing written."""
    for k, v in values.items():
        g = grads[k]
        if v.dtype != g.dtype:
            with np.errstate(over="ignore"):
                fits = bool(np.isfinite(v.astype(g.dtype)).all())
            if not fits and np.isfinite(v).all():
                raise FloatingPointError(
                    f"{where}: d{k} overflows the layer's {g.dtype} (its input is {v.dtype}); "
                    f"nothing was updated. Use layer.astype(np.{v.dtype})"
                )
    for k, v in values.items():
        g = grads[k]
        g[...] = v if v.shape == g.shape else v.reshape(g.shape)
