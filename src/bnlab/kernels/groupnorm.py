"""Fused Numba group normalization (Wu & He 2018) over channels-last input; LayerNorm is G = 1.

The input ``x`` of shape ``(N, ..., C)`` is viewed without copying as ``(N, S, C)`` (``S`` = the
product of the middle axes) and its ``C = G * Cg`` channels as ``G`` groups of ``Cg``
consecutive channels. Each ``(sample n, group g)`` has its own statistics over the ``m = S * Cg``
values it holds; the affine map is per channel::

    forward  pass 1:  S1 = sum(x - K),  S2 = sum((x - K)^2)       float64, K = the group's first
                      mean = K + S1/m,  var = max((S2 - S1^2/m)/m, 0)   value (no E[x^2]-E[x]^2
                                                                        cancellation); biased
    forward  pass 2:  y = (x - mean) * rstd * gamma[c] + beta[c],  rstd = 1/sqrt(var + eps)

    backward pass 1:  per (n, g):  A = sum(dy * gamma),  B = sum(dy * gamma * (x - mean))
                      per (n, c):  sum_s dy,  sum_s dy * (x - mean)      (float64)
                      dbeta[c] = sum_n sum_s dy,  dgamma[c] = sum_n rstd * sum_s dy (x - mean)
    backward pass 2:  dx = rstd * (dy * gamma - A/m - (x - mean) * rstd^2 * B/m)

Samples run in parallel (``prange`` over n); every sum is float64 and added in a fixed order,
so the bits do not depend on the thread count. The readable NumPy specification is
:mod:`bnlab.kernels.groupnorm_ref`. LayerNorm over the last axes of shape ``P`` is this kernel
on ``x.reshape(-1, 1, prod(P))`` with G = 1 and gamma, beta flattened (per element).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bnlab._checks import as_float_array, check_finite, check_overflow, compute_dtype
from bnlab.kernels._numba import call_on_policy, njit_pair, prange

__all__ = ["GroupNormCache", "group_norm_forward", "group_norm_backward", "check_groups"]

PARALLEL_MIN = 1 << 15  # elements below which the kernels run on one thread


@dataclass
class GroupNormCache:
    """What :func:`group_norm_backward` needs: the (N, S, C) input in the compute dtype, the
    per-(sample, group) float64 ``mean`` and ``rstd`` (N, G), float64 gamma (or None)."""

    x: np.ndarray
    mean: np.ndarray
    rstd: np.ndarray
    gamma: np.ndarray | None
    shape: tuple[int, ...]
    out_dtype: np.dtype[Any]


def _stats_body(x, G, eps, mean, rstd):  # pragma: no cover - compiled
    N, S, C = x.shape
    Cg = C // G
    m = S * Cg
    for n in prange(N):
        t1 = np.zeros(G)
        t2 = np.zeros(G)
        k = np.empty(G)
        for g in range(G):
            k[g] = np.float64(x[n, 0, g * Cg])
        for s in range(S):
            for g in range(G):
                kg = k[g]
                a1 = 0.0
                a2 = 0.0
                for c in range(g * Cg, (g + 1) * Cg):
                    v = np.float64(x[n, s, c]) - kg
                    a1 += v
                    a2 += v * v
                t1[g] += a1
                t2[g] += a2
        for g in range(G):
            mean[n, g] = k[g] + t1[g] / m
            var = max((t2[g] - t1[g] * t1[g] / m) / m, 0.0)
            rstd[n, g] = 1.0 / np.sqrt(var + eps)


def _normalize_body(x, mean_c, scale_c, beta, y):  # pragma: no cover - compiled
    N, S, C = x.shape
    for n in prange(N):
        for s in range(S):
            for c in range(C):
                y[n, s, c] = (np.float64(x[n, s, c]) - mean_c[n, c]) * scale_c[n, c] + beta[c]


def _grad_sums_body(dy, x, mean_c, gamma, A, B, sdy, sdyx):  # pragma: no cover - compiled
    N, S, C = x.shape
    Cg = C // A.shape[1]
    for n in prange(N):
        t1 = np.zeros(C)
        t2 = np.zeros(C)
        for s in range(S):
            for c in range(C):
                d = np.float64(dy[n, s, c])
                t1[c] += d
                t2[c] += d * (np.float64(x[n, s, c]) - mean_c[n, c])
        for c in range(C):
            sdy[n, c] = t1[c]
            sdyx[n, c] = t2[c]
            A[n, c // Cg] += gamma[c] * t1[c]
            B[n, c // Cg] += gamma[c] * t2[c]


def _grad_input_body(dy, x, mean_c, rstd_c, gamma, k0_c, k1_c, dx):  # pragma: no cover
    N, S, C = x.shape
    for n in prange(N):
        for s in range(S):
            for c in range(C):
                xm = np.float64(x[n, s, c]) - mean_c[n, c]
                d = np.float64(dy[n, s, c]) * gamma[c]
                dx[n, s, c] = rstd_c[n, c] * (d - k0_c[n, c] - xm * k1_c[n, c])


_STATS = njit_pair(_stats_body)
_NORMALIZE = njit_pair(_normalize_body)
_GRAD_SUMS = njit_pair(_grad_sums_body)
_GRAD_INPUT = njit_pair(_grad_input_body)


def check_groups(num_groups: Any, num_channels: int, where: str) -> int:
    """``num_groups`` as an int that divides ``num_channels``; ValueError naming both else."""
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"{where}: num_groups must be a positive int, got {num_groups!r}")
    if num_groups < 1 or num_channels % num_groups:
        raise ValueError(
            f"{where}: num_channels={num_channels} must be divisible by num_groups="
            f"{num_groups}; choose num_groups among the divisors of {num_channels}"
        )
    return int(num_groups)


def _vector(v: Any, name: str, C: int, default: float, where: str) -> np.ndarray:
    if v is None:
        return np.full(C, default)
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape != (C,):
        raise ValueError(f"{where}: {name} must have shape ({C},), got {arr.shape}")
    return np.ascontiguousarray(arr)


def prepare(x: Any, num_groups: int, where: str) -> tuple[np.ndarray, np.dtype[Any], int]:
    """``x`` as a C-contiguous (N, S, C) array in the compute dtype, its dtype, the groups."""
    arr = as_float_array(x, "x", where=where, min_ndim=2)
    G = check_groups(num_groups, arr.shape[-1], where)
    xc = np.ascontiguousarray(arr, dtype=compute_dtype(arr.dtype))
    n = arr.shape[0]
    s = int(np.prod(arr.shape[1:-1], dtype=np.int64))
    return xc.reshape(n, s, arr.shape[-1]), arr.dtype, G


def group_norm_forward(
    x: Any, gamma: Any, beta: Any, num_groups: int, *, eps: float = 1e-5
) -> tuple[np.ndarray, GroupNormCache]:
    """``y = gamma[c] * (x - mean[n, g]) / sqrt(var[n, g] + eps) + beta[c]`` (module docstring).

    ``x`` is (N, ..., C), channels last; ``gamma``/``beta`` are (C,) or None (1 and 0).
    Returns ``y`` in the dtype of ``x`` (float16 computed in float32) and the cache. NaN/Inf in
    ``x`` raises FloatingPointError; C not divisible by ``num_groups`` a ValueError.
    """
    where = "group_norm_forward"
    x3, out_dtype, G = prepare(x, num_groups, where)
    if not (isinstance(eps, (int, float)) and eps > 0 and np.isfinite(eps)):
        raise ValueError(f"{where}: eps must be a finite float > 0, got {eps!r}")
    N, S, C = x3.shape
    rank = np.ndim(x)  # the runtime's thread policy: images run their kernels on one thread
    g = _vector(gamma, "gamma", C, 1.0, where)
    b = _vector(beta, "beta", C, 0.0, where)
    mean, rstd = np.zeros((N, G)), np.ones((N, G))
    if x3.size:
        call_on_policy(_STATS, rank, x3.size, PARALLEL_MIN, x3, G, float(eps), mean, rstd)
        if not (np.isfinite(mean).all() and np.isfinite(rstd).all()):
            check_finite(x3, "x", where=where)
            raise FloatingPointError(f"{where}: the statistics of x overflow; scale the input")
    y = np.empty(x3.shape, x3.dtype)
    if x3.size:
        mean_c, scale_c = np.repeat(mean, C // G, axis=1), np.repeat(rstd, C // G, axis=1) * g
        call_on_policy(_NORMALIZE, rank, x3.size, PARALLEL_MIN, x3, mean_c, scale_c, b, y)
    cache = GroupNormCache(x3, mean, rstd, None if gamma is None else g, np.shape(x), out_dtype)
    with np.errstate(over="ignore"):  # float16: an overflow is refused below
        out = y.reshape(cache.shape).astype(out_dtype, copy=False)
    check_overflow(where, x3, out)
    return out, cache


def group_norm_backward(
    dy: Any, cache: GroupNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of :func:`group_norm_forward` (formulas in the module docstring).

    ``dgamma``/``dbeta`` are in the compute dtype; NaN/Inf in ``dy`` raises FloatingPointError.
    """
    where = "group_norm_backward"
    g = as_float_array(dy, "dy", where=where, min_ndim=0)
    if g.shape != cache.shape:
        raise ValueError(f"{where}: dy must have shape {cache.shape}, got {g.shape}")
    x3 = cache.x
    N, S, C = x3.shape
    G = cache.mean.shape[1]
    d3 = np.ascontiguousarray(g, dtype=x3.dtype).reshape(x3.shape)
    gamma = np.ones(C) if cache.gamma is None else cache.gamma
    A, B = np.zeros((N, G)), np.zeros((N, G))
    sdy, sdyx = np.zeros((N, C)), np.zeros((N, C))
    mean_c, rstd_c = np.repeat(cache.mean, C // G, axis=1), np.repeat(cache.rstd, C // G, axis=1)
    if x3.size:
        args = (d3, x3, mean_c, gamma, A, B, sdy, sdyx)
        call_on_policy(_GRAD_SUMS, len(cache.shape), x3.size, PARALLEL_MIN, *args)
    if not (np.isfinite(A).all() and np.isfinite(B).all() and np.isfinite(sdy).all()):
        check_finite(d3, "dy", where=where)
        raise FloatingPointError(f"{where}: the sums of dy overflow; scale the loss")
    dgamma = (rstd_c * sdyx).sum(axis=0)
    dbeta = sdy.sum(axis=0)
    dx = np.empty(x3.shape, x3.dtype)
    if x3.size:
        m = S * (C // G)  # the values of one (sample, group)
        k0_c = np.repeat(A / m, C // G, axis=1)
        k1_c = np.repeat(cache.rstd * cache.rstd * B / m, C // G, axis=1)
        dx_args = (d3, x3, mean_c, rstd_c, gamma, k0_c, k1_c, dx)
        call_on_policy(_GRAD_INPUT, len(cache.shape), x3.size, PARALLEL_MIN, *dx_args)
    dt = x3.dtype
    with np.errstate(over="ignore"):  # refused below
        dx_out = dx.reshape(cache.shape).astype(cache.out_dtype, copy=False)
        dgamma, dbeta = dgamma.astype(dt), dbeta.astype(dt)
    check_overflow(where, d3, dx_out, dgamma, dbeta)
    return dx_out, dgamma, dbeta
