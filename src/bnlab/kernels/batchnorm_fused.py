"""The compiled loops of batch normalization: two memory passes forward, two backward.

On views ``(R, C)`` (``*_last``) or ``(A, C, B)`` (``*_mid``, NCHW: ``A = N``, ``B = H*W``) cut
into groups ``bounds[j] = (a, b)`` along the first axis; group j runs on ``nblocks[j]`` blocks
(1: serial, no thread pool; more: rows with float64 partial sums, or channels/planes).

    pass 1 forward:   S1 = sum(x - K), S2 = sum((x - K)^2) around K = the group's first value
                      mean = K + S1/m, var = max((S2 - S1^2/m) / m, 0)   (float64, biased)
    pass 2 forward:   y = a*(x - hi) + d, a = gamma/sqrt(var + eps), mean = hi + lo with hi in
                      the data's dtype and -a*lo folded into d (a large offset costs nothing)
    pass 1 backward:  sum(dy), sum(dy * (x - mean))                       (float64)
    pass 2 backward:  dx = k*dy + cb*(x - mean) + cd in float64 (few values: the terms cancel),
                      in float32 with the hi/lo split from LOWP_MIN_COUNT values on

``m`` is passed in (global under sync). Parallel kernels hold only calls and prange loops (an
array expression is a parallel region of its own: milliseconds).
"""

from __future__ import annotations

import numpy as np

from bnlab.kernels._numba import njit, njit_pair, prange

LOWP_MIN_COUNT = 64  # values per channel from which the dx pass may run in float32

_FM = {"reassoc", "contract"}  # vectorised float64 reductions; no nnan/ninf


@njit(cache=True, fastmath=_FM)
def _sums_rows(x, shift, s1, s2):
    # x: the block's rows (a view from row 0: its loops compile ~15% faster than from r0);
    # thread-local accumulators (writing rows of a shared array in the loop would false-share
    # cache lines between threads); four rows per sweep quarter the accumulator traffic
    R, C = x.shape
    t1 = np.zeros(C)
    t2 = np.zeros(C)
    r = 0
    while r + 4 <= R:
        for c in range(C):
            k = shift[c]
            v0, v1 = np.float64(x[r, c]) - k, np.float64(x[r + 1, c]) - k
            v2, v3 = np.float64(x[r + 2, c]) - k, np.float64(x[r + 3, c]) - k
            t1[c] += (v0 + v1) + (v2 + v3)
            t2[c] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3)
        r += 4
    for q in range(r, R):
        for c in range(C):
            v = np.float64(x[q, c]) - shift[c]
            t1[c] += v
            t2[c] += v * v
    s1[:] = t1
    s2[:] = t2


@njit(cache=True, fastmath=_FM)
def _dot_rows(u, x, center, s1, s2):
    R, C = x.shape
    t1 = np.zeros(C)
    t2 = np.zeros(C)
    r = 0
    while r + 4 <= R:
        for c in range(C):
            k = center[c]
            g0, g1 = np.float64(u[r, c]), np.float64(u[r + 1, c])
            g2, g3 = np.float64(u[r + 2, c]), np.float64(u[r + 3, c])
            t1[c] += (g0 + g1) + (g2 + g3)
            t2[c] += (g0 * (np.float64(x[r, c]) - k) + g1 * (np.float64(x[r + 1, c]) - k)) + (
                g2 * (np.float64(x[r + 2, c]) - k) + g3 * (np.float64(x[r + 3, c]) - k)
            )
        r += 4
    for q in range(r, R):
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
def _bad(v):  # True for NaN or Inf (inf - inf is NaN): or-ed without a branch, vectorized
    return (v - v) != 0.0


# The write loops return whether a value they wrote is not finite (an overflow of finite
# inputs is refused by the caller without another pass over the output).
@njit(cache=True)
def _affine_rows(x, hi, a, d, out):
    bad = False
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[r, c] = a[c] * (x[r, c] - hi[c]) + d[c]
            bad |= _bad(out[r, c])
    return bad


