"""Per-channel moments in float64 and their merge: building blocks for population statistics.

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

from bnlab.kernels._bn_common import prepare_input
from bnlab.kernels.batchnorm import _view, channel_stats

__all__ = ["moments", "merge_moments"]


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
    mean, var = channel_stats(_view(np.ascontiguousarray(xc), ax))
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
