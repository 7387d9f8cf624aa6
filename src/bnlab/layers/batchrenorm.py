"""Batch Renormalization layer (Ioffe 2017, arXiv 1702.03275), schedule included."""

from __future__ import annotations

import numpy as np

from bnlab.kernels import batch_renorm_affine
from bnlab.layers._norm_args import check_renorm_args
from bnlab.layers._normalization import BatchNormBase, NormCache

__all__ = ["BatchRenorm"]


class BatchRenorm(BatchNormBase):
    """Batch renormalization: batch normalization corrected towards the moving statistics.

    Training (per channel, over every axis but ``axis``; per chunk of ``virtual_batch_size``
    examples when given)::

        mu_B, var_B = batch mean and biased batch variance
        sigma_B = sqrt(var_B + eps)
        r = clip(sigma_B / sigma, 1/rmax, rmax)        d = clip((mu_B - mu) / sigma, -dmax, dmax)
        y = gamma * ((x - mu_B) / sigma_B * r + d) + beta      (r, d: constants for backprop)
        mu    <- mu    + momentum * (mu_B - mu)
        sigma <- sigma + momentum * (sigma_B - sigma)

    Inference: ``y = gamma * (x - mu) / sigma + beta`` (BN's inference kernel with
    ``running_var`` and ``eps``); its backward is the gradient of that affine map.

    Moving statistics: the buffers are ``running_mean`` (= mu) and ``running_var``, with
    ``sigma = sqrt(running_var + eps)`` everywhere (Keras' convention for its renorm
    ``moving_stddev``). The update moves sigma, as the paper, and stores
    ``running_var = sigma^2 - eps``. Initially mu = 0 and running_var = 1. ``momentum`` is the
    weight of the new batch (PyTorch's convention; Keras' momentum 0.99 is 0.01 here; above 0.5
    warns). With virtual batches (``virtual_batch_size=k``, which must divide the batch) r and
    d of every chunk use the moving statistics from before the step, and the step updates them
    once with the chunk averages of mu_B and sigma_B (tf.keras' renorm with virtual batches
    does the same). Unlike :class:`BatchNorm`'s ghost batches, which update once per chunk and
    count chunks, ``num_batches_tracked`` counts steps here: the schedule is in steps.

    Schedule (steps = ``num_batches_tracked``, the number of training forward passes before
    this one, counted from 0 like the paper's): rmax = 1 and dmax = 0 (plain batch norm) while
    ``step < warmup_steps``; then rmax rises linearly from 1 to ``rmax`` and reaches it at step
    ``rmax_steps``, and dmax rises from 0 to ``dmax`` by step ``dmax_steps`` (the ramps start
    at the end of warm-up; absolute step counts, as "rmax = 3 at 40k steps, dmax = 5 at 25k
    steps" with a 5k warm-up in the paper). A ``*_steps`` at or below ``warmup_steps`` jumps to
    the maximum when the warm-up ends; with all three at 0 rmax and dmax are constants.

    Errors and empty batches as :class:`BatchNorm` (the shared core): nothing changes on error.

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
        check_renorm_args(f"{self._kind}({self.name!r})", rmax, dmax, steps)
        self.rmax, self.dmax = float(rmax), float(dmax)
        self.warmup_steps, self.rmax_steps, self.dmax_steps = (int(v) for v in steps.values())

    @property
    def moving_std(self) -> np.ndarray:
        """sigma = sqrt(running_var + eps), float64."""
        return np.sqrt(self.buffers["running_var"].astype(np.float64) + self.eps)

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
    def _check_chunking(self, total: int) -> None:
        k = self.virtual_batch_size
        if k is not None and k != total and total % k:
            raise ValueError(
                f"{self._where}: virtual_batch_size={k} must divide the batch size, got a "
                f"(global) batch of {total} examples"
            )

    def _chunk_affine(
        self, mean: np.ndarray, var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """gamma r and gamma d + beta per chunk, r and d from the moving mu and sigma."""
        mu = self.buffers["running_mean"].astype(np.float64)
        std, r, d, scale, shift = batch_renorm_affine(
            mean, var, self.params["gamma"], self.params["beta"], mu, self.moving_std,
            eps=self.eps, rmax=self.current_rmax(), dmax=self.current_dmax(),
        )  # fmt: skip
        return scale, shift, {"std": std, "r": r, "d": d}

    def _running_update(
        self, count: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> dict[str, np.ndarray]:
        """mu and sigma move towards the chunk averages of mu_B and sigma_B, once a step."""
        with np.errstate(over="ignore"):  # an overflow to inf is refused by the core
            mu = self.buffers["running_mean"].astype(np.float64)
            sigma = self.moving_std
            std = np.sqrt(var + self.eps)
            new_mu = mu + self.momentum * (mean.mean(axis=0) - mu)
            new_sigma = sigma + self.momentum * (std.mean(axis=0) - sigma)
            dt = self.buffers["running_var"].dtype
            return {
                "running_mean": new_mu.astype(self.buffers["running_mean"].dtype),
                "running_var": np.maximum(new_sigma**2 - self.eps, 0.0).astype(dt),
                "num_batches_tracked": np.array(int(self.buffers["num_batches_tracked"]) + 1),
            }

    def _chunk_param_grads(
        self, sum_dy: np.ndarray, sum_dy_xmu: np.ndarray, cache: NormCache
    ) -> tuple[np.ndarray, np.ndarray]:
        """dgamma = r * sum(dy * x_n) + d * sum(dy), with x_n = (x - mu_B) / sigma_B."""
        dt = cache.x.dtype
        dgamma_bn = (self._rstd(cache) * sum_dy_xmu).astype(dt)
        dbeta = sum_dy.astype(dt)
        r, d = cache.extra["r"], cache.extra["d"]
        return (r * dgamma_bn + d * dbeta).astype(dt), dbeta
