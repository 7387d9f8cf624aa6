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

The training pass is also offered in pieces, for layers that reduce statistics themselves
(ghost batches, ranks of a synchronized batch): :func:`bnlab.kernels.moments` (per-channel
count, mean and biased variance of a possibly empty shard), :func:`batch_norm_inference`
(normalize with a given mean and variance), :func:`batch_norm_grad_sums` (``sum(dy)`` and
``sum(dy * (x - mean))`` around a given mean) and :func:`batch_norm_grad_input` (``dx`` from
given sums and the count ``m`` they cover). ``batch_norm_forward``/``batch_norm_backward`` are
exactly these pieces with the local batch's own statistics.

Output buffers: ``batch_norm_forward``, ``batch_norm_backward`` and ``batch_norm_inference``
take ``out=`` (an array of the result's shape and dtype, C-contiguous, writeable, sharing no
memory with the inputs) and write ``y`` or ``dx`` into it instead of allocating: a training
loop that passes the same two arrays every step allocates nothing large (a fresh large array
costs page faults on every call with glibc's default malloc). Only ``out`` is written; the
cache holds ``x`` (not ``y``), so a cache stays valid when its ``out`` is reused for the next
forward pass, and the bits are those of the allocating call.

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

from typing import Any

import numpy as np

from bnlab._checks import as_float_array
from bnlab.kernels import batchnorm_fused as fk
from bnlab.kernels._bn_common import (
    BatchNormCache,
    channel_view,
    check_eps,
    check_training_count,
    num_blocks,
    prepare_channel_vector,
    prepare_grad,
    prepare_input,
)
from bnlab.kernels._bn_vectors import all_finite, param_grads
from bnlab.kernels.batchnorm_chunks import grad_input_view, grad_sums_view, normalize_view
from bnlab.kernels.moments import channel_stats

__all__ = [
    "BatchNormCache",
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_inference",
    "batch_norm_inference_backward",
    "batch_norm_grad_sums",
    "batch_norm_grad_input",
    "channel_stats",
    "check_out",
]


def check_out(
    out: Any, shape: tuple[int, ...], dtype: np.dtype[Any], *inputs: Any, where: str
) -> np.ndarray:
    """``out`` if it can take a result of ``shape``/``dtype``, else a TypeError/ValueError.

    It must be a writeable C-contiguous ndarray of exactly that shape and dtype, sharing no
    memory with ``inputs`` (a kernel writing over its own input would change what it reads).
    """
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{where}: out must be a numpy array or None, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"{where}: out must have the result's shape {shape} and dtype {dtype}, got shape "
            f"{out.shape} and dtype {out.dtype}; allocate it with np.empty_like(x)"
        )
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(
            f"{where}: out must be C-contiguous and writeable (the kernels write it as one "
            "block); pass np.empty_like(x) or a contiguous copy"
        )
    for i, arr in enumerate(inputs):
        if any(arr is seen for seen in inputs[:i]):
            continue
        if isinstance(arr, np.ndarray) and np.may_share_memory(out, arr):
            raise ValueError(
                f"{where}: out shares memory with an input; pass a separate array (the "
                "kernels read their inputs while writing out)"
            )
    return out


def _normalize(
    v: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    g: np.ndarray,
    b: np.ndarray,
    eps: float,
    shape: tuple[int, ...],
    ax: int,
    out: np.ndarray | None = None,
    nb: int | None = None,
) -> np.ndarray:
    """``y`` of ``shape``, into ``out`` (result dtype) when given; computed in ``v``'s dtype."""
    if out is not None and out.dtype == v.dtype:
        normalize_view(v, mean, var, g, b, eps, channel_view(out, ax), nb)
        return out
    y = normalize_view(v, mean, var, g, b, eps, None, nb).reshape(shape)
    if out is not None:  # float16: computed in float32, rounded as astype rounds
        np.copyto(out, y, casting="same_kind")
        return out
    return y


def _grad_input(
    u: np.ndarray,
    v: np.ndarray,
    cache: BatchNormCache,
    sdy: np.ndarray,
    sdyx: np.ndarray,
    out: np.ndarray | None = None,
    nb: int | None = None,
) -> np.ndarray:
    """``dx`` (out dtype, input shape) from the sums; ``cache.count`` is the m they cover."""
    stats = (cache.mean, cache.var, cache.gamma)
    shape, ax, m = cache.x.shape, cache.axis, int(cache.count)
    if out is not None and out.dtype == v.dtype:
        grad_input_view(u, v, stats, sdy, sdyx, cache.eps, m, channel_view(out, ax), nb)
        return out
    dx = grad_input_view(u, v, stats, sdy, sdyx, cache.eps, m, None, nb).reshape(shape)
    if out is not None:
        np.copyto(out, dx, casting="same_kind")
        return out
    return dx.astype(cache.out_dtype, copy=False)


