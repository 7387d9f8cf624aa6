"""Input validation shared by every floor: errors name the argument, the expectation, what came."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["as_float_array", "check_finite", "check_feature_axis", "compute_dtype", "check_eps"]
__all__ += ["prepare_input", "check_out"]


def compute_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype arithmetic is done in: float64 stays float64, everything else is float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def as_float_array(x: Any, name: str, *, where: str, min_ndim: int = 1) -> np.ndarray:
    """Return ``x`` as a floating-point ndarray, or raise a TypeError/ValueError naming ``name``.

    Integer, boolean, complex and object inputs are refused rather than silently cast: an
    integer image batch fed to a network is almost always a forgotten ``/ 255``.
    """
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{where}: {name} must be a floating-point array (float16, float32 or float64), "
            f"got dtype {arr.dtype}; convert it first, e.g. x.astype(np.float32) / 255 for images"
        )
    if arr.ndim < min_ndim:
        raise ValueError(
            f"{where}: {name} must have at least {min_ndim} dimensions, got shape {arr.shape}"
        )
    return arr


def check_finite(x: np.ndarray, name: str, *, where: str) -> None:
    """Raise FloatingPointError if ``x`` holds NaN or Inf (checked before any state changes)."""
    if not np.isfinite(x).all():
        n_nan = int(np.isnan(x).sum())
        n_inf = int(np.isinf(x).sum())
        raise FloatingPointError(
            f"{where}: {name} contains {n_nan} NaN and {n_inf} Inf values; nothing was updated. "
            "Check the learning rate and the inputs (a diverging layer before this one is the "
            "usual cause)"
        )


def check_feature_axis(ndim: int, axis: int, *, where: str) -> int:
    """Normalize a possibly negative feature ``axis`` for an array of rank ``ndim``."""
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{where}: axis={axis} is out of range for an input of rank {ndim}; "
            f"expected an integer in [{-ndim}, {ndim - 1}]"
        )
    return axis % ndim


def check_eps(eps: Any, *, where: str) -> float:
    """``eps`` as a float; TypeError/ValueError unless it is a finite number > 0."""
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


def prepare_input(x: Any, axis: int, *, where: str) -> tuple[np.ndarray, int, np.dtype[Any]]:
    """``(x in the compute dtype, C-contiguous; normalized axis; output dtype)``."""
    arr = as_float_array(x, "x", where=where, min_ndim=2)
    ax = check_feature_axis(arr.ndim, axis, where=where)
    return np.ascontiguousarray(arr, dtype=compute_dtype(arr.dtype)), ax, arr.dtype


def check_out(out: Any, shape: tuple[int, ...], dtype: Any, *inputs: Any, where: str) -> None:
    """Refuse all but a writeable C-contiguous ``shape``/``dtype`` array apart from ``inputs``."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{where}: out must be a numpy array or None, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"{where}: out must have the result's shape {shape} and dtype {dtype}, got shape "
            f"{out.shape} and dtype {out.dtype}; allocate it with np.empty_like(x)"
        )
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(
            f"{where}: out must be C-contiguous and writeable (the kernels write it as one "
            "block); pass np.empty_like(x) or a contiguous copy"
        )
    for i, arr in enumerate(inputs):
        if not any(arr is seen for seen in inputs[:i]) and np.may_share_memory(out, arr):
            raise ValueError(
                f"{where}: out shares memory with an input; pass a separate array (the "
                "kernels read their inputs while writing out)"
            )
