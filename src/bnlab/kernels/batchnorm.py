"""Batch normalization: the public kernels every normalization layer calls.

``axis`` is the feature axis that is kept (Keras' meaning); every other axis is reduced, so for
channel c with ``m`` values::

    mean = 1/m sum x,   var = 1/m sum (x - mean)^2   (biased),   rstd = 1/sqrt(var + eps)
    y    = gamma * (x - mean) * rstd + beta                        (training forward)
    dx   = gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat)) (training backward)
    y    = gamma * (x - mean_pop) / sqrt(var_pop + eps) + beta     (inference)

Two functions do the work, as Flax's ``_compute_stats`` and ``_normalize``: :func:`compute_stats`
(per group and channel count, mean, biased variance, reduced over ranks when asked) and
:func:`normalize`; renorm (:mod:`bnlab.kernels.batchrenorm`) uses them with its own affine map.
What the layers need is an argument, not a separate path:

* ``groups``: ghost batches, as row bounds ``[(a, b), ...]`` along axis 0 or a group count
  (equal groups); each group is normalized with its own statistics;
* ``reduce``: the forward's maps this process's ``(count (G,), mean (G, C), var (G, C))`` to
  the global ones, the backward's maps the sums ``(G, 2, C)`` to theirs (a synchronized layer
  passes collectives; default: identity);
* ``out``: an array for ``y`` or ``dx`` (the result's shape and dtype, C-contiguous, writeable,
  sharing no memory with the inputs), written instead of allocating; the cache holds ``x``
  (not ``y``), so reusing ``out`` for the next step keeps the cache valid.

A C-contiguous input is never copied: it is viewed as ``(R, C)`` (feature axis last) or
``(A, C, B)`` and handed to the compiled loops of :mod:`bnlab.kernels.batchnorm_fused`. NaN or
Inf in ``x`` or ``dy`` shows in the float64 sums (no extra pass) and raises FloatingPointError.
The NumPy specification with the same signatures is :mod:`bnlab.kernels.batchnorm_ref`.

Example::

    >>> import numpy as np
    >>> from bnlab.kernels import batch_norm_forward, batch_norm_backward
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(64, 8)).astype(np.float32)
    >>> y, cache = batch_norm_forward(x, np.ones(8), np.zeros(8))
    >>> bool(np.allclose(y.mean(axis=0), 0, atol=1e-5))
    True
    >>> dx, dgamma, dbeta = batch_norm_backward(np.ones_like(y), cache)
    >>> bool(np.abs(dx).max() < 1e-5)   # d(sum y)/dx = 0: y's sum does not depend on x
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnlab._checks import as_float_array, check_feature_axis, check_finite, compute_dtype
from bnlab.kernels.batchnorm_fused import (
    affine_last,
    affine_mid,
    all_finite,
    bn_scale,
    grad_input_last,
    grad_input_mid,
    grad_sums_last,
    grad_sums_mid,
    param_grads,
    stats_last,
    stats_mid,
)
from bnlab.runtime import kernel_thread_count

__all__ = ["BatchNormCache", "batch_norm_forward", "batch_norm_backward", "batch_norm_inference"]
__all__ += ["batch_norm_inference_backward", "moments", "merge_moments", "merge_moment_stack"]

PARALLEL_MIN = 65536  # elements below which waking the thread pool costs more than it saves
Groups = int | Sequence[tuple[int, int]] | None
StatsReduce = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
SumsReduce = Callable[[np.ndarray], np.ndarray]


@dataclass
class BatchNormCache:
    """What a training forward pass keeps for its backward pass (G groups, C channels).

    ``x``: the input in the compute dtype, C-contiguous (the caller's array unless it had to be
    cast); ``count (G,)``, ``mean``/``var`` (biased) ``(G, C)`` float64: the (global) group
    statistics; ``scale (G, C)``: the effective gamma (renorm: gamma r, with ``r``/``d``).
    """

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


# -- checks ------------------------------------------------------------------------------------
def check_eps(eps: Any, *, where: str) -> float:
    """``eps`` as a float; TypeError/ValueError unless it is a finite number > 0."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: eps must be a positive float, got {eps!r}") from None
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(
            f"{where}: eps must be a finite float > 0 (it keeps 1/sqrt(var + eps) finite), "
            f"got {eps!r}; the usual values are 1e-5 (PyTorch) or 1e-3 (Keras)"
        )
    return value