def batch_norm_forward(
    x: Any,
    gamma: Any,
    beta: Any,
    *,
    axis: int = -1,
    eps: float = 1e-5,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode batch norm: normalize with the batch's mean and biased variance.

    ``gamma``/``beta`` of shape ``(C,)`` (``None`` means 1 and 0). Returns ``y`` with the dtype
    of ``x`` (float16 is computed in float32) and a :class:`BatchNormCache` holding a reference
    to ``x`` and the float64 ``mean``/``var`` (biased) for the backward pass and running stats.
    ``out``: an array for ``y`` (see the module docstring); it is returned as ``y``.
    FloatingPointError if ``x`` holds NaN or Inf (seen in the statistics, at no cost);
    ValueError for eps <= 0 or NaN/Inf gamma/beta.
    """
    where = "batch_norm_forward"
    eps = check_eps(eps, where=where)
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    xc = np.ascontiguousarray(xc)
    C = xc.shape[ax]
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    b = prepare_channel_vector(beta, "beta", C, default=0.0, where=where)
    m = xc.size // C if C else 0
    check_training_count(m, xc.shape, where=where)
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    v = channel_view(xc, ax)
    nb = num_blocks(v)
    mean, var = (fk.stats_last if v.ndim == 2 else fk.stats_mid)(v, nb)  # channel_stats(v)
    if not (all_finite(mean) and all_finite(var)):
        raise FloatingPointError(
            f"{where}: the batch statistics of x are not finite: x contains NaN or Inf, or its "
            "variance overflows float64; check the input"
        )
    y = _normalize(v, mean, var, g, b, eps, xc.shape, ax, out, nb)
    cache = BatchNormCache(xc, mean, var, g, eps, ax, m, out_dtype)
    return y.astype(out_dtype, copy=False), cache


def batch_norm_backward(
    dy: Any, cache: BatchNormCache, *, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`batch_norm_forward`.

    ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)`` (compute dtype) and
    ``dx = gamma * rstd * (dy - dbeta/m - xhat * dgamma/m)`` (dtype of the forward input).
    ``out``: an array for ``dx`` (see the module docstring); it is returned as ``dx``.
    FloatingPointError if ``dy`` holds NaN or Inf (seen in its float64 sums, at no cost).
    """
    where = "batch_norm_backward"
    g = np.ascontiguousarray(prepare_grad(dy, cache, where=where))
    if out is not None:
        check_out(out, cache.x.shape, cache.out_dtype, dy, g, cache.x, where=where)
    v = channel_view(cache.x, cache.axis)
    u = channel_view(g, cache.axis)
    nb = num_blocks(v)
    sdy, sdyx = grad_sums_view(u, v, cache.mean, nb)
    if not (all_finite(sdy) and all_finite(sdyx)):
        raise FloatingPointError(
            "batch_norm_backward: the sums of dy are not finite: dy contains NaN or Inf (or "
            "overflows float64); check the upstream gradient"
        )
    dx = _grad_input(u, v, cache, sdy, sdyx, out, nb)
    dgamma, dbeta = param_grads(cache.var, cache.eps, sdy, sdyx, cache.x)  # rstd * sdyx, sdy
    return dx, dgamma, dbeta


def _prepare_pair(
    dy: Any, x: Any, mean: Any, axis: int, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.dtype[Any]]:
    """``(dy, x)`` C-contiguous in x's compute dtype, the mean as float64, the axis, out dtype."""
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    mu = prepare_channel_vector(mean, "mean", xc.shape[ax], default=0.0, where=where)
    gy = as_float_array(dy, "dy", where=where, min_ndim=0)
    if gy.shape != xc.shape:
        raise ValueError(f"{where}: dy must have the shape of x {xc.shape}, got {gy.shape}")
    gy = gy if gy.dtype == xc.dtype else gy.astype(xc.dtype)
    return np.ascontiguousarray(gy), np.ascontiguousarray(xc), mu, ax, out_dtype


def batch_norm_grad_sums(
    dy: Any, x: Any, mean: Any, *, axis: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(sum(dy), sum(dy * (x - mean)))`` in float64, shape ``(C,)`` each.

    The first pass of the training backward, around a given ``mean`` (the global one for a
    synchronized batch, whose ranks then sum these). An empty ``x`` gives zeros.
    """
    gy, xc, mu, ax, _ = _prepare_pair(dy, x, mean, axis, "batch_norm_grad_sums")
    if xc.size == 0:
        return np.zeros(xc.shape[ax]), np.zeros(xc.shape[ax])
    return grad_sums_view(channel_view(gy, ax), channel_view(xc, ax), mu)


def batch_norm_grad_input(
    dy: Any,
    x: Any,
    mean: Any,
    var: Any,
    gamma: Any,
    sum_dy: Any,
    sum_dy_xmu: Any,
    *,
    count: int,
    axis: int = -1,
    eps: float = 1e-5,
) -> np.ndarray:
    """Training-mode ``dx`` from the batch statistics and the backward sums over ``count`` values::

    rstd = 1/sqrt(var + eps),  xhat = (x - mean) * rstd
    dx = gamma * rstd * (dy - sum_dy/m - xhat * rstd * sum_dy_xmu/m),   m = count

    ``mean``/``var`` (biased) and the sums may be global ones (a synchronized batch): ``count``
    is then the global number of values per channel. Returns dx in the dtype of ``x``.
    """
    where = "batch_norm_grad_input"
    eps = check_eps(eps, where=where)
    gy, xc, mu, ax, out_dtype = _prepare_pair(dy, x, mean, axis, where)
    C = xc.shape[ax]
    vr = prepare_channel_vector(var, "var", C, default=1.0, where=where, nonnegative=True)
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    sdy = prepare_channel_vector(sum_dy, "sum_dy", C, default=0.0, where=where)
    sdyx = prepare_channel_vector(sum_dy_xmu, "sum_dy_xmu", C, default=0.0, where=where)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(
            f"{where}: count must be a positive int (values per channel), got {count!r}"
        )
    if xc.size == 0:
        return np.empty(xc.shape, dtype=out_dtype)
    cache = BatchNormCache(xc, mu, vr, g, eps, ax, int(count), out_dtype)
    return _grad_input(channel_view(gy, ax), channel_view(xc, ax), cache, sdy, sdyx)


def batch_norm_inference(
    x: Any,
    mean: Any,
    var: Any,
    gamma: Any,
    beta: Any,
    *,
    axis: int = -1,
    eps: float = 1e-5,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Inference-mode batch norm (Algorithm 2): ``y = gamma * (x - mean) / sqrt(var + eps) + beta``.

    ``mean``/``var`` are the population (running) statistics, or any given statistics (the
    normalizing pass of training uses the batch's); an empty batch gives an empty output.
    ``out``: an array for ``y`` (see the module docstring); it is returned as ``y``.
    ValueError for eps <= 0, NaN/Inf statistics or parameters, and a negative ``var``.
    """
    where = "batch_norm_inference"
    eps = check_eps(eps, where=where)
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    C = xc.shape[ax]
    mu = prepare_channel_vector(mean, "mean", C, default=0.0, where=where)
    vr = prepare_channel_vector(var, "var", C, default=1.0, where=where, nonnegative=True)
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    b = prepare_channel_vector(beta, "beta", C, default=0.0, where=where)
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    if xc.size == 0:
        return np.empty(xc.shape, dtype=out_dtype) if out is None else out
    xc = np.ascontiguousarray(xc)
    y = _normalize(channel_view(xc, ax), mu, vr, g, b, eps, xc.shape, ax, out)
    return y.astype(out_dtype, copy=False)


def batch_norm_inference_backward(
    dy: Any, x: Any, mean: Any, var: Any, gamma: Any, *, axis: int = -1, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batch_norm_inference`, the statistics held constant::

    dx = dy * gamma / sqrt(var + eps),   dgamma = sum(dy * xhat),   dbeta = sum(dy)
    """
    where = "batch_norm_inference_backward"
    eps = check_eps(eps, where=where)
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    C = xc.shape[ax]
    mu = prepare_channel_vector(mean, "mean", C, default=0.0, where=where)
    vr = prepare_channel_vector(var, "var", C, default=1.0, where=where, nonnegative=True)
    g = prepare_channel_vector(gamma, "gamma", C, default=1.0, where=where)
    cache = BatchNormCache(xc, mu, vr, g, eps, ax, xc.size // C if C else 0, out_dtype)
    gy = prepare_grad(dy, cache, where=where)
    dt = xc.dtype
    if xc.size == 0:
        return np.empty(xc.shape, dtype=out_dtype), np.zeros(C, dt), np.zeros(C, dt)
    xc, gy = np.ascontiguousarray(xc), np.ascontiguousarray(gy)
    v, u = channel_view(xc, ax), channel_view(gy, ax)
    sdy, sdyx = grad_sums_view(u, v, mu)
    zeros = np.zeros(C)
    dx = _normalize(u, zeros, vr, g, zeros, eps, xc.shape, ax).astype(out_dtype, copy=False)
    return dx, (cache.rstd * sdyx).astype(dt), sdy.astype(dt)
