"""The BatchNorm layer: batch statistics in training, running (population) statistics in eval."""

from __future__ import annotations

import numpy as np

from bnlab.kernels._bn_vectors import moving_average, param_grads
from bnlab.layers._normalization import BatchNormBase, NormCache

__all__ = ["BatchNorm"]

_FAST = (np.dtype(np.float32), np.dtype(np.float64))


class BatchNorm(BatchNormBase):
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
    ``BatchNormalization(momentum=k)`` is ``momentum=1 - k`` here (Keras' 0.99 is 0.01); a
    momentum above 0.5 warns once, at construction. ``momentum=None`` makes the running
    statistics the cumulative average of all batches so far: after ``num_batches_tracked`` is
    incremented to n, ``running += (batch - running) / n``.

    In eval mode ``backward`` is the gradient of the inference affine map above (the running
    statistics are constants), which is what fine-tuning with frozen BN needs.
    ``track_running_stats=False`` keeps no buffers and always normalizes with batch statistics;
    setting ``layer.track_running_stats = False`` later stops the updates but eval keeps using
    the buffers (PyTorch's rule). ``affine=False`` has no ``gamma``/``beta`` (``params`` is
    empty). ``reset_running_stats()`` and ``reset_parameters()`` as in PyTorch.

    ``virtual_batch_size=k`` is ghost batch normalization (tf.keras 2): in training, each chunk
    of k examples along axis 0 (the last one may be smaller) is normalized with its own
    statistics, exactly as if the chunks went through the layer one after another: the running
    statistics are updated once per chunk, in order, and ``num_batches_tracked`` counts chunks.
    Eval mode uses the running statistics on the whole batch.

    Outputs: used on its own, the layer returns arrays that are new to the caller (PyTorch's
    semantics); to save the page faults of fresh large arrays it hands an earlier ``y``/``dx``
    out again only once nothing else refers to it (:mod:`bnlab.layers._norm_buffers`). Inside
    a :class:`~bnlab.layers.Sequential` (``reuse_output``) they are the layer's own buffers,
    overwritten by its next call, as for every layer there. The bits are the same either way.

    A training batch containing NaN or Inf, one whose statistics would overflow the running
    statistics' dtype, and a ``dy`` containing NaN or Inf raise ``FloatingPointError`` and
    change nothing (parameters, gradients, running statistics, ``num_batches_tracked``). An
    empty training batch gives an empty output and changes nothing (PyTorch also counts it in
    ``num_batches_tracked``; here it is not counted, so ``momentum=None`` stays the average of
    the batches seen).

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

    _kind = "BatchNorm"
    _config_keys = (
        "num_features", "axis", "momentum", "eps", "affine", "track_running_stats",
        "virtual_batch_size",
    )  # fmt: skip

    def __init__(
        self,
        num_features: int | None = None,
        *,
        axis: int = -1,
        momentum: float | None = 0.1,
        eps: float = 1e-5,
        affine: bool = True,
        track_running_stats: bool = True,
        virtual_batch_size: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            num_features, axis=axis, momentum=momentum, eps=eps, affine=affine,
            track_running_stats=track_running_stats, virtual_batch_size=virtual_batch_size,
            name=name,
        )  # fmt: skip

    def _chunk_affine(
        self, mean: np.ndarray, var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """gamma and beta (float64, the same for every chunk)."""
        C = mean.shape[1]
        gamma, beta = self.params.get("gamma"), self.params.get("beta")
        scale = np.ones(C) if gamma is None else np.ascontiguousarray(gamma, np.float64)
        shift = np.zeros(C) if beta is None else np.ascontiguousarray(beta, np.float64)
        return scale, shift, {}

    def _running_update(
        self, count: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> dict[str, np.ndarray]:
        """One update per chunk, in order, each rounded to the buffers' dtype as it is stored:
        ``running = (1 - w) running + w batch`` (``w`` = momentum, or 1/n for None)."""
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        n = int(self.buffers["num_batches_tracked"])
        for j in range(mean.shape[0]):
            n += 1
            w = 1.0 / n if self.momentum is None else self.momentum
            m = int(count[j])
            rm = _moving_average(rm, mean[j], w, 1.0)
            rv = _moving_average(rv, var[j], w, m / (m - 1))
        return {"running_mean": rm, "running_var": rv, "num_batches_tracked": np.array(n)}

    def _chunk_param_grads(
        self, sum_dy: np.ndarray, sum_dy_xmu: np.ndarray, cache: NormCache
    ) -> tuple[np.ndarray, np.ndarray]:
        """dgamma = rstd * sum(dy * (x - mean)) = sum(dy * xhat), dbeta = sum(dy)."""
        dt = cache.x.dtype
        if len(sum_dy) == 1 and dt in _FAST:  # one chunk: one Numba call, the same bits
            dg, db = param_grads(cache.var[0], self.eps, sum_dy[0], sum_dy_xmu[0], cache.x)
            return dg[None], db[None]
        return (self._rstd(cache) * sum_dy_xmu).astype(dt), sum_dy.astype(dt)


def _moving_average(running: np.ndarray, batch: np.ndarray, w: float, factor: float) -> np.ndarray:
    """A new ``(1 - w) * running + (w * batch) * factor`` in float64, rounded to running's
    dtype: one Numba call for float32/float64 buffers, the same expression in NumPy else."""
    if running.dtype in _FAST:
        out: np.ndarray = moving_average(running, batch, w, factor)
        return out
    with np.errstate(over="ignore"):  # an overflow to inf is refused by the core
        return ((1.0 - w) * running.astype(np.float64) + w * batch * factor).astype(running.dtype)
