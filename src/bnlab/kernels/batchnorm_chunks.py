"""Batch-norm passes over row chunks of one array: ghost batches and data-parallel shards.

A layer with ghost batches (``virtual_batch_size``) normalizes each chunk of rows ``bounds[j]
= (a, b)`` of a C-contiguous input with its own statistics. These four functions run the
passes of :mod:`bnlab.kernels.batchnorm` over every chunk::

    chunk_moments      count (G,), mean (G, C), biased var (G, C)       (empty chunks: 0)
    chunk_normalize    y[a:b] = scale_j * (x[a:b] - mean_j) / sqrt(var_j + eps) + shift_j
    chunk_grad_sums    sums[j] = [sum dy[a:b], sum dy[a:b] * (x[a:b] - mean_j)]   (G, 2, C)
    chunk_grad_input   dx[a:b] from sums[j] and count_j (the statistics may be global ones)

With the feature axis last and every chunk small enough to run serially (the usual ghost
batch: tens of rows), one Numba call does all chunks, built from the same serial blocks as
the one-chunk kernels of :mod:`bnlab.kernels.batchnorm_fused`, so the bits are those of
calling the one-chunk entry points chunk by chunk (which is what happens otherwise) while
dozens of Python-level calls per layer are saved. Inputs are trusted: the caller (the
normalization core) has validated them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlab.kernels import batchnorm_fused as fk
from bnlab.kernels._bn_common import PARALLEL_MIN, channel_view, num_blocks
from bnlab.kernels._numba import get_num_threads, njit
from bnlab.kernels.moments import channel_stats

__all__ = [
    "ChunkPlan",
    "plan_chunks",
    "chunk_moments",
    "chunk_normalize",
    "chunk_grad_sums",
    "chunk_grad_input",
    "normalize_view",
    "grad_sums_view",
    "grad_input_view",
]


# -- one chunk: the fused kernels on a (R, C) / (A, C, B) view ---------------------------------
def normalize_view(
    v: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    g: np.ndarray,
    b: np.ndarray,
    eps: float,
    out: np.ndarray | None = None,
    nblocks: int | None = None,
) -> np.ndarray:
    """``out = g * (v - mean) / sqrt(var + eps) + b`` per channel; float64 (C,) vectors.

    ``nblocks``: :func:`~bnlab.kernels._bn_common.num_blocks` of ``v`` if already known.
    """
    out = np.empty_like(v) if out is None else out
    kernel = fk.normalize_last if v.ndim == 2 else fk.normalize_mid
    kernel(v, mean, var, g, b, float(eps), out, num_blocks(v) if nblocks is None else nblocks)
    return out


def grad_sums_view(
    u: np.ndarray, v: np.ndarray, mean: np.ndarray, nblocks: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(sum u, sum u * (v - mean))`` per channel in float64."""
    kernel = fk.grad_sums_last if v.ndim == 2 else fk.grad_sums_mid
    nb = num_blocks(v) if nblocks is None else nblocks
    sums: tuple[np.ndarray, np.ndarray] = kernel(u, v, mean, nb)
    return sums


def grad_input_view(
    u: np.ndarray,
    v: np.ndarray,
    stats: tuple[np.ndarray, np.ndarray, np.ndarray],
    sdy: np.ndarray,
    sdyx: np.ndarray,
    eps: float,
    m: int,
    out: np.ndarray | None = None,
    nblocks: int | None = None,
) -> np.ndarray:
    """Training ``dx`` from the sums over ``m`` values per channel; ``stats = (mean, var, g)``."""
    mean, var, g = stats
    out = np.empty_like(v) if out is None else out
    last = v.ndim == 2
    kernel = fk.grad_input_last if last else fk.grad_input_mid
    if last and v.dtype == np.float32 and m >= fk.LOWP_MIN_COUNT:
        kernel = fk.grad_input_last_lowp
    nb = num_blocks(v) if nblocks is None else nblocks
    kernel(u, v, mean, var, g, sdy, sdyx, float(eps), int(m), out, nb)
    return out


