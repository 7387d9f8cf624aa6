"""ChannelAffine: a per-channel scale and shift, ``y = x * scale + shift``.

What an inference-mode BatchNorm reduces to once its statistics are frozen::

    scale = gamma / sqrt(running_var + eps)
    shift = beta - running_mean * scale

:func:`bnlab.deploy.fold_batch_norm` puts one where a BatchNorm has no Dense/Conv2D before it to
fold into.

Example::

    >>> import numpy as np
    >>> from bnlab.layers.affine import ChannelAffine
    >>> layer = ChannelAffine(3)
    >>> layer.params["scale"][...] = [1.0, 2.0, 3.0]
    >>> layer.forward(np.ones((2, 3), dtype=np.float32)).tolist()
    [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import as_float_array, check_feature_axis, compute_dtype
from bnlab.layers.base import Layer

__all__ = ["ChannelAffine"]


class ChannelAffine(Layer):
    """``y = x * scale[c] + shift[c]`` along the feature ``axis`` (channels-last by default).

    Args:
        num_features: number of channels C (the size of ``axis``).
        axis: the feature axis that is kept (Keras' meaning); every other axis is broadcast.
        name: layer name.

    Backward: ``dx = dy * scale``, ``dscale = sum(dy * x)``, ``dshift = sum(dy)``, the sums over
    every axis but ``axis``.
    """

    def __init__(self, num_features: int, *, axis: int = -1, name: str | None = None) -> None:
        super().__init__(name=name)
        if isinstance(num_features, bool) or not isinstance(num_features, int | np.integer):
            raise TypeError(
                f"ChannelAffine: num_features must be a positive int, got {num_features!r}"
            )
        if num_features < 1:
            raise ValueError(f"ChannelAffine: num_features must be >= 1, got {num_features}")
        self.num_features = int(num_features)
        self.axis = int(axis)
        self.params["scale"] = np.ones(self.num_features, dtype=np.float32)
        self.params["shift"] = np.zeros(self.num_features, dtype=np.float32)
        self.grads["scale"] = np.zeros(self.num_features, dtype=np.float32)
        self.grads["shift"] = np.zeros(self.num_features, dtype=np.float32)
        self._x: np.ndarray | None = None

    def _shape(self, x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Broadcast shape of the per-channel vectors and the axes reduced in backward."""
        where = f"{self.name}.forward"
        ax = check_feature_axis(x.ndim, self.axis, where=where)
        if x.shape[ax] != self.num_features:
            raise ValueError(
                f"{where}: expected {self.num_features} features on axis {self.axis}, "
                f"got input of shape {x.shape}"
            )
        shape = tuple(self.num_features if i == ax else 1 for i in range(x.ndim))
        return shape, tuple(i for i in range(x.ndim) if i != ax)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", where=f"{self.name}.forward")
        shape, _ = self._shape(x)
        dt = compute_dtype(x.dtype)
        xc = x.astype(dt, copy=False)
        scale = self.params["scale"].astype(dt, copy=False).reshape(shape)
        shift = self.params["shift"].astype(dt, copy=False).reshape(shape)
        y = xc * scale + shift
        self._x = xc if self.training else None
        return y.astype(x.dtype, copy=False)

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray:
        if self._x is None:
            raise RuntimeError(
                f"{self.name}.backward: call forward in training mode first (train() mode is "
                "needed to keep the input for the gradient)"
            )
        dy = as_float_array(dy, "dy", where=f"{self.name}.backward")
        if dy.shape != self._x.shape:
            raise ValueError(
                f"{self.name}.backward: dy has shape {dy.shape}, expected {self._x.shape}"
            )
        shape, red = self._shape(self._x)
        dt = self._x.dtype
        dyc = dy.astype(dt, copy=False)
        scale = self.params["scale"].astype(dt, copy=False).reshape(shape)
        self.grads["scale"][...] = np.sum(dyc * self._x, axis=red, dtype=np.float64)
        self.grads["shift"][...] = np.sum(dyc, axis=red, dtype=np.float64)
        return (dyc * scale).astype(dy.dtype, copy=False)

    def get_config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "axis": self.axis, "name": self.name}
