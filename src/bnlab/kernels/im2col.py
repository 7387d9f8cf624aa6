"""Unfolding image patches into rows (im2col) and folding them back (col2im), channels-last.

For an input ``x`` of shape (N, H, W, C), a kernel (kh, kw), strides (sh, sw) and zero padding
(top, bottom, left, right), the output has Ho = (H + top + bottom - kh) // sh + 1 rows and
Wo = (W + left + right - kw) // sw + 1 columns, and

    cols[(n*Ho + i)*Wo + j, (p*kw + q)*C + c] = xpad[n, i*sh + p, j*sw + q, c]

so that a convolution with a kernel ``W`` of shape (kh, kw, C, Cout) is the single matrix
product ``cols @ W.reshape(kh*kw*C, Cout)``, whose rows are already the NHWC output. ``col2im``
is the adjoint: it adds every row entry back to the pixel it came from (overlapping windows
sum). Both write into caller-provided buffers so that a training loop allocates nothing, and
run on the threads ``bnlab.runtime`` gives image data (one by default: see there why); their
serial versions release the GIL (Conv2D runs pieces of a batch on threads of its own).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from bnlab._checks import check_ints
from bnlab.kernels._numba import call_on_policy, njit_pair, prange

__all__ = [
    "conv_output_size",
    "same_padding",
    "im2col",
    "im2col_strided",
    "strided_patches",
    "col2im",
    "add_bias",
]

Pads = tuple[int, int, int, int]


def conv_output_size(size: int, k: int, stride: int, pad_total: int) -> int:
    """Output length along one axis: floor((size + pad_total - k) / stride) + 1."""
    return (size + pad_total - k) // stride + 1


def same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow "same" padding (before, after) along one axis.

    pad_total = max((ceil(size / stride) - 1) * stride + k - size, 0); the odd pixel goes
    after (bottom/right), so the output has ceil(size / stride) positions.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def strided_patches(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """A read-only (N, Ho, Wo, kh, kw, C) view of the (already padded) ``xp``; no copy."""
    n, hp, wp, c = xp.shape
    ho = (hp - kh) // sh + 1
    wo = (wp - kw) // sw + 1
    s0, s1, s2, s3 = xp.strides
    return as_strided(
        xp,
        shape=(n, ho, wo, kh, kw, c),
        strides=(s0, s1 * sh, s2 * sw, s1, s2, s3),
        writeable=False,
    )


def im2col_strided(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    pads: Pads = (0, 0, 0, 0),
) -> np.ndarray:
    """Reference im2col: ``np.pad`` then a copy of the strided patch view (same result)."""
    pt, pb, pl, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    patches = strided_patches(xp, *kernel, *stride)
    n, ho, wo = patches.shape[:3]
    return patches.reshape(n * ho * wo, -1)


# Below this many output elements a kernel runs on one thread (a launch costs more).
PARALLEL_MIN = 1 << 16


def _im2col_runs_nb(x3, c, kh, kw, sh, sw, pt, pl, ho, wo, out):
    # For few channels (C = 3): x3 is x viewed as (N, H, W*C), and the kw pixels a kernel row
    # covers are one contiguous run of kw*C floats in x3 and in the row of ``out``, copied in
    # one loop; only the parts of the run that fall into the padding are written as zeros.
    # Offsets are unsigned (np.uint64) so that Numba drops its negative-index wraparound,
    # which otherwise keeps LLVM from vectorizing the copies.
    n, h, _ = x3.shape
    w = x3.shape[2] // c
    run = kw * c
    for b in prange(n):
        for i in range(ho):
            for j in range(wo):
                orow = out[(b * ho + i) * wo + j]
                x0 = j * sw - pl
                lo = min(max(0, -x0), kw) * c  # [lo, hi): the part of the run inside the image
                hi = max(min(kw, w - x0) * c, lo)
                for p in range(kh):
                    y = i * sh + p - pt
                    base = np.uint64(p * run)
                    if y < 0 or y >= h:
                        for t in range(np.uint64(run)):
                            orow[base + t] = 0.0
                        continue
                    xrow = x3[b, y]
                    for t in range(np.uint64(lo)):
                        orow[base + t] = 0.0
                    dst, src = base + np.uint64(lo), np.uint64(x0 * c + lo)
                    for t in range(np.uint64(hi - lo)):
                        orow[dst + t] = xrow[src + t]
                    dst = base + np.uint64(hi)
                    for t in range(np.uint64(run - hi)):
                        orow[dst + t] = 0.0
    return out


def _im2col_pixels_nb(x, kh, kw, sh, sw, pt, pl, ho, wo, out):
    # For many channels: one vectorized copy of C floats per kernel tap (measured ~10% faster
    # than the runs above at C = 32, 64, where both are bound by memory bandwidth).
    n, h, w, c = x.shape
    for b in prange(n):
        for i in range(ho):
            for j in range(wo):
                orow = out[(b * ho + i) * wo + j]
                for p in range(kh):
                    y = i * sh + p - pt
                    for q in range(kw):
                        xx = j * sw + q - pl
                        base = np.uint64((p * kw + q) * c)
                        if 0 <= y < h and 0 <= xx < w:
                            pixel = x[b, y, xx]
                            for ch in range(np.uint64(c)):
                                orow[base + ch] = pixel[ch]
                        else:
                            for ch in range(np.uint64(c)):
                                orow[base + ch] = 0.0
    return out


# Below this many channels, im2col copies runs of kw pixels; from it on, one pixel at a time.
PIXEL_COPY_MIN_CHANNELS = 16


def im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    pads: Pads = (0, 0, 0, 0),
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Unfold ``x`` (N, H, W, C) into ``cols`` (N*Ho*Wo, kh*kw*C); see the module docstring.

    ``out``, if given, must be C-contiguous with that shape and ``x``'s dtype; it is returned.
    A parallel Numba loop reads the padding as zeros, so no padded copy of ``x`` is made; it
    measured about twice as fast as copying the strided view of :func:`im2col_strided` (the
    readable reference) on the cifar10_cnn shapes.
    """
    kh, kw = check_ints(kernel, "kernel", 2, where="im2col", low=1)
    sh, sw = check_ints(stride, "stride", 2, where="im2col", low=1)
    pt, pb, pl, pr = check_ints(pads, "pads", 4, where="im2col")
    n, h, w, c = x.shape
    ho = conv_output_size(h, kh, sh, pt + pb)
    wo = conv_output_size(w, kw, sw, pl + pr)
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"im2col: kernel {kernel} with padding {pads} does not fit input of shape {x.shape}"
        )
    shape = (n * ho * wo, kh * kw * c)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    elif out.shape != shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"im2col: out must be a C-contiguous {x.dtype} array of shape {shape}, "
            f"got {out.dtype} {out.shape}"
        )
    x = np.ascontiguousarray(x)
    geometry = (kh, kw, sh, sw, pt, pl, ho, wo, out)
    if c >= PIXEL_COPY_MIN_CHANNELS:
        call_on_policy(_IM2COL_PIXELS, x.ndim, out.size, PARALLEL_MIN, x, *geometry)
    else:
        x3 = x.reshape(n, h, w * c)
        call_on_policy(_IM2COL_RUNS, x.ndim, out.size, PARALLEL_MIN, x3, c, *geometry)
    return out


