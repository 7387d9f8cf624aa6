"""Input validation shared by every floor: errors name the argument, the expectation, what came."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["as_float_array", "check_finite", "check_feature_axis", "compute_dtype", "check_eps"]
__all__ += ["prepare_input", "check_out"]
__all__ += ["check_real", "check_int", "check_ints", "check_bool", "as_generator", "pairs"]
__all__ += ["check_overflow"]


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def compute_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype arithmetic is done in: float64 stays float64, everything else is float32."""
    return _F64 if dtype == _F64 else _F32


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


def check_overflow(where: str, src: np.ndarray, *outs: np.ndarray) -> None:
    """FloatingPointError if an array of ``outs`` holds NaN/Inf while ``src`` (x; dy) is finite:
    finite values in gave a non-finite result, an overflow of the output's dtype (NaN/Inf in
    ``src`` pass on)."""
    if all(np.isfinite(o).all() for o in outs) or not np.isfinite(src).all():
        return
    raise FloatingPointError(
        f"{where}: finite inputs gave a non-finite output: it overflows {outs[0].dtype} (gamma, "
        "beta or dy too large); nothing was updated; scale them or use float64"
    )


def check_feature_axis(ndim: int, axis: int, *, where: str) -> int:
    """Normalize a possibly negative feature ``axis`` for an array of rank ``ndim``."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{where}: axis must be an integer (the feature axis), got {axis!r:.40}")
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


def check_out(
    out: Any, shape: tuple[int, ...], dtype: Any, *inputs: Any, where: str, name: str = "out"
) -> None:
    """Refuse all but a writeable C-contiguous ``shape``/``dtype`` array apart from ``inputs``
    (``name``: the argument's name in the messages)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{where}: {name} must be a numpy array or None, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"{where}: {name} must have the result's shape {shape} and dtype {dtype}, got shape "
            f"{out.shape} and dtype {out.dtype}; allocate it with np.empty_like(x)"
        )
    if not ((flags := out.flags).c_contiguous and flags.writeable):
        raise ValueError(
            f"{where}: {name} must be C-contiguous and writeable (the kernels write it as one "
            "block); pass np.empty_like(x) or a contiguous copy"
        )
    for i, arr in enumerate(inputs):
        if (not i or arr is not inputs[i - 1]) and np.may_share_memory(out, arr):
            raise ValueError(
                f"{where}: {name} shares memory with an input; pass a separate array (the "
                "kernels read their inputs while writing it)"
            )


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


def check_ints(value: Any, name: str, n: int, *, where: str, low: int = 0) -> tuple[int, ...]:
    """``value`` (tuple or list) as ``n`` ints >= ``low``, else a TypeError/ValueError naming it."""
    if not isinstance(value, tuple | list) or len(value) != n:
        raise TypeError(f"{where}: {name} must be a tuple of {n} ints, got {value!r:.40}")
    return tuple(check_int(v, name, where=where, low=low) for v in value)


def check_bool(value: Any, name: str, *, where: str) -> bool:
    """``value`` if it is True or False (not "yes", 1 or None), else a TypeError naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r:.60}")
    return bool(value)


def as_generator(seed: Any, where: str) -> np.random.Generator:
    """``seed`` (None, an int >= 0, a Generator, SeedSequence or BitGenerator) as a Generator.

    A Generator is used as given (shared); anything else seeds a new one, so the same seed
    gives the same bits.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence | np.random.BitGenerator) or seed is None:
        return np.random.default_rng(seed)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(
            f"{where}: seed must be None, an int >= 0 or a numpy.random.Generator, got {seed!r}"
        )
    if seed < 0:
        raise ValueError(f"{where}: seed must be >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def pairs(value: Any) -> list[tuple[int, int]]:
    """``value`` (``[(a, b), ...]``, an ``(n, 2)`` array) as pairs of ints; ``[]`` for anything
    else (strings, floats, ragged lists: the caller's error names the argument)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        return []
    if arr.dtype.kind not in "iu" or arr.size % 2:
        return []
    return [(int(a), int(b)) for a, b in arr.reshape(-1, 2)]
