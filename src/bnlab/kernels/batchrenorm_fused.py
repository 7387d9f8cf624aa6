"""Batch renorm on the fused batch-norm kernels: BN with a modified affine, no new loops.

With r and d constants (Ioffe 2017, Algorithm 1)::

    y  = gamma * (x_n * r + d) + beta = (gamma r) * x_n + (gamma d + beta)
    dx = BN's dx with gamma replaced by gamma r
    dgamma = sum(dy * (x_n r + d)) = r * sum(dy * x_n) + d * sum(dy),   dbeta = sum(dy)

so the forward is one moments pass (:func:`bnlab.kernels.moments`) and one BN inference pass
(:func:`bnlab.kernels.batch_norm_inference`, whose affine takes the batch's own mean and
variance with scale gamma r and shift gamma d + beta; :func:`batch_renorm_affine`), and the
backward is :func:`bnlab.kernels.batch_norm_backward` on a BN cache whose gamma is gamma r.
Same signatures and cache fields (``mean``, ``var``, ``std``, ``r``, ``d`` of shape (G, C))
as :mod:`bnlab.kernels.batchrenorm_ref`, the readable specification; virtual batches run the
passes chunk by chunk. These are the kernels ``bnlab.kernels`` exports. Float32 data with a
large offset keeps its accuracy because the BN kernels accumulate in float64 around a shift.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.kernels._bn_common import (
    BatchNormCache,
    check_eps,
    check_training_count,
    prepare_channel_vector,
    prepare_input,
)
from bnlab.kernels.batchnorm import batch_norm_backward, batch_norm_inference
from bnlab.kernels.batchrenorm_ref import batch_renorm_r_d
from bnlab.kernels.moments import moments

__all__ = [
    "FusedBatchRenormCache",
    "batch_renorm_affine",
    "batch_renorm_forward",
    "batch_renorm_backward",
    "batch_renorm_inference",
]


class FusedBatchRenormCache:
    """One BN cache per chunk (with gamma r) plus the per-chunk statistics, shape (G, C)."""

    def __init__(
        self,
        bns: list[BatchNormCache],
        gamma: np.ndarray,
        std: np.ndarray,
        r: np.ndarray,
        d: np.ndarray,
        shape: tuple[int, ...],
    ) -> None:
        self.bns = bns
        self.gamma = gamma
        self.mean = np.stack([bn.mean for bn in bns])
        self.var = np.stack([bn.var for bn in bns])
        self.std, self.r, self.d = std, r, d
        self.shape = shape


def batch_renorm_affine(
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    moving_mean: np.ndarray,
    moving_std: np.ndarray,
    *,
    eps: float,
    rmax: float,
    dmax: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(sigma_B, r, d, gamma r, gamma d + beta)`` in float64 from batch (or chunk) statistics.

    ``sigma_B = sqrt(var + eps)``; ``r`` and ``d`` as :func:`batch_renorm_r_d`. The last two are
    the scale and shift that turn BN's normalization with ``(mean, var)`` into batch renorm.
    ``mean``/``var`` may be ``(C,)`` or ``(G, C)`` (one row per virtual batch).
    """
    std = np.sqrt(var + eps)
    r, d = batch_renorm_r_d(mean, std, moving_mean, moving_std, rmax, dmax)
    g = np.asarray(gamma, np.float64)
    b = np.asarray(beta, np.float64)
    return std, r, d, g * r, g * d + b