_IM2COL_RUNS = njit_pair(_im2col_runs_nb, nogil=True)
_IM2COL_PIXELS = njit_pair(_im2col_pixels_nb, nogil=True)


def _col2im_nb(cols, c, kh, kw, sh, sw, pt, pl, ho, wo, dx3):
    # dx3 is dx viewed as (N, H, W*C), offsets unsigned as in _im2col_nb. Every dx entry
    # receives its terms in the order of the rows (i, j) that read it, starting from 0, as in
    # the plain scatter-add loop over (i, j, p, q, c): the same sums, the same rounding.
    n, h, _ = dx3.shape
    w = dx3.shape[2] // c
    run = kw * c
    for b in prange(n):
        dx3[b] = 0.0
        for i in range(ho):
            for j in range(wo):
                crow = cols[(b * ho + i) * wo + j]
                x0 = j * sw - pl
                lo = min(max(0, -x0), kw) * c
                hi = max(min(kw, w - x0) * c, lo)
                for p in range(kh):
                    y = i * sh + p - pt
                    if y < 0 or y >= h:
                        continue
                    drow = dx3[b, y]
                    src, dst = np.uint64(p * run + lo), np.uint64(x0 * c + lo)
                    for t in range(np.uint64(hi - lo)):
                        drow[dst + t] += crow[src + t]
    return dx3


_COL2IM = njit_pair(_col2im_nb, nogil=True)


def col2im(
    cols: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    pads: Pads = (0, 0, 0, 0),
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Adjoint of :func:`im2col`: dx[n, y, x, c] = sum of every ``cols`` entry read from there.

    ``input_shape`` is the (N, H, W, C) shape of the image; padding entries are dropped.
    """
    n, h, w, c = input_shape
    kh, kw = kernel
    sh, sw = stride
    pt, pb, pl, pr = pads
    ho = conv_output_size(h, kh, sh, pt + pb)
    wo = conv_output_size(w, kw, sw, pl + pr)
    if cols.shape != (n * ho * wo, kh * kw * c):
        raise ValueError(
            f"col2im: cols must have shape {(n * ho * wo, kh * kw * c)} for input {input_shape}, "
            f"got {cols.shape}"
        )
    if out is None:
        out = np.empty(input_shape, dtype=cols.dtype)
    elif out.shape != tuple(input_shape) or out.dtype != cols.dtype:
        raise ValueError(
            f"col2im: out must be a {cols.dtype} array of shape {input_shape}, "
            f"got {out.dtype} {out.shape}"
        )
    dx = out if out.flags.c_contiguous else np.empty(input_shape, dtype=cols.dtype)
    args = (np.ascontiguousarray(cols), c, kh, kw, sh, sw, pt, pl, ho, wo)
    call_on_policy(_COL2IM, out.ndim, cols.size, PARALLEL_MIN, *args, dx.reshape(n, h, w * c))
    if dx is not out:
        out[...] = dx
    return out


def _add_bias_nb(y, b):
    rows, c = y.shape
    for r in prange(rows):
        for ch in range(c):
            y[r, ch] += b[ch]


_ADD_BIAS = njit_pair(_add_bias_nb, nogil=True)


def add_bias(y2d: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y2d[r, c] += b[c] in place (the same float additions as ``y2d += b``, in one pass).

    NumPy's broadcast add runs its inner loop over the C channels only (32 or 64 in a conv
    net), so its per-row overhead, not memory, bounds it; this loop is several times faster.
    """
    if y2d.ndim != 2 or not y2d.flags.c_contiguous or b.shape != (y2d.shape[1],):
        raise ValueError(
            f"add_bias: y2d must be a C-contiguous (R, C) array and b of shape (C,), got "
            f"{y2d.shape} and {b.shape}"
        )
    call_on_policy(_ADD_BIAS, 4, y2d.size, PARALLEL_MIN, y2d, b.astype(y2d.dtype, copy=False))
    return y2d
