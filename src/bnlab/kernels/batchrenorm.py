"""Batch renorm (Ioffe 2017, Algorithm 1) on the batch-norm kernels: BN with another affine map.

With ``sigma_B = sqrt(var_B + eps)`` and the moving ``mu``, ``sigma``; r, d constant for
backprop (:mod:`bnlab.kernels.batchrenorm_ref` is the readable specification)::

    r = clip(sigma_B / sigma, 1/rmax, rmax),    d = clip((mu_B - mu) / sigma, -dmax, dmax)
    y = gamma * (x_n * r + d) + beta = (gamma r) * x_n + (gamma d + beta)
    dx = BN's dx with gamma r;   dgamma = r * sum(dy * x_n) + d * sum(dy),   dbeta = sum(dy)

``groups`` (one r and d per ghost batch), ``reduce`` and ``out`` as for
:func:`bnlab.kernels.batch_norm_forward`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import check_eps, check_out, check_real, prepare_input
from bnlab.kernels.batchnorm import (
    BatchNormCache,
    Groups,
    StatsReduce,
    SumsReduce,
    affine_map,
    backward,
    channel_vectors,
    channel_view,
    check_stats,
    compute_stats,
    group_bounds,
    normalize,
)
from bnlab.kernels.batchnorm_fused import all_finite
from bnlab.kernels.batchrenorm_ref import batch_renorm_r_d

__all__ = ["batch_renorm_forward", "batch_renorm_backward", "batch_renorm_inference"]


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
    groups: Groups = None,
    reduce: StatsReduce | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode batch renorm, ``y = gamma * ((x - mu_B) / sigma_B * r + d) + beta``.

    Returns ``y`` and a cache with the group statistics and ``r``, ``d`` ``(G, C)``.
    """
    where = "batch_renorm_forward"
    eps = check_eps(eps, where=where)
    rmax = check_real(rmax, "rmax", where=where, low=1.0)  # r is clipped to [1/rmax, rmax]
    dmax = check_real(dmax, "dmax", where=where, low=0.0)  # d is clipped to [-dmax, dmax]
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    given = (("gamma", gamma, 1.0), ("beta", beta, 0.0), ("moving_mean", moving_mean, 0.0))
    g, b, mu, sigma = channel_vectors(where, xc.shape[ax], *given, ("moving_std", moving_std, 1.0))
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    v = channel_view(xc, ax)
    plan = group_bounds(v, xc.shape[0], ax, groups, where)
    count, mean, var = compute_stats(v, plan, reduce)
    check_stats(xc, count, all_finite(mean, var), where)
    r, d = batch_renorm_r_d(mean, np.sqrt(var + eps), mu, sigma, rmax, dmax)
    scale, shift = g * r, g * d + b
    y, *_ = normalize(v, plan, (mean, scale, shift, var, eps), out_dtype, out, xc)
    cache = BatchNormCache(
        xc, ax, eps, out_dtype, *plan[:2], count, mean, var, scale, r, d, plan[3]
    )
    return y, cache


def batch_renorm_backward(
    dy: Any,
    cache: BatchNormCache,
    *,
    reduce: SumsReduce | None = None,
    out: np.ndarray | None = None,
    need_input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` with r and d held constant (see the module docstring); the
    parameter gradients are this process's share, the groups added."""
    return backward(dy, cache, reduce, out, need_input_grad, "batch_renorm_backward")


def batch_renorm_inference(
    x: Any,
    moving_mean: Any,
    moving_std: Any,
    gamma: Any,
    beta: Any,
    *,
    axis: int = -1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Inference: ``y = gamma * (x - mu) / sigma + beta`` with the moving mu and sigma > 0."""
    where = "batch_renorm_inference"
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    given = (("moving_mean", moving_mean, 0.0), ("moving_std", moving_std, 1.0))
    mu, sigma, g, b = channel_vectors(
        where, xc.shape[ax], *given, ("gamma", gamma, 1.0), ("beta", beta, 0.0)
    )
    if not (sigma > 0).all():
        raise ValueError(f"{where}: moving_std must be > 0, got a minimum of {sigma.min()!r}")
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    return affine_map(xc, ax, (mu, g / sigma, b, None, 0.0), out_dtype, out)
