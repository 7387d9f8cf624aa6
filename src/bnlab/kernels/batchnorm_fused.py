"""Fused Numba kernels for batch normalization: two memory passes forward, two backward.

Every kernel works on one of two views of the input, chosen by :mod:`bnlab.kernels.batchnorm`
without copying a C-contiguous array:

* ``*_last``: ``(R, C)``, the feature axis last (dense ``(N, D)``, NHWC, ``(N, L, C)``). Rows
  are split into ``nblocks`` blocks processed in parallel, each keeping float64 partial sums
  per channel that are added at the end.
* ``*_mid``: ``(A, C, B)``, the feature axis in the middle (NCHW: ``A = N``, ``B = H*W``).
  Channels (statistics) or ``(a, c)`` planes (elementwise passes) run in parallel.

``nblocks == 1`` runs serially without touching the thread pool (small inputs: waking the
OpenMP threads costs more than it saves, and a busy core stalls the barrier).

Forward, training (``m`` values per channel, shift ``K_c`` = the first value of channel c)::

    pass 1:  S1 = sum(x - K),  S2 = sum((x - K)^2)              (float64 accumulators)
             mean = K + S1/m,  var = max((S2 - S1^2/m) / m, 0)  (biased; shifted data, so no
                                                                 E[x^2] - E[x]^2 cancellation)
    pass 2:  y = (x - mean) * gamma / sqrt(var + eps) + beta

Backward, with ``rstd = 1/sqrt(var + eps)`` and ``xhat = (x - mean) * rstd``::

    pass 1:  dbeta = sum(dy),  dgamma = rstd * sum(dy * (x - mean))   (float64)
    pass 2:  dx = gamma * rstd * (dy - dbeta/m - xhat * dgamma/m)

(``m`` is passed in: a synchronized layer sums pass 1 over ranks and uses the global count.)

The forward second pass is ``y = s*(x - hi) + d`` in the data's dtype: the float64 mean is
split as ``mean = hi + lo`` with ``hi`` = mean rounded to that dtype, ``x - hi`` is exact for x
near the mean and ``-s*lo`` is folded into ``d`` in float64, so a large offset (x = 1e4 + 1e-2 *
noise in float32) costs no accuracy. The backward second pass ``dx = k*dy + b*(x - mean) + d``
is evaluated in float64 and rounded once when a channel has few values (its terms cancel,
completely for N = 2, and float32 arithmetic there would lose digits the float64 reference
keeps). With many values per channel (``m >= LOWP_MIN_COUNT``) the projections are small next
to ``dy`` and the pass runs in the data's dtype with the same ``hi``/``lo`` split of the mean as
the forward pass (``grad_input_last_lowp``), which halves its cost.
"""

from __future__ import annotations

import numpy as np

from bnlab.kernels._numba import njit, prange

__all__ = [
    "stats_last",
    "stats_mid",
    "normalize_last",
    "normalize_mid",
    "grad_sums_last",
    "grad_sums_mid",
    "grad_input_last",
    "grad_input_mid",
    "grad_input_last_lowp",
    "LOWP_MIN_COUNT",
]

LOWP_MIN_COUNT = 64  # values per channel from which the dx pass may run in float32

_FM = {"reassoc", "contract"}  # vectorised float64 reductions; no nnan/ninf assumptions


# -- serial building blocks: one block of rows (last) or of channels / planes (mid) -----------
@njit(cache=True, fastmath=_FM)
def _sums_rows(x, shift, r0, r1, s1, s2):
    # thread-local accumulators (writing rows of a shared array in the loop would false-share
    # cache lines between threads); four rows per sweep quarter the accumulator traffic
    C = x.shape[1]
    t1 = np.zeros(C)
    t2 = np.zeros(C)
    r = r0
    while r + 4 <= r1:
        for c in range(C):
            k = shift[c]
            v0, v1 = np.float64(x[r, c]) - k, np.float64(x[r + 1, c]) - k
            v2, v3 = np.float64(x[r + 2, c]) - k, np.float64(x[r + 3, c]) - k
            t1[c] += (v0 + v1) + (v2 + v3)
            t2[c] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3)
        r += 4
    for q in range(r, r1):
        for c in range(C):
            v = np.float64(x[q, c]) - shift[c]
            t1[c] += v
            t2[c] += v * v
    s1[:] = t1
    s2[:] = t2


