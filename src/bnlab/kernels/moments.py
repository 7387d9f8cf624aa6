"""Per-channel moments of samples and their merge (population statistics, synchronized BN):
:func:`moments` is the statistics pass of :func:`bnlab.kernels.batch_norm_forward` on its own;
:func:`merge_moment_stack` merges many samples in order (one per rank), :func:`merge_moments` two;
:func:`running_update` moves a BN layer's running moments towards a batch's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import prepare_input
from bnlab.kernels._numba import njit
from bnlab.kernels.batchnorm import channel_view, compute_stats, group_bounds
from bnlab.kernels.batchnorm_fused import all_finite

__all__ = ["moments", "merge_moments", "merge_moment_stack", "running_update"]


def moments(x: Any, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel ``(mean, biased var, count)`` of ``x`` in float64 (the statistics pass of
    :func:`batch_norm_forward`); an empty ``x`` gives mean 0, var 0, count 0.

    >>> x = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    >>> mean, var, n = merge_moments(*moments(x[:400]), *moments(x[400:]))
    >>> bool(np.allclose(mean, x.mean(axis=0, dtype=np.float64))), n
    (True, 1000)
    """
    xc, ax, _ = prepare_input(x, axis, where="moments")
    v = channel_view(xc, ax)
    count, mean, var = compute_stats(v, group_bounds(v, xc.shape[0], ax), None)
    return mean[0], var[0], int(count[0])


def merge_moments(
    mean_a: np.ndarray, var_a: np.ndarray, n_a: int, mean_b: np.ndarray, var_b: np.ndarray, n_b: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Moments of the union of two samples: :func:`merge_moment_stack` of the pair."""
    mean, var = np.stack([mean_a, mean_b])[:, None], np.stack([var_a, var_b])[:, None]
    n, mean, var = merge_moment_stack(np.array([[n_a], [n_b]]), mean, var)
    return mean[0], var[0], int(n[0])


def merge_moment_stack(
    count: np.ndarray, mean: np.ndarray, var: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moments of the union of P samples (Chan, Golub & LeVeque 1979), folded in order::

        n = n_a + n_b,  delta = mean_b - mean_a,  mean = mean_a + delta * n_b / n
        var = (n_a * var_a + n_b * var_b + delta^2 * n_a * n_b / n) / n      (biased)

    ``count (P, G)``, ``mean``/``var`` ``(P, G, C)`` -> ``(count (G,), mean (G, C), var (G, C))``.
    A sample with count 0 is skipped exactly (one non-empty sample keeps its bits); a group
    with total count 0 has mean 0 and var 0."""
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


@njit(cache=True)
def running_update(running_mean, running_var, mean, var, count, momentum, n):
    """Per group j in order: ``n += 1``, ``running = (1 - w) * running + (w * batch) * f``
    (float64, NumPy's order; stored in the buffers' dtypes) with ``w = momentum`` (< 0: 1/n,
    the cumulative average), ``f = 1`` for the mean and ``m/(m-1)`` for the (unbiased) var.
    Writes the buffers and returns n only if the results are finite (var >= 0); else -1."""
    rm = running_mean.copy()
    rv = running_var.copy()
    for j in range(mean.shape[0]):
        n += 1
        w = 1.0 / n if momentum < 0 else momentum
        f = count[j] / (count[j] - 1)
        for c in range(rm.shape[0]):
            rm[c] = (1.0 - w) * np.float64(rm[c]) + w * mean[j, c]
            rv[c] = (1.0 - w) * np.float64(rv[c]) + (w * var[j, c]) * f
    if not (all_finite(rm) and all_finite(rv)) or rv.min() < 0:  # < 0: set by hand
        return -1
    running_mean[:] = rm
    running_var[:] = rv
    return n
