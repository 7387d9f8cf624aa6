"""GroupNorm and LayerNorm: batch-independent normalization, PyTorch's arguments, channels last.

Both are :func:`bnlab.kernels.groupnorm.group_norm_forward` (statistics per sample and group,
float64 sums) with a per-channel or per-element affine map; they keep no running statistics,
so training and eval compute the same function and a batch of one is fine. Why not the
BatchNorm core: its statistics are per channel over the batch, reduced across ranks and kept
as running averages; none of that applies here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import as_float_array
from bnlab.kernels.groupnorm import (
    GroupNormCache,
    check_groups,
    group_norm_backward,
    group_norm_forward,
)
from bnlab.layers._common import InputShapeError, last_axis, store_grads
from bnlab.layers.base import Layer

__all__ = ["GroupNorm", "LayerNorm"]


def _check_eps(eps: Any, where: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < np.inf:
        raise ValueError(f"{where}: eps must be a finite float > 0, got {eps!r}")
    return float(eps)


def _flag(value: Any, name: str, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")
    return bool(value)


def _dims(value: Any, name: str, where: str) -> tuple[int, ...]:
    """A positive int, or a non-empty tuple/list of them, as a tuple (no str, float, bool)."""
    items = (value,) if isinstance(value, (int, np.integer)) else value
    ok = isinstance(items, (tuple, list)) and len(items) > 0
    ok = ok and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in items)
    if not ok or min(items) < 1:
        raise ValueError(
            f"{where}: {name} must be a positive int or a non-empty tuple of them, got {value!r}"
        )
    return tuple(int(d) for d in items)


def _affine(layer: Layer, shape: tuple[int, ...], gamma: bool, beta: bool) -> None:
    if gamma:
        layer.params["gamma"] = np.ones(shape, np.float32)
        layer.grads["gamma"] = np.zeros(shape, np.float32)
    if beta:
        layer.params["beta"] = np.zeros(shape, np.float32)
        layer.grads["beta"] = np.zeros(shape, np.float32)


class _Norm(Layer):
    """forward/backward over the (N, S, C) view shared by GroupNorm and LayerNorm."""

    _cache: GroupNormCache | None = None
    eps: float

    def _run(self, x: Any, view: tuple[int, ...], groups: int) -> np.ndarray:
        """The kernel on ``x.reshape(view)`` (channels last), gamma and beta flattened."""
        arr = as_float_array(x, "x", where=self.describe(), min_ndim=2)
        gamma, beta = self.params.get("gamma"), self.params.get("beta")
        g = None if gamma is None else gamma.reshape(-1)
        b = None if beta is None else beta.reshape(-1)
        y, self._cache = group_norm_forward(arr.reshape(view), g, b, groups, eps=self.eps)
        self._cache.shape = arr.shape
        return y.reshape(arr.shape)

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """dx; fills ``grads["gamma"]``/``grads["beta"]`` (checked finite before either)."""
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}.backward called before forward")
        dx, dgamma, dbeta = group_norm_backward(dy, self._cache)
        new = {"gamma": dgamma, "beta": dbeta}
        store_grads(self.grads, {k: v for k, v in new.items() if k in self.grads}, self.describe())
        return dx if need_input_grad else None


class GroupNorm(_Norm):
    """Group normalization (Wu & He 2018), ``torch.nn.GroupNorm`` on channels-last input.

    For x of shape (N, ..., C), the C channels (the LAST axis) form ``num_groups`` groups of
    consecutive channels; for each sample n and group g over its spatial positions and
    channels::

        y = gamma[c] * (x - mean[n, g]) / sqrt(var[n, g] + eps) + beta[c]   (biased var)

    The same in training and eval. ``num_groups=1`` is LayerNorm over (H, W, C) with a
    per-channel affine map; ``num_groups=C`` is InstanceNorm. ``num_channels=None`` is taken
    from the input at the first forward pass (or ``model.build``).

    >>> import numpy as np
    >>> gn = GroupNorm(2, 4)
    >>> y = gn.forward(np.random.default_rng(0).normal(size=(3, 5, 5, 4)).astype(np.float32))
    >>> bool(np.allclose(y[0, ..., :2].mean(), 0, atol=1e-5))
    True
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int | None = None,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.eps = _check_eps(eps, "GroupNorm")
        self.affine = _flag(affine, "affine", "GroupNorm")
        check_groups(num_groups, num_groups, "GroupNorm")  # a positive int
        self.num_groups = int(num_groups)
        self.num_channels: int | None = None
        if num_channels is not None:
            (c,) = _dims(num_channels, "num_channels", "GroupNorm")
            self.build((1, c))

    @property
    def built(self) -> bool:
        return self.num_channels is not None

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Set ``num_channels`` from the last axis of ``input_shape`` and create gamma, beta."""
        if self.num_channels is not None:
            return
        c = last_axis(input_shape, self.describe())
        check_groups(self.num_groups, c, "GroupNorm")
        self.num_channels = c
        _affine(self, (c,), self.affine, self.affine)

    def describe(self) -> str:
        return f"GroupNorm({self.num_groups}, {self.num_channels})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c = input_shape[-1] if input_shape else 0
        ok = len(input_shape) >= 2 and self.num_channels in (None, c)
        if not ok or (c and c % self.num_groups):
            want = self.num_channels or f"a multiple of {self.num_groups}"
            raise InputShapeError(self.describe(), f"(N, ..., {want})", input_shape)
        return tuple(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize per (sample, group); see the class docstring."""
        shape = np.shape(x)
        self.build(shape)
        self.output_shape(shape)
        return self._run(x, shape, self.num_groups)

    def get_config(self) -> dict[str, Any]:
        return {
            "num_groups": self.num_groups,
            "num_channels": self.num_channels,
            "eps": self.eps,
            "affine": self.affine,
            "name": self.name,
        }


