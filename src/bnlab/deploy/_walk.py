"""Walking a model: leaf layers, BN detection, mode save/restore, shapes (private helpers).

A container is a layer whose :meth:`~bnlab.layers.Layer.sublayers` is not empty; a BN layer is
an instance of the normalization core :class:`~bnlab.layers._normalization.BatchNormBase`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, TypeGuard

import numpy as np

from bnlab.layers._normalization import BatchNormBase
from bnlab.layers.base import Layer
from bnlab.layers.residual import Residual


def check_model(model: object, where: str) -> Layer:
    """``model`` itself if it is a bnlab :class:`~bnlab.layers.Layer`, else a TypeError."""
    if not isinstance(model, Layer):
        raise TypeError(
            f"{where}: unsupported layer {model!r} of type {type(model).__name__}: expected "
            "bnlab layers (bnlab.layers.Layer subclasses, e.g. a Sequential)"
        )
    return model


def children(layer: Layer) -> list[Layer] | None:
    """The sub-layers of a container (:meth:`Layer.sublayers`), else None."""
    return layer.sublayers() or None


def iter_leaves(model: Layer) -> Iterator[Layer]:
    """Every non-container layer, depth first, in forward order."""
    subs = children(model)
    if subs is None:
        yield model
        return
    for sub in subs:
        yield from iter_leaves(sub)


def iter_paths(model: Layer, prefix: str = "") -> Iterator[tuple[str, Layer]]:
    """``(path, layer)`` for every leaf; path is the dotted index used in state_dict keys."""
    subs = children(model)
    if subs is None:
        yield prefix, model
        return
    for i, sub in enumerate(subs):
        yield from iter_paths(sub, f"{prefix}.{i}" if prefix else str(i))


def describe(path: str, layer: Layer) -> str:
    """``layer 4 'BatchNorm' (BatchNorm)``: how error messages name a layer."""
    where = f"layer {path} " if path else "layer "
    return f"{where}'{layer.name}' ({type(layer).__name__})"


def iter_all(model: Layer) -> Iterator[Layer]:
    """Every layer, containers included (the container before its children)."""
    return model.modules()


def builtin_kind(layer: Layer) -> str | None:
    """The class name of a built-in bnlab layer of exactly that class, else None.

    Exporters and folding map layers by what they compute: a subclass may compute something
    else (and a class of the same name elsewhere certainly does), so only the exact classes
    map; BN layers are found by :func:`is_batch_norm` instead.
    """
    return _builtin_kinds().get(type(layer))


@functools.cache
def _builtin_kinds() -> dict[type, str]:
    from bnlab import layers as L

    classes: tuple[type[Layer], ...] = (
        L.Dense,
        L.Conv2D,
        L.MaxPool2D,
        L.GlobalAveragePool2D,
        L.Flatten,
        L.Dropout,
    )
    classes += (L.ReLU, L.Sigmoid, L.Tanh, L.Softmax, L.ChannelAffine, L.BatchNorm, L.BatchRenorm)
    classes += (L.GroupNorm, L.LayerNorm, L.ZeroPadShortcut, L.AvgPool2D)
    kinds: dict[type, str] = {cls: cls.__name__ for cls in classes}
    # the synchronized twins compute their local twin's function at inference (and in a world
    # of one in training): a model trained under mpiexec exports and folds like any other
    kinds.update({L.SyncBatchNorm: "BatchNorm", L.SyncBatchRenorm: "BatchRenorm"})
    return kinds


def is_batch_norm(layer: Layer) -> TypeGuard[BatchNormBase]:
    """True for every normalization layer: BatchNorm, BatchRenorm and their Sync twins."""
    return isinstance(layer, BatchNormBase)


def tracks_running_stats(bn: BatchNormBase) -> bool:
    """Whether a BN layer keeps running statistics (PyTorch's ``track_running_stats``)."""
    return bn.track_running_stats and "running_mean" in bn.buffers


def bn_scale_shift(bn: BatchNormBase) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode BN as ``y = x * scale + shift``, computed in float64.

    ``scale = gamma / sqrt(running_var + eps)``, ``shift = beta - running_mean * scale``
    (``gamma = 1``, ``beta = 0`` without ``affine``).
    """
    mean = np.asarray(bn.buffers["running_mean"], dtype=np.float64)
    var = np.asarray(bn.buffers["running_var"], dtype=np.float64)
    gamma = np.asarray(bn.params.get("gamma", np.ones_like(mean)), dtype=np.float64)
    beta = np.asarray(bn.params.get("beta", np.zeros_like(mean)), dtype=np.float64)
    scale = gamma / np.sqrt(var + float(bn.eps))
    return scale, beta - mean * scale


def save_modes(model: Layer) -> list[tuple[Layer, bool]]:
    """Each layer's ``training`` flag, to be put back by :func:`restore_modes`."""
    return [(layer, bool(layer.training)) for layer in iter_all(model)]


def restore_modes(saved: list[tuple[Layer, bool]]) -> None:
    for layer, mode in saved:
        layer.training = mode


def param_dtype(layer: Layer) -> np.dtype[Any]:
    """The floating dtype of a layer's parameters (float32 if it has none)."""
    for v in layer.params.values():
        return np.dtype(v.dtype)
    return np.dtype(np.float32)


def model_dtype(model: Layer, where: str) -> np.dtype[Any]:
    """The one floating dtype of every parameter and floating buffer of ``model``.

    float32 for a model without any. Raises TypeError naming two layers whose dtypes differ
    (a half-cast model), or for a dtype other than float32/float64 (``model.astype`` fixes
    both).
    """
    seen: dict[np.dtype[Any], str] = {}
    for path, layer in iter_paths(model):
        for v in [*layer.params.values(), *layer.buffers.values()]:
            if v.dtype.kind == "f" and v.dtype not in seen:
                seen[np.dtype(v.dtype)] = describe(path, layer)
    if len(seen) > 1:
        (d1, l1), (d2, l2) = list(seen.items())[:2]
        raise TypeError(
            f"{where}: the model mixes dtypes ({l1} is {d1}, {l2} is {d2}); cast it to one "
            "with model.astype(np.float32) or model.astype(np.float64)"
        )
    dtype = next(iter(seen), np.dtype(np.float32))
    if dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{where}: the model is {dtype}; only float32 and float64 are supported, cast it "
            "with model.astype(np.float32)"
        )
    return dtype


