"""Winograd F(2x2, 3x3) convolution of channels-last images: forward, dx and dW.

For a 3x3 stride-1 cross-correlation y = x * W (x: (N, H, W, C), W: (3, 3, C, Cout), zero
padding (top, bottom, left, right)), the output is cut into 2x2 tiles; tile t reads the 4x4
input patch d_t starting at (2 ti - top, 2 tj - left) (zeros outside the image) and

    U = G W G^T                  (per (c, o); 16 numbers per 3x3 kernel)
    V_t = B^T d_t B              (per channel c)
    M[k] = V[k] @ U[k]           for the 16 positions k of the 4x4 tile: 16 matrix products
    y_t = A^T M_t A              (+ b)

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

(Lavin & Gray 2016): 16 C Cout multiplications per 2x2 outputs instead of 36 C Cout, 2.25x
fewer. The last tile of an odd H or W is padded; its extra outputs are dropped. Backward is the
adjoint of each step, again 16 products per layer, with dy's transform done once for both:

    dM_t = A dy_t A^T            (dy zero beyond the output)
    dU[k] = V[k]^T @ dM[k]       (summed over tiles: dW accumulated in the transformed domain)
    dW = G^T dU G
    dV[k] = dM[k] @ U[k]^T,  dx += B dV_t B^T   (overlapping 4x4 patches added back)

which equals dx = the full convolution of dy with the flipped, channel-swapped kernel, and
dW = the correlation of x with dy, in exact arithmetic. The transforms are compiled Numba
loops over chunks of images small enough (``CHUNK_BYTES``) that each chunk's V and M stay in
cache between the transform, the products and the inverse transform.

Accuracy, float32, against a float64 direct convolution (``tests/kernels/test_winograd.py``,
the cifar10_cnn shapes at batch 32 and awkward ones): max |error| <= 2e-6 * max |reference|
for y, dx and dW. Measured: <= 3.6e-7 (y), 3.0e-7 (dx), 7.9e-7 (dW); im2col + BLAS 7.1e-7,
2.0e-7, 4.9e-7, PyTorch's float32 3.9e-7, 4.5e-7, 3.7e-6; float64: <= 1e-13 relative.
Threads: with ``bnlab.runtime.chunk_threads()`` T > 1, chunk i runs on thread i mod T (threads
of their own: serial transforms, BLAS on one thread), each summing dU over its chunks, the T
sums added in thread order; the forward cuts an image into bands of tile rows when there are
fewer images than threads. T = 1 is the serial code. The pieces depend on the shapes and T only
and every sum runs in a fixed order: the same inputs and threads give the same bits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bnlab._checks import check_ints, check_out
from bnlab.kernels._numba import call_on_policy, in_threads, njit, njit_pair, prange
from bnlab.kernels.batchnorm_fused import all_finite
from bnlab.kernels.winograd_weights import TransformCache, winograd_weights_grad
from bnlab.runtime import chunk_threads

__all__ = ["winograd_conv3x3", "winograd_conv3x3_backward", "CHUNK_BYTES"]

Pads = tuple[int, int, int, int]
Scratch = Callable[[str, tuple[int, ...], Any], np.ndarray]  # (purpose, shape, dtype) -> array

# V and M of one chunk of images take at most this many bytes (at least one image per chunk).
# Measured by benchmarks/bench_winograd.py on the cifar10_cnn layers (batch 32).
CHUNK_BYTES = 2 * 2**20

# Below this many elements a transform runs on one thread (a launch costs more).
PARALLEL_MIN = 1 << 16


@njit(cache=True)
def _at(m0, m1, m2, m3):  # A^T applied to a column
    return m0 + m1 + m2, m1 - m2 - m3


# Row r of B^T is e_r = d[I0[r]] + SIGN[r] d[I1[r]] (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
_I0, _I1, _SIGN = (0, 1, 2, 1), (2, 2, 1, 3), (-1.0, 1.0, -1.0, -1.0)


def _input_nb(x, pt, pl, th, tw, V):
    # V[4r + s, t, c] = (B^T d_t B)[r, s] for the tiles t = (b th + ti) tw + tj of this chunk,
    # separably, one row of tiles at a time: e[r] = B^T applied down the 4 input rows the
    # tile row reads (whole image rows, zero-padded to the 2 tw + 2 columns the tiles read),
    # then B along each tile's 4 columns of e[r]. Every loop runs over contiguous floats;
    # multiplying by the signs +-1 is exact.
    n, h, w, c = x.shape
    wp = 2 * tw + 2
    lo, hi = np.uint64(min(pl, wp) * c), np.uint64(min(pl + w, wp) * c)
    zero = np.zeros(w * c, x.dtype)
    for b in prange(n):
        e = np.zeros((4, wp * c), x.dtype)  # columns outside [pl, pl + w) stay zero
        for ti in range(th):
            for r in range(4):
                ya, yb, sg = 2 * ti - pt + _I0[r], 2 * ti - pt + _I1[r], _SIGN[r]
                ra = x[b, ya].reshape(-1) if 0 <= ya < h else zero
                rb = x[b, yb].reshape(-1) if 0 <= yb < h else zero
                er = e[r]
                for k in range(hi - lo):
                    er[lo + k] = ra[k] + sg * rb[k]
            t0 = (b * th + ti) * tw
            for r in range(4):
                er = e[r]
                for s in range(4):
                    ja, jb, sg = np.uint64(_I0[s] * c), np.uint64(_I1[s] * c), _SIGN[s]
                    out = V[4 * r + s]
                    for tj in range(tw):
                        orow, base = out[t0 + tj], np.uint64(2 * tj * c)
                        for ch in range(np.uint64(c)):
                            orow[ch] = er[base + ja + ch] + sg * er[base + jb + ch]
    return V


def _output_nb(M, bias, th, tw, y):
    # y_t = A^T M_t A + b (a column m of M_t gives m0 + m1 + m2 and m1 - m2 - m3; rows
    # likewise), the rows/columns beyond the output dropped.
    n, ho, wo, co = y.shape
    for b in prange(n):
        e = np.empty((2, 2, co), y.dtype)
        for ti in range(th):
            for tj in range(tw):
                t = (b * th + ti) * tw + tj
                for o in range(co):
                    c0 = _at(M[0, t, o], M[4, t, o], M[8, t, o], M[12, t, o])
                    c1 = _at(M[1, t, o], M[5, t, o], M[9, t, o], M[13, t, o])
                    c2 = _at(M[2, t, o], M[6, t, o], M[10, t, o], M[14, t, o])
                    c3 = _at(M[3, t, o], M[7, t, o], M[11, t, o], M[15, t, o])
                    r0 = _at(c0[0], c1[0], c2[0], c3[0])
                    r1 = _at(c0[1], c1[1], c2[1], c3[1])
                    e[0, 0, o] = r0[0] + bias[o]
                    e[0, 1, o] = r0[1] + bias[o]
                    e[1, 0, o] = r1[0] + bias[o]
                    e[1, 1, o] = r1[1] + bias[o]
                for i in range(min(2, ho - 2 * ti)):
                    for j in range(min(2, wo - 2 * tj)):
                        y[b, 2 * ti + i, 2 * tj + j, :] = e[i, j, :]
    return y


# A = [[1, 0], [1, 1], [1, -1], [0, -1]], for the adjoint of the output transform.
_A = ((1.0, 0.0), (1.0, 1.0), (1.0, -1.0), (0.0, -1.0))


def _output_grad_nb(dy, th, tw, dM):
    # dM_t = A dy_t A^T (dy zero beyond the output), separably per row of tiles: P[r] = A
    # applied down the tile row's 2 rows of dy (2 tw columns, the odd last one zero), then A
    # along each tile's 2 columns of P[r].
    n, ho, wo, co = dy.shape
    zero = np.zeros(wo * co, dy.dtype)
    for b in prange(n):
        P = np.zeros((4, 2 * tw * co), dy.dtype)
        for ti in range(th):
            u0 = dy[b, 2 * ti].reshape(-1)
            u1 = dy[b, 2 * ti + 1].reshape(-1) if 2 * ti + 1 < ho else zero
            for r in range(4):
                a0, a1 = _A[r]
                pr = P[r]
                for k in range(np.uint64(wo * co)):
                    pr[k] = a0 * u0[k] + a1 * u1[k]
            t0 = (b * th + ti) * tw
            for r in range(4):
                pr = P[r]
                for s in range(4):
                    a0, a1 = _A[s]
                    out = dM[4 * r + s]
                    for tj in range(tw):
                        orow, base = out[t0 + tj], np.uint64(2 * tj * co)
                        for o in range(np.uint64(co)):
                            orow[o] = a0 * pr[base + o] + a1 * pr[base + co + o]
    return dM


def _input_grad_nb(dV, pt, pl, th, tw, dx):
    # dx = sum over tiles of B dV_t B^T added at the tile's 4x4 patch, separably per row of
    # tiles: R[i] = the tiles' rows i times B^T, overlapping tiles added along the row (tj
    # ascending), then B down the rows, added into dx's 4 rows the tile row covers. B's rows
    # are (v0, v1 - v2 + v3, v1 + v2 - v0, -v3).
    n, h, w, c = dx.shape
    wp = 2 * tw + 2
    lo, hi = np.uint64(min(pl, wp) * c), np.uint64(min(pl + w, wp) * c)
    for b in prange(n):
        dx[b] = 0.0
        R = np.empty((4, wp * c), dx.dtype)
        for ti in range(th):
            R[:] = 0.0
            t0 = (b * th + ti) * tw
            for i in range(4):
                ri = R[i]
                for tj in range(tw):
                    a0, a1 = dV[4 * i, t0 + tj], dV[4 * i + 1, t0 + tj]
                    a2, a3 = dV[4 * i + 2, t0 + tj], dV[4 * i + 3, t0 + tj]
                    base = np.uint64(2 * tj * c)
                    for ch in range(np.uint64(c)):  # columns of B: a0, a1 - a2 + a3, ...
                        ri[base + ch] += a0[ch]
                        ri[base + c + ch] += (a1[ch] - a2[ch]) + a3[ch]
                        ri[base + 2 * c + ch] += (a1[ch] + a2[ch]) - a0[ch]
                        ri[base + 3 * c + ch] -= a3[ch]
            for r in range(4):
                yy = 2 * ti - pt + r
                if 0 <= yy < h:
                    drow = dx[b, yy].reshape(-1)
                    r0, r1, r2, r3 = R[0, lo:hi], R[1, lo:hi], R[2, lo:hi], R[3, lo:hi]
                    for k in range(hi - lo):
                        if r == 0:
                            drow[k] += r0[k]
                        elif r == 1:
                            drow[k] += (r1[k] - r2[k]) + r3[k]
                        elif r == 2:
                            drow[k] += (r1[k] + r2[k]) - r0[k]
                        else:
                            drow[k] -= r3[k]
    return dx


# serial twins release the GIL: chunks of images run on threads of their own (in_threads)
_INPUT = njit_pair(_input_nb, nogil=True)
_OUTPUT = njit_pair(_output_nb, nogil=True)
_OUTPUT_GRAD = njit_pair(_output_grad_nb, nogil=True)
_INPUT_GRAD = njit_pair(_input_grad_nb, nogil=True)


def _geometry(x_shape: tuple[int, ...], pads: Pads) -> tuple[int, int, int, int]:
    """(Ho, Wo, th, tw): the output size of a 3x3 stride-1 convolution and its 2x2 tile grid."""
    n, h, w, c = x_shape
    pt, pb, pl, pr = pads
    ho, wo = h + pt + pb - 2, w + pl + pr - 2
    if ho < 1 or wo < 1 or min(pads) < 0:
        raise ValueError(
            f"winograd: a 3x3 kernel with padding {pads} does not fit input of shape {x_shape}"
        )
    return ho, wo, (ho + 1) // 2, (wo + 1) // 2


def _empty(purpose: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:  # no scratch
    return np.empty(shape, dtype)


def _arrays(get: Scratch, t: int, size: int, k: int, c: int, cout: int, dtype: Any) -> Any:
    """V (16, k, C), M (16, k, Cout): views of thread t's buffers of ``size`` tiles (made for
    every t with k = 0 before the threads start: a scratch pool is not thread-safe)."""
    V = get(f"winograd V{t}", (16 * size * c,), dtype)[: 16 * k * c].reshape(16, k, c)
    M = get(f"winograd M{t}", (16 * size * cout,), dtype)[: 16 * k * cout].reshape(16, k, cout)
    return V, M


def _check(x: Any, W: Any, name: str, pads: Any, b: Any = None) -> None:
    """An error naming it unless x, W are float32/64 arrays that fit, pads 4 ints >= 0, b (C,)."""
    ok = type(x) is type(W) is np.ndarray and x.ndim == W.ndim == 4 and x.dtype == W.dtype
    if not ok or W.shape[:3] != (3, 3, x.shape[3]) or x.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"{name}: x must be (N, H, W, C) and W (3, 3, C, Cout) of the same float dtype "
            f"(float32/64), got {getattr(x, 'dtype', x)!r:.30} {np.shape(x)} and {np.shape(W)}"
        )
    check_ints(pads, "pads", 4, where=name)
    if b is not None and (np.shape(b) != (W.shape[3],) or np.asarray(b).dtype.kind not in "fiu"):
        raise ValueError(f"{name}: b must be ({W.shape[3]},) real numbers, got {b!r:.40}")


def winograd_conv3x3(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None = None,
    pads: Pads = (1, 1, 1, 1),
    out: np.ndarray | None = None,
    chunk_bytes: int | None = None,
    scratch: Scratch | None = None,
    cache: TransformCache | None = None,
    finite_out: list[bool] | None = None,
) -> np.ndarray:
    """y[n, i, j, o] = b[o] + sum_{p, q, c} xpad[n, i + p, j + q, c] W[p, q, c, o] by F(2x2, 3x3).

    ``x`` (N, H, W, C) and ``W`` (3, 3, C, Cout) share a float dtype; ``b``, if given, has
    shape (Cout,); ``pads`` is (top, bottom, left, right) zero padding; ``out``, if given, a
    C-contiguous (N, Ho, Wo, Cout) array; ``chunk_bytes`` (default ``CHUNK_BYTES``) bounds the
    transformed tensors of one chunk of images; ``scratch``, if given, ``scratch(purpose,
    shape, dtype)`` returns the work arrays (a layer's reused buffers, e.g. ``BufferPool.get``:
    a fresh process pays page faults for fresh ones); ``cache``, if given, keeps U between
    calls (:class:`~bnlab.kernels.winograd_weights.TransformCache`: the bits of a fresh U);
    ``finite_out``, if given, gets one bool per piece of work, in the order the pieces finish:
    whether every value written to ``out`` is finite (checked while the piece is in cache, on
    its thread).
    """
    _check(x, W, "winograd_conv3x3", pads, b)
    n, _, _, c = x.shape
    cout = W.shape[3]
    shape = (n, *_geometry(x.shape, pads)[:2], cout)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    check_out(out, shape, x.dtype, x, where="winograd_conv3x3")  # out = x: bands read it late
    bias = np.zeros(cout, x.dtype) if b is None else np.asarray(b).astype(x.dtype, copy=False)
    x, get = np.ascontiguousarray(x), scratch or _empty
    U = (cache or TransformCache()).get(W)
    pieces = _pieces(x, cout, pads, chunk_bytes, threads := chunk_threads())
    threads, tiles = min(threads, len(pieces)), max(k for *_, k in pieces)
    [_arrays(get, t, tiles, 0, c, cout, x.dtype) for t in range(threads)]

    def work(t: int) -> None:  # pieces t, t + threads, ...
        for s, rows, p, orows, k in pieces[t::threads]:
            V, M = _arrays(get, t, tiles, k, c, cout, x.dtype)
            xs = x[s, rows]
            th, tw = _geometry(xs.shape, p)[2:]
            _run(_INPUT, threads, V.size, xs, p[0], p[2], th, tw, V)
            np.matmul(V, U, out=M)
            _run(_OUTPUT, threads, M.size, M, bias, th, tw, out[s, orows])
            if finite_out is not None:
                finite_out.append(bool(all_finite(out[s, orows])))

    in_threads(threads, work)
    return out


# Bands of one image go to threads of their own only with this many multiply-adds each: at
# 2-4M per image (cifar10_cnn, batch 1) handing a band over cost more than it saved (measured).
BAND_MIN_MACS = 2**23


def _pieces(
    x: np.ndarray, cout: int, pads: Pads, chunk_bytes: int | None, threads: int
) -> list[tuple[slice, slice, Pads, slice, int]]:
    """Pieces of work (images, input rows, their pads, output rows, tiles): chunks of whole
    images (V and M in ``chunk_bytes``, at most ceil(N / threads) images), or with fewer
    images than threads (pads <= 2) bands of tile rows [a, b) of each: input rows [2a - top,
    2b - top + 2) cut to the image (the rest counted as padding), output rows [2a, 2b) cut
    to Ho. Each tile gets the same sums either way (BLAS may round a one-tile product apart)."""
    n, h, _, c = x.shape
    ho, _, th, tw = _geometry(x.shape, pads)
    bands = min(-(-threads // n), th, max(1, 16 * th * tw * c * cout // BAND_MIN_MACS))
    if n >= threads or bands < 2 or max(pads) > 2:
        step = (chunk_bytes or CHUNK_BYTES) // (16 * th * tw * (c + cout) * x.itemsize)
        step = min(max(1, step), -(-n // threads))  # a chunk's V, M fit chunk_bytes
        rows, every = slice(0, h), slice(0, ho)
        return [(slice(s, s + step), rows, pads, every, min(step, n - s) * th * tw)
                for s in range(0, n, step)]  # fmt: skip
    pieces = []
    for i in range(n):
        for j in range(bands):
            a, b = j * th // bands, (j + 1) * th // bands
            r0, r1, y1 = max(0, 2 * a - pads[0]), min(h, 2 * b - pads[0] + 2), min(2 * b, ho)
            top = pads[0] - 2 * a + r0
            p = (top, y1 - 2 * a + 2 - (r1 - r0) - top, pads[2], pads[3])
            pieces.append((slice(i, i + 1), slice(r0, r1), p, slice(2 * a, y1), (b - a) * tw))
    return pieces


def winograd_conv3x3_backward(
    x: np.ndarray,
    W: np.ndarray,
    dy: np.ndarray,
    pads: Pads = (1, 1, 1, 1),
    need_dx: bool = True,
    dx_out: np.ndarray | None = None,
    chunk_bytes: int | None = None,
    scratch: Scratch | None = None,
    dW_out: np.ndarray | None = None,
    cache: TransformCache | None = None,
    finite_out: list[bool] | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """(dx, dW) of :func:`winograd_conv3x3` for the output gradient ``dy`` (N, Ho, Wo, Cout).

    dx[n, y, x, c] = sum_{i, j, o} dy[n, i, j, o] W[y + top - i, x + left - j, c, o] (the full
    convolution with the flipped kernel) and dW[p, q, c, o] = sum_{n, i, j} xpad[n, i + p,
    j + q, c] dy[n, i, j, o], both through the transforms' adjoints (module docstring); db is
    the caller's sum of dy. ``dx_out``/``dW_out``, if given, are C-contiguous arrays of x's
    / W's shape; ``chunk_bytes`` (dW's sum over chunks rounds with it), ``scratch`` and
    ``cache`` (U and U^T) and ``finite_out`` (of dx) as in :func:`winograd_conv3x3`.
    """
    where = "winograd_conv3x3_backward"
    _check(x, W, where, pads)
    n, _, _, c = x.shape
    cout = W.shape[3]
    ho, wo, th, tw = _geometry(x.shape, pads)
    if np.shape(dy) != (n, ho, wo, cout) or np.asarray(dy).dtype.kind != "f":
        raise ValueError(f"{where}: dy must be a float {(n, ho, wo, cout)} array, got {dy!r:.60}")
    dx = (np.empty(x.shape, x.dtype) if dx_out is None else dx_out) if need_dx else None
    for name, o, want in (("dx_out", dx, x.shape), ("dW_out", dW_out, W.shape)):
        if o is not None:  # apart from x, W and dy: each is read while these are written
            check_out(o, want, x.dtype, x, W, dy, where=where, name=name)
    x, dy, get = np.ascontiguousarray(x), np.ascontiguousarray(dy, dtype=x.dtype), scratch or _empty
    cache = cache or TransformCache()
    cache.get(W)
    UT = cache.transposed()  # U^T of W: faster in the product than a view of U
    chunks = _pieces(x, cout, pads, chunk_bytes, 1)  # dW's rounding: as with one thread
    threads, tiles = min(chunk_threads(), len(chunks)), chunks[0][-1]
    [_arrays(get, t, tiles, 0, c, cout, x.dtype) for t in range(threads)]
    sums = [get(f"winograd dU{t}", (16, c, cout), x.dtype) for t in range(threads)]
    parts = [get(f"winograd dU part{t}", (16, c, cout), x.dtype) for t in range(threads)]

    def work(t: int) -> None:  # thread t's chunks; dU summed per thread in chunk order
        for i, (s, *_, k) in enumerate(chunks[t::threads]):
            V, dM = _arrays(get, t, tiles, k, c, cout, x.dtype)
            _run(_INPUT, threads, V.size, x[s], pads[0], pads[2], th, tw, V)
            _run(_OUTPUT_GRAD, threads, dM.size, dy[s], th, tw, dM)
            np.matmul(V.transpose(0, 2, 1), dM, out=sums[t] if i == 0 else parts[t])
            if i > 0:
                sums[t] += parts[t]
            if dx is not None:
                np.matmul(dM, UT, out=V)  # dV, in V's buffer
                _run(_INPUT_GRAD, threads, V.size, V, pads[0], pads[2], th, tw, dx[s])
                if finite_out is not None:
                    finite_out.append(bool(all_finite(dx[s])))

    in_threads(threads, work)
    for t in range(1, threads):  # in thread order: the same bits for the same thread count
        sums[0] += sums[t]
    return dx, winograd_weights_grad(sums[0], dW_out)


def _run(pair: Any, threads: int, size: int, *args: Any) -> None:
    """One transform: its serial twin when chunks run on ``threads`` > 1 threads of their
    own, else on the runtime's policy (a parallel loop for a large chunk)."""
    if threads > 1:
        pair[0](*args)
    else:
        call_on_policy(pair, 4, size, PARALLEL_MIN, *args)
