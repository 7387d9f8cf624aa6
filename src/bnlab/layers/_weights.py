"""The weights of Dense and Conv2D: the kernel ``W`` (drawn by an initializer), an optional zero
bias ``b`` and the kernel's penalty, built and serialized the same way for both layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.initializers import InitSpec, get_initializer, initializer_config
from bnlab.layers.base import Layer
from bnlab.regularizers import Penalty, penalty_from_config

__all__ = ["build_regularizer", "init_kernel_and_bias", "regularizer_config"]


def regularizer_config(reg: Any) -> Any:
    """``reg.get_config()`` when the penalty has one, else None (JSON-serializable)."""
    get_config = getattr(reg, "get_config", None)
    return get_config() if callable(get_config) else None


def build_regularizer(reg: Penalty | dict[str, Any] | None) -> Penalty | None:
    """A penalty object from itself or its config dict (``{"type": "L2", "l": 1e-4}``)."""
    return penalty_from_config(reg) if isinstance(reg, dict) else reg


def init_kernel_and_bias(
    layer: Layer, shape: tuple[int, ...], init: InitSpec, seed: Any, use_bias: bool, reg: Any
) -> None:
    """Give ``layer`` its kernel ``W`` (drawn by ``init``), a zero bias ``b`` of ``shape[-1]``
    entries if ``use_bias``, zero gradients for both and the kernel's penalty, if any."""
    with np.errstate(over="ignore", invalid="ignore"):  # refused below, with the initializer
        W = np.ascontiguousarray(get_initializer(init)(shape, np.float32, seed))
    if W.shape != shape or W.dtype.kind != "f" or not np.isfinite(W).all():
        raise ValueError(
            f"{type(layer).__name__}: the initializer {initializer_config(init)!r:.80} gave "
            f"weights that are not {shape} finite float32 values (a std beyond float32's range, "
            "about 3e38?); choose a smaller scale"
        )
    layer.params["W"] = W
    layer.grads["W"] = np.zeros(shape, np.float32)
    if use_bias:
        layer.params["b"] = np.zeros(shape[-1], np.float32)
        layer.grads["b"] = np.zeros(shape[-1], np.float32)
    penalty = build_regularizer(reg)
    if penalty is not None:
        layer.regularizers["W"] = penalty
