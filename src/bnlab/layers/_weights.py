"""The weights of Dense and Conv2D: the kernel ``W`` (drawn by an initializer), an optional zero
bias ``b`` and the kernel's penalty, built and serialized the same way for both layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.initializers import InitSpec, get_initializer, initializer_config
from bnlab.layers.base import Layer
from bnlab.regularizers import Penalty, penalty_from_config

__all__ = ["build_regularizer", "check_weights", "init_kernel_and_bias", "regularizer_config"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


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


def check_weights(
    store: dict[str, Any], shape: tuple[int, ...], layer: Layer, grads: np.dtype[Any] | None = None
) -> np.ndarray:
    """``store["W"]`` once ``store`` (``params``; given their dtype ``grads``: the ``grads``,
    which the layer writes, C-contiguous) holds float32/float64 arrays of one dtype, ``W`` of
    ``shape`` and ``b`` (if any) of ``shape[-1]`` entries; else a TypeError naming the array.
    Arrays replaced by hand (``params["W"] = v``) are checked here, before a product uses them."""
    W, b = store.get("W"), store.get("b")
    dtype = getattr(W, "dtype", None) if grads is None else grads
    if (  # the usual case, in one expression (~0.3 us)
        type(W) is np.ndarray and W.shape == shape and W.dtype == dtype and dtype in _FLOATS
        and (b is None or type(b) is np.ndarray and b.dtype == dtype and b.shape == shape[-1:])
        and (grads is None or _writable(W) and _writable(b))
    ):  # fmt: skip
        return W
    for key, want in (("W", shape), ("b", shape[-1:])):
        v = store.get(key)
        ok = type(v) is np.ndarray and v.dtype == dtype and dtype in _FLOATS and v.shape == want
        if not ok and (v is not None or key == "W") or (grads is not None and not _writable(v)):
            what = "params" if grads is None else "grads"
            got = f"{type(v).__name__} {getattr(v, 'dtype', '')} {getattr(v, 'shape', '')}"
            raise TypeError(
                f"{layer.describe()}: {what}[{key!r}] must be a float32 or float64 array of "
                f"shape {want} (params and grads of one dtype, C-contiguous grads), got "
                f"{got.strip()}; assign into it ({what}[{key!r}][...] = v), or change the dtype "
                "with layer.astype"
            )
    return W  # type: ignore[return-value]


def _writable(v: Any) -> bool:
    return v is None or bool(v.flags.c_contiguous and v.flags.writeable)
