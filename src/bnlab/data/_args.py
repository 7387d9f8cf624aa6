"""Argument checks shared by the data classes: seeds, flags, real numbers, state dicts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["as_generator", "check_flag", "check_real", "require_keys", "check_rng_state"]


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