@njit(cache=True, fastmath=_FM)
def _dot_rows(u, x, center, r0, r1, s1, s2):
    C = x.shape[1]
    t1 = np.zeros(C)
    t2 = np.zeros(C)
    r = r0
    while r + 4 <= r1:
        for c in range(C):
            k = center[c]
            g0, g1 = np.float64(u[r, c]), np.float64(u[r + 1, c])
            g2, g3 = np.float64(u[r + 2, c]), np.float64(u[r + 3, c])
            t1[c] += (g0 + g1) + (g2 + g3)
            t2[c] += (g0 * (np.float64(x[r, c]) - k) + g1 * (np.float64(x[r + 1, c]) - k)) + (
                g2 * (np.float64(x[r + 2, c]) - k) + g3 * (np.float64(x[r + 3, c]) - k)
            )
        r += 4
    for q in range(r, r1):
        for c in range(C):
            g = np.float64(u[q, c])
            t1[c] += g
            t2[c] += g * (np.float64(x[q, c]) - center[c])
    s1[:] = t1
    s2[:] = t2


@njit(cache=True, fastmath=_FM)
def _sums_chan(x, shift, c, s1, s2):
    t1 = 0.0
    t2 = 0.0
    k = shift[c]
    for a in range(x.shape[0]):
        for b in range(x.shape[2]):
            d = np.float64(x[a, c, b]) - k
            t1 += d
            t2 += d * d
    s1[c] = t1
    s2[c] = t2


@njit(cache=True, fastmath=_FM)
def _dot_chan(u, x, center, c, s1, s2):
    t1 = 0.0
    t2 = 0.0
    k = center[c]
    for a in range(x.shape[0]):
        for b in range(x.shape[2]):
            g = np.float64(u[a, c, b])
            t1 += g
            t2 += g * (np.float64(x[a, c, b]) - k)
    s1[c] = t1
    s2[c] = t2


@njit(cache=True)
def _affine_rows(x, hi, a, d, out, r0, r1):
    for r in range(r0, r1):
        for c in range(x.shape[1]):
            out[r, c] = a[c] * (x[r, c] - hi[c]) + d[c]


@njit(cache=True)
def _affine_planes(x, hi, a, d, out, i0, i1):
    C = x.shape[1]
    for i in range(i0, i1):
        n = i // C
        c = i - n * C
        k, p, q = hi[c], a[c], d[c]
        for b in range(x.shape[2]):
            out[n, c, b] = p * (x[n, c, b] - k) + q


@njit(cache=True)
def _grad_rows(u, x, mean, k, cb, cd, out, r0, r1):
    for r in range(r0, r1):
        for c in range(x.shape[1]):
            g = k[c] * np.float64(u[r, c]) + cb[c] * (np.float64(x[r, c]) - mean[c]) + cd[c]
            out[r, c] = g


@njit(cache=True)
def _grad_rows_lowp(u, x, hi, k, cb, d, out, r0, r1):
    for r in range(r0, r1):
        for c in range(x.shape[1]):
            out[r, c] = k[c] * u[r, c] + cb[c] * (x[r, c] - hi[c]) + d[c]


@njit(cache=True)
def _grad_planes(u, x, mean, k, cb, cd, out, i0, i1):
    C = x.shape[1]
    for i in range(i0, i1):
        n = i // C
        c = i - n * C
        mu, p, q, d = mean[c], k[c], cb[c], cd[c]
        for b in range(x.shape[2]):
            out[n, c, b] = p * np.float64(u[n, c, b]) + q * (np.float64(x[n, c, b]) - mu) + d


@njit(cache=True)
def _split_center(center, cb, cd, like):
    """``hi`` = center in ``like``'s dtype; ``d = cd - cb * (center - hi)`` in float64, cast."""
    C = center.shape[0]
    hi = np.empty(C, like.dtype)
    d = np.empty(C, like.dtype)
    for c in range(C):
        hi[c] = center[c]
        d[c] = cd[c] - cb[c] * (center[c] - np.float64(hi[c]))
    return hi, d


