"""Input validation shared by every floor: errors name the argument, the expectation, what came."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_float_array", "check_finite", "check_feature_axis", "compute_dtype"]
__all__ += ["check_real", "check_int", "check_bool"]


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


def check_real(
    value: Any,
    name: str,
    *,
    where: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the given interval, or a TypeError/ValueError naming it.

    Booleans, strings and NaN/Inf are refused: a hyperparameter read from a file (``"lr":
    Infinity``, ``"momentum": NaN``) would turn every weight into NaN one step later.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: {name} must be a number, got {value!r:.60}")
    v = float(value)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    span = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if not np.isfinite(v) or bad_low or bad_high:
        raise ValueError(f"{where}: {name} must be a finite number in {span}, got {value!r}")
    return v


def check_int(value: Any, name: str, *, where: str, low: int = 0, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (not a bool or a float), else a TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be an integer, got {value!r:.60}")
    if value < low or (high is not None and value > high):
        top = "" if high is None else f" and <= {high}"
        raise ValueError(f"{where}: {name} must be >= {low}{top}, got {value!r}")
    return int(value)


def check_bool(value: Any, name: str, *, where: str) -> bool:
    """``value`` if it is True or False (not "yes", 1 or None), else a TypeError naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r:.60}")
    return bool(value)
