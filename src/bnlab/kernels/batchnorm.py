"""Batch normalization: the public kernels every normalization layer calls.

``axis`` is the feature axis that is kept (Keras' meaning); every other axis is reduced. For a
channel with ``m`` values (``mean``, biased ``var``, ``rstd = 1/sqrt(var + eps)``)::

    y  = gamma * (x - mean) * rstd + beta                          (training forward)
    dx = gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))   (training backward)
    y  = gamma * (x - mean_pop) / sqrt(var_pop + eps) + beta       (inference)

As Flax's ``_compute_stats`` and ``_normalize``, :func:`compute_stats` and :func:`normalize`
serve BN and renorm (:mod:`bnlab.kernels.batchrenorm`). What a layer needs is an argument:
``groups`` (ghost batches: row bounds ``[(a, b), ...]`` along axis 0, or a count), ``reduce``
(maps this process's ``(count (G,), mean (G, C), var (G, C))``, or the backward sums
``(G, 2, C)``, to the global ones: a synchronized layer's collectives) and ``out`` (written
instead of allocating: the result's shape and dtype, C-contiguous, sharing no memory with the
inputs; the cache holds ``x``, not ``y``). The input is viewed without a copy for the loops of
:mod:`bnlab.kernels.batchnorm_fused`; NaN/Inf in ``x`` or ``dy`` shows in their float64 sums.
The NumPy specification is :mod:`bnlab.kernels.batchnorm_ref`.

    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(64, 8)).astype(np.float32)
    >>> y, cache = batch_norm_forward(x, np.ones(8), np.zeros(8))
    >>> dx, dgamma, dbeta = batch_norm_backward(np.ones_like(y), cache)
    >>> bool(np.allclose(y.mean(axis=0), 0, atol=1e-5)), bool(np.abs(dx).max() < 1e-5)
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import bnlab.kernels.batchnorm_fused as fk
from bnlab._checks import as_float_array, check_eps, check_finite, check_out, prepare_input
from bnlab.runtime import kernel_thread_count

__all__ = ["BatchNormCache", "batch_norm_forward", "batch_norm_backward", "batch_norm_inference"]
__all__ += ["batch_norm_inference_backward"]

PARALLEL_MIN = 65536  # elements below which waking the thread pool costs more than it saves
Groups = int | Sequence[tuple[int, int]] | None
StatsReduce = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
SumsReduce = Callable[[np.ndarray], np.ndarray]


@dataclass
class BatchNormCache:
    """A training forward's state: ``x`` (compute dtype, C-contiguous), float64 ``count (G,)``,
    ``mean``/``var`` (biased) ``(G, C)`` of the (global) groups, ``scale (G, C)`` (the effective
    gamma; renorm: gamma r, with ``r``, ``d``)."""

    x: np.ndarray
    axis: int
    eps: float
    out_dtype: np.dtype[Any]
    bounds: np.ndarray  # group j is rows bounds[j, 0]:bounds[j, 1] of the channel view
    nblocks: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    scale: np.ndarray
    r: np.ndarray | None = None
    d: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    @property
    def std(self) -> np.ndarray:
        """``sqrt(var + eps)`` per group, float64."""
        return np.sqrt(self.var + self.eps)


def channel_vector(v: Any, name: str, C: int, *, default: float, where: str) -> np.ndarray:
    """A per-channel vector (``None``: all ``default``) as float64 ``(C,)``; finite, and >= 0
    for a variance (``name`` "var")."""
    if v is None:
        return np.full(C, default)
    arr = np.asarray(v)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{where}: {name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.shape != (C,):
        raise ValueError(
            f"{where}: {name} must have shape ({C},) to match the feature axis, got shape "
            f"{arr.shape}"
        )
    out = arr.astype(np.float64)
    if not fk.all_finite(out):
        raise ValueError(
            f"{where}: {name} must be finite, got {int(np.isnan(out).sum())} NaN and "
            f"{int(np.isinf(out).sum())} Inf entries; check the parameters or statistics given"
        )
    if name == "var" and (out < 0).any():
        raise ValueError(f"{where}: var must be >= 0 (a variance), got a minimum of {out.min()!r}")
    return out


def channel_vectors(where: str, C: int, **given: tuple[Any, float]) -> list[np.ndarray]:
    """:func:`channel_vector` of each ``name=(value, default)``, in order."""
    return [channel_vector(v, k, C, default=dv, where=where) for k, (v, dv) in given.items()]


# -- the two passes: statistics, then the affine map -------------------------------------------
def channel_view(x: np.ndarray, axis: int) -> np.ndarray:
    """``(R, C)`` view of a C-contiguous ``x`` when the feature axis is last, else ``(A, C, B)``."""
    C = x.shape[axis]
    if axis == x.ndim - 1:
        return x.reshape(-1, C)
    return x.reshape(math.prod(x.shape[:axis]), C, math.prod(x.shape[axis + 1 :]))


def group_bounds(
    x: np.ndarray, ax: int, groups: Groups = None, where: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """``(bounds (G, 2), nblocks (G,))``: the groups on the first axis of the channel view."""
    v = channel_view(x, ax)
    if groups is None:
        bounds = np.array([[0, v.shape[0]]], np.int64)
        return bounds, _blocks(v, bounds)
    n = x.shape[0]
    if isinstance(groups, int | np.integer):
        if groups < 1 or n % groups:
            raise ValueError(f"{where}: groups={groups} must divide the batch size {n}")
        rows = np.arange(int(groups) + 1, dtype=np.int64) * (n // int(groups))
        rows = np.stack([rows[:-1], rows[1:]], axis=1)
    else:
        rows = np.asarray(groups, np.int64).reshape(-1, 2)
        if rows.size == 0 or rows.min() < 0 or rows.max() > n or (rows[:, 1] < rows[:, 0]).any():
            raise ValueError(f"{where}: groups must be row bounds (a, b) in [0, {n}], got {groups}")
    if ax == 0:
        raise ValueError(f"{where}: groups split axis 0, so the feature axis must not be 0")
    bounds = rows * (v.shape[0] // n if n else 0)
    return bounds, _blocks(v, bounds)


def _blocks(v: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Blocks per group: 1 below PARALLEL_MIN elements, else the runtime's threads for data of
    the owning array's rank (images: 1). The sums are per block: this fixes their rounding."""
    per_row = v.size // v.shape[0] if v.shape[0] else 0
    sizes = [(b - a) * per_row for a, b in bounds.tolist()]  # Python ints: cheap for G = 1
    if max(sizes) < PARALLEL_MIN:
        return np.ones(len(sizes), np.int64)
    owner = v if v.base is None else v.base
    n = kernel_thread_count(max(v.ndim, int(getattr(owner, "ndim", 0))))
    return np.array([1 if size < PARALLEL_MIN else n for size in sizes], np.int64)


