"""Plain NumPy group normalization: the readable specification the fused kernels are tested
against (same signatures and cache as :mod:`bnlab.kernels.groupnorm`).

For ``x`` of shape (N, ..., C), channels last, split into G groups of ``Cg = C / G``
consecutive channels; each (sample n, group g) holds ``m = S * Cg`` values x_i::

    mu      = 1/m * sum_i x_i,      var = 1/m * sum_i (x_i - mu)^2      (biased)
    xhat_i  = (x_i - mu) / sqrt(var + eps)
    y_i     = gamma[c] * xhat_i + beta[c]

Backward, with ``g_i = dL/dy_i`` and ``h_i = g_i * gamma[c]`` (= dL/dxhat_i)::

    dL/dx_i   = rstd * (h_i - mean_group(h) - xhat_i * mean_group(h * xhat))
    dL/dgamma = sum over n and the spatial axes of g * xhat,   dL/dbeta = sum of g

(the BN formulas of :mod:`bnlab.kernels.batchnorm_ref` with the statistics per (n, g) instead
of per channel). Everything in float64, cast at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.kernels.groupnorm import GroupNormCache, _vector, prepare

__all__ = ["group_norm_forward", "group_norm_backward"]


def _grouped(a: np.ndarray, G: int) -> np.ndarray:
    """(N, S, C) as (N, S, G, Cg): statistics reduce axes 1 and 3."""
    N, S, C = a.shape
    return a.reshape(N, S, G, C // G)


def group_norm_forward(
    x: Any, gamma: Any, beta: Any, num_groups: int, *, eps: float = 1e-5
) -> tuple[np.ndarray, GroupNormCache]:
    """``y = gamma * (x - mu) / sqrt(var + eps) + beta`` with per-(sample, group) statistics."""
    where = "group_norm_forward"
    x3, out_dtype, G = prepare(x, num_groups, where)
    C = x3.shape[2]
    g = _vector(gamma, "gamma", C, 1.0, where)
    b = _vector(beta, "beta", C, 0.0, where)
    xg = _grouped(x3.astype(np.float64), G)
    mu = xg.mean(axis=(1, 3))
    var = ((xg - mu[:, None, :, None]) ** 2).mean(axis=(1, 3))
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = ((xg - mu[:, None, :, None]) * rstd[:, None, :, None]).reshape(x3.shape)
    y = xhat * g + b
    cache = GroupNormCache(x3, mu, rstd, None if gamma is None else g, np.shape(x), out_dtype)
    return y.reshape(cache.shape).astype(out_dtype), cache


def group_norm_backward(
    dy: Any, cache: GroupNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` by the formulas above."""
    x3 = cache.x
    N, S, C = x3.shape
    G = cache.mean.shape[1]
    g64 = np.asarray(dy, dtype=np.float64).reshape(x3.shape)
    gamma = np.ones(C) if cache.gamma is None else cache.gamma
    r = cache.rstd[:, None, :, None]
    xhat = (_grouped(x3.astype(np.float64), G) - cache.mean[:, None, :, None]) * r
    h = _grouped(g64 * gamma, G)
    dx = r * (
        h - h.mean(axis=(1, 3), keepdims=True) - xhat * (h * xhat).mean(axis=(1, 3), keepdims=True)
    )
    dgamma = (g64 * xhat.reshape(x3.shape)).sum(axis=(0, 1))
    dbeta = g64.sum(axis=(0, 1))
    dt = x3.dtype
    return dx.reshape(cache.shape).astype(cache.out_dtype), dgamma.astype(dt), dbeta.astype(dt)
