"""Batch Renormalization (Ioffe 2017, arXiv 1702.03275, Algorithm 1) in plain NumPy.

The readable specification of the batch-renorm math; the layer
:class:`bnlab.layers.BatchRenorm` calls these functions. For one channel and a (virtual)
batch B of m values::

    mu_B    = (1/m) sum_i x_i
    sigma_B = sqrt((1/m) sum_i (x_i - mu_B)^2 + eps)          (biased variance, as BN)
    r       = clip(sigma_B / sigma, 1/rmax, rmax)              stop_gradient
    d       = clip((mu_B - mu) / sigma, -dmax, dmax)           stop_gradient
    x_n     = (x_i - mu_B) / sigma_B
    x_hat   = x_n * r + d
    y_i     = gamma * x_hat + beta

where mu and sigma are the moving mean and standard deviation. With r = 1 and d = 0
(rmax = 1, dmax = 0) this is batch normalization. Because r and d are constants for
backprop, the backward pass is BN's with the upstream gradient scaled by r. With
g = dy * gamma::

    dx     = (r / sigma_B) * (g - mean(g) - x_n * mean(g * x_n))
    dgamma = sum(dy * x_hat)
    dbeta  = sum(dy)

(the means and sums run over the batch axes). Derivation: dx_n = r g; BN's x_n = (x - mu_B)
/ sigma_B has the Jacobian-vector product (1/sigma_B)(v - mean(v) - x_n mean(v x_n)) for an
upstream v, since d mu_B / dx_i = 1/m and d sigma_B / dx_i = x_n,i / m.

Inference uses the moving statistics: y = gamma * (x - mu) / sigma + beta.

Ghost (virtual) batches: with ``virtual_batch_size=k`` the batch axis 0 is cut into chunks of
k examples; each chunk has its own mu_B, sigma_B, r and d (all chunks see the same moving mu
and sigma), as k-example microbatches on synchronous workers would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bnlab._checks import compute_dtype

__all__ = [
    "BatchRenormCache",
    "batch_renorm_forward",
    "batch_renorm_backward",
    "batch_renorm_inference",
    "batch_renorm_r_d",
]


@dataclass
class BatchRenormCache:
    """What the backward pass needs. Per-chunk statistics have shape (G, C), G = chunks.

    ``mean``, ``var`` (biased), ``std`` (= sigma_B = sqrt(var + eps)), ``r`` and ``d`` are
    float64; ``x_n`` is the normalized input in the compute dtype, laid out as (G, M, C)
    with M values per channel in each chunk.
    """

    x_n: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    std: np.ndarray
    r: np.ndarray
    d: np.ndarray
    gamma: np.ndarray
    axis: int
    shape: tuple[int, ...]
    in_dtype: np.dtype[Any]


def _to_groups(x: np.ndarray, axis: int, virtual_batch_size: int | None) -> np.ndarray:
    """Lay ``x`` out as (G, M, C): feature axis last, batch chunks first."""
    xt = np.moveaxis(x, axis, -1)
    c = xt.shape[-1]
    if virtual_batch_size is None:
        return xt.reshape(1, -1, c)
    if axis == 0:
        raise ValueError("virtual_batch_size needs the batch axis 0 to differ from axis=0")
    n = x.shape[0]
    if n % virtual_batch_size:
        raise ValueError(
            f"virtual_batch_size={virtual_batch_size} must divide the batch size, got a batch "
            f"of {n} examples"
        )
    return xt.reshape(n // virtual_batch_size, -1, c)


def _from_groups(yg: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_to_groups`."""
    moved = list(shape)
    c = moved.pop(axis)
    yt = yg.reshape(*moved, c)
    return np.moveaxis(yt, -1, axis)


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