@njit(cache=True)
def _stats_chunks(x, bounds, count, mean, var):
    C = x.shape[1]
    s1 = np.zeros(C)
    s2 = np.zeros(C)
    for j in range(bounds.shape[0]):
        a, b = bounds[j, 0], bounds[j, 1]
        count[j] = b - a
        if b == a:
            mean[j, :] = 0.0
            var[j, :] = 0.0
            continue
        shift = np.empty(C)
        for c in range(C):
            shift[c] = x[a, c]
        fk._sums_rows(x, shift, a, b, s1, s2)
        p1, p2 = s1.reshape(1, C), s2.reshape(1, C)
        m, v = fk._moments(shift, p1, p2, b - a)
        mean[j, :] = m
        var[j, :] = v


@njit(cache=True)
def _normalize_chunks(x, bounds, mean, var, scale, shift, eps, out):
    for j in range(bounds.shape[0]):
        a, b = bounds[j, 0], bounds[j, 1]
        if b > a:
            hi, s, d = fk._affine_consts(mean[j], var[j], scale[j], shift[j], eps, x)
            fk._affine_rows(x, hi, s, d, out, a, b)


@njit(cache=True)
def _grad_sums_chunks(dy, x, bounds, mean, sums):
    C = x.shape[1]
    s1 = np.zeros(C)
    s2 = np.zeros(C)
    for j in range(bounds.shape[0]):
        a, b = bounds[j, 0], bounds[j, 1]
        fk._dot_rows(dy, x, mean[j], a, b, s1, s2)
        t1, t2 = fk._sum_blocks(s1.reshape(1, C), s2.reshape(1, C))
        sums[j, 0, :] = t1
        sums[j, 1, :] = t2


@njit(cache=True)
def _grad_input_chunks(dy, x, bounds, mean, var, scale, sums, count, eps, lowp, out):
    for j in range(bounds.shape[0]):
        a, b = bounds[j, 0], bounds[j, 1]
        if b == a:
            continue
        k, cb, cd = fk._grad_coeffs(var[j], scale[j], sums[j, 0], sums[j, 1], eps, count[j])
        if lowp and count[j] >= fk.LOWP_MIN_COUNT:
            hi, d = fk._split_center(mean[j], cb, cd, x)
            fk._grad_rows_lowp(dy, x, hi, fk._to_dtype(k, x), fk._to_dtype(cb, x), d, out, a, b)
        else:
            fk._grad_rows(dy, x, mean[j], k, cb, cd, out, a, b)


@dataclass(frozen=True)
class ChunkPlan:
    """Row chunks ``bounds[j] = (a, b)`` of an input, and how the passes run over them:
    ``grouped`` holds the chunks as (G, 2) row ranges of the ``(R, C)`` view when one serial
    Numba call does them all, else None (one call per chunk). ``whole``: one non-empty chunk
    that is the whole input (the usual batch), run by the one-chunk kernels directly."""

    bounds: list[tuple[int, int]]
    grouped: np.ndarray | None
    whole: bool = False


def plan_chunks(x: np.ndarray, axis: int, bounds: list[tuple[int, int]]) -> ChunkPlan:
    """Group the chunks when the feature axis is last and no chunk is big enough to run in
    parallel on its own (whose bits a serial pass would change)."""
    if len(bounds) == 1 and bounds[0] == (0, x.shape[0]) and x.size:
        return ChunkPlan(bounds, None, whole=True)
    if len(bounds) < 2 or axis != x.ndim - 1 or x.shape[0] == 0:
        return ChunkPlan(bounds, None)
    per_row = x.size // x.shape[0]
    if get_num_threads() > 1 and any((b - a) * per_row >= PARALLEL_MIN for a, b in bounds):
        return ChunkPlan(bounds, None)
    view_rows = per_row // x.shape[axis] if x.shape[axis] else 0  # H*W rows per example
    return ChunkPlan(bounds, np.asarray(bounds, np.int64).reshape(-1, 2) * view_rows)


def _row(v: np.ndarray, j: int) -> np.ndarray:
    """Chunk j's per-channel vector of a (C,) (the same for all) or (G, C) array."""
    return v[j] if v.ndim == 2 else v


