"""The weight-domain transforms of Winograd F(2x2, 3x3) (:mod:`bnlab.kernels.winograd`).

U = G W G^T per (input, output) channel pair, and its adjoint dW = G^T dU G, with
G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]. :class:`TransformCache` keeps
U (and U^T) of a layer's W between calls for as long as W's bytes stay the same.
"""

from __future__ import annotations

import numpy as np

from bnlab.kernels._numba import njit

__all__ = ["G", "TransformCache", "winograd_weights", "winograd_weights_grad"]

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def _sandwich_nb(g, a, h, out):
    # out[r, s, k] = sum_q (sum_p g[r, p] a[p, q, k]) h[s, q], each sum from +0 in ascending
    # order, the inner one rounded to a's dtype: the additions of NumPy's einsums "rp,pqk->rqk",
    # "rqk,sq->rsk" (same bits: tests/kernels/test_winograd.py) in 30 vs 46 us (64 -> 64).
    t = np.empty(a.shape[1:], a.dtype)
    for r in range(g.shape[0]):
        t[:] = 0
        for p in range(g.shape[1]):
            for q in range(a.shape[1]):
                for k in range(a.shape[2]):
                    t[q, k] += g[r, p] * a[p, q, k]
        for s in range(h.shape[0]):
            out[r, s] = 0
            for q in range(h.shape[1]):
                for k in range(a.shape[2]):
                    out[r, s, k] += t[q, k] * h[s, q]
    return out


_SANDWICH = njit(cache=True)(_sandwich_nb)


def _sandwich(g: np.ndarray, a: np.ndarray, h: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """g a h^T over the first two axes of ``a``, into ``out`` (C-contiguous) if given."""
    shape = (g.shape[0], h.shape[0], *a.shape[2:])
    if out is not None and (out.dtype != a.dtype or not out.flags.c_contiguous):
        raise ValueError(f"winograd: out must be a C-contiguous {a.dtype} array, got {out.dtype}")
    res = np.empty(shape, a.dtype) if out is None else out.reshape(shape)
    if a[0, 0].size == 1:  # NumPy sums a 1-element trailing axis in another order: its einsum
        res[...] = np.einsum("rqco,sq->rsco", np.einsum("rp,pqco->rqco", g, a), h)
    else:
        _SANDWICH(
            g, np.ascontiguousarray(a).reshape(*a.shape[:2], -1), h, res.reshape(*shape[:2], -1)
        )
    return res if out is None else out


def winograd_weights(W: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """U[4r + s, c, o] = (G W[:, :, c, o] G^T)[r, s] for W of shape (3, 3, C, Cout), into the
    C-contiguous ``out`` (16, C, Cout) if given."""
    g = G.astype(W.dtype)
    return _sandwich(g, W, g, out).reshape(16, *W.shape[2:])


def winograd_weights_grad(dU: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dW = G^T dU G (the adjoint of :func:`winograd_weights`), shape (3, 3, C, Cout), into
    the C-contiguous ``out`` if given."""
    gt = G.astype(dU.dtype).T  # a view: the 1-element einsum then iterates as it always did
    return _sandwich(gt, dU.reshape(4, 4, *dU.shape[1:]), gt, out)


class TransformCache:
    """U = :func:`winograd_weights` (W) and U^T (16, Cout, C), recomputed only when W changed.

    "Changed" is decided on W's bytes, not on who wrote them: :meth:`get` compares W with a
    private copy of the W that U was computed from, bit for bit (as unsigned integers, so
    -0.0 and 0.0 differ, NaN equals itself), along with its shape and dtype. U is a function
    of exactly those, so a cached U is the U a fresh transform would give, however W was
    changed: an optimizer's in-place step, ``layer.params["W"][...] = v``, a new array
    assigned to ``params["W"]``, a checkpoint loaded, ``astype``. The comparison reads W and
    the copy once (~5 us for 64 -> 64 channels at float32, where the transform costs ~30 us);
    a training step's backward reuses its forward's U, an evaluation reuses it every call.
    The arrays returned are read-only; the next :meth:`get` of another W replaces them.
    """

    def __init__(self) -> None:
        self._w: np.ndarray | None = None
        self._u: np.ndarray | None = None
        self._ut: np.ndarray | None = None

    def get(self, W: np.ndarray) -> np.ndarray:
        """U (16, C, Cout) of ``W`` (3, 3, C, Cout)."""
        w = self._w
        if w is None or w.shape != W.shape or w.dtype != W.dtype or not _same_bits(w, W):
            self._w = w = np.array(W, order="C", copy=True)
            self._u, self._ut = winograd_weights(w), None
            self._u.flags.writeable = False
        assert self._u is not None  # for mypy: set above
        return self._u

    def transposed(self) -> np.ndarray:
        """U^T (16, Cout, C) of the U that the last :meth:`get` returned."""
        if self._u is None:
            raise RuntimeError("TransformCache.transposed() called before get(W)")
        if self._ut is None:
            self._ut = np.ascontiguousarray(self._u.transpose(0, 2, 1))
            self._ut.flags.writeable = False
        return self._ut

    def clear(self) -> None:
        """Forget the cached arrays (the next :meth:`get` recomputes them)."""
        self._w = self._u = self._ut = None


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` (same shape and dtype) hold the same bytes element by element
    (C-contiguous ``b``: one compiled pass, 2-4 us on a 64 -> 64 kernel; else NumPy's)."""
    as_uint = np.dtype(f"u{a.dtype.itemsize}")
    if a.flags.c_contiguous and b.flags.c_contiguous:
        return bool(_equal_words(a.reshape(-1).view(as_uint), b.reshape(-1).view(as_uint)))
    return bool(np.array_equal(a.view(as_uint), b.view(as_uint)))


@njit(cache=True)
def _equal_words(a, b):  # a, b: 1-D unsigned words; every pair xor-ed (no early exit: vectorized)
    d = a.dtype.type(0)
    for i in range(a.size):
        d |= a[i] ^ b[i]
    return d == 0
