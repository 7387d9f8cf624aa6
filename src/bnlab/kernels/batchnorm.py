"""Batch normalization kernels, the default (fused Numba) implementation.

``axis`` is the feature axis that is kept (Keras' meaning); all other axes are reduced, so for
channel c with ``m`` values::

    mean = 1/m sum x,   var = 1/m sum (x - mean)^2   (biased),   rstd = 1/sqrt(var + eps)
    y    = gamma * (x - mean) * rstd + beta                        (training forward)
    dx   = gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat)) (training backward)
    y    = gamma * (x - mean_pop) / sqrt(var_pop + eps) + beta     (inference)

A C-contiguous input is never copied: channels-last data (dense ``(N, D)``, NHWC,
``(N, L, C)``) is viewed as ``(R, C)`` and any other axis as ``(A, C, B)`` (NCHW: ``(N, C,
H*W)``); see :mod:`bnlab.kernels.batchnorm_fused` for the two passes each way. The NumPy
reference with the same signatures is :mod:`bnlab.kernels.batchnorm_ref`.

Example::

    >>> import numpy as np
    >>> from bnlab.kernels import batch_norm_forward, batch_norm_backward
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(64, 8)).astype(np.float32)
    >>> y, cache = batch_norm_forward(x, np.ones(8), np.zeros(8))
    >>> bool(np.allclose(y.mean(axis=0), 0, atol=1e-5))
    True
    >>> bool(np.allclose(y.var(axis=0), 1, atol=1e-3))
    True
    >>> dx, dgamma, dbeta = batch_norm_backward(np.ones_like(y), cache)
    >>> bool(np.abs(dx).max() < 1e-5)   # d(sum y)/dx = 0: y's sum does not depend on x
    True
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from bnlab.kernels import batchnorm_fused as fk
from bnlab.kernels._bn_common import (
    BatchNormCache,
    check_training_count,
    prepare_channel_vector,
    prepare_grad,
    prepare_input,
)
from bnlab.kernels._numba import get_num_threads

__all__ = [
    "BatchNormCache",
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_inference",
    "batch_norm_inference_backward",
    "channel_stats",
]

_PARALLEL_MIN = 65536  # elements below which waking the thread pool costs more than it saves


def _view(x: np.ndarray, axis: int) -> np.ndarray:
    """``(R, C)`` view when the feature axis is last, else ``(A, C, B)``; no copy."""
    C = x.shape[axis]
    if axis == x.ndim - 1:
        return x.reshape(-1, C)
    return x.reshape(prod(x.shape[:axis]), C, prod(x.shape[axis + 1 :]))


def _nblocks(v: np.ndarray) -> int:
    return get_num_threads() if v.size >= _PARALLEL_MIN else 1


def channel_stats(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float64 ``(mean, biased var)`` of a non-empty ``(R, C)``/``(A, C, B)`` view."""
    kernel = fk.stats_last if v.ndim == 2 else fk.stats_mid
    stats: tuple[np.ndarray, np.ndarray] = kernel(v, _nblocks(v))
    return stats


def _normalize(
    v: np.ndarray, mean: np.ndarray, var: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float
) -> np.ndarray:
    out = np.empty_like(v)
    kernel = fk.normalize_last if v.ndim == 2 else fk.normalize_mid
    kernel(v, mean, var, g, b, float(eps), out, _nblocks(v))
    return out


