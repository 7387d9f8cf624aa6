"""Batch renorm on the fused batch-norm kernels: BN with a modified affine, no new loops.

With r and d constants (Ioffe 2017, Algorithm 1)::

    y  = gamma * (x_n * r + d) + beta = (gamma r) * x_n + (gamma d + beta)
    dx = BN's dx with gamma replaced by gamma r
    dgamma = sum(dy * (x_n r + d)) = r * sum(dy * x_n) + d * sum(dy),   dbeta = sum(dy)

so the forward is one moments pass (:func:`bnlab.kernels.moments`) and one BN inference pass
(:func:`bnlab.kernels.batch_norm_inference`, whose affine takes the batch's own mean and
variance with scale gamma r and shift gamma d + beta), and the backward is
:func:`bnlab.kernels.batch_norm_backward` on a BN cache whose gamma is gamma r. Same
signatures and cache fields as :mod:`bnlab.kernels.batchrenorm_ref`, without virtual batches
(tiny ghost batches are faster in the grouped NumPy reference). Float32 data with a large
offset keeps its accuracy because the BN kernels accumulate in float64 around a shift.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.kernels._bn_common import BatchNormCache, check_training_count, prepare_input
from bnlab.kernels.batchnorm import batch_norm_backward, batch_norm_inference
from bnlab.kernels.batchrenorm_ref import batch_renorm_r_d
from bnlab.kernels.moments import moments

__all__ = ["FusedBatchRenormCache", "batch_renorm_forward", "batch_renorm_backward"]


class FusedBatchRenormCache:
    """The BN cache (with gamma r) plus the per-channel statistics, shape (1, C) like the ref."""

    def __init__(
        self, bn: BatchNormCache, gamma: np.ndarray, std: np.ndarray, r: np.ndarray, d: np.ndarray
    ) -> None:
        self.bn = bn
        self.gamma = gamma
        self.mean = bn.mean[None, :]
        self.var = bn.var[None, :]
        self.std = std[None, :]
        self.r = r[None, :]
        self.d = d[None, :]
        self.shape: tuple[int, ...] = tuple(bn.x.shape)


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
) -> tuple[np.ndarray, FusedBatchRenormCache]:
    """Training-mode batch renorm, y = gamma * ((x - mu_B) / sigma_B * r + d) + beta."""
    where = "batch_renorm_forward"
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    xc = np.ascontiguousarray(xc)
    c = xc.shape[ax]
    m = xc.size // c if c else 0
    check_training_count(m, xc.shape, where=where)
    mean, var, _ = moments(xc, axis=ax)
    std = np.sqrt(var + eps)
    r, d = batch_renorm_r_d(mean, std, moving_mean, moving_std, rmax, dmax)
    g = np.asarray(gamma, np.float64)
    b = np.asarray(beta, np.float64)
    y = batch_norm_inference(xc, mean, var, g * r, g * d + b, axis=ax, eps=eps)
    bn = BatchNormCache(xc, mean, var, g * r, float(eps), ax, m, out_dtype)
    return y.astype(out_dtype, copy=False), FusedBatchRenormCache(bn, g, std, r, d)


def batch_renorm_backward(
    dy: Any, cache: FusedBatchRenormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dgamma, dbeta) with r and d held constant; see the module docstring."""
    dx, dgamma_bn, dbeta = batch_norm_backward(dy, cache.bn)
    dgamma = cache.r[0] * dgamma_bn + cache.d[0] * dbeta
    return dx, dgamma.astype(dgamma_bn.dtype), dbeta
