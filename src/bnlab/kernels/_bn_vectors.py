"""Per-channel (C,) vector steps of the batch-norm wrappers and layers, one Numba call each.

Each replaces a few NumPy calls on short vectors (about 1-2 us each, most of a small batch's
time) and keeps NumPy's operation order, so the bits are those of the array expressions
given in the docstrings (no fast-math: no reassociation, no fused multiply-add).
"""

from __future__ import annotations

import numpy as np

from bnlab.kernels._numba import njit

__all__ = ["all_finite", "moving_average", "param_grads"]


@njit(cache=True)
def all_finite(a):
    """True if no entry of ``a`` is NaN or Inf (``np.isfinite(a).all()`` in ~0.3 us)."""
    for v in a.flat:
        if not np.isfinite(v):
            return False
    return True


@njit(cache=True)
def moving_average(running, batch, w, factor):
    """``(1 - w) * running + (w * batch) * factor`` in float64, rounded to running's dtype.

    The running-statistics update (``factor = m/(m-1)`` for the variance, 1.0 for the mean:
    multiplying by 1.0 is exact) in NumPy's operation order, so the bits are those of the
    array expression ``((1 - w) * running.astype(float64) + w * batch * factor).astype(...)``.
    """
    out = np.empty_like(running)
    for c in range(running.shape[0]):
        out[c] = (1.0 - w) * np.float64(running[c]) + (w * batch[c]) * factor
    return out


@njit(cache=True)
def param_grads(var, eps, sdy, sdyx, like):
    """``dgamma = sdyx / sqrt(var + eps)`` and ``dbeta = sdy`` (1-D), rounded to ``like``'s dtype.

    NumPy's order (``(1 / sqrt(var + eps)) * sdyx``, each step rounded to float64), so the
    bits are those of ``(rstd * sdyx).astype(dt), sdy.astype(dt)``.
    """
    n = var.shape[0]
    dgamma = np.empty(n, like.dtype)
    dbeta = np.empty(n, like.dtype)
    for c in range(n):
        dgamma[c] = (1.0 / np.sqrt(var[c] + eps)) * sdyx[c]
        dbeta[c] = sdy[c]
    return dgamma, dbeta
