"""Input validation shared by every floor: errors name the argument, the expectation, what came."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_float_array", "check_finite", "check_feature_axis", "compute_dtype"]


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
