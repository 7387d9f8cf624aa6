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
inputs; the cache holds ``x``, not ``y``). The loops (:mod:`bnlab.kernels.batchnorm_fused`)
see the input without a copy. The NumPy specification is :mod:`bnlab.kernels.batchnorm_ref`.

    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(64, 8)).astype(np.float32)
    >>> y, cache = batch_norm_forward(x, np.ones(8), np.zeros(8))
    >>> dx, dgamma, dbeta = batch_norm_backward(np.ones_like(y), cache)
    >>> bool(np.allclose(y.mean(axis=0), 0, atol=1e-5)), bool(np.abs(dx).max() < 1e-5)
    (True, True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import bnlab.kernels.batchnorm_fused as fk
from bnlab._checks import as_float_array, check_eps, check_finite, check_out, pairs, prepare_input
from bnlab.runtime import kernel_thread_count

__all__ = ["BatchNormCache", "batch_norm_forward", "batch_norm_backward", "batch_norm_inference"]
__all__ += ["batch_norm_inference_backward"]

PARALLEL_MIN = 65536  # elements below which waking the thread pool costs more than it saves
Groups = int | Sequence[tuple[int, int]] | None
StatsReduce = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
SumsReduce = Callable[[np.ndarray], np.ndarray]


@dataclass(slots=True)
class BatchNormCache:
    """A training forward's state: ``x`` (compute dtype, C-contiguous), ``count (G,)``,
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
    parallel: bool = False  # some group has more than one block: the parallel loops

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape

    @property
    def std(self) -> np.ndarray:
        """``sqrt(var + eps)`` per group, float64."""
        return np.sqrt(self.var + self.eps)


def channel_vectors(where: str, C: int, *given: tuple[str, Any, float]) -> list[np.ndarray]:
    """Each ``(name, value, default)`` as a float64 ``(C,)`` vector (``None``: all ``default``),
    in order; finite, and >= 0 for a variance (``var``)."""
    rows = []
    for name, v, default in given:
        arr = np.full(C, default) if v is None else v if type(v) is np.ndarray else np.asarray(v)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{where}: {name} must be a real numeric array, got dtype {arr.dtype}")
        if arr.shape != (C,):
            raise ValueError(
                f"{where}: {name} must have shape ({C},) to match the feature axis, got shape "
                f"{arr.shape}"
            )
        rows.append(arr.astype(np.float64))
    for i in range(0, len(rows), 2):  # two vectors a check
        if not fk.all_finite(*rows[i : i + 2]):
            j = i if not fk.all_finite(rows[i]) else i + 1
            nan, inf = int(np.isnan(rows[j]).sum()), int(np.isinf(rows[j]).sum())
            raise ValueError(
                f"{where}: {given[j][0]} must be finite, got {nan} NaN and {inf} Inf entries; "
                "check the parameters or statistics given"
            )
    for (name, _, _), row in zip(given, rows, strict=True) if len(rows) > 2 else ():
        if name == "var" and (low := row.min(initial=0.0)) < 0:  # inference's statistics
            raise ValueError(f"{where}: var must be >= 0 (a variance), got a minimum of {low!r}")
    return rows


# -- the two passes: statistics, then the affine map -------------------------------------------
def channel_view(x: np.ndarray, axis: int) -> np.ndarray:
    """``(R, C)`` view of a C-contiguous ``x`` when the feature axis is last, else ``(A, C, B)``."""
    C = x.shape[axis]
    if axis == x.ndim - 1:
        return x.reshape(-1, C)
    return x.reshape(math.prod(x.shape[:axis]), C, math.prod(x.shape[axis + 1 :]))


Plan = tuple[np.ndarray, np.ndarray, np.ndarray, bool]  # bounds, nblocks, count, parallel


def group_bounds(v: np.ndarray, n: int, ax: int, groups: Groups = None, where: str = "") -> Plan:
    """``(bounds, nblocks, count, parallel)``: group j is rows ``bounds[j, 0]:bounds[j, 1]`` of
    the view ``v`` of a batch of ``n`` (feature axis ``ax``), summed in ``nblocks[j]`` blocks,
    ``count[j]`` values per channel (read-only); parallel if a group has more than one block."""
    if groups is None:
        return _whole(v.shape[0], v.size // v.shape[1], _blocks(v, v.size))
    per_row = v.size // v.shape[0] if v.shape[0] else 0  # values per row of the view
    m_row = per_row // v.shape[1]  # values per channel per row
    if isinstance(groups, int | np.integer):
        if groups < 1 or n % groups:
            raise ValueError(f"{where}: groups={groups} must divide the batch size {n}")
        k = n // int(groups)
        rows = [(j * k, (j + 1) * k) for j in range(int(groups))]
    else:
        rows = pairs(groups)  # [] unless (a, b) pairs of integers
        if not rows or any(not 0 <= a <= b <= n for a, b in rows):
            raise ValueError(f"{where}: groups must be row bounds (a, b) in [0, {n}], got {groups}")
    if ax == 0:
        raise ValueError(f"{where}: groups split axis 0, so the feature axis must not be 0")
    f = v.shape[0] // n if n else 0  # rows of the view per example
    blocks = [_blocks(v, (b - a) * f * per_row) for a, b in rows]
    count = _frozen([(b - a) * f * m_row for a, b in rows])
    return _frozen([(a * f, b * f) for a, b in rows]), _frozen(blocks), count, max(blocks) > 1


def _frozen(values: Any) -> np.ndarray:
    """``values`` as a read-only int64 array (a plan's arrays are shared between calls)."""
    a = np.array(values, np.int64)
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=128)
def _whole(rows: int, m: int, nb: int) -> Plan:
    """The plan of one group, the whole batch (built once per shape and block count)."""
    return _frozen([[0, rows]]), _frozen([nb]), _frozen([m]), nb > 1


def _blocks(v: np.ndarray, size: int) -> int:
    """Blocks for ``size`` elements of ``v``: 1 below PARALLEL_MIN, else the runtime's threads
    for data of the owning array's rank and size (images below 4 Mi elements: 1); the sums are
    per block (their rounding)."""
    if size < PARALLEL_MIN:
        return 1
    owner = v if v.base is None else v.base
    return kernel_thread_count(max(v.ndim, int(getattr(owner, "ndim", 0))), v.size)


Affine = tuple[Any, ...]  # (center, scale, shift, var, eps)


def passes(v: np.ndarray, plan: Plan, affine: Affine, y: np.ndarray | None) -> tuple[Any, ...]:
    """The forward passes (:func:`bnlab.kernels.batchnorm_fused.forward_last`) of the view ``v``
    with ``affine = (center, scale, shift, var, eps)`` (float64 ``(G, C)``; ``center`` None: the
    statistics pass first) into ``y`` (``v``'s size; None: none): ``(mean, var, finite, bad)``."""
    kernel = (fk.forward_last if v.ndim == 2 else fk.forward_mid)[plan[3]]
    return kernel(v, plan[0], plan[1], *affine, None if y is None else y.reshape(v.shape))


def compute_stats(v: np.ndarray, plan: Plan, reduce: StatsReduce | None) -> tuple[Any, ...]:
    """``(count (G,), mean, biased var (G, C))`` of the groups of the view ``v``, reduced."""
    count, (mean, var, *_) = plan[2], passes(v, plan, (None, None, None, None, 0.0), None)
    if reduce is not None:
        count, mean, var = reduce(count, mean, var)
        count = _frozen(count)
    return count, mean, var


def check_stats(xc: np.ndarray, count: np.ndarray, finite: bool, where: str) -> None:
    """Refuse a group of fewer than 2 values (non-empty batch), or NaN/Inf statistics."""
    counts = count.tolist()
    if any(counts) and min(counts) < 2:
        j = counts.index(min(counts))
        what = "the batch" if len(counts) == 1 else f"group {j}"
        raise ValueError(
            f"{where}: Expected more than 1 value per channel when training, got "
            f"{counts[j]} in {what} (input shape {xc.shape}); use a larger batch (or virtual "
            "batch), or eval mode"
        )
    if not finite:
        check_finite(xc, "x", where=where)
        raise FloatingPointError(
            f"{where}: the batch statistics are not finite (x's variance overflows float64, "
            "or another rank's shard holds NaN/Inf); nothing was updated"
        )


def normalize(
    v: np.ndarray, plan: Plan, affine: Affine, out_dtype: np.dtype[Any], out: Any, like: np.ndarray
) -> tuple[Any, ...]:
    """``(y, mean, var, finite)``: ``y = scale * (x - center) / sqrt(var + eps) + shift`` per
    group of the view ``v`` of ``like`` (:func:`passes`), ``like``'s shape, into ``out`` when
    given; written only if the statistics are finite (:func:`_result`: no overflow)."""
    y = out if out is not None and out.dtype == v.dtype else np.empty_like(like)
    mean, var, finite, bad = passes(v, plan, affine, y)
    return _result(y, out, out_dtype, like, bad) if finite else None, mean, var, finite


def _result(y: np.ndarray, out: Any, out_dtype: Any, src: np.ndarray, bad: int) -> np.ndarray:
    """Every BN/renorm output (``bad``: its non-finite count), ``out`` if given; overflow: error."""
    res = y if y.dtype == out_dtype else np.empty_like(y, out_dtype) if out is None else out
    if res is not y:  # float16: rounded as astype rounds; an overflow is refused below
        with np.errstate(over="ignore"):
            np.copyto(res, y, casting="same_kind")
    fine = not bad and (res is y or bool(np.isfinite(res).all()))  # float16: cast
    if not fine and fk.all_finite(src):  # NaN/Inf in x pass on (eval)
        raise FloatingPointError(
            f"batch norm: finite inputs gave a non-finite output: it overflows {res.dtype} (gamma,"
            " beta, the statistics or dy too large); nothing was updated; scale them or use float64"
        )
    return res


def as_grad(dy: Any, cache: BatchNormCache, where: str) -> np.ndarray:
    """``dy`` (the forward input's shape) in the compute dtype, C-contiguous."""
    if not isinstance(cache, BatchNormCache):
        raise TypeError(f"{where}: cache must be the forward's BatchNormCache, got {cache!r:.40}")
    g = as_float_array(dy, "dy", where=where, min_ndim=0)
    if g.shape != cache.x.shape:
        raise ValueError(
            f"{where}: dy must have the forward input's shape {cache.x.shape}, got {g.shape}"
        )
    return np.ascontiguousarray(g, dtype=cache.x.dtype)


def backward(
    dy: Any, cache: BatchNormCache, reduce: SumsReduce | None, out: Any, need: bool, where: str
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of BN and renorm (:func:`bnlab.kernels.batchnorm_fused.
    backward_last`): per group ``[sum dy, sum dy (x - mean)]`` ``(G, 2, C)`` in float64 (reduced;
    without ``reduce`` one call does the sums and dx), the parameter gradients from this process's
    sums, in the compute dtype, the groups added (renorm: with the cache's r and d); ``dx`` from
    the global sums and counts (``need``). FloatingPointError if the global sums, or the gradients
    in their dtype, are not finite. An empty (global) batch has nothing to reduce."""
    if out is not None:
        check_out(out, cache.x.shape, cache.out_dtype, dy, cache.x, where=where)
    g, x = as_grad(dy, cache, where), cache.x
    v = channel_view(x, cache.axis)
    kernel = (fk.backward_last if v.ndim == 2 else fk.backward_mid)[cache.parallel]
    stats = (cache.count, cache.mean, cache.var, cache.scale)
    args = (g.reshape(v.shape), v, stats, cache.eps, cache.r, cache.d, cache.bounds, cache.nblocks)
    lowp, grads = v.ndim == 2 and x.dtype == np.float32, np.empty((2, v.shape[1]), x.dtype)
    dx = (out if out is not None and out.dtype == x.dtype else np.empty_like(x)) if need else None
    fused = reduce is None or not cache.count.any()  # no reduction: the sums, then dx
    into = None if dx is None or not fused else dx.reshape(v.shape)
    total, finite, ok, bad = kernel(*args, None, grads, lowp, into)
    if not fused:
        total = reduce(total)  # type: ignore[misc]
        finite = fk.all_finite(total)
    if not finite:
        check_finite(g, "dy", where=where)
        raise FloatingPointError(
            f"{where}: the sums of dy are not finite (dy overflows float64, or another rank's "
            "dy holds NaN/Inf); nothing was updated"
        )
    if not ok:  # finite float64 sums can overflow float32
        name = "dbeta" if fk.all_finite(grads[0]) else "dgamma"
        raise FloatingPointError(
            f"{where}: {name} overflows {x.dtype}; nothing was updated (scale the loss or use "
            "float64)"
        )
    if dx is not None and not fused:
        bad = kernel(*args, total, grads, lowp, dx.reshape(v.shape))[3]  # no sums pass
    return None if dx is None else _result(dx, out, cache.out_dtype, g, bad), grads[0], grads[1]


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
    v = channel_view(xc, ax)
    g, b = channel_vectors(where, v.shape[1], ("gamma", gamma, 1.0), ("beta", beta, 0.0))
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    plan = group_bounds(v, xc.shape[0], ax, groups, where)
    G = len(plan[0])
    gs, bs = (g[None], b[None]) if G == 1 else (np.tile(g, (G, 1)), np.tile(b, (G, 1)))
    if reduce is None:  # one call: the statistics, then y
        check_stats(xc, count := plan[2], True, where)
        y, mean, var, finite = normalize(v, plan, (None, gs, bs, None, eps), out_dtype, out, xc)
        if not finite:
            check_stats(xc, count, finite, where)
    else:
        count, mean, var = compute_stats(v, plan, reduce)
        check_stats(xc, count, fk.all_finite(mean, var), where)
        y, *_ = normalize(v, plan, (mean, gs, bs, var, eps), out_dtype, out, xc)
    stats = (count, mean, var, gs)  # gamma per group (renorm: gamma r)
    return y, BatchNormCache(xc, ax, eps, out_dtype, plan[0], plan[1], *stats, None, None, plan[3])


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
    return backward(dy, cache, reduce, out, need_input_grad, "batch_norm_backward")


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
    given = (("mean", mean, 0.0), ("var", var, 1.0), ("gamma", gamma, 1.0), ("beta", beta, 0.0))
    mu, vr, g, b = channel_vectors(where, xc.shape[ax], *given)
    if out is not None:
        check_out(out, xc.shape, out_dtype, x, xc, where=where)
    return affine_map(xc, ax, (mu, g, b, vr, eps), out_dtype, out)


def affine_map(
    xc: np.ndarray, ax: int, affine: Affine, out_dtype: np.dtype[Any], out: Any = None
) -> np.ndarray:
    """:func:`normalize` with ``(C,)`` vectors, one group (the whole batch)."""
    if xc.size == 0:
        return np.empty(xc.shape, out_dtype) if out is None else out
    v, (center, scale, shift, var, eps) = channel_view(xc, ax), affine
    rows = (center[None], scale[None], shift[None], None if var is None else var[None], eps)
    y: np.ndarray = normalize(v, group_bounds(v, len(xc), ax), rows, out_dtype, out, xc)[0]
    return y


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
    given = (("mean", mean, 0.0), ("var", var, 1.0), ("gamma", gamma, 1.0))
    mu, vr, g = channel_vectors(where, C, *given)
    plan = group_bounds(channel_view(xc, ax), xc.shape[0], ax)
    stats = (mu[None], vr[None], g[None])
    cache = BatchNormCache(xc, ax, eps, out_dtype, *plan[:3], *stats, parallel=plan[3])
    _, dgamma, dbeta = backward(dy, cache, None, None, False, where)
    gy, zero = as_grad(dy, cache, where), np.zeros(C)
    return affine_map(gy, ax, (zero, g, zero, vr, eps), out_dtype), dgamma, dbeta