def prepare_input(x: Any, axis: int, *, where: str) -> tuple[np.ndarray, int, np.dtype[Any]]:
    """``(x in the compute dtype, C-contiguous; normalized axis; output dtype)``."""
    arr = as_float_array(x, "x", where=where, min_ndim=2)
    ax = check_feature_axis(arr.ndim, axis, where=where)
    return np.ascontiguousarray(arr, dtype=compute_dtype(arr.dtype)), ax, arr.dtype


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
    if not all_finite(out):
        raise ValueError(
            f"{where}: {name} must be finite, got {int(np.isnan(out).sum())} NaN and "
            f"{int(np.isinf(out).sum())} Inf entries; check the parameters or statistics given"
        )
    if name == "var" and (out < 0).any():
        raise ValueError(f"{where}: var must be >= 0 (a variance), got a minimum of {out.min()!r}")
    return out


def check_out(out: Any, shape: tuple[int, ...], dtype: Any, *inputs: Any, where: str) -> None:
    """Refuse an ``out`` that is not a writeable C-contiguous array of exactly ``shape`` and
    ``dtype`` sharing no memory with ``inputs`` (TypeError/ValueError)."""
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
        if not any(arr is seen for seen in inputs[:i]) and np.may_share_memory(out, arr):
            raise ValueError(
                f"{where}: out shares memory with an input; pass a separate array (the "
                "kernels read their inputs while writing out)"
            )


# -- the two passes: statistics, then the affine map -------------------------------------------
def channel_view(x: np.ndarray, axis: int) -> np.ndarray:
    """``(R, C)`` view of a C-contiguous ``x`` when the feature axis is last, else ``(A, C, B)``."""
    C = x.shape[axis]
    if axis == x.ndim - 1:
        return x.reshape(-1, C)
    return x.reshape(math.prod(x.shape[:axis]), C, math.prod(x.shape[axis + 1 :]))