def batch_norm_forward(
    x: Any, gamma: Any, beta: Any, *, axis: int = -1, eps: float = 1e-5
) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode batch norm: normalize with the batch's mean and biased variance.

    ``gamma``/``beta`` of shape ``(C,)`` (``None`` means 1 and 0). Returns ``y`` with the dtype
    of ``x`` (float16 is computed in float32) and a :class:`BatchNormCache` holding a reference
    to ``x`` and the float64 ``mean``/``var`` (biased) for the backward pass and running stats.
    """
    where = "batch_norm_forward"
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    xc = np.ascontiguousarray(xc)
    C = xc.shape[ax]
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    b = prepare_channel_vector(beta, "beta", C, default=0.0, where=where)
    m = xc.size // C if C else 0
    check_training_count(m, xc.shape, where=where)
    v = _view(xc, ax)
    mean, var = channel_stats(v)
    y = _normalize(v, mean, var, g, b, eps)
    cache = BatchNormCache(xc, mean, var, g, float(eps), ax, m, out_dtype)
    return y.reshape(xc.shape).astype(out_dtype, copy=False), cache


def batch_norm_backward(
    dy: Any, cache: BatchNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`batch_norm_forward`.

    ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)`` (compute dtype) and
    ``dx = gamma * rstd * (dy - dbeta/m - xhat * dgamma/m)`` (dtype of the forward input).
    """
    g = np.ascontiguousarray(prepare_grad(dy, cache, where="batch_norm_backward"))
    v = _view(cache.x, cache.axis)
    u = _view(g, cache.axis)
    nb = _nblocks(v)
    last = v.ndim == 2
    sdy, sdyx = (fk.grad_sums_last if last else fk.grad_sums_mid)(u, v, cache.mean, nb)
    dx = np.empty_like(v)
    grad_input = fk.grad_input_last if last else fk.grad_input_mid
    if last and v.dtype == np.float32 and cache.count >= fk.LOWP_MIN_COUNT:
        grad_input = fk.grad_input_last_lowp
    grad_input(u, v, cache.mean, cache.var, cache.gamma, sdy, sdyx, cache.eps, dx, nb)
    dt = cache.x.dtype
    dx = dx.reshape(cache.x.shape).astype(cache.out_dtype, copy=False)
    return dx, (cache.rstd * sdyx).astype(dt), sdy.astype(dt)


def batch_norm_inference(
    x: Any, mean: Any, var: Any, gamma: Any, beta: Any, *, axis: int = -1, eps: float = 1e-5
) -> np.ndarray:
    """Inference-mode batch norm (Algorithm 2): ``y = gamma * (x - mean) / sqrt(var + eps) + beta``.

    ``mean``/``var`` are the population (running) statistics; an empty batch gives an empty
    output.
    """
    where = "batch_norm_inference"
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    C = xc.shape[ax]
    mu = prepare_channel_vector(mean, "mean", C, default=0.0, where=where)
    vr = prepare_channel_vector(var, "var", C, default=1.0, where=where)
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    b = prepare_channel_vector(beta, "beta", C, default=0.0, where=where)
    if xc.size == 0:
        return np.empty(xc.shape, dtype=out_dtype)
    xc = np.ascontiguousarray(xc)
    y = _normalize(_view(xc, ax), mu, vr, g, b, eps)
    return y.reshape(xc.shape).astype(out_dtype, copy=False)


def batch_norm_inference_backward(
    dy: Any, x: Any, mean: Any, var: Any, gamma: Any, *, axis: int = -1, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batch_norm_inference`, the statistics held constant::

    dx = dy * gamma / sqrt(var + eps),   dgamma = sum(dy * xhat),   dbeta = sum(dy)
    """
    where = "batch_norm_inference_backward"
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    C = xc.shape[ax]
    mu = prepare_channel_vector(mean, "mean", C, default=0.0, where=where)
    vr = prepare_channel_vector(var, "var", C, default=1.0, where=where)
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    cache = BatchNormCache(xc, mu, vr, g, float(eps), ax, xc.size // C if C else 0, out_dtype)
    gy = prepare_grad(dy, cache, where=where)
    dt = xc.dtype
    if xc.size == 0:
        return np.empty(xc.shape, dtype=out_dtype), np.zeros(C, dt), np.zeros(C, dt)
    xc, gy = np.ascontiguousarray(xc), np.ascontiguousarray(gy)
    v, u = _view(xc, ax), _view(gy, ax)
    sdy, sdyx = (fk.grad_sums_last if v.ndim == 2 else fk.grad_sums_mid)(u, v, mu, _nblocks(v))
    zeros = np.zeros(C)
    dx = _normalize(u, zeros, vr, g, zeros, eps)
    dx = dx.reshape(xc.shape).astype(out_dtype, copy=False)
    return dx, (cache.rstd * sdyx).astype(dt), sdy.astype(dt)
