"""Batch Renormalization layer (Ioffe 2017, arXiv 1702.03275), schedule included."""

from __future__ import annotations

import numpy as np

from bnlab.kernels.batchnorm import BatchNormCache
from bnlab.kernels.batchrenorm import batch_renorm_backward, batch_renorm_forward
from bnlab.layers._normalization import BatchNormBase, is_int, is_real

__all__ = ["BatchRenorm"]


class BatchRenorm(BatchNormBase):
    """Batch renormalization: batch normalization corrected towards the moving statistics.

    Training (per channel, over every axis but ``axis``; per chunk of ``virtual_batch_size``
    examples when given; :func:`bnlab.kernels.batch_renorm_forward`)::

        sigma_B = sqrt(var_B + eps)      (mu_B, var_B: batch mean, biased batch variance)
        r = clip(sigma_B / sigma, 1/rmax, rmax)        d = clip((mu_B - mu) / sigma, -dmax, dmax)
        y = gamma * ((x - mu_B) / sigma_B * r + d) + beta      (r, d: constants for backprop)
        mu    <- mu    + momentum * (mu_B - mu)
        sigma <- sigma + momentum * (sigma_B - sigma)

    Inference: ``y = gamma * (x - mu) / sigma + beta``. The buffers are ``running_mean`` (mu)
    and ``running_var`` with ``sigma = sqrt(running_var + eps)`` (Keras' ``moving_stddev``
    convention; the update moves sigma, as the paper, and stores ``sigma^2 - eps``).
    ``momentum`` is the weight of the new batch (Keras' 0.99 is 0.01 here). With virtual
    batches (k must divide the batch) r and d of every chunk use the moving statistics from
    before the step, which then moves them once with the chunk averages of mu_B and sigma_B
    (as tf.keras); ``num_batches_tracked`` counts steps.

    Schedule (step = ``num_batches_tracked``, counted from 0): rmax = 1 and dmax = 0 (batch
    norm) while ``step < warmup_steps``; then rmax rises linearly to ``rmax`` at step
    ``rmax_steps`` and dmax to ``dmax`` at ``dmax_steps`` (absolute step counts, as "rmax = 3
    at 40k steps, dmax = 5 at 25k" with a 5k warm-up in the paper; a ``*_steps`` at or below
    ``warmup_steps`` jumps to the maximum). Errors and empty batches as :class:`BatchNorm`.

        >>> import numpy as np
        >>> layer = BatchRenorm(3, warmup_steps=0, rmax_steps=0, dmax_steps=0)
        >>> x = np.random.default_rng(0).normal(5.0, 2.0, size=(8, 3)).astype(np.float32)
        >>> dx = layer.backward(np.ones_like(layer.forward(x)))
        >>> dx.shape, int(layer.num_batches_tracked), layer.current_rmax()
        ((8, 3), 1, 3.0)
    """

    _kind = "BatchRenorm"
    _allow_cumulative = False
    _config_keys = (
        "num_features", "axis", "momentum", "eps", "rmax", "dmax", "warmup_steps",
        "rmax_steps", "dmax_steps", "virtual_batch_size",
    )  # fmt: skip

    def __init__(
        self,
        num_features: int | None = None,
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
        super().__init__(
            num_features, axis=axis, momentum=momentum, eps=eps,
            virtual_batch_size=virtual_batch_size, name=name,
        )  # fmt: skip
        steps = {"warmup_steps": warmup_steps, "rmax_steps": rmax_steps, "dmax_steps": dmax_steps}
        where = f"{self._kind}({self.name!r})"
        for key, value, low in (("rmax", rmax, 1.0), ("dmax", dmax, 0.0)):
            if not is_real(value):
                raise TypeError(f"{where}: {key} must be a float >= {low}, got {value!r}")
            if not (np.isfinite(value) and value >= low):
                raise ValueError(f"{where}: {key} must be a finite float >= {low}, got {value!r}")
        for key, count in steps.items():
            if not is_int(count) or count < 0:
                raise ValueError(f"{where}: {key} must be a non-negative integer, got {count!r}")
        self.rmax, self.dmax = float(rmax), float(dmax)
        self.warmup_steps, self.rmax_steps, self.dmax_steps = (int(v) for v in steps.values())

    @property
    def moving_std(self) -> np.ndarray:
        """sigma = sqrt(running_var + eps), float64 (ValueError for a negative running_var)."""
        var = self.buffers["running_var"].astype(np.float64)
        if not var.min(initial=0.0) >= 0:  # NaN too: set by hand
            raise ValueError(
                "moving_std: running_var holds NaN or negative values (set by hand?); call "
                "reset_running_stats() or load a valid state"
            )
        return np.sqrt(var + self.eps)

    # -- schedule ----------------------------------------------------------------------------
    def _ramp(self, step: int | None, end: int, start_value: float, max_value: float) -> float:
        t = int(self.buffers["num_batches_tracked"]) if step is None else int(step)
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

    # -- the renorm parts of the core --------------------------------------------------------
    def _check_groups(self, total: int) -> None:
        k = self.virtual_batch_size
        if k is not None and k != total and total % k:
            raise ValueError(
                f"{self._where}: virtual_batch_size={k} must divide the batch size, got a "
                f"(global) batch of {total} examples"
            )

    def _kernel_forward(
        self, x: np.ndarray, groups: list[tuple[int, int]] | None, out: np.ndarray | None
    ) -> tuple[np.ndarray, BatchNormCache]:
        """r and d of every ghost batch from the moving mu and sigma before this step."""
        return batch_renorm_forward(
            x, self.params["gamma"], self.params["beta"], self.buffers["running_mean"],
            self.moving_std, axis=self.axis, eps=self.eps, rmax=self.current_rmax(),
            dmax=self.current_dmax(), groups=groups,
            reduce=None if self._sync is None else self._sync.moments, out=out,
        )  # fmt: skip

    def _kernel_backward(
        self, dy: np.ndarray, cache: BatchNormCache, out: np.ndarray | None, need: bool
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        reduce = None if self._sync is None else self._sync.sums
        return batch_renorm_backward(dy, cache, reduce=reduce, out=out, need_input_grad=need)

    def _running_update(self, cache: BatchNormCache) -> dict[str, np.ndarray]:
        """mu and sigma move towards the ghost-batch averages of mu_B and sigma_B, once a step."""
        with np.errstate(over="ignore"):  # an overflow to inf is refused by the core
            mu = self.buffers["running_mean"].astype(np.float64)
            sigma = self.moving_std
            new_mu = mu + self.momentum * (cache.mean.mean(axis=0) - mu)
            new_sigma = sigma + self.momentum * (cache.std.mean(axis=0) - sigma)
            dt = self.buffers["running_var"].dtype
            return {
                "running_mean": new_mu.astype(self.buffers["running_mean"].dtype),
                "running_var": np.maximum(new_sigma**2 - self.eps, 0.0).astype(dt),
                "num_batches_tracked": np.array(int(self.buffers["num_batches_tracked"]) + 1),
            }