def batch_renorm_forward(
    x: Any,
    gamma: Any,
    beta: Any,
    moving_mean: Any,
    moving_std: Any,
    *,
    axis: int = -1,
    eps: float = 1e-3,
    rmax: float = 3.0,
    dmax: float = 5.0,
    virtual_batch_size: int | None = None,
) -> tuple[np.ndarray, FusedBatchRenormCache]:
    """Training-mode batch renorm, y = gamma * ((x - mu_B) / sigma_B * r + d) + beta.

    With ``virtual_batch_size=k`` (which must divide the batch) every chunk of k examples along
    axis 0 has its own mu_B, sigma_B, r and d, against the same moving mu and sigma.
    """
    where = "batch_renorm_forward"
    eps = check_eps(eps, where=where)
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    xc = np.ascontiguousarray(xc)
    c = xc.shape[ax]
    g = prepare_channel_vector(gamma, "gamma", c, default=1.0, where=where)
    b = prepare_channel_vector(beta, "beta", c, default=0.0, where=where)
    mu = prepare_channel_vector(moving_mean, "moving_mean", c, default=0.0, where=where)
    sigma = prepare_channel_vector(moving_std, "moving_std", c, default=1.0, where=where)
    chunks = _chunks(xc, ax, virtual_batch_size, where)
    ys, bns, stats = [], [], []
    for chunk in chunks:
        m = chunk.size // c if c else 0
        check_training_count(m, chunk.shape, where=where)
        mean, var, _ = moments(chunk, axis=ax)
        std, r, d, scale, shift = batch_renorm_affine(
            mean, var, g, b, mu, sigma, eps=eps, rmax=rmax, dmax=dmax
        )
        ys.append(batch_norm_inference(chunk, mean, var, scale, shift, axis=ax, eps=eps))
        bns.append(BatchNormCache(chunk, mean, var, scale, eps, ax, m, out_dtype))
        stats.append((std, r, d))
    y = ys[0] if len(ys) == 1 else np.concatenate(ys, axis=0)
    std, r, d = (np.stack(s) for s in zip(*stats, strict=True))
    return y.astype(out_dtype, copy=False), FusedBatchRenormCache(bns, g, std, r, d, xc.shape)


def _chunks(xc: np.ndarray, ax: int, k: int | None, where: str) -> list[np.ndarray]:
    if k is None or k == xc.shape[0]:
        return [xc]
    if ax == 0 or k < 1 or xc.shape[0] % k:
        raise ValueError(
            f"{where}: virtual_batch_size={k} must divide the batch size {xc.shape[0]} along "
            f"axis 0, which must not be the feature axis (axis={ax})"
        )
    return [xc[i : i + k] for i in range(0, xc.shape[0], k)]


def batch_renorm_backward(
    dy: Any, cache: FusedBatchRenormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dgamma, dbeta) with r and d held constant; see the module docstring."""
    g = np.asarray(dy)
    if g.shape != cache.shape:
        raise ValueError(
            f"batch_renorm_backward: dy must have the forward input's shape {cache.shape}, "
            f"got {g.shape}"
        )
    dxs, dgammas, dbetas, start = [], [], [], 0
    for j, bn in enumerate(cache.bns):
        n = bn.x.shape[0]
        dx, dgamma_bn, dbeta = batch_norm_backward(g[start : start + n], bn)
        dgammas.append((cache.r[j] * dgamma_bn + cache.d[j] * dbeta).astype(dgamma_bn.dtype))
        dxs.append(dx)
        dbetas.append(dbeta)
        start += n
    if len(dxs) == 1:
        return dxs[0], dgammas[0], dbetas[0]
    dt = dbetas[0].dtype
    total_g = np.sum(dgammas, axis=0, dtype=np.float64).astype(dt)
    return np.concatenate(dxs, axis=0), total_g, np.sum(dbetas, axis=0, dtype=np.float64).astype(dt)


def batch_renorm_inference(
    x: Any,
    moving_mean: Any,
    moving_std: Any,
    gamma: Any,
    beta: Any,
    *,
    axis: int = -1,
) -> np.ndarray:
    """Inference: y = gamma * (x - mu) / sigma + beta with the moving mu and sigma.

    BN inference with ``sqrt(var + eps) = sigma``; the layer passes its ``running_var`` and
    ``eps`` to :func:`bnlab.kernels.batch_norm_inference` directly.
    """
    where = "batch_renorm_inference"
    xc, ax, _ = prepare_input(x, axis, where=where)
    sigma = prepare_channel_vector(moving_std, "moving_std", xc.shape[ax], default=1.0, where=where)
    if not (sigma > 0).all():
        raise ValueError(f"{where}: moving_std must be > 0, got a minimum of {sigma.min()!r}")
    g = prepare_channel_vector(gamma, "gamma", xc.shape[ax], default=1.0, where=where)
    # sqrt(0.5 + 0.5) = 1 exactly: the normalization is the scale gamma / sigma around mu
    return batch_norm_inference(
        x, moving_mean, np.full(sigma.shape, 0.5), g / sigma, beta, axis=axis, eps=0.5
    )
