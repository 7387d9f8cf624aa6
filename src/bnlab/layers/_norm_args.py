"""Constructor argument checks of the normalization layers: each message names the argument."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["check_norm_args", "check_renorm_args", "create_state"]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_norm_args(where: str, allow_cumulative: bool, **args: Any) -> None:
    """num_features, axis, momentum (None only if ``allow_cumulative``), eps,
    virtual_batch_size, affine, track_running_stats; TypeError or ValueError otherwise."""
    n, axis, momentum, eps = args["num_features"], args["axis"], args["momentum"], args["eps"]
    vbs = args["virtual_batch_size"]
    if n is not None and not _is_int(n):  # None: a lazy layer (taken from its first input)
        raise TypeError(f"{where}: num_features must be an int, got {n!r}")
    if n is not None and n < 1:
        raise ValueError(f"{where}: num_features must be >= 1, got {n}")
    if not _is_int(axis):
        raise TypeError(f"{where}: axis must be an int (the feature axis), got {axis!r}")
    if momentum is None and not allow_cumulative:
        raise TypeError(
            f"{where}: momentum must be a float in [0, 1], got None (the cumulative average "
            "is a BatchNorm option only)"
        )
    if momentum is not None and not _is_real(momentum):
        raise TypeError(f"{where}: momentum must be a float in [0, 1], got {momentum!r}")
    if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"{where}: momentum must be in [0, 1] or None, got {momentum}")
    if not _is_real(eps):
        raise TypeError(f"{where}: eps must be a float > 0, got {eps!r}")
    if not (float(eps) > 0.0 and np.isfinite(float(eps))):
        raise ValueError(f"{where}: eps must be > 0 and finite, got {eps}")
    if vbs is not None and (not _is_int(vbs) or vbs < 1):
        raise ValueError(f"{where}: virtual_batch_size must be a positive int or None, got {vbs!r}")
    for key in ("affine", "track_running_stats"):
        if not isinstance(args[key], (bool, np.bool_)):
            raise TypeError(f"{where}: {key} must be True or False, got {args[key]!r}")


def check_renorm_args(where: str, rmax: Any, dmax: Any, steps: dict[str, Any]) -> None:
    """rmax >= 1 and dmax >= 0 finite floats; the schedule's step counts non-negative ints."""
    for key, value, low in (("rmax", rmax, 1.0), ("dmax", dmax, 0.0)):
        if not _is_real(value):
            raise TypeError(f"{where}: {key} must be a float >= {low}, got {value!r}")
        if not (np.isfinite(value) and value >= low):
            raise ValueError(f"{where}: {key} must be a finite float >= {low}, got {value!r}")
    for key, value in steps.items():
        if not _is_int(value) or value < 0:
            raise ValueError(f"{where}: {key} must be a non-negative integer, got {value!r}")


def create_state(layer: Any) -> None:
    """A normalization layer's gamma, beta (``affine``), their gradients and running statistics
    (``track_running_stats``) for its ``num_features`` channels (nothing while it is 0)."""
    C = layer.num_features
    if not C:
        return
    one, zero = np.ones(C, np.float32), np.zeros(C, np.float32)
    if layer.affine:
        layer.params.update(gamma=one.copy(), beta=zero.copy())
        layer.grads.update(gamma=zero.copy(), beta=zero.copy())
    if layer.track_running_stats:
        layer.buffers.update(
            running_mean=zero.copy(),
            running_var=one.copy(),
            num_batches_tracked=np.array(0, np.int64),
        )
