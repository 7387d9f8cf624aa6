"""Activation layers: ReLU, Sigmoid, Tanh and Softmax (over the last axis).

Each keeps its output y for the backward pass, whose formula needs only y (see
:mod:`bnlab.kernels.activations`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bnlab.kernels import activations as K
from bnlab.layers._common import BufferPool, float_input, like_input, output_buffer
from bnlab.layers.base import Layer

__all__ = ["ReLU", "Sigmoid", "Tanh", "Softmax"]

_FAST = (np.dtype(np.float32), np.dtype(np.float64))  # computed as they come


class _Activation(Layer):
    """y = f(x) elementwise (softmax: along the last axis); dx = f'(y) applied to dy."""

    _fwd: Callable[..., np.ndarray]
    _bwd: Callable[..., np.ndarray]

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.reuse_output = False
        self._pool = BufferPool()
        self._y: np.ndarray | None = None

    def describe(self) -> str:
        return type(self).__name__

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if type(x) is np.ndarray and x.dtype in _FAST and x.ndim:
            arr = x  # the hot path of a training step: nothing to convert
        else:
            arr = float_input(x, self.describe(), max(np.ndim(x), 1))
        y = output_buffer(self._pool, self.reuse_output, "y", arr.shape, arr.dtype)
        type(self)._fwd(arr, out=y)
        self._y = y
        return y if arr is x else like_input(y, x)

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray:
        y = self._y
        if y is None:
            raise RuntimeError(f"{self.describe()}.backward called before forward")
        dx = output_buffer(self._pool, self.reuse_output, "dx", y.shape, y.dtype)
        return type(self)._bwd(dy if type(dy) is np.ndarray else np.asarray(dy), y, out=dx)


class ReLU(_Activation):
    """y = max(x, 0); dx = dy where y > 0."""

    _fwd = K.relu
    _bwd = K.relu_backward


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)) (overflow-free); dx = dy y (1 - y)."""

    _fwd = K.sigmoid
    _bwd = K.sigmoid_backward


class Tanh(_Activation):
    """y = tanh(x); dx = dy (1 - y^2)."""

    _fwd = K.tanh
    _bwd = K.tanh_backward


class Softmax(_Activation):
    """y = exp(x - max x) / sum exp(x - max x) over the last axis; dx = y (dy - sum(dy y)).

    For training a classifier, feed logits to ``bnlab.losses.SoftmaxCrossEntropy`` instead: it
    is more stable and faster than this layer followed by a log.
    """

    _fwd = K.softmax
    _bwd = K.softmax_backward
