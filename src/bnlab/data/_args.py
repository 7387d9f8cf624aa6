"""Argument checks shared by the data classes: seeds, flags, real numbers, state dicts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bnlab._checks import as_generator

__all__ = ["as_generator", "check_flag", "check_real", "require_keys", "check_rng_state"]


def check_flag(value: Any, name: str, where: str) -> bool:
    """``value`` if it is a bool (NumPy's included): a string like "no" is refused, not truthy."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")
    return bool(value)


def check_real(value: Any, name: str, where: str, *, min_value: float | None = None) -> float:
    """``value`` as a finite float (not a bool), at least ``min_value`` if given."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{where}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (min_value is not None and v < min_value):
        bound = f" >= {min_value}" if min_value is not None else ""
        raise ValueError(f"{where}: {name} must be a finite number{bound}, got {value!r}")
    return v


def require_keys(state: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(state, dict):
        raise TypeError(f"{where}: state must be a dict, got {type(state).__name__}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(
            f"{where}: the state lacks {missing}; expected the keys {list(keys)} of state_dict()"
        )


def check_rng_state(rng: np.random.Generator, state: Any, where: str) -> None:
    """Raise if ``state`` cannot be loaded into ``rng``'s bit generator (``rng`` is untouched)."""
    scratch = type(rng.bit_generator)()
    try:
        scratch.state = state
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(
            f"{where}: 'rng' is not a {type(rng.bit_generator).__name__} state: {e}"
        ) from None
