"""Plain NumPy batch normalization: the readable specification the fused kernels are tested against.

Ioffe & Szegedy 2015, Algorithm 1; ``axis`` is kept, every other axis reduced (m values)::

    mu = 1/m sum_i x_i,   var = 1/m sum_i (x_i - mu)^2   (biased)
    xhat_i = (x_i - mu) / sqrt(var + eps),   y_i = gamma * xhat_i + beta

Backward (section 3.1), with ``g_i = dL/dy_i``::

    dL/dxhat_i = g_i * gamma
    dL/dvar    = sum_i dL/dxhat_i * (x_i - mu) * (-1/2) * (var + eps)^(-3/2)
    dL/dmu     = sum_i dL/dxhat_i * (-1 / sqrt(var + eps))    (+ dL/dvar * mean(-2 (x - mu)) = 0)
    dL/dx_i    = dL/dxhat_i / sqrt(var + eps) + dL/dvar * 2 (x_i - mu) / m + dL/dmu / m
    dL/dgamma  = sum_i g_i * xhat_i,     dL/dbeta = sum_i g_i

Errors in the source texts not repeated here: the last term of dL/dx_i is ``dL/dmu * 1/m``
(not ``dL/dvar * 1/m``); dL/dvar and dL/dmu come from dL/dxhat (with gamma), not dL/dy;
``x - mu``, not ``xhat - mu``; sums over the reduced axes only; statistics per channel, not
per pixel; dx divided by m, not by the number of features. Computed in float64, slow by design.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import check_eps, prepare_input
from bnlab.kernels.batchnorm import (
    BatchNormCache,
    as_grad,
    channel_vectors,
    channel_view,
    check_stats,
    group_bounds,
)

__all__ = ["batch_norm_forward", "batch_norm_backward", "batch_norm_inference"]


def _bcast(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Reshape a per-channel vector so it broadcasts along ``axis`` of a rank-``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def _reduced_axes(ndim: int, axis: int) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i != axis)


def _cache(xc: np.ndarray, stats: tuple[Any, ...], eps: float, ax: int, dt: Any) -> BatchNormCache:
    """The fused kernels' cache type for one group: ``stats = (mean, var, gamma)``."""
    mu, var, g = stats
    bounds, nblocks, count, parallel = group_bounds(channel_view(xc, ax), xc.shape[0], ax)
    stats = (count, mu[None], var[None], g[None])  # count: the values per channel
    return BatchNormCache(xc, ax, eps, dt, bounds, nblocks, *stats, parallel=parallel)


def batch_norm_forward(
    x: Any, gamma: Any, beta: Any, *, axis: int = -1, eps: float = 1e-5
) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode batch norm with batch statistics: ``y = gamma * xhat + beta``.

    ``gamma``/``beta`` may be ``None`` (1 and 0). Returns ``y`` (dtype of ``x``; float16 is
    computed in float32) and the cache for :func:`batch_norm_backward`.
    """
    where = "batch_norm_forward"
    eps = check_eps(eps, where=where)
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    C = xc.shape[ax]
    g, b = channel_vectors(where, C, ("gamma", gamma, 1.0), ("beta", beta, 0.0))
    m = xc.size // C
    if m == 0:  # an empty batch: an empty output
        return np.empty(xc.shape, out_dtype), _cache(xc, (g * 0, g * 0, g), eps, ax, out_dtype)
    check_stats(xc, np.array([m]), True, where)
    red = _reduced_axes(xc.ndim, ax)
    x64 = xc.astype(np.float64)
    # mean shifted by each channel's first value: exact for a constant channel
    k = np.moveaxis(x64, ax, -1).reshape(-1, C)[0]
    mu = k + (x64 - _bcast(k, xc.ndim, ax)).mean(axis=red)
    var = ((x64 - _bcast(mu, xc.ndim, ax)) ** 2).mean(axis=red)
    xhat = (x64 - _bcast(mu, xc.ndim, ax)) / np.sqrt(_bcast(var, xc.ndim, ax) + eps)
    y = _bcast(g, xc.ndim, ax) * xhat + _bcast(b, xc.ndim, ax)
    return y.astype(out_dtype), _cache(xc, (mu, var, g), eps, ax, out_dtype)


def batch_norm_backward(
    dy: Any, cache: BatchNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of a training-mode forward pass (formulas above)."""
    g64 = as_grad(dy, cache, "batch_norm_backward").astype(np.float64)
    nd, ax, m = g64.ndim, cache.axis, int(cache.count[0])
    red, dt = _reduced_axes(nd, ax), cache.x.dtype
    if m == 0:  # an empty batch: an empty dx, zero parameter gradients
        zero = np.zeros(cache.x.shape[ax], dt)
        return np.empty(cache.x.shape, cache.out_dtype), zero, zero.copy()
    xmu = cache.x.astype(np.float64) - _bcast(cache.mean[0], nd, ax)
    var_eps = _bcast(cache.var[0] + cache.eps, nd, ax)
    dxhat = g64 * _bcast(cache.scale[0], nd, ax)
    dvar = (dxhat * xmu * -0.5 * var_eps**-1.5).sum(axis=red)
    dmu = (-dxhat / np.sqrt(var_eps)).sum(axis=red) + dvar * (-2.0 * xmu).mean(axis=red)
    dx = dxhat / np.sqrt(var_eps) + _bcast(dvar, nd, ax) * 2.0 * xmu / m + _bcast(dmu, nd, ax) / m
    dgamma = (g64 * xmu / np.sqrt(var_eps)).sum(axis=red)
    dbeta = g64.sum(axis=red)
    return dx.astype(cache.out_dtype), dgamma.astype(dt), dbeta.astype(dt)


def batch_norm_inference(
    x: Any, mean: Any, var: Any, gamma: Any, beta: Any, *, axis: int = -1, eps: float = 1e-5
) -> np.ndarray:
    """Inference-mode batch norm with given statistics (Algorithm 2)::

    y = gamma * (x - mean) / sqrt(var + eps) + beta
    """
    where = "batch_norm_inference"
    eps = check_eps(eps, where=where)
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    C, nd = xc.shape[ax], xc.ndim
    given = (("mean", mean, 0.0), ("var", var, 1.0), ("gamma", gamma, 1.0), ("beta", beta, 0.0))
    mu, v, g, b = channel_vectors(where, C, *given)
    xhat = (xc.astype(np.float64) - _bcast(mu, nd, ax)) / np.sqrt(_bcast(v, nd, ax) + eps)
    return (_bcast(g, nd, ax) * xhat + _bcast(b, nd, ax)).astype(out_dtype)
