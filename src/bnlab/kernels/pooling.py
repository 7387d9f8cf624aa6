"""Max pooling over channels-last images, forward and backward (Numba).

For x of shape (N, H, W, C), a window (ph, pw) and strides (sh, sw) without padding (Keras'
"valid", PyTorch's default), Ho = (H - ph) // sh + 1, Wo = (W - pw) // sw + 1 and

    y[n, i, j, c] = max over p < ph, q < pw of x[n, i*sh + p, j*sw + q, c].

The forward pass records where each maximum came from (the first in row-major window order
on ties, as PyTorch), so the backward pass routes dy[n, i, j, c] to that pixel only;
overlapping windows add up. Both run on the threads ``bnlab.runtime`` gives image data.
"""

from __future__ import annotations

import numpy as np

from bnlab.kernels._numba import call_on_policy, njit_pair, prange

__all__ = ["max_pool_forward", "max_pool_backward", "pool_output_shape"]


def pool_output_shape(
    shape: tuple[int, ...], pool: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(N, Ho, Wo, C) for an (N, H, W, C) input; raises ValueError if the window does not fit."""
    for name, v in (("pool", pool), ("stride", stride)):
        ok = len(tuple(v)) == 2 and all(isinstance(k, (int, np.integer)) and k >= 1 for k in v)
        if not ok:
            raise ValueError(f"max pooling: {name} must be two ints >= 1, got {v!r}")
    if len(shape) != 4:
        raise ValueError(f"max pooling: x must be (N, H, W, C), got shape {shape}")
    n, h, w, c = shape
    if h < pool[0] or w < pool[1]:
        raise ValueError(f"max pooling: window {pool} is larger than the image {(h, w)}")
    return n, (h - pool[0]) // stride[0] + 1, (w - pool[1]) // stride[1] + 1, c


PARALLEL_MIN = 1 << 16  # elements below which one thread is faster


def _max_pool_fwd(x, ph, pw, sh, sw, y, arg):
    n, h, w, c = x.shape
    _, ho, wo, _ = y.shape
    for b in prange(n):
        for i in range(ho):
            for j in range(wo):
                y0 = i * sh
                x0 = j * sw
                for ch in range(c):
                    y[b, i, j, ch] = x[b, y0, x0, ch]
                    arg[b, i, j, ch] = y0 * w + x0
                for p in range(ph):
                    for q in range(pw):
                        if p == 0 and q == 0:
                            continue
                        yy = y0 + p
                        xx = x0 + q
                        for ch in range(c):
                            v = x[b, yy, xx, ch]
                            if v > y[b, i, j, ch] or np.isnan(v):
                                y[b, i, j, ch] = v
                                arg[b, i, j, ch] = yy * w + xx
    return y


_FWD = njit_pair(_max_pool_fwd)


def _max_pool_fwd_2x2(x, sh, sw, y, arg):
    # The 2x2 window of every conv net here, unrolled: the four taps are compared in the
    # general loop's order (row-major; a larger value or a NaN takes over) on locals, so the
    # channel loop is branch-free and vectorizes (2x faster at batch 32).
    n, h, w, c = x.shape
    _, ho, wo, _ = y.shape
    for b in prange(n):
        for i in range(ho):
            top, bottom = x[b, i * sh], x[b, i * sh + 1]
            for j in range(wo):
                x0 = j * sw
                k = i * sh * w + x0
                t0, t1, t2, t3 = top[x0], top[x0 + 1], bottom[x0], bottom[x0 + 1]
                yo, ao = y[b, i, j], arg[b, i, j]
                for ch in range(c):
                    m, a = t0[ch], k
                    v = t1[ch]
                    take = v > m or v != v
                    m, a = (v, k + 1) if take else (m, a)
                    v = t2[ch]
                    take = v > m or v != v
                    m, a = (v, k + w) if take else (m, a)
                    v = t3[ch]
                    take = v > m or v != v
                    m, a = (v, k + w + 1) if take else (m, a)
                    yo[ch], ao[ch] = m, a
    return y


_FWD_2X2 = njit_pair(_max_pool_fwd_2x2)


def _max_pool_bwd(dy, arg, dx3):
    # dx3 is dx viewed as (N, H*W, C): the flat index argmax = y*W + x addresses it directly.
    n, _, c = dx3.shape
    _, ho, wo, _ = dy.shape
    for b in prange(n):
        dx3[b] = 0.0
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    dx3[b, arg[b, i, j, ch], ch] += dy[b, i, j, ch]
    return dx3


_BWD = njit_pair(_max_pool_bwd)


def max_pool_forward(
    x: np.ndarray,
    pool: tuple[int, int],
    stride: tuple[int, int],
    out: np.ndarray | None = None,
    argmax: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(y, argmax)``: the pooled maxima and each one's flat index y*W + x in its image.

    ``out`` and ``argmax`` (int32, shape of y) are optional reusable buffers.
    """
    shape = pool_output_shape(x.shape, pool, stride)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    if argmax is None:
        argmax = np.empty(shape, dtype=np.int32)
    x = np.ascontiguousarray(x)
    if tuple(pool) == (2, 2):
        call_on_policy(_FWD_2X2, 4, x.size, PARALLEL_MIN, x, stride[0], stride[1], out, argmax)
    else:
        args = (x, pool[0], pool[1], stride[0], stride[1], out, argmax)
        call_on_policy(_FWD, 4, x.size, PARALLEL_MIN, *args)
    return out, argmax


def _check_backward(
    dy: np.ndarray, argmax: np.ndarray, input_shape: tuple[int, ...], out: np.ndarray | None
) -> tuple[int, int, int, int]:
    where = "max_pool_backward"
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape):
        raise ValueError(f"{where}: input_shape must be 4 positive ints (N, H, W, C), got {shape}")
    n, h, w, c = (int(s) for s in shape)
    if not isinstance(argmax, np.ndarray) or argmax.dtype.kind not in "iu":
        raise TypeError(f"{where}: argmax must be the int array max_pool_forward returned")
    if not isinstance(dy, np.ndarray) or dy.shape != argmax.shape or dy.ndim != 4:
        got = getattr(dy, "shape", type(dy).__name__)
        raise ValueError(f"{where}: dy has shape {got}, expected the output shape {argmax.shape}")
    if dy.shape[0] != n or dy.shape[3] != c:
        raise ValueError(f"{where}: dy {dy.shape} does not match input_shape {shape} (N, C)")
    if argmax.size and (int(argmax.min()) < 0 or int(argmax.max()) >= h * w):
        raise ValueError(
            f"{where}: argmax holds indices outside [0, H*W) = [0, {h * w}) for input_shape "
            f"{shape}; pass the argmax that max_pool_forward returned for this input"
        )
    if out is not None and (out.shape != shape or out.dtype != dy.dtype):
        raise ValueError(f"{where}: out must have shape {shape} and dtype {dy.dtype}")
    return n, h, w, c


def max_pool_backward(
    dy: np.ndarray,
    argmax: np.ndarray,
    input_shape: tuple[int, int, int, int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """dx: each dy[n, i, j, c] added to the input pixel its maximum came from, zeros elsewhere.

    ``argmax`` must be what :func:`max_pool_forward` returned for this input: every index is
    checked to lie in [0, H*W) before anything is written (an index outside would write
    outside dx).
    """
    n, h, w, c = _check_backward(dy, argmax, input_shape, out)
    if out is None:
        out = np.empty(input_shape, dtype=dy.dtype)
    dx = out if out.flags.c_contiguous else np.empty(input_shape, dtype=out.dtype)
    args = (np.ascontiguousarray(dy), np.ascontiguousarray(argmax), dx.reshape(n, h * w, c))
    call_on_policy(_BWD, 4, out.size, PARALLEL_MIN, *args)
    if dx is not out:
        out[...] = dx
    return out