def chunk_moments(
    x: np.ndarray, axis: int, plan: ChunkPlan
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(count (G,), mean (G, C), biased var (G, C))`` of the row chunks of ``x``."""
    G, C = len(plan.bounds), x.shape[axis]
    if plan.whole:
        mean1, var1 = channel_stats(channel_view(x, axis))
        return np.array([x.size // C], np.int64), mean1.reshape(1, C), var1.reshape(1, C)
    count, mean, var = np.zeros(G, np.int64), np.zeros((G, C)), np.zeros((G, C))
    grouped, bounds = plan.grouped, plan.bounds
    if grouped is not None:
        _stats_chunks(channel_view(x, axis), grouped, count, mean, var)
        return count, mean, var
    for j, (a, b) in enumerate(bounds):
        part = x[a:b]
        count[j] = part.size // C
        if count[j]:
            mean[j], var[j] = channel_stats(channel_view(part, axis))
    return count, mean, var


def chunk_normalize(
    x: np.ndarray,
    axis: int,
    plan: ChunkPlan,
    stats: tuple[np.ndarray, np.ndarray],
    scale: np.ndarray,
    shift: np.ndarray,
    eps: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``y`` (compute dtype; into ``out``, x's shape and dtype, when given): every chunk
    normalized with its row of ``stats = (mean, var)``; ``scale``/``shift`` float64, (C,) or
    (G, C)."""
    mean, var = stats
    out = np.empty_like(x) if out is None else out
    grouped, bounds = plan.grouped, plan.bounds
    if plan.whole:
        v, o = channel_view(x, axis), channel_view(out, axis)
        normalize_view(v, mean[0], var[0], _row(scale, 0), _row(shift, 0), eps, o)
        return out
    if grouped is not None:
        s, t = np.broadcast_to(scale, mean.shape), np.broadcast_to(shift, mean.shape)
        v, o = channel_view(x, axis), channel_view(out, axis)
        _normalize_chunks(
            v, grouped, mean, var, np.ascontiguousarray(s), np.ascontiguousarray(t), float(eps), o
        )
        return out
    for j, (a, b) in enumerate(bounds):
        if b > a and x[a:b].size:
            v, o = channel_view(x[a:b], axis), channel_view(out[a:b], axis)
            normalize_view(v, mean[j], var[j], _row(scale, j), _row(shift, j), eps, o)
    return out


def chunk_grad_sums(
    dy: np.ndarray, x: np.ndarray, axis: int, plan: ChunkPlan, mean: np.ndarray
) -> np.ndarray:
    """``(G, 2, C)`` float64: ``[sum dy, sum dy * (x - mean_j)]`` per chunk and channel."""
    sums = np.zeros((len(plan.bounds), 2, x.shape[axis]))
    grouped, bounds = plan.grouped, plan.bounds
    if plan.whole:
        sums[0, 0], sums[0, 1] = grad_sums_view(
            channel_view(dy, axis), channel_view(x, axis), mean[0]
        )
        return sums
    if grouped is not None:
        _grad_sums_chunks(channel_view(dy, axis), channel_view(x, axis), grouped, mean, sums)
        return sums
    for j, (a, b) in enumerate(bounds):
        if b > a and x[a:b].size:
            u, v = channel_view(dy[a:b], axis), channel_view(x[a:b], axis)
            sums[j, 0], sums[j, 1] = grad_sums_view(u, v, mean[j])
    return sums


def chunk_grad_input(
    dy: np.ndarray,
    x: np.ndarray,
    axis: int,
    plan: ChunkPlan,
    stats: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    sums: np.ndarray,
    eps: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``dx`` (compute dtype; into ``out``, x's shape and dtype, when given) per chunk;
    ``stats = (count, mean, var, scale)``, maybe global."""
    count, mean, var, scale = stats
    out = np.empty_like(x) if out is None else out
    grouped, bounds = plan.grouped, plan.bounds
    if plan.whole:
        u, v, o = channel_view(dy, axis), channel_view(x, axis), channel_view(out, axis)
        chunk = (mean[0], var[0], _row(scale, 0))
        grad_input_view(u, v, chunk, sums[0, 0], sums[0, 1], eps, int(count[0]), o)
        return out
    if grouped is not None:
        u, v, o = channel_view(dy, axis), channel_view(x, axis), channel_view(out, axis)
        s = np.ascontiguousarray(np.broadcast_to(scale, mean.shape))
        lowp = x.dtype == np.float32
        _grad_input_chunks(u, v, grouped, mean, var, s, sums, count, float(eps), lowp, o)
        return out
    for j, (a, b) in enumerate(bounds):
        if b > a and x[a:b].size:
            u, v, o = (channel_view(arr[a:b], axis) for arr in (dy, x, out))
            chunk = (mean[j], var[j], _row(scale, j))
            grad_input_view(u, v, chunk, sums[j, 0], sums[j, 1], eps, int(count[j]), o)
    return out
