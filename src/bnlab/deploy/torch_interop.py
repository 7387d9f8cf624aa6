"""PyTorch and Keras interop: bnlab Sequential <-> torch.nn.Sequential, Keras BN weights.

Residual blocks become the ``Residual`` module of :mod:`bnlab.deploy._torch_modules`.

Layout choice: the torch model made by :func:`to_torch` takes the same NHWC input as the bnlab
model and returns the same output. It holds ``Permute`` modules where the layout changes:
``Permute(0, 3, 1, 2)`` before the first channels-first module (Conv2d, MaxPool2d,
BatchNorm2d, AdaptiveAvgPool2d) and ``Permute(0, 2, 3, 1)`` before ``Flatten`` and at the end,
so that Flatten orders features (h, w, c) as bnlab does and Linear weights need no reordering.

Weights: Dense ``W (in, out)`` is ``Linear.weight.T``; Conv2D ``W (kh, kw, cin, cout)`` is
``Conv2d.weight.permute(2, 3, 1, 0)``; BatchNorm's ``gamma, beta, running_mean, running_var,
num_batches_tracked`` are ``weight, bias`` and the buffers of the same names. Both libraries
store the unbiased running variance and use ``momentum`` as the weight of the new batch.

torch is imported only inside these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bnlab.deploy._torch_modules import torch_modules
from bnlab.deploy._walk import (
    builtin_kind,
    check_model,
    children,
    is_batch_norm,
    iter_leaves,
    leaf_shapes,
    model_dtype,
    residual_parts,
    restore_modes,
    save_modes,
)
from bnlab.deploy.torch_from import from_torch
from bnlab.layers.base import Layer

__all__ = ["to_torch", "from_torch", "load_keras_batch_norm", "torch_modules"]

_SPATIAL = ("Conv2D", "MaxPool2D", "GlobalAveragePool2D", "AvgPool2D")


def _ranks(layers: list[Layer]) -> list[int | None]:
    """Input rank (batch axis included) of each leaf from the layer types; None where it
    cannot be known (``to_torch(..., input_shape)`` knows it from a dummy forward)."""
    first: int | None = None
    for layer in layers:
        kind = builtin_kind(layer)
        if kind in _SPATIAL:
            first = 4
        elif kind == "Dense":
            first = 2
        elif kind == "Flatten":
            break
        if first is not None:
            break
    ranks: list[int | None] = []
    rank = first
    for layer in layers:
        ranks.append(rank)
        kind = builtin_kind(layer)
        if kind in ("Flatten", "GlobalAveragePool2D"):
            rank = 2
        elif kind in _SPATIAL:
            rank = 4
    return ranks


class _Builder:
    """Accumulates torch modules while tracking whether the tensor is NCHW."""

    def __init__(self, torch: Any, dtype: Any) -> None:
        self.torch, self.nn, self.dtype = torch, torch.nn, dtype
        self.mods: list[Any] = []
        self.nchw = False

    def add(self, module: Any) -> Any:
        self.mods.append(module.to(self.dtype))
        return module

    def to_nchw(self, rank: int | None) -> None:
        if rank == 4 and not self.nchw:
            self.add(torch_modules().Permute(0, 3, 1, 2))
            self.nchw = True

    def to_nhwc(self) -> None:
        if self.nchw:
            self.add(torch_modules().Permute(0, 2, 3, 1))
            self.nchw = False

    def copy(self, dst: Any, src: np.ndarray) -> None:
        with self.torch.no_grad():
            dst.copy_(self.torch.from_numpy(np.array(src, order="C", copy=True)))


def _fail(layer: Any, why: str) -> TypeError:
    return TypeError(
        f"to_torch: layer '{layer.name}' ({type(layer).__name__}) cannot be converted: {why}"
    )


def _conv(b: _Builder, layer: Any, rank: int | None) -> None:
    b.to_nchw(4)
    kh, kw, cin, cout = layer.params["W"].shape
    stride = tuple(int(s) for s in np.broadcast_to(layer.stride, (2,)))
    padding: Any = getattr(layer, "padding", "valid")
    if padding == "valid":
        padding = 0
    elif padding == "same" and stride != (1, 1):
        raise _fail(layer, "padding='same' with a stride > 1 has no torch.nn.Conv2d equivalent")
    conv = b.add(
        b.nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=padding, bias="b" in layer.params)
    )
    b.copy(conv.weight, np.transpose(layer.params["W"], (3, 2, 0, 1)))
    if "b" in layer.params:
        b.copy(conv.bias, layer.params["b"])


def _batch_norm(b: _Builder, layer: Any, rank: int | None) -> None:
    if builtin_kind(layer) != "BatchNorm":
        raise _fail(layer, "only BatchNorm maps (torch has no batch renormalization layer)")
    if getattr(layer, "virtual_batch_size", None):
        raise _fail(layer, "torch's BatchNorm has no virtual batches")
    if layer.axis == 1 and not b.nchw and rank in (None, 2, 3):
        cls = b.nn.BatchNorm1d  # torch's own layout, (N, C) or (N, C, L): see from_torch
    else:
        if rank not in (2, 4):
            raise _fail(layer, "its input rank is unknown; pass input_shape to to_torch")
        if layer.axis not in (-1, rank - 1):
            raise _fail(layer, "only channels-last BatchNorm (axis=-1) or axis=1 maps")
        b.to_nchw(rank)
        cls = b.nn.BatchNorm2d if rank == 4 else b.nn.BatchNorm1d
    n = layer.num_features
    bn = b.add(
        cls(
            n,
            eps=layer.eps,
            momentum=layer.momentum,
            affine="gamma" in layer.params,
            track_running_stats="running_mean" in layer.buffers,
        )
    )
    if "gamma" in layer.params:
        b.copy(bn.weight, layer.params["gamma"])
        b.copy(bn.bias, layer.params["beta"])
    if "running_mean" in layer.buffers:
        b.copy(bn.running_mean, layer.buffers["running_mean"])
        b.copy(bn.running_var, layer.buffers["running_var"])
        b.copy(bn.num_batches_tracked, np.asarray(layer.buffers["num_batches_tracked"], np.int64))


def _leaf(b: _Builder, layer: Any, rank: int | None) -> None:
    """Append the torch module(s) of one bnlab leaf layer."""
    nn, kind = b.nn, builtin_kind(layer)
    if is_batch_norm(layer):
        _batch_norm(b, layer, rank)
    elif kind == "Dense":
        if rank != 2:
            b.to_nhwc()
        lin = b.add(nn.Linear(layer.in_features, layer.out_features, bias=layer.use_bias))
        b.copy(lin.weight, layer.params["W"].T)
        if layer.use_bias:
            b.copy(lin.bias, layer.params["b"])
    elif kind == "Conv2D":
        _conv(b, layer, rank)
    elif kind == "MaxPool2D":
        b.to_nchw(4)
        if getattr(layer, "padding", "valid") != "valid":
            raise _fail(layer, "only padding='valid' pooling maps to torch.nn.MaxPool2d")
        b.add(nn.MaxPool2d(layer.pool_size, stride=layer.stride))
    elif kind == "GlobalAveragePool2D":
        b.to_nchw(4)
        b.add(nn.AdaptiveAvgPool2d(1))
        b.add(nn.Flatten(1))
        b.nchw = False
    elif kind == "Flatten":
        b.to_nhwc()
        b.add(nn.Flatten(1))
    elif kind in ("ReLU", "Sigmoid", "Tanh"):
        b.add(getattr(nn, kind)())
    elif kind == "Softmax":  # over bnlab's last axis
        b.add(nn.Softmax(dim=1 if b.nchw else -1))
    elif kind == "Dropout":
        b.add(nn.Dropout(float(layer.rate)))
    elif kind == "ChannelAffine":
        dim = layer.axis if not b.nchw else (0, 3, 1, 2).index(layer.axis % 4)
        mod = b.add(torch_modules().ChannelAffine(layer.num_features, dim))
        b.copy(mod.scale, layer.params["scale"])
        b.copy(mod.shift, layer.params["shift"])
    elif kind in ("GroupNorm", "LayerNorm", "ZeroPadShortcut", "AvgPool2D"):
        _norm_or_pad(b, layer, kind, rank)
    else:
        raise _fail(layer, "no torch equivalent is known")


def _norm_or_pad(b: _Builder, layer: Any, kind: str, rank: int | None) -> None:
    if kind == "AvgPool2D":
        if layer.padding != "valid":
            raise _fail(layer, "only padding='valid' average pooling maps to torch.nn.AvgPool2d")
        b.to_nchw(4)
        b.add(b.nn.AvgPool2d(layer.pool_size, stride=layer.strides))
        return
    if kind == "ZeroPadShortcut":
        b.to_nchw(4)
        b.add(torch_modules().ZeroPadShortcut(layer.out_channels, layer.stride))
        return
    if kind == "LayerNorm":
        b.to_nhwc()  # the normalized (last) axes in bnlab's order
        mod = b.add(
            b.nn.LayerNorm(
                layer.normalized_shape, eps=layer.eps,
                elementwise_affine=layer.elementwise_affine, bias=layer.bias,
            )
        )  # fmt: skip
    else:
        if rank not in (2, 4):
            raise _fail(layer, "GroupNorm maps on (N, C) or NHWC input; pass input_shape")
        b.to_nchw(rank)
        mod = b.add(b.nn.GroupNorm(layer.num_groups, layer.num_channels, layer.eps, layer.affine))
    if "gamma" in layer.params:
        b.copy(mod.weight, layer.params["gamma"])
    if "beta" in layer.params:
        b.copy(mod.bias, layer.params["beta"])


def _build(b: _Builder, layer: Layer, ranks: dict[int, int | None]) -> None:
    """Append the torch modules of ``layer``: a leaf, a chain, or a residual block (its branch
    and shortcut built from the same layout, ending in the same layout)."""
    parts = residual_parts(layer)
    subs = children(layer)
    if parts is None:
        if subs is None:
            _leaf(b, layer, ranks.get(id(layer)))
        for sub in subs or []:
            _build(b, sub, ranks)
        return
    b.to_nchw(ranks.get(id(next(iter_leaves(layer)))))
    paths = []
    for part in parts:
        sub_b = _Builder(b.torch, b.dtype)
        sub_b.nchw = b.nchw
        if part is not None:
            _build(sub_b, part, ranks)
        paths.append(sub_b)
    if paths[1].nchw != paths[0].nchw:
        paths[1].to_nchw(4) if paths[0].nchw else paths[1].to_nhwc()
    short = b.nn.Sequential(*paths[1].mods) if parts[1] is not None or paths[1].mods else None
    b.add(torch_modules().Residual(b.nn.Sequential(*paths[0].mods), short))
    b.nchw = paths[0].nchw


def to_torch(model: Layer, input_shape: Sequence[int] | None = None) -> Any:
    """An equivalent ``torch.nn.Sequential`` holding copies of ``model``'s weights and buffers.

    The torch model takes bnlab's NHWC input and returns bnlab's output (see the module
    docstring for the ``Permute`` modules); its dtype is the model's (float32 or float64) and
    its train/eval mode is ``model``'s. Nested Sequentials are flattened; a Residual becomes
    bnlab's torch ``Residual`` module (``branch(x) + shortcut(x)``); GroupNorm and LayerNorm
    map to ``nn.GroupNorm`` (on NCHW) and ``nn.LayerNorm`` (on NHWC, the same axes). Dropout maps to
    ``nn.Dropout`` (same rate; the random masks differ between the libraries).

    Args:
        model: a bnlab layer or Sequential.
        input_shape: the shape of one example (no batch axis). Only needed when a BatchNorm
            comes before any Dense/Conv2D/pooling layer, where its rank cannot be inferred.

    Raises:
        TypeError: a layer with no torch equivalent (named in the message); a model mixing
            float32 and float64 (torch modules share one dtype here) or in another dtype.
    """
    check_model(model, "to_torch")
    import torch

    layers = list(iter_leaves(model))
    ranks = dict(zip(map(id, layers), _ranks(layers), strict=True))
    if input_shape is not None:
        modes = save_modes(model)
        try:
            model.eval()
            shapes = leaf_shapes(model, input_shape, "to_torch")
        finally:
            restore_modes(modes)
        ranks = {id(leaf): len(shapes[id(leaf)][0]) + 1 for leaf in layers}
    dtype = torch.float64 if model_dtype(model, "to_torch") == np.float64 else torch.float32
    b = _Builder(torch, dtype)
    _build(b, model, ranks)
    b.to_nhwc()
    out = torch.nn.Sequential(*b.mods)
    out.train(bool(model.training))
    return out


def load_keras_batch_norm(
    layer: Layer, weights: Sequence[Any], keras_momentum: float | None = None
) -> None:
    """Load Keras ``BatchNormalization.get_weights()`` into a bnlab BatchNorm.

    ``weights`` is ``[gamma, beta, moving_mean, moving_variance]`` (Keras' order), or
    ``[moving_mean, moving_variance]`` for a layer built with ``affine=False`` (Keras'
    ``center=False, scale=False``). ``keras_momentum`` k, if given, sets ``layer.momentum``
    to ``1 - k``: Keras weighs the OLD average by k (``moving = k * moving + (1 - k) * batch``),
    bnlab and PyTorch weigh the new batch. Keras' default ``epsilon`` is 1e-3 against bnlab's
    1e-5: build the layer with ``eps=1e-3`` to reproduce a Keras model. Keras updates
    ``moving_variance`` with the biased batch variance; the loaded values are taken as they are.
    ``num_batches_tracked`` is left unchanged. Everything is checked before anything changes.
    """
    if not is_batch_norm(layer) or children(layer) is not None:
        raise TypeError(
            f"load_keras_batch_norm: layer must be a bnlab BatchNorm, got {type(layer).__name__}"
        )
    where = f"load_keras_batch_norm: layer '{layer.name}'"
    affine = "gamma" in layer.params
    keys = ["gamma", "beta"] if affine else []
    keys += ["running_mean", "running_var"]
    if len(weights) != len(keys):
        raise ValueError(
            f"{where}: expected {len(keys)} arrays ({', '.join(keys)}), got {len(weights)}"
        )
    if "running_mean" not in layer.buffers:
        raise ValueError(f"{where}: the layer has no running statistics (track_running_stats)")
    n = layer.buffers["running_mean"].shape[0]
    arrays = [np.asarray(w) for w in weights]
    for key, arr in zip(keys, arrays, strict=True):
        if arr.shape != (n,) or arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
            raise ValueError(
                f"{where}: {key} must be a finite numeric array of shape ({n},), "
                f"got shape {arr.shape} and dtype {arr.dtype}"
            )
        target = (layer.params if key in layer.params else layer.buffers)[key].dtype
        with np.errstate(over="ignore"):
            fits = np.isfinite(arr.astype(target)).all()
        if not fits:  # checked in the layer's dtype: 1e300 is finite in float64, inf in float32
            raise ValueError(
                f"{where}: {key} holds values beyond {target}'s range (largest |value| "
                f"{np.abs(arr).max():.3g}); the layer stores {target}: use layer.astype(np.float64)"
            )
    if (arrays[-1] < 0).any():
        raise ValueError(f"{where}: running_var (moving_variance) holds negative values")
    if keras_momentum is not None and not 0.0 <= float(keras_momentum) <= 1.0:
        raise ValueError(f"{where}: keras_momentum must be in [0, 1], got {keras_momentum!r}")
    for key, arr in zip(keys, arrays, strict=True):
        store = layer.params if key in layer.params else layer.buffers
        store[key][...] = arr
    if keras_momentum is not None:
        layer.momentum = 1.0 - float(keras_momentum)
