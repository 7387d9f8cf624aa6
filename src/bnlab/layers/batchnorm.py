"""The BatchNorm layer: batch statistics in training, running (population) statistics in eval."""

from __future__ import annotations

import numpy as np

from bnlab.kernels.batchnorm import BatchNormCache, batch_norm_backward, batch_norm_forward
from bnlab.kernels.moments import running_update
from bnlab.layers._normalization import BatchNormBase

__all__ = ["BatchNorm"]

_FAST = (np.dtype(np.float32), np.dtype(np.float64))


class BatchNorm(BatchNormBase):
    """Batch normalization (Ioffe & Szegedy 2015) over every axis except the feature ``axis``.

    For each channel, with the ``m`` values of the batch that share it (``N`` for dense
    ``(N, C)`` input, ``N*H*W`` for NHWC images)::

        training:  mu_B = mean(x),   var_B = mean((x - mu_B)^2)          (biased, 1/m)
                   y = gamma * (x - mu_B) / sqrt(var_B + eps) + beta
                   running_mean = (1 - momentum) * running_mean + momentum * mu_B
                   running_var  = (1 - momentum) * running_var  + momentum * var_B * m/(m-1)
        eval:      y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta

    ``running_var`` stores the unbiased variance (Algorithm 2), as PyTorch. ``momentum`` is the
    weight of the *new* batch (PyTorch's convention: Keras' ``momentum=k`` is ``1 - k`` here;
    above 0.5 warns); ``None`` is the cumulative average (``running += (batch - running) / n``
    with ``n = num_batches_tracked``). In eval mode ``backward`` is the gradient of the affine
    map above (frozen BN). ``track_running_stats=False`` keeps no buffers and always uses batch
    statistics (set later, it stops the updates; eval keeps the buffers, PyTorch's rule);
    ``affine=False`` has no ``gamma``/``beta``; ``reset_running_stats()``/``reset_parameters()``
    as PyTorch. ``virtual_batch_size=k`` is ghost batch normalization (tf.keras): in training
    each chunk of k examples along axis 0 (the last may be smaller) is normalized with its own
    statistics, as if the chunks went through the layer in turn (one update and one count in
    ``num_batches_tracked`` per chunk); eval uses the whole batch.

    Forward and backward are one call each of :func:`bnlab.kernels.batch_norm_forward` and
    ``batch_norm_backward``. Alone the layer returns new arrays; inside a Sequential, its own
    buffers (overwritten by its next call). NaN/Inf in ``x`` or ``dy``, statistics that
    would overflow the buffers' dtype, or an output or gradient that overflows its dtype (gamma
    3e38; a float64 input's dgamma beyond float32) raise FloatingPointError and change nothing
    (buffers replaced by hand with arrays the update cannot write: ValueError); an empty
    training batch gives an empty output and changes nothing (PyTorch counts it in
    ``num_batches_tracked``). The backward reads the forward's ``x`` itself, not a copy (a
    float32/float64 C-contiguous input is not copied, for speed): changing ``x`` in place
    between ``forward`` and ``backward`` changes the gradients, as in PyTorch.

        >>> import numpy as np
        >>> bn = BatchNorm(3)
        >>> x = np.random.default_rng(0).normal(5.0, 2.0, size=(32, 3)).astype(np.float32)
        >>> y = bn.forward(x)
        >>> bool(np.allclose(y.mean(axis=0), 0, atol=1e-5))
        True
        >>> dx = bn.backward(np.ones_like(y))     # fills bn.grads["gamma"], bn.grads["beta"]
        >>> bn.grads["beta"]
        array([32., 32., 32.], dtype=float32)
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

    def _kernel_forward(
        self, x: np.ndarray, groups: list[tuple[int, int]] | None, out: np.ndarray | None
    ) -> tuple[np.ndarray, BatchNormCache]:
        reduce = None if self._sync is None else self._sync.moments
        gamma, beta = self.params.get("gamma"), self.params.get("beta")
        return batch_norm_forward(
            x, gamma, beta, axis=self.axis, eps=self.eps, groups=groups, reduce=reduce, out=out
        )

    def _kernel_backward(
        self, dy: np.ndarray, cache: BatchNormCache, out: np.ndarray | None, need: bool
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        reduce = None if self._sync is None else self._sync.sums
        return batch_norm_backward(dy, cache, reduce=reduce, out=out, need_input_grad=need)

    def _update_buffers(self, cache: BatchNormCache) -> None:
        """:meth:`_running_update` in one compiled call for float32/float64 buffers (it writes
        them only if every result is finite; else the checked path below names the problem)."""
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        w = -1.0 if self.momentum is None else self.momentum  # < 0: the cumulative average
        if rm.dtype in _FAST and rv.dtype in _FAST:
            n = running_update(rm, rv, cache.mean, cache.var, cache.count, w, self._tracked())
            if n >= 0:
                self.buffers["num_batches_tracked"][...] = n
                return
        super()._update_buffers(cache)

    def _tracked(self) -> int:
        n = int(self.buffers["num_batches_tracked"])
        if n < 0:  # 1/n would divide by zero or weigh the batch negatively
            raise ValueError(
                f"{self._where}: num_batches_tracked must be >= 0, got {n}; nothing was "
                "updated. Call reset_running_stats() or load a valid state"
            )
        return n

    def _running_update(self, cache: BatchNormCache) -> dict[str, np.ndarray]:
        """One update per ghost batch, in order, each rounded to the buffers' dtype as it is
        stored: ``running = (1 - w) running + (w batch) f`` (``w`` = momentum, or 1/n for None;
        ``f``: 1 for the mean, m/(m-1) for the var), in float64."""
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        n = self._tracked()
        with np.errstate(over="ignore"):  # an overflow to inf is refused by the core
            for j in range(cache.mean.shape[0]):
                n += 1
                w = 1.0 / n if self.momentum is None else self.momentum
                m = int(cache.count[j])
                rm = ((1.0 - w) * rm.astype(np.float64) + w * cache.mean[j]).astype(rm.dtype)
                rv = ((1.0 - w) * rv.astype(np.float64) + w * cache.var[j] * (m / (m - 1))).astype(
                    rv.dtype
                )
        return {"running_mean": rm, "running_var": rv, "num_batches_tracked": np.array(n)}
