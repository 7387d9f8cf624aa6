"""2-D convolution over channels-last images: im2col + one BLAS product, or Winograd F(2x2, 3x3)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from bnlab._checks import as_float_array
from bnlab.initializers import InitSpec, initializer_config
from bnlab.kernels._numba import in_threads
from bnlab.kernels.batchnorm_fused import all_finite
from bnlab.kernels.im2col import add_bias, col2im, conv_output_size, im2col, same_padding
from bnlab.kernels.winograd import winograd_conv3x3, winograd_conv3x3_backward
from bnlab.kernels.winograd_weights import TransformCache
from bnlab.layers._common import (
    BufferPool,
    InputShapeError,
    float_input,
    last_axis,
    like_input,
    output_buffer,
    pair,
)
from bnlab.layers._weights import check_weights, init_kernel_and_bias, regularizer_config
from bnlab.layers.base import Layer
from bnlab.runtime import chunk_threads, one_blas_thread

__all__ = ["Conv2D"]

# Unfolded patches of at most this many bytes are built at once; bigger batches (evaluation)
# are convolved in chunks of images and their patches rebuilt in backward.
MAX_COLS_BYTES = 96 * 2**20
# With chunk threads, im2col's pieces hold about this many bytes of patches (see _pieces).
PIECE_BYTES = 4 * 2**20

ALGORITHMS = ("auto", "im2col", "winograd")
# algorithm="auto" takes Winograd for 3x3 stride-1 layers with at least this many input
# channels. Measured (2026-12-07, benchmarks/bench_winograd.py --threads 1 --clock cpu and the
# same timing over cin, batch 32, "same" padding, min of 25 alternating calls): forward + dW +
# dx in ms, im2col / winograd, 32x32 -> 32 and 16x16 -> 64: cin 3: 3.9 / 5.3, 1.5 / 2.3;
# cin 4: 4.5 / 5.7, 1.7 / 2.2; cin 8: 8.7 / 7.2, 3.0 / 2.7; cin 16: 17.9 / 9.2, 5.8 / 3.8.
# With few channels Winograd's dW, a product (C, tiles) @ (tiles, Cout), and its transforms
# cost more than the multiplications saved.
WINOGRAD_MIN_CHANNELS = 8

_M = TypeVar("_M", bound=Callable[..., Any])


def _refuse_overflow(method: _M) -> _M:
    """``forward(x)``/``backward(dy)`` without NumPy's RuntimeWarnings, refusing an overflow.

    The same rule for both algorithms: a non-finite result (output; in backward also dW, db)
    computed from finite values (input, dy, W, b) is an overflow of the dtype and raises
    FloatingPointError, the layer left as before (grads, saved input); NaN or Inf already in
    the input or weights pass through, as in PyTorch (the loss or a BN layer refuses them).
    """

    @functools.wraps(method)
    def checked(self: Conv2D, a: Any, **kw: Any) -> Any:
        backward = method.__name__ == "backward"
        grads = {k: g.copy() for k, g in self.grads.items()} if backward else {}
        saved = self._x, self._cols

        def restore() -> None:  # the pooled patches hold this call's input: unfold again
            self._x, self._cols = saved[0], None
            for k, g in grads.items():
                if isinstance(self.grads.get(k), np.ndarray):
                    self.grads[k][...] = g

        flags: list[bool] = []  # the pieces' checks of what they wrote (out or dx)
        self._finite_out = flags
        try:  # any failure (a chunk thread's too) leaves the layer as it was
            with np.errstate(over="ignore", invalid="ignore"):
                out = method(self, a, **kw)
        except BaseException:
            restore()
            raise
        results = list(self.grads.values()) * backward
        if out is not None and not (flags and out.dtype == self.params["W"].dtype):
            results.append(out)  # not checked piece by piece (float16 out: cast after)
        if all(flags) and all(_finite(r) for r in results):
            return out
        sources = [np.asarray(a), *self.params.values()]
        sources += [saved[0]] if backward and saved[0] is not None else []
        if not all(np.isfinite(v).all() for v in sources):
            return out  # NaN/Inf in, NaN/Inf out
        restore()
        big = max(float(np.abs(v).max(initial=0)) for v in sources)
        outs = [] if out is None else [out]
        raise FloatingPointError(
            f"{self.describe()}.{method.__name__}: finite values (up to {big:.3g} in magnitude) "
            f"gave a non-finite result: it overflowed {np.result_type(*results, *outs)}; scale the "
            "input down (or use float64: model.astype(np.float64)); nothing was changed"
        )

    return checked  # type: ignore[return-value]


def _finite(a: np.ndarray) -> bool:
    """``np.isfinite(a).all()``, in one compiled pass without a temporary for float32/64.

    The outputs themselves (4.4 M values in a cifar10_cnn step: 1.0-1.5 ms with NumPy's two
    passes, 1.0 ms compiled after the fact) are checked piece by piece where they are written,
    on the pieces' threads (``_finite_out``)."""
    if a.dtype == np.float32 or a.dtype == np.float64:
        return bool(all_finite(a))
    return bool(np.isfinite(a).all())


