"""Batch Renormalization layer (Ioffe 2017, arXiv 1702.03275), schedule included."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import as_float_array, check_feature_axis, check_finite, compute_dtype
from bnlab.kernels import batchrenorm_fused as fused
from bnlab.kernels import batchrenorm_ref as ref
from bnlab.layers.base import Layer

__all__ = ["BatchRenorm"]


class BatchRenorm(Layer):
    """Batch renormalization: batch normalization corrected towards the moving statistics.

    Training (per channel, over every axis but ``axis``; per chunk of ``virtual_batch_size``
    examples when given)::

        mu_B, var_B = batch mean and biased batch variance
        sigma_B = sqrt(var_B + eps)
        r = clip(sigma_B / sigma, 1/rmax, rmax)        d = clip((mu_B - mu) / sigma, -dmax, dmax)
        y = gamma * ((x - mu_B) / sigma_B * r + d) + beta      (r, d: constants for backprop)
        mu    <- mu    + momentum * (mu_B - mu)
        sigma <- sigma + momentum * (sigma_B - sigma)

    Inference: ``y = gamma * (x - mu) / sigma + beta``; its backward is the gradient of that
    affine map.

    Moving statistics: the buffers are ``running_mean`` (= mu) and ``running_var``, with
    ``sigma = sqrt(running_var + eps)`` everywhere (Keras' convention for its renorm
    ``moving_stddev``). The update moves sigma, as the paper, and stores
    ``running_var = sigma^2 - eps``. Initially mu = 0 and running_var = 1. ``momentum`` is the
    weight of the new batch (PyTorch's convention; Keras' momentum 0.99 is 0.01 here). With
    virtual batches (``virtual_batch_size=k``, which must divide the batch) r and d of every
    chunk use the moving statistics from before the step, and the step updates them once with
    the chunk averages of mu_B and sigma_B (tf.keras' renorm with virtual batches does the
    same). Unlike :class:`BatchNorm`'s ghost batches, which update once per chunk and count
    chunks, ``num_batches_tracked`` counts steps here: the schedule is in steps.

    Schedule (steps = ``num_batches_tracked``, the number of training forward passes before
    this one, counted from 0 like the paper's): rmax = 1 and dmax = 0 (plain batch norm) while
    ``step < warmup_steps``; then rmax rises linearly from 1 to ``rmax`` and reaches it at step
    ``rmax_steps``, and dmax rises from 0 to ``dmax`` by step ``dmax_steps`` (the ramps start
    at the end of warm-up; absolute step counts, as "rmax = 3 at 40k steps, dmax = 5 at 25k
    steps" with a 5k warm-up in the paper). A ``*_steps`` at or below ``warmup_steps`` jumps to
    the maximum when the warm-up ends; with all three at 0 rmax and dmax are constants.

    Example:
        >>> import numpy as np
        >>> from bnlab.layers import BatchRenorm
        >>> layer = BatchRenorm(3, warmup_steps=0, rmax_steps=0, dmax_steps=0)
        >>> x = np.random.default_rng(0).normal(5.0, 2.0, size=(8, 3)).astype(np.float32)
        >>> y = layer.forward(x)
        >>> dx = layer.backward(np.ones_like(y))
        >>> y.shape, dx.shape, int(layer.num_batches_tracked), layer.current_rmax()
        ((8, 3), (8, 3), 1, 3.0)
        >>> y_eval = layer.eval().forward(x)     # uses mu and sigma
    """

    def __init__(
        self,
        num_features: int,
        *,
        axis: int = -1,
        momentum: float = 0.01,
        eps: float = 1e-3,
        rmax: float = 3.0,
        dmax: float = 5.0,
        warmup_steps: int = 5000,
        rmax_steps: int = 40000,
        dmax_steps: int = 25000,
        virtual_batch_size: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        _check_args(
            self.name, num_features, momentum, eps, rmax, dmax, virtual_batch_size,
            warmup_steps=warmup_steps, rmax_steps=rmax_steps, dmax_steps=dmax_steps,
        )  # fmt: skip
        self.num_features = int(num_features)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.rmax = float(rmax)
        self.dmax = float(dmax)
        self.warmup_steps = int(warmup_steps)
        self.rmax_steps = int(rmax_steps)
        self.dmax_steps = int(dmax_steps)
        self.virtual_batch_size = None if virtual_batch_size is None else int(virtual_batch_size)
        c = self.num_features
        self.params = {"gamma": np.ones(c, np.float32), "beta": np.zeros(c, np.float32)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {
            "running_mean": np.zeros(c, np.float32),
            "running_var": np.ones(c, np.float32),
            "num_batches_tracked": np.array(0, dtype=np.int64),
        }
        self._cache: ref.BatchRenormCache | fused.FusedBatchRenormCache | None = None
        self._eval_cache: tuple[np.ndarray, np.ndarray, int, tuple[int, ...]] | None = None

    # -- state -------------------------------------------------------------------------------
    @property
    def running_mean(self) -> np.ndarray:
        return self.buffers["running_mean"]

    @property
    def running_var(self) -> np.ndarray:
        return self.buffers["running_var"]

    @property
    def num_batches_tracked(self) -> int:
        return int(self.buffers["num_batches_tracked"])

    @property
    def moving_std(self) -> np.ndarray:
        """sigma = sqrt(running_var + eps), float64."""
        return np.sqrt(self.running_var.astype(np.float64) + self.eps)

    # -- schedule ----------------------------------------------------------------------------
    def _ramp(self, step: int | None, end: int, start_value: float, max_value: float) -> float:
        t = self.num_batches_tracked if step is None else int(step)
        if t < self.warmup_steps:
            return start_value
        if t >= end:
            return max_value
        frac = (t - self.warmup_steps) / (end - self.warmup_steps)
        return start_value + frac * (max_value - start_value)

    def current_rmax(self, step: int | None = None) -> float:
        """rmax used by the training forward at ``step`` (default: the next one)."""
        return self._ramp(step, self.rmax_steps, 1.0, self.rmax)

    def current_dmax(self, step: int | None = None) -> float:
        """dmax used by the training forward at ``step`` (default: the next one)."""
        return self._ramp(step, self.dmax_steps, 0.0, self.dmax)

    # -- computation -------------------------------------------------------------------------
    def _check_input(self, x: Any) -> tuple[np.ndarray, int]:
        where = f"{self.name}.forward"
        arr = as_float_array(x, "x", where=where, min_ndim=2)
        ax = check_feature_axis(arr.ndim, self.axis, where=where)
        if arr.shape[ax] != self.num_features:
            raise ValueError(
                f"{where}: x has {arr.shape[ax]} features on axis {self.axis} (shape "
                f"{arr.shape}), expected num_features={self.num_features}"
            )
        if arr.size == 0:
            raise ValueError(f"{where}: x is empty (shape {arr.shape}); expected a non-empty batch")
        check_finite(arr, "x", where=where)
        return arr, ax

    def _check_training_batch(self, arr: np.ndarray, ax: int) -> None:
        where = f"{self.name}.forward"
        k = self.virtual_batch_size
        if k is not None:
            if ax == 0:
                raise ValueError(
                    f"{where}: virtual_batch_size={k} splits the batch axis 0, which is the "
                    f"feature axis here (axis={self.axis}); expected the features on another axis"
                )
            if arr.shape[0] % k:
                raise ValueError(
                    f"{where}: virtual_batch_size={k} must divide the batch size, got a batch "
                    f"of {arr.shape[0]} examples (shape {arr.shape})"
                )
        per_channel = arr.size // arr.shape[ax]
        if k is not None:
            per_channel = per_channel // (arr.shape[0] // k)
        if per_channel < 2:
            raise ValueError(
                f"{where}: expected more than 1 value per channel when training, got input "
                f"shape {arr.shape}" + ("" if k is None else f" with virtual_batch_size={k}")
            )

    def forward(self, x: np.ndarray) -> np.ndarray:
        arr, ax = self._check_input(x)
        if not self.training:
            return self._forward_eval(arr, ax)
        self._check_training_batch(arr, ax)
        mu = self.running_mean.astype(np.float64)
        sigma = self.moving_std
        gamma, beta = self.params["gamma"], self.params["beta"]
        rmax, dmax = self.current_rmax(), self.current_dmax()
        k = self.virtual_batch_size
        cache: ref.BatchRenormCache | fused.FusedBatchRenormCache
        if k is None or k == arr.shape[0]:  # one batch: the fused Numba kernels
            y, cache = fused.batch_renorm_forward(
                arr, gamma, beta, mu, sigma, axis=ax, eps=self.eps, rmax=rmax, dmax=dmax
            )
        else:  # ghost batches: every chunk at once in the grouped NumPy reference
            y, cache = ref.batch_renorm_forward(
                arr, gamma, beta, mu, sigma, axis=ax, eps=self.eps, rmax=rmax, dmax=dmax,
                virtual_batch_size=k,
            )  # fmt: skip
        new_mu = mu + self.momentum * (cache.mean.mean(axis=0) - mu)
        new_sigma = sigma + self.momentum * (cache.std.mean(axis=0) - sigma)
        self.buffers["running_mean"][...] = new_mu
        self.buffers["running_var"][...] = np.maximum(new_sigma**2 - self.eps, 0.0)
        self.buffers["num_batches_tracked"][...] = self.num_batches_tracked + 1
        self._cache, self._eval_cache = cache, None
        return y

    def _forward_eval(self, arr: np.ndarray, ax: int) -> np.ndarray:
        sigma = self.moving_std
        mu = self.running_mean.astype(np.float64)
        y = ref.batch_renorm_inference(
            arr, mu, sigma, self.params["gamma"], self.params["beta"], axis=ax
        )
        cdt = compute_dtype(arr.dtype)
        shape = [1] * arr.ndim
        shape[ax] = arr.shape[ax]
        x_n = (arr.astype(np.float64) - mu.reshape(shape)) / sigma.reshape(shape)
        self._eval_cache = (x_n.astype(cdt), sigma, ax, tuple(arr.shape))
        self._cache = None
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        where = f"{self.name}.backward"
        if self._cache is None and self._eval_cache is None:
            raise RuntimeError(f"{where}: called before forward; run forward(x) first")
        shape = self._cache.shape if self._cache is not None else self._eval_cache[3]  # type: ignore[index]
        g = as_float_array(dy, "dy", where=where, min_ndim=1)
        if g.shape != shape:
            raise ValueError(
                f"{where}: dy has shape {g.shape}, expected the shape of the forward output {shape}"
            )
        check_finite(g, "dy", where=where)
        if isinstance(self._cache, fused.FusedBatchRenormCache):
            dx, dgamma, dbeta = fused.batch_renorm_backward(g, self._cache)
        elif self._cache is not None:
            dx, dgamma, dbeta = ref.batch_renorm_backward(g, self._cache)
        else:
            dx, dgamma, dbeta = self._backward_eval(g)
        self.grads["gamma"][...] = dgamma
        self.grads["beta"][...] = dbeta
        return dx

    def _backward_eval(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradient of y = gamma * x_n + beta with x_n = (x - mu) / sigma fixed statistics."""
        assert self._eval_cache is not None
        x_n, sigma, ax, _ = self._eval_cache
        cdt = x_n.dtype
        shape = [1] * dy.ndim
        shape[ax] = dy.shape[ax]
        reduce_axes = tuple(i for i in range(dy.ndim) if i != ax)
        dyc = dy.astype(cdt, copy=False)
        scale = (self.params["gamma"].astype(np.float64) / sigma).astype(cdt)
        dx = (dyc * scale.reshape(shape)).astype(dy.dtype, copy=False)
        dgamma = np.asarray(np.sum(dyc * x_n, axis=reduce_axes, dtype=np.float64))
        dbeta = np.asarray(np.sum(dyc, axis=reduce_axes, dtype=np.float64))
        return dx, dgamma, dbeta

    # -- serialization -----------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "axis": self.axis,
            "momentum": self.momentum,
            "eps": self.eps,
            "rmax": self.rmax,
            "dmax": self.dmax,
            "warmup_steps": self.warmup_steps,
            "rmax_steps": self.rmax_steps,
            "dmax_steps": self.dmax_steps,
            "virtual_batch_size": self.virtual_batch_size,
            "name": self.name,
        }


def _check_args(
    name: str,
    num_features: int,
    momentum: float,
    eps: float,
    rmax: float,
    dmax: float,
    virtual_batch_size: int | None,
    **steps: int,
) -> None:
    """Validate the constructor arguments; every message names the argument and the layer."""
    where = f"{name}.__init__"

    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(num_features) or num_features < 1:
        raise ValueError(f"{where}: num_features must be a positive integer, got {num_features!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{where}: momentum must be in [0, 1], got {momentum!r}")
    if not eps > 0.0:
        raise ValueError(f"{where}: eps must be > 0, got {eps!r}")
    if not rmax >= 1.0:
        raise ValueError(f"{where}: rmax must be >= 1, got {rmax!r}")
    if not dmax >= 0.0:
        raise ValueError(f"{where}: dmax must be >= 0, got {dmax!r}")
    for key, value in steps.items():
        if not is_int(value) or value < 0:
            raise ValueError(f"{where}: {key} must be a non-negative integer, got {value!r}")
    if virtual_batch_size is not None and (
        not is_int(virtual_batch_size) or virtual_batch_size < 1
    ):
        raise ValueError(
            f"{where}: virtual_batch_size must be None or a positive integer, "
            f"got {virtual_batch_size!r}"
        )