def batch_renorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    moving_mean: np.ndarray,
    moving_std: np.ndarray,
    *,
    axis: int = -1,
    eps: float = 1e-3,
    rmax: float = 3.0,
    dmax: float = 5.0,
    virtual_batch_size: int | None = None,
) -> tuple[np.ndarray, BatchRenormCache]:
    """Training-mode batch renorm: y = gamma * ((x - mu_B) / sigma_B * r + d) + beta.

    ``moving_mean`` and ``moving_std`` are the moving mu and sigma (shape (C,)); every axis
    but ``axis`` is reduced (per chunk of ``virtual_batch_size`` examples when given).
    float64 input is computed in float64; anything else in float32 and returned in its dtype.

    >>> import numpy as np
    >>> x = np.array([[0.0], [2.0]])
    >>> y, cache = batch_renorm_forward(x, np.ones(1), np.zeros(1), np.zeros(1), np.ones(1),
    ...                                 eps=0.0)
    >>> y.ravel().tolist(), cache.r.item(), cache.d.item()
    ([0.0, 2.0], 1.0, 1.0)
    """
    ax = axis % x.ndim
    cdt = compute_dtype(x.dtype)
    xg = _to_groups(np.asarray(x), ax, virtual_batch_size).astype(cdt, copy=False)
    mean = xg.mean(axis=1, dtype=np.float64)
    # two passes around hi = mean rounded to the compute dtype; lo = mean - hi is the part
    # float32 cannot hold (x = 1e4 + noise would otherwise lose the noise's variance)
    hi = mean.astype(cdt)
    lo = mean - hi
    centered = xg - hi[:, None, :]
    var = np.maximum(np.mean(np.square(centered, dtype=np.float64), axis=1) - lo**2, 0.0)
    std = np.sqrt(var + eps)
    r, d = batch_renorm_r_d(mean, std, moving_mean, moving_std, rmax, dmax)
    centered -= lo.astype(cdt)[:, None, :]
    x_n = centered * (1.0 / std)[:, None, :].astype(cdt)
    g = np.asarray(gamma, dtype=cdt)
    b = np.asarray(beta, dtype=cdt)
    # y = (gamma r) x_n + (gamma d + beta): BN's affine with a modified scale and shift
    scale = (g * r).astype(cdt)[:, None, :]
    shift = (g * d + b).astype(cdt)[:, None, :]
    y = _from_groups(x_n * scale + shift, ax, x.shape).astype(x.dtype, copy=False)
    cache = BatchRenormCache(
        x_n=x_n,
        mean=mean,
        var=var,
        std=std,
        r=r,
        d=d,
        gamma=g,
        axis=ax,
        shape=tuple(x.shape),
        in_dtype=x.dtype,
    )
    return y, cache


def batch_renorm_backward(
    dy: np.ndarray, cache: BatchRenormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients with r and d held constant (stop-gradient), g = dy * gamma::

        dx     = (r / sigma_B) * (g - mean(g) - x_n * mean(g * x_n))
        dgamma = sum(dy * (x_n * r + d)),   dbeta = sum(dy)

    Returns (dx, dgamma, dbeta); dx in the input dtype, dgamma/dbeta in the compute dtype.
    """
    cdt = cache.x_n.dtype
    dyg = _to_groups(np.asarray(dy), cache.axis, _chunk(cache)).astype(cdt, copy=False)
    x_n = cache.x_n
    sum_dy = dyg.sum(axis=1, dtype=np.float64)  # (G, C)
    sum_dy_xn = np.sum(dyg * x_n, axis=1, dtype=np.float64)
    m = x_n.shape[1]
    gamma = cache.gamma.astype(np.float64)
    mean_g = gamma * sum_dy / m
    mean_g_xn = gamma * sum_dy_xn / m
    coef = (cache.r / cache.std).astype(cdt)[:, None, :]
    g = dyg * cache.gamma[None, None, :]
    dxg = coef * (g - mean_g.astype(cdt)[:, None, :] - x_n * mean_g_xn.astype(cdt)[:, None, :])
    dx = _from_groups(dxg, cache.axis, cache.shape).astype(cache.in_dtype, copy=False)
    dgamma = np.sum(cache.r * sum_dy_xn + cache.d * sum_dy, axis=0)
    dbeta = sum_dy.sum(axis=0)
    return dx, dgamma.astype(cdt), dbeta.astype(cdt)


def _chunk(cache: BatchRenormCache) -> int | None:
    """The virtual batch size the cache was made with (None: one chunk)."""
    groups = cache.x_n.shape[0]
    return None if groups == 1 else cache.shape[0] // groups


def batch_renorm_inference(
    x: np.ndarray,
    moving_mean: np.ndarray,
    moving_std: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    *,
    axis: int = -1,
) -> np.ndarray:
    """Inference: y = gamma * (x - mu) / sigma + beta with the moving mu and sigma."""
    ax = axis % x.ndim
    cdt = compute_dtype(x.dtype)
    shape = [1] * x.ndim
    shape[ax] = x.shape[ax]
    scale = np.asarray(gamma, np.float64) / np.asarray(moving_std, np.float64)
    shift = np.asarray(beta, np.float64) - np.asarray(moving_mean, np.float64) * scale
    xc = x.astype(cdt, copy=False)
    y = xc * scale.astype(cdt).reshape(shape) + shift.astype(cdt).reshape(shape)
    return y.astype(x.dtype, copy=False)
