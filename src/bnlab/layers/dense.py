"""Fully connected layer: y = x W + b, W of shape (in_features, out_features)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import as_float_array
from bnlab.initializers import InitSpec, initializer_config
from bnlab.kernels._numba import in_threads
from bnlab.kernels.dense import column_sums
from bnlab.kernels.im2col import add_bias
from bnlab.layers._common import (
    BufferPool,
    InputShapeError,
    float_input,
    last_axis,
    like_input,
    output_buffer,
)
from bnlab.layers._weights import (
    build_regularizer,
    check_weights,
    init_kernel_and_bias,
    regularizer_config,
)
from bnlab.layers.base import Layer
from bnlab.runtime import chunk_threads, one_blas_thread

__all__ = ["Dense", "regularizer_config", "build_regularizer"]

# A layer of at least this many weights cuts its products by output columns over
# ``chunk_threads()``, BLAS on one thread in each (smaller ones gain nothing, and OpenBLAS
# rounds their last columns apart when cut; 2304 x 512 at batch 1 and 32: the same bits).
# Measured and not kept: an MLP's 784 -> 100 (batch 60) cut in blocks of rows on Numba's
# threads instead (one BLAS call per block through ctypes, a few us to launch where this pool
# costs 50-80 us) took its forward and dW products from 108 / 106 to 71 / 64 us inside the
# step, but 2 of 10 fresh processes then ran every step ~45% slower (455 -> 670 us; Numba's
# worker spinning on the other core between the loops), and with the worker sleeping instead
# (OMP_WAIT_POLICY=passive) every process did (620-780 us: a wake-up costs ~100 us here).
SPLIT_MIN_WEIGHTS = 2**18


class Dense(Layer):
    """Fully connected layer, ``torch.nn.Linear`` with the kernel stored transposed (Keras).

    Forward: y = x W + b for x of shape (N, in_features).
    Backward: dW = x^T dy, db = sum_n dy, dx = dy W^T.

    >>> import numpy as np
    >>> layer = Dense(4, 3, seed=0)
    >>> layer.forward(np.ones((2, 4), np.float32)).shape
    (2, 3)
    """

    def __init__(
        self,
        in_features: int | None,
        out_features: int | None = None,
        *,
        use_bias: bool = True,
        init: InitSpec = "glorot_uniform",
        seed: int | np.random.Generator | None = None,
        kernel_regularizer: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if out_features is None:  # Dense(units): in_features from the input (build)
            in_features, out_features = None, in_features
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if (value is not None or arg == "out_features") and (
                not isinstance(value, (int, np.integer)) or value < 1
            ):
                raise ValueError(f"Dense: {arg} must be a positive int, got {value!r}")
        self.in_features = None if in_features is None else int(in_features)
        self.out_features = int(out_features)  # type: ignore[arg-type]  # checked above
        self.use_bias = bool(use_bias)
        self.init = init
        self.seed = seed
        self._kernel_regularizer = kernel_regularizer
        if self.in_features is not None:
            self.build((1, self.in_features))
        self.reuse_output = False
        self._pool = BufferPool()
        self._x: np.ndarray | None = None

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create W (in_features x out_features, in_features = the input's last axis) and b."""
        if "W" not in self.params:
            self.in_features = last_axis(input_shape, self.describe())
            shape = (self.in_features, self.out_features)
            reg = self._kernel_regularizer
            init_kernel_and_bias(self, shape, self.init, self.seed, self.use_bias, reg)

    def describe(self) -> str:
        return f"Dense({self.in_features}->{self.out_features})"

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """W's shape, (in_features, out_features) (in_features 0 until built)."""
        return (self.in_features or 0, self.out_features)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or self.in_features not in (None, input_shape[1]):
            raise InputShapeError(self.describe(), f"(N, {self.in_features})", input_shape)
        return (input_shape[0], self.out_features)

    def blas_on_one_thread(self, data: Any) -> bool:
        """BLAS on one thread (``bnlab.runtime.one_blas_thread``) except for one example at a
        time: a matrix-vector product, bound by memory, which BLAS's threads speed up."""
        return not (isinstance(data, np.ndarray) and data.ndim and len(data) == 1)

    @one_blas_thread
    def forward(self, x: np.ndarray) -> np.ndarray:
        """y = x W + b."""
        self.build(np.shape(x))  # a lazy Dense(units): W from the first input's shape
        W = check_weights(self.params, self.kernel_shape, self)
        if type(x) is np.ndarray and x.ndim == 2 and x.dtype == W.dtype:
            arr = x  # the hot path of a training step: nothing to check or convert
        else:
            arr = float_input(x, self.describe(), 2)
            if arr.dtype != W.dtype:
                arr = arr.astype(W.dtype)
        if arr.shape[1] != self.in_features:
            self.output_shape(arr.shape)  # raises the error naming this layer
        y = output_buffer(
            self._pool, self.reuse_output, "y", (arr.shape[0], self.out_features), W.dtype
        )
        self._product(arr, W, y, chunk_threads())
        if self.use_bias:
            add_bias(y, self.params["b"])  # the additions of y += b, in one compiled loop
        self._x = arr
        return y if arr is x else like_input(y, x)

    @one_blas_thread
    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """Write dW = x^T dy and db = sum_n dy into ``grads``; return dx = dy W^T.

        ``need_input_grad=False`` skips dx (the first layer of a network) and returns None.
        """
        if self._x is None:
            raise RuntimeError(f"{self.describe()}.backward called before forward")
        x, W = self._x, check_weights(self.params, self.kernel_shape, self)
        check_weights(self.grads, self.kernel_shape, self, W.dtype)
        if type(dy) is not np.ndarray or dy.dtype.kind != "f":
            dy = as_float_array(dy, "dy", where=f"{self.describe()}.backward", min_ndim=0)
        if dy.shape != (x.shape[0], self.out_features):
            raise ValueError(
                f"{self.describe()}.backward: dy must have shape "
                f"{(x.shape[0], self.out_features)}, got {dy.shape}"
            )
        if dy.dtype != W.dtype:
            dy = dy.astype(W.dtype)
        threads = chunk_threads()
        self._product(x.T, dy, self.grads["W"], threads)
        if self.use_bias:
            column_sums(dy, self.grads["b"])  # the bits of np.sum(dy, axis=0), faster
        if not need_input_grad:
            return None
        dx = output_buffer(self._pool, self.reuse_output, "dx", x.shape, W.dtype)
        self._product(dy, W.T, dx, threads)
        return dx

    def _product(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int) -> None:
        """out = a @ b; for a layer of ``SPLIT_MIN_WEIGHTS`` or more with ``threads`` T > 1
        chunk threads, out's columns in T blocks (multiples of 64), block t on chunk thread t
        (not for one example: BLAS's own threads, see ``blas_on_one_thread``)."""
        if threads <= 1 or self.params["W"].size < SPLIT_MIN_WEIGHTS or len(a) == 1:
            np.matmul(a, b, out=out)
            return
        width = -(-b.shape[1] // (64 * threads)) * 64

        def work(t: int) -> None:
            cols = slice(t * width, (t + 1) * width)
            np.matmul(a, b[:, cols], out=out[:, cols])

        in_threads(-(-b.shape[1] // width), work)

    def astype(self, dtype: Any) -> Dense:
        super().astype(dtype)
        self._pool.clear()
        return self

    def get_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "use_bias": self.use_bias,
            "init": initializer_config(self.init),
            "seed": self.seed if isinstance(self.seed, (int, type(None))) else None,
            "kernel_regularizer": regularizer_config(self.regularizers.get("W")),
            "name": self.name,
        }
