"""What the reference and the fused batch-norm kernels share: the cache, views and input checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnlab._checks import as_float_array, check_feature_axis, compute_dtype
from bnlab.kernels._bn_vectors import all_finite
from bnlab.kernels._numba import kernel_thread_count

__all__ = [
    "BatchNormCache",
    "channel_view",
    "check_eps",
    "check_training_count",
    "num_blocks",
    "prepare_channel_vector",
    "prepare_grad",
    "prepare_input",
]

PARALLEL_MIN = 65536  # elements below which waking the thread pool costs more than it saves


def channel_view(x: np.ndarray, axis: int) -> np.ndarray:
    """``(R, C)`` view of a C-contiguous ``x`` when the feature axis is last, else ``(A, C, B)``."""
    C = x.shape[axis]
    if axis == x.ndim - 1:
        return x.reshape(-1, C)
    return x.reshape(math.prod(x.shape[:axis]), C, math.prod(x.shape[axis + 1 :]))


def num_blocks(v: np.ndarray) -> int:
    """Parallel blocks for a fused kernel on ``v``: 1 for small arrays, else the threads the
    runtime policy gives the data (``bnlab.runtime.kernel_thread_count``: one for images).

    ``v`` is a channel view (an NHWC batch is seen as (N*H*W, C)); the data's rank is taken
    from the array that owns its memory. The statistics are summed per block, so the block
    count fixes their rounding: images get one block on every path (Sequential, Trainer, a
    hand-written loop), as they did inside Sequential's former thread cap.
    """
    if v.size < PARALLEL_MIN:
        return 1
    owner = v if v.base is None else v.base
    return kernel_thread_count(max(v.ndim, int(getattr(owner, "ndim", 0))))


def check_eps(eps: Any, *, where: str) -> float:
    """``eps`` as a float; ValueError unless it is a finite number > 0."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: eps must be a positive float, got {eps!r}") from None
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(
            f"{where}: eps must be a finite float > 0 (it keeps 1/sqrt(var + eps) finite), "
            f"got {eps!r}; the usual values are 1e-5 (PyTorch) or 1e-3 (Keras)"
        )
    return value


@dataclass
class BatchNormCache:
    """What a training-mode forward pass keeps for its backward pass.

    ``x`` is the input in the compute dtype (the caller's array itself, not a copy, unless it
    had to be cast); ``mean`` and ``var`` are the per-channel batch mean and *biased* batch
    variance in float64, shape ``(C,)``; ``count`` is the number of values per channel ``m``.
    """

    x: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    gamma: np.ndarray
    eps: float
    axis: int
    count: int
    out_dtype: np.dtype[Any]

    @property
    def rstd(self) -> np.ndarray:
        """``1 / sqrt(var + eps)`` in float64."""
        return 1.0 / np.sqrt(self.var + self.eps)


def prepare_input(x: Any, axis: int, *, where: str) -> tuple[np.ndarray, int, np.dtype[Any]]:
    """Check ``x`` and return ``(x in compute dtype, normalized axis, output dtype)``.

    Raises TypeError for non-float dtypes and ValueError for rank < 2 or an axis out of range.
    """
    arr = as_float_array(x, "x", where=where, min_ndim=2)
    ax = check_feature_axis(arr.ndim, axis, where=where)
    out_dtype = arr.dtype
    dt = compute_dtype(arr.dtype)
    if arr.dtype != dt:
        arr = arr.astype(dt)
    return arr, ax, out_dtype


def prepare_channel_vector(
    v: Any,
    name: str,
    num_features: int,
    *,
    default: float,
    where: str,
    nonnegative: bool = False,
) -> np.ndarray:
    """Return a per-channel vector (``None`` means all ``default``) as float64, shape ``(C,)``.

    TypeError for a non-real dtype; ValueError for a wrong shape, NaN/Inf entries, or (with
    ``nonnegative``, for variances) negative ones.
    """
    if v is None:
        return np.full(num_features, default)
    arr = np.asarray(v)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{where}: {name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.shape != (num_features,):
        raise ValueError(
            f"{where}: {name} must have shape ({num_features},) to match the feature axis, "
            f"got shape {arr.shape}"
        )
    out = arr.astype(np.float64)
    if not all_finite(out):  # np.isfinite(out).all() in one Numba call (~0.3 us, not ~2)
        raise ValueError(
            f"{where}: {name} must be finite, got {int(np.isnan(out).sum())} NaN and "
            f"{int(np.isinf(out).sum())} Inf entries; check the parameters or statistics given"
        )
    if nonnegative and (out < 0).any():
        raise ValueError(
            f"{where}: {name} must be >= 0 (a variance), got a minimum of {out.min()!r}"
        )
    return out


def prepare_grad(dy: Any, cache: BatchNormCache, *, where: str) -> np.ndarray:
    """Check that ``dy`` is a float array of the forward input's shape; cast to compute dtype."""
    arr = as_float_array(dy, "dy", where=where, min_ndim=0)
    if arr.shape != cache.x.shape:
        raise ValueError(
            f"{where}: dy must have the forward input's shape {cache.x.shape}, got {arr.shape}"
        )
    return arr if arr.dtype == cache.x.dtype else arr.astype(cache.x.dtype)


def check_training_count(count: int, shape: tuple[int, ...], *, where: str) -> None:
    """Batch statistics need at least two values per channel (PyTorch's rule)."""
    if count == 0:
        raise ValueError(
            f"{where}: x is an empty training batch (shape {shape}); nothing to normalize"
        )
    if count == 1:
        raise ValueError(
            f"{where}: Expected more than 1 value per channel when training, got input of shape "
            f"{shape}"
        )