@njit(cache=True)
def _affine_planes(x, hi, a, d, out, i0, i1):
    C, bad = x.shape[1], False
    for i in range(i0, i1):
        n = i // C
        c = i - n * C
        k, p, q = hi[c], a[c], d[c]
        for b in range(x.shape[2]):
            out[n, c, b] = p * (x[n, c, b] - k) + q
            bad |= _bad(out[n, c, b])
    return bad


@njit(cache=True)
def _grad_rows(u, x, mean, k, cb, cd, out):
    bad = False
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[r, c] = k[c] * np.float64(u[r, c]) + cb[c] * (np.float64(x[r, c]) - mean[c]) + cd[c]
            bad |= _bad(out[r, c])
    return bad


@njit(cache=True)
def _grad_rows_lowp(u, x, hi, k, cb, d, out):
    bad = False
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[r, c] = k[c] * u[r, c] + cb[c] * (x[r, c] - hi[c]) + d[c]
            bad |= _bad(out[r, c])
    return bad


@njit(cache=True)
def _grad_planes(u, x, mean, k, cb, cd, out, i0, i1):
    C, bad = x.shape[1], False
    for i in range(i0, i1):
        n = i // C
        c = i - n * C
        mu, p, q, d = mean[c], k[c], cb[c], cd[c]
        for b in range(x.shape[2]):
            out[n, c, b] = p * np.float64(u[n, c, b]) + q * (np.float64(x[n, c, b]) - mu) + d
            bad |= _bad(out[n, c, b])
    return bad


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
    return v.astype(like.dtype)


@njit(cache=True)
def _zeros(*shape):  # np.zeros for the parallel loops' functions (there: a parallel region)
    return np.zeros(shape)