@njit(cache=True)
def _to_dtype(v, like):
    out = np.empty(v.shape[0], like.dtype)
    for c in range(v.shape[0]):
        out[c] = v[c]
    return out


@njit(cache=True)
def _zeros2(n, C):
    return np.zeros((n, C)), np.zeros((n, C))


@njit(cache=True)
def _shift(x):
    """Each channel's first value in float64 (``x`` is ``(R, C)`` or ``(A, C, B)``)."""
    C = x.shape[1]
    flat = x.reshape(x.size)  # a view: the dispatch passes C-contiguous arrays only
    stride = 1 if x.ndim == 2 else x.shape[2]
    k = np.empty(C)
    for c in range(C):
        k[c] = flat[c * stride]
    return k


@njit(cache=True)
def _moments(shift, p1, p2, m):
    """``(mean, biased var)`` from per-block shifted sums ``p1, p2`` of shape (blocks, C)."""
    s1 = p1.sum(axis=0)
    s2 = p2.sum(axis=0)
    return shift + s1 / m, np.maximum((s2 - s1 * s1 / m) / m, 0.0)


@njit(cache=True)
def _sum_blocks(p1, p2):
    return p1.sum(axis=0), p2.sum(axis=0)


@njit(cache=True)
def _affine_consts(mean, var, gamma, beta, eps, like):
    """``(hi, a, d)`` in ``like``'s dtype with ``y = a*(x - hi) + d`` the normalization."""
    scale = gamma / np.sqrt(var + eps)
    hi, d = _split_center(mean, scale, beta, like)
    return hi, _to_dtype(scale, like), d


