"""Per-channel moments in float64 and their merge: the statistics half of batch normalization.

:func:`moments` is what a batch-norm training pass computes first (also on an empty shard, as
a data-parallel rank may hold); :func:`merge_moments` combines two samples and
:func:`merge_moment_stack` many, in order (population statistics, or one moment triple per
rank of a synchronized batch).

Example (population statistics over a data set seen in batches, as Algorithm 2 needs)::

    >>> import numpy as np
    >>> from bnlab.kernels import moments, merge_moments
    >>> x = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    >>> acc = moments(x[:400])
    >>> acc = merge_moments(*acc, *moments(x[400:]))
    >>> mean, var, n = acc
    >>> bool(np.allclose(mean, x.mean(axis=0, dtype=np.float64))), n
    (True, 1000)
    >>> unbiased = var * n / (n - 1)   # what running_var stores
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.kernels import batchnorm_fused as fk
from bnlab.kernels._bn_common import channel_view, num_blocks, prepare_input

__all__ = ["channel_stats", "moments", "merge_moments", "merge_moment_stack"]


def channel_stats(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float64 ``(mean, biased var)`` of a non-empty ``(R, C)``/``(A, C, B)`` view.

    One fused pass of shifted float64 sums (see :mod:`bnlab.kernels.batchnorm_fused`).
    """
    kernel = fk.stats_last if v.ndim == 2 else fk.stats_mid
    stats: tuple[np.ndarray, np.ndarray] = kernel(v, num_blocks(v))
    return stats


def moments(x: Any, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel ``(mean, biased var, count)`` of ``x``, reducing every axis but ``axis``.

    ``mean = 1/m sum x`` and ``var = 1/m sum (x - mean)^2`` are accumulated in float64 from
    data shifted by its first value (no E[x^2] - E[x]^2 cancellation). An empty ``x`` gives
    count 0, mean 0 and var 0.
    """
    xc, ax, _ = prepare_input(x, axis, where="moments")
    C = xc.shape[ax]
    m = xc.size // C if C else 0
    if m == 0:
        return np.zeros(C), np.zeros(C), 0
    mean, var = channel_stats(channel_view(np.ascontiguousarray(xc), ax))
    return mean, var, m


def merge_moments(
    mean_a: np.ndarray,
    var_a: np.ndarray,
    n_a: int,
    mean_b: np.ndarray,
    var_b: np.ndarray,
    n_b: int,
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
    """Merge P samples in order: ``count (P, G)``, ``mean``/``var`` (biased) ``(P, G, C)``.

    Returns ``(count (G,), mean (G, C), var (G, C))``: for each of the G groups, the moments of
    the union of its P samples, folded left to right with :func:`merge_moments`' formula. A
    sample with count 0 is skipped exactly (its mean and var are ignored), so merging one
    non-empty sample with empty ones returns that sample's bits unchanged, and the same input
    gives the same bits on every process. A group with total count 0 has mean 0 and var 0.
    """
    n = np.asarray(count, np.float64)
    P = n.shape[0]
    n_acc = n[0].copy()
    m_acc = np.where(n_acc[:, None] > 0, mean[0], 0.0)
    v_acc = np.where(n_acc[:, None] > 0, var[0], 0.0)
    for p in range(1, P):
        n_b = n[p]
        tot = n_acc + n_b
        take_b = (n_acc == 0)[:, None]
        both = ((n_acc > 0) & (n_b > 0))[:, None]
        safe = np.where(tot > 0, tot, 1.0)[:, None]
        na, nb = n_acc[:, None], n_b[:, None]
        delta = mean[p] - m_acc
        m_new = m_acc + delta * (nb / safe)
        v_new = (na * v_acc + nb * var[p] + delta * delta * (na * nb / safe)) / safe
        m_acc = np.where(both, m_new, np.where(take_b & (nb > 0), mean[p], m_acc))
        v_acc = np.where(both, v_new, np.where(take_b & (nb > 0), var[p], v_acc))
        n_acc = tot
    return n_acc.astype(np.int64), m_acc, v_acc
