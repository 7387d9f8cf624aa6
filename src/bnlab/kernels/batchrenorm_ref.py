"""Batch Renormalization (Ioffe 2017, arXiv 1702.03275, Algorithm 1) in plain NumPy.

The readable specification of :mod:`bnlab.kernels.batchrenorm`, written on the NumPy batch
norm of :mod:`bnlab.kernels.batchnorm_ref`. For one channel and a (virtual) batch of m values::

    mu_B    = (1/m) sum_i x_i,    sigma_B = sqrt((1/m) sum_i (x_i - mu_B)^2 + eps)
    r       = clip(sigma_B / sigma, 1/rmax, rmax)          stop_gradient
    d       = clip((mu_B - mu) / sigma, -dmax, dmax)       stop_gradient
    x_n     = (x_i - mu_B) / sigma_B,    y_i = gamma * (x_n * r + d) + beta

where mu and sigma are the moving mean and standard deviation (rmax = 1, dmax = 0 is batch
normalization). r and d are constants for backprop, so y is BN's output with the scale
gamma r and the shift gamma d + beta, and with g = dy * gamma::

    dx     = (r / sigma_B) * (g - mean(g) - x_n * mean(g * x_n))    (BN's dx, gamma r)
    dgamma = sum(dy * (x_n r + d)) = r sum(dy x_n) + d sum(dy),      dbeta = sum(dy)

(d mu_B / dx_i = 1/m, d sigma_B / dx_i = x_n,i / m.) Inference: y = gamma (x - mu) / sigma
+ beta. ``virtual_batch_size=k``: chunks of k examples along axis 0, each with its own mu_B,
sigma_B, r and d against the same mu and sigma.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

import bnlab.kernels.batchnorm_ref as bn_ref
from bnlab.kernels.batchnorm import BatchNormCache

__all__ = [
    "BatchRenormCache",
    "batch_renorm_forward",
    "batch_renorm_backward",
    "batch_renorm_inference",
    "batch_renorm_r_d",
]


@dataclass
class BatchRenormCache:
    """One BN reference cache per chunk (its scale is gamma r) and r, d of shape (G, C)."""

    bns: list[BatchNormCache]
    r: np.ndarray
    d: np.ndarray


def batch_renorm_r_d(
    mean: np.ndarray,
    std: np.ndarray,
    moving_mean: np.ndarray,
    moving_std: np.ndarray,
    rmax: float,
    dmax: float,
) -> tuple[np.ndarray, np.ndarray]:
    """r = clip(std / moving_std, 1/rmax, rmax), d = clip((mean - moving_mean) / moving_std,
    -dmax, dmax), in float64."""
    mu = np.asarray(moving_mean, dtype=np.float64)
    sigma = np.asarray(moving_std, dtype=np.float64)
    r = np.clip(std / sigma, 1.0 / rmax, rmax)
    d = np.clip((mean - mu) / sigma, -dmax, dmax)
    return r, d


def _chunks(x: np.ndarray, ax: int, k: int | None) -> list[np.ndarray]:
    n = x.shape[0]
    if k is None or k == n:
        return [x]
    if ax == 0 or k < 1 or n % k:
        raise ValueError(
            f"virtual_batch_size={k} must divide the batch size {n} along axis 0, which must "
            f"not be the feature axis (axis={ax})"
        )
    return [x[i : i + k] for i in range(0, n, k)]


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
) -> tuple[np.ndarray, BatchRenormCache]:
    """Training-mode batch renorm: y = gamma * ((x - mu_B) / sigma_B * r + d) + beta."""
    x = np.asarray(x)
    ax = axis % x.ndim
    g, b = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
    ys, bns, rs, ds = [], [], [], []
    for part in _chunks(x, ax, virtual_batch_size):
        _, bn = bn_ref.batch_norm_forward(part, None, None, axis=ax, eps=eps)  # mu_B, var_B
        mean, var = bn.mean[0], bn.var[0]
        r, d = batch_renorm_r_d(mean, np.sqrt(var + eps), moving_mean, moving_std, rmax, dmax)
        ys.append(bn_ref.batch_norm_inference(part, mean, var, g * r, g * d + b, axis=ax, eps=eps))
        bns.append(replace(bn, scale=(g * r)[None]))
        rs.append(r)
        ds.append(d)
    return np.concatenate(ys), BatchRenormCache(bns, np.stack(rs), np.stack(ds))


def batch_renorm_backward(
    dy: Any, cache: BatchRenormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients with r and d held constant (see the module docstring): (dx, dgamma, dbeta);
    dx in the input dtype, dgamma and dbeta in the compute dtype."""
    dy = np.asarray(dy)
    dxs, start = [], 0
    dgamma: Any = 0.0
    dbeta: Any = 0.0
    for bn, r, d in zip(cache.bns, cache.r, cache.d, strict=True):
        stop = start + bn.x.shape[0]
        dx, dg_xn, db = bn_ref.batch_norm_backward(dy[start:stop], bn)  # dg_xn = sum(dy x_n)
        dxs.append(dx)
        dgamma = dgamma + r * dg_xn + d * db
        dbeta = dbeta + db.astype(np.float64)
        start = stop
    dt = cache.bns[0].x.dtype
    return np.concatenate(dxs), np.asarray(dgamma).astype(dt), np.asarray(dbeta).astype(dt)


def batch_renorm_inference(
    x: Any,
    moving_mean: Any,
    moving_std: Any,
    gamma: Any,
    beta: Any,
    *,
    axis: int = -1,
) -> np.ndarray:
    """Inference: y = gamma * (x - mu) / sigma + beta with the moving mu and sigma."""
    x = np.asarray(x)
    ax = axis % x.ndim
    shape = [1] * x.ndim
    shape[ax] = x.shape[ax]
    mu, sigma = np.asarray(moving_mean, np.float64), np.asarray(moving_std, np.float64)
    g, b = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
    y = (x.astype(np.float64) - mu.reshape(shape)) / sigma.reshape(shape)
    return (g.reshape(shape) * y + b.reshape(shape)).astype(x.dtype)
