"""Folding inference-mode batch normalization into the Dense/Conv2D layer before it.

At inference a BN layer is a fixed per-channel affine map, ``y = x * s + t`` with
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - running_mean * s``. A Dense or Conv2D
layer ``z = x W + b`` followed by it is therefore one layer of the same kind::

    W' = W * s            (per output channel, the last axis of W)
    b' = (b - running_mean) * s + beta        (b = 0 when the layer has no bias)

which saves a full pass over the activations. A BN with nothing foldable before it (first
layer, after an activation or pooling) becomes a :class:`bnlab.layers.affine.ChannelAffine`.
Residual blocks are folded inside: their branch and shortcut separately (a projection's BN
into its 1x1 convolution). Only batch normalization folds: GroupNorm and LayerNorm normalize
with each sample's own statistics, which no fixed affine map reproduces; they stay as they are.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from bnlab.deploy._walk import (
    bn_scale_shift,
    builtin_kind,
    check_deployable,
    children,
    is_batch_norm,
    param_dtype,
    residual_parts,
)
from bnlab.layers._normalization import BatchNormBase
from bnlab.layers.affine import ChannelAffine
from bnlab.layers.base import Layer
from bnlab.layers.residual import Residual

__all__ = ["fold_batch_norm"]

_WHERE = "fold_batch_norm"


def fold_batch_norm(model: Layer) -> Layer:
    """Return a new model whose eval outputs equal ``model``'s with every BN folded away.

    Every Dense/Conv2D followed by a BatchNorm (or BatchRenorm) on its output channels, directly
    or with only Dropout layers between (identities at inference), becomes one layer with
    ``W' = W * gamma / sqrt(var + eps)`` and ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``
    (it gains a bias if it had none). Any other BN becomes a ChannelAffine layer with the same
    name. Arithmetic is in float64, stored in the model's dtype. ``model`` is not modified; the
    result is in eval mode. Residual blocks are folded inside (branch and shortcut apart);
    only BN folds: GroupNorm and LayerNorm are kept as they are (per-sample statistics).

    Raises:
        ValueError: a layer is in training mode, a BN has no running statistics
            (``track_running_stats=False``), a weight is NaN/Inf or a running_var negative;
            the message names the layer.
        TypeError: an element of the model is not a bnlab Layer.
    """
    return _fold(check_deployable(model, _WHERE))


def _fold(model: Layer) -> Layer:
    subs = children(model)
    if subs is None:
        return _to_affine(model) if is_batch_norm(model) else copy.deepcopy(model)
    out: list[Layer] = []
    target: int | None = None  # index in ``out`` of a Dense/Conv2D a BN may still fold into
    for layer in subs:
        if children(layer) is None and is_batch_norm(layer):
            if target is not None and _foldable(out[target], layer):
                out[target] = _fold_pair(out[target], layer)
            else:
                out.append(_to_affine(layer))
                target = None
            continue
        out.append(_fold(layer))
        if _kind(layer) in ("Dense", "Conv2D"):
            target = len(out) - 1
        elif _kind(layer) != "Dropout":
            target = None
    return _rebuild(model, out)


def _kind(layer: Layer) -> str:
    return builtin_kind(layer) or ""


def _rebuild(container: Layer, layers: list[Layer]) -> Layer:
    """A container of the same type and name holding ``layers``."""
    if residual_parts(container) is not None:  # Residual(branch, shortcut): not a layer list
        new_block = Residual(layers[0], layers[1] if len(layers) > 1 else None, name=container.name)
        new_block.eval()
        return new_block
    cls: Any = type(container)  # a container's constructor takes its layers (Sequential's)
    try:
        new = cls(layers, name=container.name)
    except TypeError:
        new = cls(layers)
    new.eval()
    return new


def _foldable(layer: Layer, bn: BatchNormBase) -> bool:
    """True when ``bn`` normalizes ``layer``'s output channels (the last axis of its W)."""
    out_rank = {"Dense": 2, "Conv2D": 4}[_kind(layer)]
    if bn.axis not in (-1, out_rank - 1):
        return False
    channels, n = layer.params["W"].shape[-1], bn.buffers["running_mean"].shape[0]
    if n != channels:
        raise ValueError(
            f"{_WHERE}: BatchNorm layer '{bn.name}' has {n} features but the {_kind(layer)} "
            f"layer '{layer.name}' before it has {channels} output channels (cannot run as built)"
        )
    return True


def _fold_pair(layer: Layer, bn: BatchNormBase) -> Layer:
    """One Dense/Conv2D equal (at inference) to ``layer`` followed by ``bn``."""
    scale, shift = bn_scale_shift(bn)
    w = layer.params["W"].astype(np.float64)
    b = layer.params["b"].astype(np.float64) if "b" in layer.params else np.zeros_like(scale)
    dtype = param_dtype(layer)
    w_new, b_new = _fits(bn, dtype, w * scale, b * scale + shift)
    config = layer.get_config()
    config["use_bias"] = True
    new = type(layer)(**config)  # exactly a Dense or Conv2D (see _kind)
    new.astype(dtype)
    new.params["W"][...] = w_new
    new.params["b"][...] = b_new
    new.regularizers = copy.deepcopy(layer.regularizers)
    new.eval()
    return new


def _to_affine(bn: BatchNormBase) -> ChannelAffine:
    """The inference-mode BN ``bn`` as a ChannelAffine layer of the same name and dtype."""
    scale, shift = bn_scale_shift(bn)
    dtype = param_dtype(bn) if bn.params else np.dtype(bn.buffers["running_mean"].dtype)
    scale, shift = _fits(bn, dtype, scale, shift)
    layer = ChannelAffine(scale.shape[0], axis=bn.axis, name=bn.name)
    layer.astype(dtype)
    layer.params["scale"][...] = scale
    layer.params["shift"][...] = shift
    layer.eval()
    return layer


def _fits(bn: BatchNormBase, dtype: np.dtype[Any], *arrays: np.ndarray) -> list[np.ndarray]:
    """``arrays`` (computed in float64) cast to ``dtype``, or a ValueError if any overflows:
    gamma / sqrt(var + eps) can exceed float32 (gamma 3e38 with var 0), and a folded model
    with inf weights would answer inf for every input."""
    with np.errstate(over="ignore", invalid="ignore"):
        cast = [a.astype(dtype) for a in arrays]
    if all(np.isfinite(c).all() for c in cast):
        return cast
    raise ValueError(
        f"{_WHERE}: folding BatchNorm layer '{bn.name}' gives weights beyond {dtype}'s range "
        "(gamma / sqrt(running_var + eps) overflows); nothing was built. Fold a float64 copy "
        "(model.astype(np.float64)) or check that layer's gamma and running_var"
    )