def check_eval_mode(model: Layer, where: str) -> None:
    """Raise if the model or any of its layers is in training mode (naming the first)."""
    if model.training and children(model) is not None:
        raise ValueError(
            f"{where}: the model is in training mode; call model.eval() first "
            "(inference uses the running statistics)"
        )
    for path, layer in iter_paths(model):
        if layer.training:
            raise ValueError(
                f"{where}: {describe(path, layer)} is in training mode; call model.eval() "
                "first (inference uses the running statistics)"
            )


def check_state_values(model: Layer, where: str) -> None:
    """Raise ValueError if a parameter or buffer is non-finite or a ``running_var`` negative
    (what :meth:`bnlab.layers.Layer.check_state_dict` refuses), naming it."""
    try:
        model.check_state_dict(model.state_dict())
    except (KeyError, ValueError) as e:
        raise ValueError(f"{where}: the model's state cannot be deployed: {e}") from None


def check_running_stats(model: Layer, where: str) -> None:
    """Raise if a BN layer has no running statistics to freeze (naming it)."""
    for path, layer in iter_paths(model):
        if is_batch_norm(layer) and not tracks_running_stats(layer):
            raise ValueError(
                f"{where}: {describe(path, layer)} has no running statistics "
                "(track_running_stats=False): it normalizes with batch statistics even at "
                "inference and cannot be frozen; rebuild it with track_running_stats=True and "
                "run bnlab.deploy.recompute_population_stats"
            )


def check_deployable(model: object, where: str) -> Layer:
    """``model`` if it can be frozen for inference: a bnlab Layer (:func:`check_model`) in eval
    mode throughout, every BN with running statistics, finite parameters and buffers."""
    layer = check_model(model, where)
    check_eval_mode(layer, where)
    check_running_stats(layer, where)
    check_state_values(layer, where)
    return layer


def residual_parts(layer: Layer) -> tuple[Layer, Layer | None] | None:
    """``(branch, shortcut)`` of a :class:`~bnlab.layers.Residual` (its sublayers are not a
    chain: both take the block's input), else None."""
    if type(layer) is Residual:
        return layer.branch, layer.shortcut
    return None


def leaf_shapes(
    model: Layer, input_shape: Any, where: str
) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per-example ``(input shape, output shape)`` of every leaf, keyed by ``id(leaf)``, from a
    dummy eval forward of one zero example through the model's structure (chains, residual
    blocks). The model's own input shape is under key 0."""
    if not isinstance(input_shape, (tuple, list)) or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in input_shape
    ):  # a str "6" would be read character by character, 2.5 truncated
        raise TypeError(
            f"{where}: input_shape must be a tuple of ints (one example's shape, e.g. (784,)), "
            f"got {input_shape!r:.60}"
        )
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1 or int(np.prod(shape, dtype=np.float64)) > 2**26:
        raise ValueError(
            f"{where}: input_shape must be one example's shape, positive sizes of at most "
            f"{2**26:,} elements in all, e.g. (28, 28, 1) or (784,); got {shape}"
        )
    shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {0: (shape, shape)}
    x = np.zeros((1, *shape), dtype=model_dtype(model, where))
    out = _trace(model, x, "", shapes, where)
    shapes[0] = (shape, tuple(out.shape[1:]))
    return shapes


def _trace(layer: Layer, x: np.ndarray, path: str, shapes: dict[int, Any], where: str) -> Any:
    parts = residual_parts(layer)
    subs = children(layer)
    if parts is not None:
        a = _trace(parts[0], x, f"{path}.0".lstrip("."), shapes, where)
        b = x if parts[1] is None else _trace(parts[1], x, f"{path}.1".lstrip("."), shapes, where)
        if a.shape != b.shape:
            raise ValueError(
                f"{where}: {describe(path, layer)}: the branch gives {a.shape[1:]} but the "
                f"shortcut {b.shape[1:]}"
            )
        return a + b
    if subs is not None:
        for i, sub in enumerate(subs):
            x = _trace(sub, x, f"{path}.{i}" if path else str(i), shapes, where)
        return x
    try:
        y = layer.forward(x)
    except Exception as exc:
        raise ValueError(
            f"{where}: input_shape {shapes[0][0]} does not fit the model: {describe(path, layer)} "
            f"failed on an input of shape {x.shape}: {exc}"
        ) from exc
    shapes[id(layer)] = (tuple(x.shape[1:]), tuple(y.shape[1:]))
    return y