class Conv2D(Layer):
    """Cross-correlation as Keras' Conv2D / ``torch.nn.Conv2d``, NHWC, kernel (kh, kw, cin, cout).

    y[n, i, j, o] = b[o] + sum_{p, q, c} xpad[n, i*sh + p, j*sw + q, c] W[p, q, c, o],
    computed as ``im2col(x) @ W.reshape(kh*kw*cin, cout)``. Backward:
    dW = cols^T dy, db = sum dy, dx = col2im(dy W^T).

    ``padding``: "valid" (none), "same" (TensorFlow's: output ceil(H / stride), the odd
    padding pixel at the bottom/right) or an int p (p zeros on every side, as torch).

    ``algorithm``: "im2col" (above), "winograd" (:mod:`bnlab.kernels.winograd`: F(2x2, 3x3),
    2.25x fewer multiplications, for 3x3 stride-1 kernels; other kernels fall back to im2col)
    or "auto" (Winograd for 3x3 stride-1 layers with ``in_channels >= WINOGRAD_MIN_CHANNELS``,
    else im2col). The weights and the function computed are the same; the rounding differs
    (float32: within 1e-5 of the output's scale, see the Winograd module).
    """

    def __init__(
        self,
        in_channels: int | None,
        out_channels: int | tuple[int, int],
        kernel_size: int | tuple[int, int] | None = None,
        *,
        stride: int | tuple[int, int] = 1,
        padding: str | int = "valid",
        use_bias: bool = True,
        init: InitSpec = "glorot_uniform",
        seed: int | np.random.Generator | None = None,
        kernel_regularizer: Any = None,
        algorithm: str = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if kernel_size is None:  # Conv2D(filters, kernel_size): in_channels from the input
            in_channels, out_channels, kernel_size = None, in_channels, out_channels  # type: ignore[assignment]
        if algorithm not in ALGORITHMS:
            raise ValueError(f"Conv2D: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if (value is not None or arg == "out_channels") and (
                not isinstance(value, (int, np.integer)) or value < 1
            ):
                raise ValueError(f"Conv2D: {arg} must be a positive int, got {value!r}")
        self.in_channels = None if in_channels is None else int(in_channels)
        self.out_channels = int(out_channels)  # type: ignore[arg-type]  # checked above
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2D")
        self.stride = pair(stride, "stride", "Conv2D")
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(
                    f"Conv2D: padding must be 'valid', 'same' or an int, got {padding!r}"
                )
        elif not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(
                f"Conv2D: padding must be 'valid', 'same' or an int >= 0, got {padding!r}"
            )
        self.padding: str | int = padding if isinstance(padding, str) else int(padding)
        self.use_bias = bool(use_bias)
        self.algorithm = algorithm
        self.init, self.seed = init, seed
        self._kernel_regularizer = kernel_regularizer
        if self.in_channels is not None:
            self.build((1, 1, 1, self.in_channels))
        self.reuse_output = False
        self._pool = BufferPool()
        self._x: np.ndarray | None = None
        self._finite_out: list[bool] = []  # see _refuse_overflow
        self._cols: np.ndarray | None = None  # patches of the whole batch, when they fit
        self._transformed = TransformCache()  # Winograd's U: recomputed when W's bytes change

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create W (kh, kw, in_channels, out_channels), in_channels = the input's last axis."""
        if "W" not in self.params:
            self.in_channels = last_axis(input_shape, self.describe())
            shape = (*self.kernel_size, self.in_channels, self.out_channels)
            reg = self._kernel_regularizer
            init_kernel_and_bias(self, shape, self.init, self.seed, self.use_bias, reg)

    def describe(self) -> str:
        kh, kw = self.kernel_size
        return f"Conv2D({self.in_channels}->{self.out_channels}, {kh}x{kw})"

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        """W's shape, (kh, kw, in_channels, out_channels) (in_channels 0 until built)."""
        return (*self.kernel_size, self.in_channels or 0, self.out_channels)

    @property
    def winograd(self) -> bool:
        """True when forward and backward run Winograd F(2x2, 3x3) (see ``algorithm``)."""
        if self.kernel_size != (3, 3) or self.stride != (1, 1) or self.algorithm == "im2col":
            return False
        channels = self.in_channels or 0  # a lazy layer decides once it is built
        return self.algorithm == "winograd" or channels >= WINOGRAD_MIN_CHANNELS

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zero padding for an h x w image."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if self.padding == "same":
            return (*same_padding(h, kh, sh), *same_padding(w, kw, sw))
        p = 0 if self.padding == "valid" else int(self.padding)
        return (p, p, p, p)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        expected = f"(N, H, W, {self.in_channels})"
        if len(input_shape) != 4 or self.in_channels not in (None, input_shape[3]):
            raise InputShapeError(self.describe(), expected, input_shape)
        n, h, w, _ = input_shape
        pt, pb, pl, pr = self.pads(h, w)
        ho = conv_output_size(h, self.kernel_size[0], self.stride[0], pt + pb)
        wo = conv_output_size(w, self.kernel_size[1], self.stride[1], pl + pr)
        if ho < 1 or wo < 1:
            raise InputShapeError(self.describe(), f"{expected} with H, W >= kernel", input_shape)
        return (n, ho, wo, self.out_channels)

    def _chunk(self, input_shape: tuple[int, ...], dtype: Any) -> int:
        """How many images' patches fit ``MAX_COLS_BYTES`` (at least one)."""
        return max(1, MAX_COLS_BYTES // self._patch_bytes(input_shape, dtype))

    def _patch_bytes(self, input_shape: tuple[int, ...], dtype: Any) -> int:
        """Bytes of one image's unfolded patches."""
        _, ho, wo, _ = self.output_shape(input_shape)
        kh, kw = self.kernel_size
        return ho * wo * kh * kw * input_shape[3] * np.dtype(dtype).itemsize

    def _unfold(self, x: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """im2col of ``x`` into ``cols`` (N Ho Wo, kh kw C)."""
        return im2col(x, self.kernel_size, self.stride, self.pads(*x.shape[1:3]), out=cols)

    def _pieces(self, input_shape: tuple[int, ...], dtype: Any) -> tuple[int, int, int, int]:
        """(N, images per piece, threads, Ho Wo) of im2col's pieces of work. One thread: the
        chunks of ``MAX_COLS_BYTES`` (the whole batch when it fits). ``chunk_threads()`` T > 1:
        a multiple of T pieces of about ``PIECE_BYTES`` of patches each, piece i on thread
        i mod T (BLAS on one thread in each)."""
        n, (_, ho, wo, _) = input_shape[0], self.output_shape(input_shape)
        step, threads = self._chunk(input_shape, dtype), chunk_threads()
        if threads > 1:
            per_image = self._patch_bytes(input_shape, dtype)
            count = threads * max(1, -(-n * per_image // (threads * PIECE_BYTES)))
            step = min(step, -(-n // count))
        step = min(step, n)
        return n, step, min(threads, -(-n // step)), ho * wo

    @one_blas_thread
    @_refuse_overflow
    def forward(self, x: np.ndarray) -> np.ndarray:
        """y = im2col(x) @ W2d + b, reshaped to (N, Ho, Wo, cout)."""
        self.build(np.shape(x))  # a lazy Conv2D(filters, kernel_size): W from the first input
        W = check_weights(self.params, self.kernel_shape, self)
        arr = float_input(x, self.describe(), 4)
        out_shape = self.output_shape(arr.shape)
        arr = np.ascontiguousarray(arr, dtype=W.dtype)
        W2d = W.reshape(-1, self.out_channels)
        y = output_buffer(self._pool, self.reuse_output, "y", out_shape, W.dtype)
        self._x, self._cols = arr, None
        if self.winograd:
            bias = self.params["b"] if self.use_bias else None
            pads = self.pads(*arr.shape[1:3])
            get, cache, flags = self._pool.get, self._transformed, self._finite_out
            winograd_conv3x3(arr, W, bias, pads, y, scratch=get, cache=cache, finite_out=flags)
            return like_input(y, x)
        self._forward_im2col(arr, W2d, y.reshape(-1, self.out_channels))
        return like_input(y, x)

    def _forward_im2col(self, x: np.ndarray, W2d: np.ndarray, y2d: np.ndarray) -> None:
        """y2d = im2col(x) @ W2d + b, piece by piece of images (``_pieces``); the batch's
        patches are kept for backward when they fit ``MAX_COLS_BYTES``."""
        n, step, threads, rows = self._pieces(x.shape, W2d.dtype)
        fits = n <= self._chunk(x.shape, W2d.dtype)
        k, bias = W2d.shape[0], self.params["b"] if self.use_bias else None
        whole = self._pool.get("cols", (n * rows, k), W2d.dtype) if fits else None
        get, size = self._pool.get, (step * rows, k)
        bufs = [get(f"cols{t}", size, x.dtype) for t in range(threads) if not fits]

        def work(t: int) -> None:  # pieces t, t + threads, ...
            for s in range(t * step, n, threads * step):
                r0, r1 = s * rows, min(s + step, n) * rows
                cols = whole[r0:r1] if whole is not None else bufs[t][: r1 - r0]
                self._unfold(x[s : s + step], cols)
                np.matmul(cols, W2d, out=y2d[r0:r1])
                if bias is not None and bias.dtype == y2d.dtype:
                    add_bias(y2d[r0:r1], bias)  # the same additions as += bias, faster
                elif bias is not None:
                    y2d[r0:r1] += bias
                self._finite_out.append(bool(all_finite(y2d[r0:r1])))

        in_threads(threads, work)
        self._cols = whole

    @one_blas_thread
    @_refuse_overflow
    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """Write dW, db = sum dy into ``grads``; return dx (None if not ``need_input_grad``)."""
        if self._x is None:
            raise RuntimeError(f"{self.describe()}.backward called before forward")
        x, W = self._x, check_weights(self.params, self.kernel_shape, self)
        check_weights(self.grads, self.kernel_shape, self, W.dtype)
        out_shape, where = self.output_shape(x.shape), f"{self.describe()}.backward"
        if np.shape(dy) != out_shape:
            raise ValueError(f"{where}: dy must have shape {out_shape}, got {np.shape(dy)}")
        if np.asarray(dy).dtype.kind != "f":
            as_float_array(dy, "dy", where=where)  # raises: no silent cast of ints, complex
        dy2d = np.ascontiguousarray(dy, dtype=W.dtype).reshape(-1, self.out_channels)
        if self.use_bias:
            ones = self._pool.get("ones", (dy2d.shape[0],), W.dtype)
            ones.fill(1)
            np.matmul(ones, dy2d, out=self.grads["b"])
        dx = (
            output_buffer(self._pool, self.reuse_output, "dx", x.shape, W.dtype)
            if need_input_grad
            else None
        )
        if self.winograd:
            pads = self.pads(*x.shape[1:3])
            dy4 = dy2d.reshape(out_shape)
            gW, cache, get = self.grads["W"], self._transformed, self._pool.get
            args = (x, W, dy4, pads, dx is not None, dx)
            flags = self._finite_out
            winograd_conv3x3_backward(*args, scratch=get, dW_out=gW, cache=cache, finite_out=flags)
        else:
            self._backward_im2col(x, dy2d, dx)
        return dx

    def _backward_im2col(self, x: np.ndarray, dy2d: np.ndarray, dx: np.ndarray | None) -> None:
        """dW = cols^T dy2d into ``grads``, dx = col2im(dy2d W2d^T), piece by piece of images
        (``_pieces``): each thread sums dW over its pieces in order, the threads' sums added
        in thread order (one thread: the chunks' products summed in order)."""
        W = self.params["W"]
        W2d, gW = W.reshape(-1, self.out_channels), self.grads["W"].reshape(-1, self.out_channels)
        n, step, threads, rows = self._pieces(x.shape, W.dtype)
        size, get = (step * rows, W2d.shape[0]), self._pool.get
        unfold = self._cols is None  # forward's patches were not kept: unfold again
        cols_bufs = [get(f"cols{t}", size, W.dtype) for t in range(threads) if unfold]
        dcols_bufs = [get(f"dcols{t}", size, W.dtype) for t in range(threads) if dx is not None]
        sums = [gW] + [get(f"dW{t}", gW.shape, W.dtype) for t in range(1, threads)]
        parts = [get(f"dW part{t}", gW.shape, W.dtype) for t in range(threads)]
        pads = self.pads(*x.shape[1:3])

        def work(t: int) -> None:  # pieces t, t + threads, ...
            for i, s in enumerate(range(t * step, n, threads * step)):
                r0, r1, xs = s * rows, min(s + step, n) * rows, x[s : s + step]
                if self._cols is None:
                    cols = self._unfold(xs, cols_bufs[t][: r1 - r0])
                else:
                    cols = self._cols[r0:r1]
                np.matmul(cols.T, dy2d[r0:r1], out=sums[t] if i == 0 else parts[t])
                if i > 0:
                    sums[t] += parts[t]
                if dx is not None:
                    dcols = dcols_bufs[t][: r1 - r0]
                    np.matmul(dy2d[r0:r1], W2d.T, out=dcols)
                    col2im(
                        dcols, xs.shape, self.kernel_size, self.stride, pads, out=dx[s : s + step]
                    )
                    self._finite_out.append(bool(all_finite(dx[s : s + step])))

        in_threads(threads, work)
        for t in range(1, threads):  # in thread order: the same bits for the same thread count
            gW += sums[t]

    def astype(self, dtype: Any) -> Conv2D:
        super().astype(dtype)
        self._pool.clear()
        self._cols = None
        self._transformed.clear()
        return self

    def get_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding,
            "use_bias": self.use_bias,
            "init": initializer_config(self.init),
            "seed": self.seed if isinstance(self.seed, (int, type(None))) else None,
            "kernel_regularizer": regularizer_config(self.regularizers.get("W")),
            "algorithm": self.algorithm,
            "name": self.name,
        }