# -- pass 1: per-channel sums ----------------------------------------------------------------
# Parallel kernels hold only calls and one prange loop: numba turns any array expression or
# np.zeros in a parallel function into a parallel region of its own (milliseconds, measured).
@njit(cache=True, parallel=True)
def stats_last(x, nblocks):
    """Per-column ``(mean, biased var)`` of ``x (R, C)`` in float64, R >= 1."""
    R, C = x.shape
    shift = _shift(x)
    p1, p2 = _zeros2(nblocks, C)
    if nblocks <= 1:
        _sums_rows(x, shift, 0, R, p1[0], p2[0])
    else:
        for blk in prange(nblocks):
            _sums_rows(x, shift, blk * R // nblocks, (blk + 1) * R // nblocks, p1[blk], p2[blk])
    return _moments(shift, p1, p2, R)


@njit(cache=True, parallel=True)
def stats_mid(x, nblocks):
    """Per-channel ``(mean, biased var)`` of ``x (A, C, B)`` in float64, A*B >= 1."""
    C = x.shape[1]
    shift = _shift(x)
    p1, p2 = _zeros2(1, C)
    s1, s2 = p1[0], p2[0]
    if nblocks <= 1:
        for c in range(C):
            _sums_chan(x, shift, c, s1, s2)
    else:
        for c in prange(C):
            _sums_chan(x, shift, c, s1, s2)
    return _moments(shift, p1, p2, x.shape[0] * x.shape[2])


@njit(cache=True, parallel=True)
def grad_sums_last(dy, x, mean, nblocks):
    """Per-column ``(sum(dy), sum(dy * (x - mean)))`` of ``(R, C)`` arrays in float64."""
    R, C = x.shape
    p1, p2 = _zeros2(nblocks, C)
    if nblocks <= 1:
        _dot_rows(dy, x, mean, 0, R, p1[0], p2[0])
    else:
        for blk in prange(nblocks):
            _dot_rows(dy, x, mean, blk * R // nblocks, (blk + 1) * R // nblocks, p1[blk], p2[blk])
    return _sum_blocks(p1, p2)


@njit(cache=True, parallel=True)
def grad_sums_mid(dy, x, mean, nblocks):
    """Per-channel ``(sum(dy), sum(dy * (x - mean)))`` of ``(A, C, B)`` arrays in float64."""
    C = x.shape[1]
    p1, p2 = _zeros2(1, C)
    s1, s2 = p1[0], p2[0]
    if nblocks <= 1:
        for c in range(C):
            _dot_chan(dy, x, mean, c, s1, s2)
    else:
        for c in prange(C):
            _dot_chan(dy, x, mean, c, s1, s2)
    return _sum_blocks(p1, p2)


# -- pass 2: elementwise maps ----------------------------------------------------------------
@njit(cache=True, parallel=True)
def normalize_last(x, mean, var, gamma, beta, eps, out, nblocks):
    """``out = gamma * (x - mean) / sqrt(var + eps) + beta`` for ``x (R, C)``."""
    hi, a, d = _affine_consts(mean, var, gamma, beta, eps, x)
    R = x.shape[0]
    if nblocks <= 1:
        _affine_rows(x, hi, a, d, out, 0, R)
    else:
        for blk in prange(nblocks):
            _affine_rows(x, hi, a, d, out, blk * R // nblocks, (blk + 1) * R // nblocks)


@njit(cache=True, parallel=True)
def normalize_mid(x, mean, var, gamma, beta, eps, out, nblocks):
    """``out = gamma * (x - mean) / sqrt(var + eps) + beta`` for ``x (A, C, B)``."""
    hi, a, d = _affine_consts(mean, var, gamma, beta, eps, x)
    n = x.shape[0] * x.shape[1]
    if nblocks <= 1:
        _affine_planes(x, hi, a, d, out, 0, n)
    else:
        for blk in prange(nblocks):
            _affine_planes(x, hi, a, d, out, blk * n // nblocks, (blk + 1) * n // nblocks)


@njit(cache=True)
def _grad_coeffs(var, gamma, sdy, sdyx, eps, m):
    """``dx = k*dy + cb*(x - mean) + cd`` with ``k = gamma*rstd``, from the pass-1 sums.

    ``m`` is the number of values per channel the statistics came from: the local batch's,
    or the global batch's when the sums were reduced over data-parallel ranks.
    """
    rstd = 1.0 / np.sqrt(var + eps)
    k = gamma * rstd
    return k, -k * rstd * rstd * sdyx / m, -k * sdy / m


@njit(cache=True, parallel=True)
def grad_input_last(dy, x, mean, var, gamma, sdy, sdyx, eps, m, out, nblocks):
    """Training-mode ``dx`` for ``(R, C)`` arrays from the pass-1 sums ``sdy``, ``sdyx``."""
    k, cb, cd = _grad_coeffs(var, gamma, sdy, sdyx, eps, m)
    R = x.shape[0]
    if nblocks <= 1:
        _grad_rows(dy, x, mean, k, cb, cd, out, 0, R)
    else:
        for blk in prange(nblocks):
            r0, r1 = blk * R // nblocks, (blk + 1) * R // nblocks
            _grad_rows(dy, x, mean, k, cb, cd, out, r0, r1)


@njit(cache=True, parallel=True)
def grad_input_mid(dy, x, mean, var, gamma, sdy, sdyx, eps, m, out, nblocks):
    """Training-mode ``dx`` for ``(A, C, B)`` arrays from the pass-1 sums ``sdy``, ``sdyx``."""
    k, cb, cd = _grad_coeffs(var, gamma, sdy, sdyx, eps, m)
    n = x.shape[0] * x.shape[1]
    if nblocks <= 1:
        _grad_planes(dy, x, mean, k, cb, cd, out, 0, n)
    else:
        for blk in prange(nblocks):
            i0, i1 = blk * n // nblocks, (blk + 1) * n // nblocks
            _grad_planes(dy, x, mean, k, cb, cd, out, i0, i1)


@njit(cache=True, parallel=True)
def grad_input_last_lowp(dy, x, mean, var, gamma, sdy, sdyx, eps, m, out, nblocks):
    """:func:`grad_input_last` evaluated in ``x``'s dtype (for ``m >= LOWP_MIN_COUNT``)."""
    k, cb, cd = _grad_coeffs(var, gamma, sdy, sdyx, eps, m)
    hi, d = _split_center(mean, cb, cd, x)
    k32 = _to_dtype(k, x)
    cb32 = _to_dtype(cb, x)
    R = x.shape[0]
    if nblocks <= 1:
        _grad_rows_lowp(dy, x, hi, k32, cb32, d, out, 0, R)
    else:
        for blk in prange(nblocks):
            r0, r1 = blk * R // nblocks, (blk + 1) * R // nblocks
            _grad_rows_lowp(dy, x, hi, k32, cb32, d, out, r0, r1)