def _bounds(x: np.ndarray, ax: int, v: np.ndarray, groups: Groups, where: str) -> np.ndarray:
    """The groups as ``(G, 2)`` bounds on the first axis of the channel view ``v``."""
    if groups is None:
        return np.array([[0, v.shape[0]]], np.int64)
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
    return rows * (v.shape[0] // n if n else 0)


def _blocks(v: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Parallel blocks per group: 1 below PARALLEL_MIN elements, else the threads the runtime
    policy gives data of this rank (the rank of the array owning the memory: images get one
    block). The statistics are summed per block, so this fixes their rounding."""
    per_row = v.size // v.shape[0] if v.shape[0] else 0
    sizes = (bounds[:, 1] - bounds[:, 0]) * per_row
    if sizes.max() < PARALLEL_MIN:
        return np.ones(len(bounds), np.int64)
    owner = v if v.base is None else v.base
    n = kernel_thread_count(max(v.ndim, int(getattr(owner, "ndim", 0))))
    return np.where(sizes < PARALLEL_MIN, 1, n).astype(np.int64)


def compute_stats(
    xc: np.ndarray, ax: int, groups: Groups, reduce: StatsReduce | None, *, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(bounds, nblocks, count (G,), mean (G, C), biased var (G, C))`` of the groups of
    ``x``, float64, then ``reduce``-d (empty groups: 0)."""
    v = channel_view(xc, ax)
    bounds = _bounds(xc, ax, v, groups, where)
    nblocks = _blocks(v, bounds) if v.size else np.ones(len(bounds), np.int64)
    G, C = len(bounds), v.shape[1]
    count = (bounds[:, 1] - bounds[:, 0]) * (v.size // v.shape[0] if v.shape[0] else 0) // C
    mean, var = np.zeros((G, C)), np.zeros((G, C))
    if v.size:
        (stats_last if v.ndim == 2 else stats_mid)(v, bounds, nblocks, mean, var)
    if reduce is not None:
        count, mean, var = reduce(count, mean, var)
    return bounds, nblocks, count, mean, var


def check_stats(xc: np.ndarray, stats: tuple[np.ndarray, ...], where: str) -> None:
    """ValueError if a non-empty batch has a group with fewer than 2 values per channel;
    FloatingPointError if the statistics are not finite (NaN/Inf in ``x``, on any rank)."""
    count, mean, var = stats
    G = len(count)
    if count.any() and count.min() < 2:
        j = int(np.argmin(count))
        what = "the batch" if G == 1 else f"group {j}"
        raise ValueError(
            f"{where}: Expected more than 1 value per channel when training, got "
            f"{int(count[j])} in {what} (input shape {xc.shape}); use a larger batch (or "
            "virtual batch), or eval mode"
        )
    if not (all_finite(mean) and all_finite(var)):
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
    """``y = scale * (x - center) + shift`` per group; ``groups = (bounds, nblocks)``,
    ``affine = (center, scale, shift)`` float64 ``(G, C)``; into ``out`` when given."""
    bounds, nblocks = groups
    center, scale, shift = affine
    direct = out is not None and out.dtype == xc.dtype
    y = out if direct else np.empty_like(xc)
    assert y is not None
    v = channel_view(xc, ax)
    kernel = affine_last if v.ndim == 2 else affine_mid
    kernel(v, bounds, nblocks, center, scale, shift, channel_view(y, ax))
    if out is not None and not direct:  # float16: computed in float32, rounded as astype
        np.copyto(out, y, casting="same_kind")
        return out
    return y.astype(out_dtype, copy=False)


def grad_sums(dy: Any, cache: BatchNormCache, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(dy in the compute dtype, sums (G, 2, C))``: per group ``[sum dy, sum dy (x - mean)]``
    in float64, this process's share."""
    g = as_float_array(dy, "dy", where=where, min_ndim=0)
    if g.shape != cache.x.shape:
        raise ValueError(
            f"{where}: dy must have the forward input's shape {cache.x.shape}, got {g.shape}"
        )
    g = np.ascontiguousarray(g, dtype=cache.x.dtype)
    sums = np.zeros((len(cache.bounds), 2, cache.mean.shape[1]))
    v, u = channel_view(cache.x, cache.axis), channel_view(g, cache.axis)
    if v.size:
        kernel = grad_sums_last if v.ndim == 2 else grad_sums_mid
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
    x = cache.x
    direct = out is not None and out.dtype == x.dtype
    dx = out if direct else np.empty_like(x)
    assert dx is not None
    v, u = channel_view(x, cache.axis), channel_view(g, cache.axis)
    stats = (cache.count, cache.mean, cache.var, cache.scale)
    lowp = v.ndim == 2 and x.dtype == np.float32
    kernel = grad_input_last if v.ndim == 2 else grad_input_mid
    kernel(
        u,
        v,
        stats,
        total,
        cache.eps,
        lowp,
        cache.bounds,
        cache.nblocks,
        channel_view(dx, cache.axis),
    )
    if out is not None and not direct:
        np.copyto(out, dx, casting="same_kind")
        return out
    return dx.astype(cache.out_dtype, copy=False)


def reduced_sums(
    dy: Any, cache: BatchNormCache, reduce: SumsReduce | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dy, local sums, global sums)``; FloatingPointError if the global ones are not finite.
    An empty (global) batch has nothing to reduce: every rank sees the same counts."""
    g, sums = grad_sums(dy, cache, where)
    total = sums if reduce is None or not cache.count.any() else reduce(sums)
    if not all_finite(total):
        check_finite(g, "dy", where=where)
        raise FloatingPointError(
            f"{where}: the sums of dy are not finite (dy overflows float64, or another rank's "
            "dy holds NaN/Inf); nothing was updated"
        )
    return g, sums, total


def per_group(v: np.ndarray, G: int) -> np.ndarray:
    """A ``(C,)`` vector as a C-contiguous ``(G, C)`` array (one row per group)."""
    return v[None] if G == 1 else np.tile(v, (G, 1))


def group_sum(per_group: np.ndarray, dt: np.dtype[Any]) -> np.ndarray:
    """A (G, C) array's groups added in float64 in order (one group: as it is), in ``dt``."""
    if len(per_group) == 1:
        return per_group[0]
    total = np.zeros(per_group.shape[1])
    for row in per_group:
        total += row
    return total.astype(dt)


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
    C = xc.shape[ax]
    g = channel_vector(gamma, "gamma", C, default=1.0, where=where)
    b = channel_vector(beta, "beta", C, default=0.0, where=where)
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    bounds, nblocks, count, mean, var = compute_stats(xc, ax, groups, reduce, where=where)
    check_stats(xc, (count, mean, var), where)
    G = len(bounds)
    affine = (mean, bn_scale(g, var, eps), per_group(b, G))
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
    dg, db = param_grads(cache.var, cache.eps, sums, cache.x)
    dx = grad_input(g, cache, total, out) if need_input_grad else None
    return dx, group_sum(dg, dt), group_sum(db, dt)


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
    C = xc.shape[ax]
    mu = channel_vector(mean, "mean", C, default=0.0, where=where)
    vr = channel_vector(var, "var", C, default=1.0, where=where)
    g = channel_vector(gamma, "gamma", C, default=1.0, where=where)
    b = channel_vector(beta, "beta", C, default=0.0, where=where)
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    return affine_map(xc, ax, (mu, bn_scale(g, vr, eps), b), out_dtype, out)


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
    v = channel_view(xc, ax)
    bounds = np.array([[0, v.shape[0]]], np.int64)
    groups = (bounds, _blocks(v, bounds))
    return normalize(xc, ax, groups, tuple(a[None] for a in affine), out_dtype, out)  # type: ignore[arg-type]


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
    mu = channel_vector(mean, "mean", C, default=0.0, where=where)
    vr = channel_vector(var, "var", C, default=1.0, where=where)
    g = channel_vector(gamma, "gamma", C, default=1.0, where=where)
    v = channel_view(xc, ax)
    bounds = np.array([[0, v.shape[0]]], np.int64)
    blocks = _blocks(v, bounds) if v.size else np.ones(1, np.int64)
    cache = BatchNormCache(
        xc, ax, eps, out_dtype, bounds, blocks, np.zeros(1), mu[None], vr[None], g[None]
    )
    gy, sums, _ = reduced_sums(dy, cache, None, where)
    dg, db = param_grads(cache.var, eps, sums, xc)
    zeros = np.zeros(C)
    dx = affine_map(gy, ax, (zeros, bn_scale(g, vr, eps), zeros), out_dtype)
    return dx, dg[0], db[0]


# -- moments of samples and their merge ----------------------------------------------------------
def moments(x: Any, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel ``(mean, biased var, count)`` of ``x`` in float64 (the statistics pass of
    :func:`batch_norm_forward`); an empty ``x`` gives mean 0, var 0, count 0.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    >>> mean, var, n = merge_moments(*moments(x[:400]), *moments(x[400:]))
    >>> bool(np.allclose(mean, x.mean(axis=0, dtype=np.float64))), n
    (True, 1000)
    """
    xc, ax, _ = prepare_input(x, axis, where="moments")
    _, _, count, mean, var = compute_stats(xc, ax, None, None, where="moments")
    if count[0] == 0:
        return mean[0], var[0], 0
    return mean[0], var[0], int(count[0])


def merge_moments(
    mean_a: np.ndarray, var_a: np.ndarray, n_a: int, mean_b: np.ndarray, var_b: np.ndarray, n_b: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Moments of the union of two samples (Chan, Golub & LeVeque 1979), biased variances::

    n = n_a + n_b,  delta = mean_b - mean_a,  mean = mean_a + delta * n_b / n
    var = (n_a * var_a + n_b * var_b + delta^2 * n_a * n_b / n) / n
    """
    n = n_a + n_b
    if n == 0:
        return np.asarray(mean_a, np.float64).copy(), np.asarray(var_a, np.float64).copy(), 0
    ma, mb = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    va, vb = np.asarray(var_a, np.float64), np.asarray(var_b, np.float64)
    delta = mb - ma
    mean = ma + delta * (n_b / n)
    var = (n_a * va + n_b * vb + delta * delta * (n_a * n_b / n)) / n
    return mean, var, n


def merge_moment_stack(
    count: np.ndarray, mean: np.ndarray, var: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge P samples in order: ``count (P, G)``, ``mean``/``var`` (biased) ``(P, G, C)`` ->
    ``(count (G,), mean (G, C), var (G, C))``, folded left to right with :func:`merge_moments`'
    formula. A sample with count 0 is skipped exactly, so one non-empty sample among empty ones
    keeps its bits; a group with total count 0 has mean 0 and var 0."""
    n = np.asarray(count, np.float64)
    n_acc = n[0].copy()
    m_acc = np.where(n_acc[:, None] > 0, mean[0], 0.0)
    v_acc = np.where(n_acc[:, None] > 0, var[0], 0.0)
    for p in range(1, n.shape[0]):
        na, nb = n_acc[:, None], n[p][:, None]
        tot = n_acc + n[p]
        safe = np.where(tot > 0, tot, 1.0)[:, None]
        both, take_b = (na > 0) & (nb > 0), (na == 0) & (nb > 0)
        delta = mean[p] - m_acc
        m_new = m_acc + delta * (nb / safe)
        v_new = (na * v_acc + nb * var[p] + delta * delta * (na * nb / safe)) / safe
        m_acc = np.where(both, m_new, np.where(take_b, mean[p], m_acc))
        v_acc = np.where(both, v_new, np.where(take_b, var[p], v_acc))
        n_acc = tot
    return n_acc.astype(np.int64), m_acc, v_acc