def compute_stats(
    xc: np.ndarray, ax: int, groups: Groups, reduce: StatsReduce | None, *, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(bounds, nblocks, count (G,), mean, biased var (G, C))`` of the groups, reduced."""
    v = channel_view(xc, ax)
    bounds, nblocks = group_bounds(xc, ax, groups, where)
    G, C = len(bounds), v.shape[1]
    per_row = v.size // v.shape[0] if v.shape[0] else 0
    count = np.array([(b - a) * per_row // C for a, b in bounds.tolist()], np.int64)
    mean, var = np.zeros((G, C)), np.zeros((G, C))
    if v.size:
        (fk.stats_last if v.ndim == 2 else fk.stats_mid)(v, bounds, nblocks, mean, var)
    if reduce is not None:
        count, mean, var = reduce(count, mean, var)
    return bounds, nblocks, count, mean, var


def check_stats(xc: np.ndarray, stats: tuple[np.ndarray, ...], where: str) -> None:
    """Refuse a group of fewer than 2 values (non-empty batch), or NaN/Inf statistics."""
    count, mean, var = stats
    if count.any() and count.min() < 2:
        j = int(np.argmin(count))
        what = "the batch" if len(count) == 1 else f"group {j}"
        raise ValueError(
            f"{where}: Expected more than 1 value per channel when training, got "
            f"{int(count[j])} in {what} (input shape {xc.shape}); use a larger batch (or "
            "virtual batch), or eval mode"
        )
    if not (fk.all_finite(mean) and fk.all_finite(var)):
        check_finite(xc, "x", where=where)
        raise FloatingPointError(
            f"{where}: the batch statistics are not finite (x's variance overflows float64, "
            "or another rank's shard holds NaN/Inf); nothing was updated"
        )


def normalize(
    xc: np.ndarray,
    ax: int,
    groups: tuple[np.ndarray, np.ndarray],
    affine: tuple[np.ndarray, np.ndarray, np.ndarray],
    out_dtype: np.dtype[Any],
    out: np.ndarray | None,
) -> np.ndarray:
    """``y = scale * (x - center) + shift`` per group (``affine``: float64 ``(G, C)``)."""
    y = out if out is not None and out.dtype == xc.dtype else np.empty_like(xc)
    v = channel_view(xc, ax)
    kernel = fk.affine_last if v.ndim == 2 else fk.affine_mid
    kernel(v, *groups, *affine, channel_view(y, ax))
    return _result(y, out, out_dtype)


def _result(y: np.ndarray, out: np.ndarray | None, out_dtype: np.dtype[Any]) -> np.ndarray:
    """``y`` as the result: ``out`` itself if given (float16: copied as astype rounds)."""
    if out is not None and out is not y:
        np.copyto(out, y, casting="same_kind")
    return y.astype(out_dtype, copy=False) if out is None else out


def as_grad(dy: Any, cache: BatchNormCache, where: str) -> np.ndarray:
    """``dy`` (the forward input's shape) in the compute dtype, C-contiguous."""
    g = as_float_array(dy, "dy", where=where, min_ndim=0)
    if g.shape != cache.x.shape:
        raise ValueError(
            f"{where}: dy must have the forward input's shape {cache.x.shape}, got {g.shape}"
        )
    return np.ascontiguousarray(g, dtype=cache.x.dtype)


def grad_sums(dy: Any, cache: BatchNormCache, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(dy, sums (G, 2, C))``: per group ``[sum dy, sum dy (x - mean)]`` (float64, local)."""
    if not isinstance(cache, BatchNormCache):
        raise TypeError(f"{where}: cache must be the forward's BatchNormCache, got {cache!r:.40}")
    g = as_grad(dy, cache, where)
    sums = np.zeros((len(cache.bounds), 2, cache.mean.shape[1]))
    v, u = channel_view(cache.x, cache.axis), channel_view(g, cache.axis)
    if v.size:
        kernel = fk.grad_sums_last if v.ndim == 2 else fk.grad_sums_mid
        kernel(u, v, cache.mean, cache.bounds, cache.nblocks, sums)
    return g, sums


def grad_input(
    g: np.ndarray,
    cache: BatchNormCache,
    total: np.ndarray,
    out: np.ndarray | None,
) -> np.ndarray:
    """Training ``dx`` from the (global) sums ``total`` and the cache's (global) counts, into
    ``out`` (checked by the caller) when given."""
    x, ax = cache.x, cache.axis
    dx = out if out is not None and out.dtype == x.dtype else np.empty_like(x)
    v, u = channel_view(x, ax), channel_view(g, ax)
    stats = (cache.count, cache.mean, cache.var, cache.scale)
    lowp = v.ndim == 2 and x.dtype == np.float32
    groups = (cache.bounds, cache.nblocks, channel_view(dx, ax))
    (fk.grad_input_last if v.ndim == 2 else fk.grad_input_mid)(
        u, v, stats, total, cache.eps, lowp, *groups
    )
    return _result(dx, out, cache.out_dtype)


def reduced_sums(
    dy: Any, cache: BatchNormCache, reduce: SumsReduce | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dy, local sums, global sums)``; FloatingPointError if the global ones are not finite.
    An empty (global) batch has nothing to reduce: every rank sees the same counts."""
    g, sums = grad_sums(dy, cache, where)
    total = sums if reduce is None or not cache.count.any() else reduce(sums)
    if not fk.all_finite(total):
        check_finite(g, "dy", where=where)
        raise FloatingPointError(
            f"{where}: the sums of dy are not finite (dy overflows float64, or another rank's "
            "dy holds NaN/Inf); nothing was updated"
        )
    return g, sums, total


def per_group(v: np.ndarray, G: int) -> np.ndarray:
    """A ``(C,)`` vector as a C-contiguous ``(G, C)`` array (one row per group)."""
    return v[None] if G == 1 else np.tile(v, (G, 1))


def group_sum(per_group: np.ndarray, dt: np.dtype[Any], name: str, where: str) -> np.ndarray:
    """(G, C) groups added in float64 in order, in ``dt``; FloatingPointError unless finite."""
    total = sum(per_group.astype(np.float64), np.zeros(per_group.shape[1])).astype(dt)
    if not fk.all_finite(total):  # finite float64 sums of a finite dy can overflow float32
        msg = f"{where}: {name} overflows {dt}; nothing was updated (scale the loss or use float64)"
        raise FloatingPointError(msg)
    return total


# -- the public kernels --------------------------------------------------------------------------
def batch_norm_forward(
    x: Any,
    gamma: Any,
    beta: Any,
    *,
    axis: int = -1,
    eps: float = 1e-5,
    groups: Groups = None,
    reduce: StatsReduce | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode batch norm: normalize each group with its (reduced) mean and biased var.

    ``gamma``/``beta`` ``(C,)`` (``None``: 1 and 0); ``groups``, ``reduce``, ``out`` as in the
    module docstring. Returns ``y`` (dtype of ``x``; float16 computed in float32) and the
    cache. An empty batch (every group, after ``reduce``) gives an empty ``y``.
    """
    where = "batch_norm_forward"
    eps = check_eps(eps, where=where)
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    g, b = channel_vectors(where, xc.shape[ax], gamma=(gamma, 1.0), beta=(beta, 0.0))
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    bounds, nblocks, count, mean, var = compute_stats(xc, ax, groups, reduce, where=where)
    check_stats(xc, (count, mean, var), where)
    G = len(bounds)
    affine = (mean, fk.bn_scale(g, var, eps), per_group(b, G))
    y = normalize(xc, ax, (bounds, nblocks), affine, out_dtype, out)
    gs = per_group(g, G)
    return y, BatchNormCache(xc, ax, eps, out_dtype, bounds, nblocks, count, mean, var, gs)


def batch_norm_backward(
    dy: Any,
    cache: BatchNormCache,
    *,
    reduce: SumsReduce | None = None,
    out: np.ndarray | None = None,
    need_input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`batch_norm_forward`.

    ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)`` (compute dtype; this process's share, the
    groups added) and ``dx = gamma * rstd * (dy - dbeta/m - xhat * dgamma/m)`` per group from
    the ``reduce``-d sums and counts (dtype of the forward input; None without
    ``need_input_grad``). FloatingPointError if ``dy`` holds NaN or Inf.
    """
    where = "batch_norm_backward"
    if out is not None:
        check_out(out, cache.x.shape, cache.out_dtype, dy, cache.x, where=where)
    g, sums, total = reduced_sums(dy, cache, reduce, where)
    dt = cache.x.dtype
    dg, db = fk.param_grads(cache.var, cache.eps, sums, cache.x)
    dx = grad_input(g, cache, total, out) if need_input_grad else None
    return dx, group_sum(dg, dt, "dgamma", where), group_sum(db, dt, "dbeta", where)


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

    ``mean``/``var``: the population (running) statistics; an empty batch gives an empty
    ``y``; ``out`` as in the module docstring.
    """
    where = "batch_norm_inference"
    eps = check_eps(eps, where=where)
    xc, ax, out_dtype = prepare_input(x, axis, where=where)
    given = {"mean": (mean, 0.0), "var": (var, 1.0), "gamma": (gamma, 1.0), "beta": (beta, 0.0)}
    mu, vr, g, b = channel_vectors(where, xc.shape[ax], **given)
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    return affine_map(xc, ax, (mu, fk.bn_scale(g, vr, eps), b), out_dtype, out)


def affine_map(
    xc: np.ndarray,
    ax: int,
    affine: tuple[np.ndarray, np.ndarray, np.ndarray],
    out_dtype: np.dtype[Any],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``scale * (x - center) + shift`` with ``(C,)`` vectors, one group (the whole batch)."""
    if xc.size == 0:
        return np.empty(xc.shape, out_dtype) if out is None else out
    center, scale, shift = (a[None] for a in affine)
    return normalize(xc, ax, group_bounds(xc, ax), (center, scale, shift), out_dtype, out)


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
    mu, vr, g = channel_vectors(where, C, mean=(mean, 0.0), var=(var, 1.0), gamma=(gamma, 1.0))
    stats = (np.zeros(1, np.int64), mu[None], vr[None], g[None])
    cache = BatchNormCache(xc, ax, eps, out_dtype, *group_bounds(xc, ax), *stats)
    gy, sums, _ = reduced_sums(dy, cache, None, where)
    dg, db = fk.param_grads(cache.var, eps, sums, xc)
    dx = affine_map(gy, ax, (np.zeros(C), fk.bn_scale(g, vr, eps), np.zeros(C)), out_dtype)
    return dx, group_sum(dg, xc.dtype, "dgamma", where), group_sum(db, xc.dtype, "dbeta", where)