class LayerNorm(_Norm):
    """Layer normalization (Ba et al. 2016), ``torch.nn.LayerNorm``: statistics per sample over
    the last ``len(normalized_shape)`` axes, an elementwise affine map of that shape::

        y = gamma * (x - mean) / sqrt(var + eps) + beta          (biased var, per sample)

    Channels last: for NHWC images ``LayerNorm((H, W, C))`` is torch's ``LayerNorm((C, H, W))``
    on NCHW (gamma transposed); ``LayerNorm(C)`` normalizes each pixel's channels.
    ``elementwise_affine=False`` has no parameters; ``bias=False`` no beta.

    >>> import numpy as np
    >>> ln = LayerNorm(8)
    >>> y = ln.forward(np.arange(16, dtype=np.float32).reshape(2, 8))
    >>> bool(np.allclose(y.std(axis=1), 1, atol=1e-3))
    True
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | list[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.normalized_shape = _dims(normalized_shape, "normalized_shape", "LayerNorm")
        shape = self.normalized_shape  # the last axes of the input
        self.eps = _check_eps(eps, "LayerNorm")
        self.elementwise_affine = _flag(elementwise_affine, "elementwise_affine", "LayerNorm")
        self.bias = _flag(bias, "bias", "LayerNorm")
        _affine(self, shape, self.elementwise_affine, self.elementwise_affine and self.bias)

    def describe(self) -> str:
        return f"LayerNorm({', '.join(map(str, self.normalized_shape))})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        k = len(self.normalized_shape)
        if len(input_shape) < k + 1 or tuple(input_shape[-k:]) != self.normalized_shape:
            dims = ", ".join(map(str, self.normalized_shape))
            raise InputShapeError(self.describe(), f"(N, ..., {dims})", input_shape)
        return tuple(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize each sample over the last axes; see the class docstring."""
        shape = np.shape(x)
        self.output_shape(shape)
        p = int(np.prod(self.normalized_shape))
        return self._run(x, (int(np.prod(shape, dtype=np.int64)) // p, p), 1)

    def get_config(self) -> dict[str, Any]:
        return {
            "normalized_shape": list(self.normalized_shape),
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
            "bias": self.bias,
            "name": self.name,
        }