@njit(cache=True)
def _shift(x, a):  # each channel's first value in the group starting at row a, float64
    C = x.shape[1]
    flat = x.reshape(x.size)  # a view: the dispatch passes C-contiguous arrays only
    stride = 1 if x.ndim == 2 else x.shape[2]
    start = a * (x.size // x.shape[0])
    k = np.empty(C)
    for c in range(C):
        k[c] = flat[start + c * stride]
    return k


@njit(cache=True)
def _sum_blocks(p1, p2, c):  # the blocks' sums of channel c added in order, from 0.0
    s1 = 0.0
    s2 = 0.0
    for b in range(p1.shape[0]):
        s1 += p1[b, c]
        s2 += p2[b, c]
    return s1, s2


@njit(cache=True)
def _moments(shift, p1, p2, m, mean, var):  # per-block shifted sums (blocks, C) -> mean, var
    for c in range(shift.shape[0]):
        s1, s2 = _sum_blocks(p1, p2, c)
        mean[c] = shift[c] + s1 / m
        t = (s2 - s1 * s1 / m) / m
        var[c] = t if t >= 0.0 or np.isnan(t) else 0.0  # np.maximum(t, 0.0)


@njit(cache=True)
def _grad_coeffs(var, gamma, sdy, sdyx, eps, m):  # dx = k*dy + cb*(x - mean) + cd, k = gamma*rstd
    rstd = 1.0 / np.sqrt(var + eps)
    k = gamma * rstd
    return k, -k * rstd * rstd * sdyx / m, -k * sdy / m


@njit(cache=True)
def _affine_consts(center, scale, shift, var, eps, j, like):
    """``(hi, d, a)`` in ``like``'s dtype of group j's map ``a * (x - hi) + d``: ``a =
    scale / sqrt(var + eps)`` (``var`` None: ``scale``), ``center = hi + lo`` split."""
    a = scale[j] if var is None else scale[j] / np.sqrt(var[j] + eps)
    hi, d = _split_center(center[j], a, shift[j], like)
    return hi, d, _to_dtype(a, like)


@njit(cache=True, nogil=True)
def _finite(a):  # counted, not stopped at the first: one vectorized pass (inf - inf is NaN)
    bad = 0
    for v in a.flat:
        bad += (v - v) != 0.0
    return bad == 0


@njit(cache=True, nogil=True)  # nogil: conv layers check their chunks' outputs on threads
def all_finite(a, b=None):
    """True if no entry of ``a`` (nor of ``b``) is NaN or Inf (``np.isfinite(a).all()``)."""
    return _finite(a) and (b is None or _finite(b))


@njit(cache=True)
def param_grads(var, eps, sums, r, d, grads):
    """``grads = [dgamma, dbeta]`` (its dtype) from the sums ``(G, 2, C)``: per group
    ``dgamma_j = rstd_j * sums[j, 1]`` (renorm: ``r_j dgamma_j + d_j dbeta_j``), ``dbeta_j =
    sums[j, 0]``, each rounded to the dtype, the groups added in float64 in order; True if
    the results are finite."""
    G, C = var.shape
    cell = np.empty(2, grads.dtype)  # rounds a float64 to the gradients' dtype
    tg = np.zeros(C)
    tb = np.zeros(C)
    for j in range(G):
        for c in range(C):
            cell[0] = (1.0 / np.sqrt(var[j, c] + eps)) * sums[j, 1, c]
            cell[1] = sums[j, 0, c]
            if r is not None:
                cell[0] = r[j, c] * np.float64(cell[0]) + d[j, c] * np.float64(cell[1])
            tg[c] += np.float64(cell[0])
            tb[c] += np.float64(cell[1])
    grads[0, :] = tg
    grads[1, :] = tb
    return all_finite(grads)


# -- the passes: (serial, parallel) pairs of one function (njit_pair), called as kernel[parallel]
@njit_pair
def forward_last(x, bounds, nblocks, center, scale, shift, var, eps, out):
    """The forward passes of ``x (R, C)`` by groups. ``center`` None: the statistics pass, per
    group and column ``center`` = mean, ``var`` = biased var (an empty group: 0). Then if ``out``
    is given and they are finite ``out = a[j] * (x - center[j]) + shift[j]``, ``a = scale /
    sqrt(var + eps)`` (``var`` None: ``a = scale``). Returns ``(center, var, finite, non-finite
    outputs)``."""
    G, C = bounds.shape[0], x.shape[1]
    mean, vr = (_zeros(G, C), _zeros(G, C)) if center is None else (center, var)
    if center is None:
        for j in range(G):
            a, R, nb = bounds[j, 0], bounds[j, 1] - bounds[j, 0], nblocks[j]
            if R > 0:
                k = _shift(x, a)
                p1, p2 = _zeros(nb, C), _zeros(nb, C)
                for blk in prange(nb):
                    r0, r1 = a + blk * R // nb, a + (blk + 1) * R // nb
                    _sums_rows(x[r0:r1], k, p1[blk], p2[blk])
                _moments(k, p1, p2, R, mean[j], vr[j])
    finite, bad = all_finite(mean, vr), 0
    if out is not None:
        for j in range(G if finite else 0):
            a, R, nb = bounds[j, 0], bounds[j, 1] - bounds[j, 0], nblocks[j]
            hi, d, s = _affine_consts(mean, scale, shift, vr, eps, j, x)
            for blk in prange(nb):
                r0, r1 = a + blk * R // nb, a + (blk + 1) * R // nb
                bad += _affine_rows(x[r0:r1], hi, s, d, out[r0:r1])
    return mean, vr, finite, bad


@njit_pair
def forward_mid(x, bounds, nblocks, center, scale, shift, var, eps, out):
    """:func:`forward_last` of ``x (A, C, B)`` (statistics parallel over the channels)."""
    G, C = bounds.shape[0], x.shape[1]
    mean, vr = (_zeros(G, C), _zeros(G, C)) if center is None else (center, var)
    if center is None:
        for j in range(G):
            a, b = bounds[j, 0], bounds[j, 1]
            if b > a and x.shape[2] > 0:
                k = _shift(x, a)
                p1, p2 = _zeros(1, C), _zeros(1, C)
                for c in prange(C):
                    _sums_chan(x[a:b], k, c, p1[0], p2[0])
                _moments(k, p1, p2, (b - a) * x.shape[2], mean[j], vr[j])
    finite, bad = all_finite(mean, vr), 0
    if out is not None:
        for j in range(G if finite else 0):
            i0, n, nb = bounds[j, 0] * C, (bounds[j, 1] - bounds[j, 0]) * C, nblocks[j]
            hi, d, s = _affine_consts(mean, scale, shift, vr, eps, j, x)
            for blk in prange(nb):
                i, e = i0 + blk * n // nb, i0 + (blk + 1) * n // nb
                bad += _affine_planes(x, hi, s, d, out, i, e)
    return mean, vr, finite, bad


@njit_pair
def backward_last(dy, x, stats, eps, r, d, bounds, nblocks, total, grads, lowp, out):
    """The backward passes of ``(R, C)`` arrays by groups; ``stats = (count, mean, var, gamma)``.
    ``total`` None: the sums pass, ``sums[j] = [sum(dy), sum(dy * (x - mean[j]))]`` ``(G, 2,
    C)``, and :func:`param_grads` of them into ``grads``. Then if ``out`` is given and all are
    finite, training ``dx`` from the sums (float32 arithmetic if ``lowp`` and the group has
    ``LOWP_MIN_COUNT`` values). Returns ``(sums, sums finite, grads finite, non-finite dx)``."""
    count, mean, var, gamma = stats
    G, C = bounds.shape[0], x.shape[1]
    sums, ok = _zeros(G, 2, C) if total is None else total, True
    if total is None:
        for j in range(G):
            a, R, nb = bounds[j, 0], bounds[j, 1] - bounds[j, 0], nblocks[j]
            if R > 0:
                p1, p2 = _zeros(nb, C), _zeros(nb, C)
                for blk in prange(nb):
                    r0, r1 = a + blk * R // nb, a + (blk + 1) * R // nb
                    _dot_rows(dy[r0:r1], x[r0:r1], mean[j], p1[blk], p2[blk])
                for c in range(C):
                    sums[j, 0, c], sums[j, 1, c] = _sum_blocks(p1, p2, c)
        ok = param_grads(var, eps, sums, r, d, grads)
    finite, bad = all_finite(sums), 0
    if out is not None:
        for j in range(G if finite and ok else 0):
            a, R, nb = bounds[j, 0], bounds[j, 1] - bounds[j, 0], nblocks[j]
            if R > 0:
                k, cb, cd = _grad_coeffs(var[j], gamma[j], sums[j, 0], sums[j, 1], eps, count[j])
                hi, dd = _split_center(mean[j], cb, cd, x)
                k32, cb32 = _to_dtype(k, x), _to_dtype(cb, x)
                low_j = lowp and count[j] >= LOWP_MIN_COUNT
                for blk in prange(nb):
                    r0, r1 = a + blk * R // nb, a + (blk + 1) * R // nb
                    u, v, o = dy[r0:r1], x[r0:r1], out[r0:r1]
                    if low_j:
                        bad += _grad_rows_lowp(u, v, hi, k32, cb32, dd, o)
                    else:
                        bad += _grad_rows(u, v, mean[j], k, cb, cd, o)
    return sums, finite, ok, bad


@njit_pair
def backward_mid(dy, x, stats, eps, r, d, bounds, nblocks, total, grads, lowp, out):
    """:func:`backward_last` of ``(A, C, B)`` arrays (sums parallel over channels; dx float64)."""
    count, mean, var, gamma = stats
    G, C = bounds.shape[0], x.shape[1]
    sums, ok = _zeros(G, 2, C) if total is None else total, True
    if total is None:
        for j in range(G):
            a, b = bounds[j, 0], bounds[j, 1]
            if b > a:
                p1, p2 = _zeros(1, C), _zeros(1, C)
                for c in prange(C):
                    _dot_chan(dy[a:b], x[a:b], mean[j], c, p1[0], p2[0])
                for c in range(C):
                    sums[j, 0, c], sums[j, 1, c] = _sum_blocks(p1, p2, c)
        ok = param_grads(var, eps, sums, r, d, grads)
    finite, bad = all_finite(sums), 0
    if out is not None:
        for j in range(G if finite and ok else 0):
            i0, n, nb = bounds[j, 0] * C, (bounds[j, 1] - bounds[j, 0]) * C, nblocks[j]
            if n > 0:
                k, cb, cd = _grad_coeffs(var[j], gamma[j], sums[j, 0], sums[j, 1], eps, count[j])
                for blk in prange(nb):
                    i, e = i0 + blk * n // nb, i0 + (blk + 1) * n // nb
                    bad += _grad_planes(dy, x, mean[j], k, cb, cd, out, i, e)
    return sums, finite, ok, bad
