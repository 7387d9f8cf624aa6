"""The BatchNorm layer: batch statistics in training, running (population) statistics in eval."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import as_float_array, check_feature_axis, check_finite
from bnlab.kernels import (
    BatchNormCache,
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_inference,
    batch_norm_inference_backward,
)
from bnlab.layers.base import Layer

__all__ = ["BatchNorm"]


class BatchNorm(Layer):
    """Batch normalization (Ioffe & Szegedy 2015) over every axis except the feature ``axis``.

    For each channel c, with the ``m`` values of the batch that share it (``m = N`` for dense
    ``(N, C)`` input, ``m = N*H*W`` for NHWC images)::

        training:  mu_B = mean(x),   var_B = mean((x - mu_B)^2)          (biased, 1/m)
                   y = gamma * (x - mu_B) / sqrt(var_B + eps) + beta
                   running_mean = (1 - momentum) * running_mean + momentum * mu_B
                   running_var  = (1 - momentum) * running_var  + momentum * var_B * m/(m-1)
        eval:      y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta

    Normalization uses the biased batch variance; ``running_var`` stores the unbiased one
    (``m/(m-1)``, Algorithm 2 of the paper), exactly as PyTorch does.

    ``momentum`` is the weight of the *new* batch (PyTorch's convention): Keras'
    ``BatchNormalization(momentum=k)`` is ``momentum=1 - k`` here (Keras' 0.99 is 0.01).
    ``momentum=None`` makes the running statistics the cumulative average of all batches so far:
    after ``num_batches_tracked`` is incremented to n, ``running += (batch - running) / n``.

    In eval mode ``backward`` is the gradient of the inference affine map above (the running
    statistics are constants), which is what fine-tuning with frozen BN needs.
    ``track_running_stats=False`` keeps no buffers and always normalizes with batch statistics;
    ``affine=False`` has no ``gamma``/``beta`` (``params`` is empty).

    ``virtual_batch_size=k`` is ghost batch normalization (tf.keras 2): in training, each chunk
    of k examples along axis 0 (the last one may be smaller) is normalized with its own
    statistics, exactly as if the chunks went through the layer one after another: the running
    statistics are updated once per chunk, in order, and ``num_batches_tracked`` counts chunks.
    Eval mode uses the running statistics on the whole batch.

    A training batch containing NaN or Inf raises ``FloatingPointError`` and changes nothing
    (parameters, running statistics, ``num_batches_tracked``).

    Example::

        >>> import numpy as np
        >>> from bnlab.layers import BatchNorm
        >>> bn = BatchNorm(3)                     # dense (N, 3); NHWC images: BatchNorm(C)
        >>> x = np.random.default_rng(0).normal(5.0, 2.0, size=(32, 3)).astype(np.float32)
        >>> y = bn.forward(x)
        >>> bool(np.allclose(y.mean(axis=0), 0, atol=1e-5))
        True
        >>> dx = bn.backward(np.ones_like(y))     # fills bn.grads["gamma"], bn.grads["beta"]
        >>> bn.grads["beta"]
        array([32., 32., 32.], dtype=float32)
        >>> bool(np.allclose(bn.running_mean, 0.9 * 0.0 + 0.1 * x.mean(axis=0)))
        True
        >>> y_eval = bn.eval().forward(x)         # uses running_mean, running_var
    """

    def __init__(
        self,
        num_features: int,
        *,
        axis: int = -1,
        momentum: float | None = 0.1,
        eps: float = 1e-5,
        affine: bool = True,
        track_running_stats: bool = True,
        virtual_batch_size: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        _check_args(num_features, axis, momentum, eps, virtual_batch_size)
        self.num_features = int(num_features)
        self.axis = int(axis)
        self.momentum = None if momentum is None else float(momentum)
        self.eps = float(eps)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.virtual_batch_size = None if virtual_batch_size is None else int(virtual_batch_size)
        C = self.num_features
        if self.affine:
            self.params = {"gamma": np.ones(C, np.float32), "beta": np.zeros(C, np.float32)}
            self.grads = {"gamma": np.zeros(C, np.float32), "beta": np.zeros(C, np.float32)}
        if self.track_running_stats:
            self.buffers = {
                "running_mean": np.zeros(C, np.float32),
                "running_var": np.ones(C, np.float32),
                "num_batches_tracked": np.array(0, np.int64),
            }
        # ("train", [caches]) or ("eval", x); None before the first forward
        self._cache: tuple[str, Any] | None = None

    # -- buffers as attributes ---------------------------------------------------------------
    @property
    def running_mean(self) -> np.ndarray | None:
        return self.buffers.get("running_mean")

    @property
    def running_var(self) -> np.ndarray | None:
        return self.buffers.get("running_var")

    @property
    def num_batches_tracked(self) -> int | None:
        n = self.buffers.get("num_batches_tracked")
        return None if n is None else int(n)

    @property
    def _where(self) -> str:
        return f"BatchNorm layer '{self.name}'"

    # -- computation -------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize ``x``; see the class docstring for training and eval formulas."""
        arr = self._check_input(x)
        gamma, beta = self.params.get("gamma"), self.params.get("beta")
        if not (self.training or not self.track_running_stats):
            y = batch_norm_inference(
                arr, self.running_mean, self.running_var, gamma, beta, axis=self.axis, eps=self.eps
            )
            self._cache = ("eval", arr)
            return y
        if arr.size == 0 and not self.training:
            self._cache = ("eval", arr)
            return np.empty(arr.shape, arr.dtype)
        chunks = self._chunks(arr)
        outs, caches = [], []
        for chunk in chunks:
            self._check_count(chunk)
            y, cache = batch_norm_forward(chunk, gamma, beta, axis=self.axis, eps=self.eps)
            outs.append(y)
            caches.append(cache)
        self._check_stats(arr, caches)
        if self.training and self.track_running_stats:
            for cache in caches:
                self._update_running(cache)
        self._cache = ("train", caches)
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dx``; fills ``grads["gamma"] = sum(dy * xhat)`` and ``grads["beta"] = sum(dy)``."""
        if self._cache is None:
            raise RuntimeError(f"{self._where}: backward called before forward")
        mode, saved = self._cache
        shape = saved.shape if mode == "eval" else _total_shape(saved)
        g = as_float_array(dy, "dy", where=self._where, min_ndim=0)
        if g.shape != shape:
            raise ValueError(
                f"{self._where}: dy must have the shape of the last forward input {shape}, "
                f"got {g.shape}"
            )
        if mode == "eval":
            dx, dgamma, dbeta = batch_norm_inference_backward(
                g, saved, self.running_mean, self.running_var, self.params.get("gamma"),
                axis=self.axis, eps=self.eps,
            )  # fmt: skip
        else:
            dx, dgamma, dbeta = self._backward_train(g, saved)
        if self.affine:
            self.grads["gamma"][...] = dgamma
            self.grads["beta"][...] = dbeta
        return dx

    def _backward_train(
        self, dy: np.ndarray, caches: list[BatchNormCache]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(caches) == 1:
            return batch_norm_backward(dy, caches[0])
        dxs, start = [], 0
        dgamma = np.zeros(self.num_features, np.float64)
        dbeta = np.zeros(self.num_features, np.float64)
        for cache in caches:
            n = cache.x.shape[0]
            dx, dg, db = batch_norm_backward(dy[start : start + n], cache)
            dxs.append(dx)
            dgamma += dg
            dbeta += db
            start += n
        return np.concatenate(dxs, axis=0), dgamma, dbeta

    # -- helpers -----------------------------------------------------------------------------
    def _check_input(self, x: Any) -> np.ndarray:
        arr = as_float_array(x, "x", where=self._where, min_ndim=2)
        ax = check_feature_axis(arr.ndim, self.axis, where=self._where)
        if arr.shape[ax] != self.num_features:
            raise ValueError(
                f"{self._where}: x must have num_features={self.num_features} entries along "
                f"axis {self.axis}, got shape {arr.shape} ({arr.shape[ax]} features)"
            )
        if self.virtual_batch_size is not None and ax == 0:
            raise ValueError(
                f"{self._where}: virtual_batch_size splits axis 0, so the feature axis must not "
                f"be 0; got axis={self.axis} for an input of rank {arr.ndim}"
            )
        return arr

    def _chunks(self, arr: np.ndarray) -> list[np.ndarray]:
        k = self.virtual_batch_size
        if not self.training or k is None or arr.shape[0] <= k:
            return [arr]
        return [arr[i : i + k] for i in range(0, arr.shape[0], k)]

    def _check_count(self, chunk: np.ndarray) -> None:
        m = chunk.size // self.num_features
        what = "virtual batch" if chunk.shape[0] == self.virtual_batch_size else "training batch"
        if m == 0:
            raise ValueError(
                f"{self._where}: x is an empty {what} (shape {chunk.shape}); batch statistics "
                "need at least 2 values per channel"
            )
        if m == 1:
            raise ValueError(
                f"{self._where}: Expected more than 1 value per channel when training, got a "
                f"{what} of shape {chunk.shape}"
            )

    def _check_stats(self, arr: np.ndarray, caches: list[BatchNormCache]) -> None:
        """NaN/Inf in x shows in the float64 batch statistics; raise before any update."""
        if all(np.isfinite(c.mean).all() and np.isfinite(c.var).all() for c in caches):
            return
        check_finite(arr, "x (training batch)", where=self._where)
        raise FloatingPointError(
            f"{self._where}: the batch variance of x overflows; nothing was updated"
        )

    def _update_running(self, cache: BatchNormCache) -> None:
        n = int(self.buffers["num_batches_tracked"]) + 1
        w = 1.0 / n if self.momentum is None else self.momentum
        m = cache.count
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        rm[...] = (1.0 - w) * rm.astype(np.float64) + w * cache.mean
        rv[...] = (1.0 - w) * rv.astype(np.float64) + w * cache.var * (m / (m - 1))
        self.buffers["num_batches_tracked"][...] = n

    # -- serialization -----------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "axis": self.axis,
            "momentum": self.momentum,
            "eps": self.eps,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
            "virtual_batch_size": self.virtual_batch_size,
            "name": self.name,
        }


def _total_shape(caches: list[BatchNormCache]) -> tuple[int, ...]:
    first = caches[0].x.shape
    return (sum(c.x.shape[0] for c in caches),) + first[1:]


def _check_args(
    num_features: Any, axis: Any, momentum: Any, eps: Any, virtual_batch_size: Any
) -> None:
    where = "BatchNorm"
    if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)):
        raise TypeError(f"{where}: num_features must be an int, got {num_features!r}")
    if num_features < 1:
        raise ValueError(f"{where}: num_features must be >= 1, got {num_features}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{where}: axis must be an int, got {axis!r}")
    if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"{where}: momentum must be in [0, 1] or None, got {momentum}")
    if not float(eps) > 0.0:
        raise ValueError(f"{where}: eps must be > 0, got {eps}")
    if virtual_batch_size is not None and (
        isinstance(virtual_batch_size, bool)
        or not isinstance(virtual_batch_size, (int, np.integer))
        or virtual_batch_size < 1
    ):
        raise ValueError(
            f"{where}: virtual_batch_size must be a positive int or None, got "
            f"{virtual_batch_size!r}"
        )
