"""Plain NumPy batch normalization: the readable specification the fused kernels are tested against.

Notation (Ioffe & Szegedy 2015, Algorithm 1). ``axis`` is the feature axis that is kept; every
other axis is reduced, so each channel c sees ``m`` values ``x_i``::

    mu      = 1/m * sum_i x_i
    var     = 1/m * sum_i (x_i - mu)^2          (biased: normalization uses 1/m, not 1/(m-1))
    xhat_i  = (x_i - mu) / sqrt(var + eps)
    y_i     = gamma * xhat_i + beta

Backward (section 3.1), with ``g_i = dL/dy_i``::

    dL/dxhat_i = g_i * gamma
    dL/dvar    = sum_i dL/dxhat_i * (x_i - mu) * (-1/2) * (var + eps)^(-3/2)
    dL/dmu     = sum_i dL/dxhat_i * (-1 / sqrt(var + eps))
                 + dL/dvar * 1/m * sum_i -2 (x_i - mu)          (the second term is 0)
    dL/dx_i    = dL/dxhat_i / sqrt(var + eps) + dL/dvar * 2 (x_i - mu) / m + dL/dmu / m
    dL/dgamma  = sum_i g_i * xhat_i,     dL/dbeta = sum_i g_i

Errors in the source texts that this code does not repeat: the last term of dL/dx_i is
``dL/dmu * 1/m`` (one text writes ``dL/dvar * 1/m``); dL/dvar and dL/dmu are taken from
dL/dxhat (which carries the factor gamma), not from dL/dy; ``x - mu`` (not ``xhat - mu``); the
sums run over the reduced axes only, never over the feature axis; statistics are per channel,
not per pixel; the input gradient is divided by m, not by the number of features.

Everything is computed in float64 and cast to the compute dtype at the end; these functions
are slow by design and return the same cache type as the fused ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.kernels._bn_common import (
    BatchNormCache,
    check_eps,
    check_training_count,
    prepare_channel_vector,
    prepare_grad,
    prepare_input,
)

__all__ = [
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_inference",
    "batch_norm_inference_backward",
]


def _bcast(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Reshape a per-channel vector so it broadcasts along ``axis`` of a rank-``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def _reduced_axes(ndim: int, axis: int) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i != axis)


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
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    b = prepare_channel_vector(beta, "beta", C, default=0.0, where=where)
    m = xc.size // C
    check_training_count(m, xc.shape, where=where)
    red = _reduced_axes(xc.ndim, ax)
    x64 = xc.astype(np.float64)
    # mean shifted by each channel's first value: exact for a constant channel
    k = np.moveaxis(x64, ax, -1).reshape(-1, C)[0]
    mu = k + (x64 - _bcast(k, xc.ndim, ax)).mean(axis=red)
    var = ((x64 - _bcast(mu, xc.ndim, ax)) ** 2).mean(axis=red)
    xhat = (x64 - _bcast(mu, xc.ndim, ax)) / np.sqrt(_bcast(var, xc.ndim, ax) + eps)
    y = _bcast(g, xc.ndim, ax) * xhat + _bcast(b, xc.ndim, ax)
    cache = BatchNormCache(xc, mu, var, g, float(eps), ax, m, out_dtype)
    return y.astype(out_dtype), cache


def batch_norm_backward(
    dy: Any, cache: BatchNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of a training-mode forward pass (formulas above)."""
    g64 = prepare_grad(dy, cache, where="batch_norm_backward").astype(np.float64)
    nd, ax, m = g64.ndim, cache.axis, cache.count
    red = _reduced_axes(nd, ax)
    xmu = cache.x.astype(np.float64) - _bcast(cache.mean, nd, ax)
    var_eps = _bcast(cache.var + cache.eps, nd, ax)
    dxhat = g64 * _bcast(cache.gamma, nd, ax)
    dvar = (dxhat * xmu * -0.5 * var_eps**-1.5).sum(axis=red)
    dmu = (-dxhat / np.sqrt(var_eps)).sum(axis=red) + dvar * (-2.0 * xmu).mean(axis=red)
    dx = dxhat / np.sqrt(var_eps) + _bcast(dvar, nd, ax) * 2.0 * xmu / m + _bcast(dmu, nd, ax) / m
    dgamma = (g64 * xmu / np.sqrt(var_eps)).sum(axis=red)
    dbeta = g64.sum(axis=red)
    dt = cache.x.dtype
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
    mu = prepare_channel_vector(mean, "mean", C, default=0.0, where=where)
    v = prepare_channel_vector(var, "var", C, default=1.0, where=where, nonnegative=True)
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    b = prepare_channel_vector(beta, "beta", C, default=0.0, where=where)
    xhat = (xc.astype(np.float64) - _bcast(mu, nd, ax)) / np.sqrt(_bcast(v, nd, ax) + eps)
    return (_bcast(g, nd, ax) * xhat + _bcast(b, nd, ax)).astype(out_dtype)


def batch_norm_inference_backward(
    dy: Any, x: Any, mean: Any, var: Any, gamma: Any, *, axis: int = -1, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of the inference affine map (statistics are constants)::

    dx = dy * gamma / sqrt(var + eps),  dgamma = sum(dy * xhat),  dbeta = sum(dy)
    """
    where = "batch_norm_inference_backward"
    eps = check_eps(eps, where=where)
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    C, nd = xc.shape[ax], xc.ndim
    mu = prepare_channel_vector(mean, "mean", C, default=0.0, where=where)
    v = prepare_channel_vector(var, "var", C, default=1.0, where=where, nonnegative=True)
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    cache = BatchNormCache(xc, mu, v, g, float(eps), ax, xc.size // max(C, 1), out_dtype)
    g64 = prepare_grad(dy, cache, where=where).astype(np.float64)
    red = _reduced_axes(nd, ax)
    rstd = _bcast(cache.rstd, nd, ax)
    xhat = (xc.astype(np.float64) - _bcast(mu, nd, ax)) * rstd
    dx = g64 * _bcast(g, nd, ax) * rstd
    dt = xc.dtype
    return dx.astype(out_dtype), (g64 * xhat).sum(axis=red).astype(dt), g64.sum(axis=red).astype(dt)
