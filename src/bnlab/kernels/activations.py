"""Elementwise activations and softmax with their backward passes, writing into ``out``.

Each function accepts ``out=`` (which may be the input itself for in-place use) so that a
training loop reuses its buffers. Forward/backward formulas:

- sigmoid: y = 1 / (1 + exp(-x)); dx = dy * y * (1 - y).
- relu: y = max(x, 0); dx = dy where y > 0, else 0.
- tanh: y = tanh(x); dx = dy * (1 - y^2).
- softmax over the last axis: y = exp(x - max x) / sum exp(x - max x);
  dx = y * (dy - sum(dy * y)).

Forward passes use NumPy's SIMD ufuncs (exp, tanh), ReLU's and the backward passes fused
Numba loops, on one thread for small arrays (a 60 x 100 MLP activation), where a parallel
launch would cost more than the work, and for large ones on the threads ``bnlab.runtime``
gives their rank (all of Numba's for dense data, one by default for images).
"""

from __future__ import annotations

import numpy as np

from bnlab.kernels._numba import call_on_policy, njit_pair, prange

__all__ = [
    "sigmoid",
    "sigmoid_backward",
    "relu",
    "relu_backward",
    "tanh",
    "tanh_backward",
    "softmax",
    "softmax_backward",
]

_PARALLEL_MIN = 1 << 17  # elements; below this a single thread is faster
_FAST = (np.dtype(np.float32), np.dtype(np.float64))  # compiled; other dtypes go to NumPy


def _sigmoid_bwd_body(dy, y, dx):
    for i in prange(y.size):
        dx[i] = dy[i] * y[i] * (1.0 - y[i])


def _relu_body(x, y):
    # np.maximum(x, 0)'s values bit for bit: x where x > 0, NaN kept as it is, +0 otherwise
    # (-0.0 too); NumPy's loop against a scalar 0 ran at a quarter of this speed here.
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > 0 or v != v else 0.0


def _relu_bwd_body(dy, y, dx):
    for i in prange(y.size):
        dx[i] = dy[i] if y[i] > 0 else 0.0


def _tanh_bwd_body(dy, y, dx):
    for i in prange(y.size):
        dx[i] = dy[i] * (1.0 - y[i] * y[i])


_RELU = njit_pair(_relu_body)
_SIGMOID_BWD = njit_pair(_sigmoid_bwd_body)
_RELU_BWD = njit_pair(_relu_bwd_body)
_TANH_BWD = njit_pair(_tanh_bwd_body)


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def _out_like(x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty(x.shape, dtype=x.dtype)
    if out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous {x.dtype} array of shape {x.shape}, "
            f"got {out.dtype} {out.shape}"
        )
    return out


def _check_float(name: str, a: np.ndarray) -> None:
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
        what = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"backward: {name} must be a floating-point array, got {what}")


def _binary(pair, dy: np.ndarray, y: np.ndarray, out: np.ndarray | None):
    _check_float("dy", dy)
    _check_float("y", y)
    if dy.shape != y.shape:
        raise ValueError(f"backward: dy has shape {dy.shape}, expected {y.shape}")
    if y.dtype == np.float16:  # computed in float32 (Numba has no float16), returned as float16
        dx = _binary(pair, dy.astype(np.float32), y.astype(np.float32), None)
        out = _out_like(y, out)
        out[...] = dx
        return out
    out = _out_like(y, out)
    args = (_flat(dy.astype(y.dtype, copy=False)), _flat(y), out.reshape(-1))
    call_on_policy(pair, y.ndim, y.size, _PARALLEL_MIN, *args)
    return out


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = 1 / (1 + exp(-x)).

    Where exp(-x) overflows (x < -88 in float32) it is inf and y = 1 / inf = 0, the correctly
    rounded value, so the overflow is harmless and silenced. NumPy's SIMD exp is several times
    faster here than a scalar loop.
    """
    out = _out_like(x, out)
    np.negative(x, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)
    return out


def sigmoid_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = dy * y * (1 - y), given the forward output y."""
    return _binary(_SIGMOID_BWD, dy, y, out)


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = max(x, 0) (NaN stays NaN), the values of ``np.maximum(x, 0)``."""
    out = _out_like(x, out)
    overlap = out is not x and np.may_share_memory(x, out)  # NumPy buffers; the loop cannot
    if x.dtype not in _FAST or not x.flags.c_contiguous or overlap:
        return np.maximum(x, 0, out=out)
    call_on_policy(_RELU, x.ndim, x.size, _PARALLEL_MIN, x.reshape(-1), out.reshape(-1))
    return out


def relu_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = dy * [y > 0], given the forward output y."""
    return _binary(_RELU_BWD, dy, y, out)


def tanh(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = tanh(x)."""
    return np.tanh(x, out=_out_like(x, out))


def tanh_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = dy * (1 - y^2), given the forward output y."""
    return _binary(_TANH_BWD, dy, y, out)


def softmax(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = exp(x - max(x)) / sum(exp(x - max(x))) along the last axis."""
    out = _out_like(x, out)
    np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    return out


def softmax_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = y * (dy - sum(dy * y, axis=-1)), the Jacobian-vector product of softmax."""
    if dy.shape != y.shape:
        raise ValueError(f"softmax_backward: dy has shape {dy.shape}, expected {y.shape}")
    out = _out_like(y, out)
    s = np.einsum("...i,...i->...", dy, y)[..., None]
    np.subtract(dy, s, out=out)
    out *= y
    return out
