"""A checkpoint's model config, checked before anything is built (private to checkpoint.py).

:func:`declared_shapes` reads the parameter and buffer shapes a config asks for without
building it (bnlab's own layer types; None for a type it does not know), so that a small file
asking for ``Dense(30000, 30000)`` is refused before 3.6 GB are allocated and initialized.
:func:`build` then constructs the model, naming the field of any config the constructors
refuse. ``tests/deploy/test_checkpoint_hostile.py`` checks the table against the layers.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

from bnlab.deploy._ckpt_read import CheckpointError

__all__ = ["declared_shapes", "build", "count"]

Shapes = dict[str, tuple[int, ...]]

_NO_STATE: tuple[str, ...] = ("ReLU", "Sigmoid", "Tanh", "Softmax", "Dropout", "Flatten")
_NO_STATE += ("MaxPool2D", "GlobalAveragePool2D", "ZeroPadShortcut", "AvgPool2D")
_MAX_DIM = 2**40


def _dim(p: Path, cfg: dict[str, Any], key: str, field: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_DIM:
        raise CheckpointError(
            f"{p}: {field}.{key} must be a positive int (at most {_MAX_DIM}), got {value!r}"
        )
    return value


def _flag(p: Path, cfg: dict[str, Any], key: str, field: str) -> bool:
    value = cfg.get(key, True)
    if not isinstance(value, bool):
        raise CheckpointError(f"{p}: {field}.{key} must be true or false, got {value!r}")
    return value


def _kernel(p: Path, cfg: dict[str, Any], field: str) -> tuple[int, int]:
    k = cfg.get("kernel_size")
    pair = [k, k] if isinstance(k, int) and not isinstance(k, bool) else k
    if not isinstance(pair, list) or len(pair) != 2:
        raise CheckpointError(f"{p}: {field}.kernel_size must be an int or [kh, kw], got {k!r}")
    return (
        _dim(p, {"kernel_size": pair[0]}, "kernel_size", field),
        _dim(p, {"kernel_size": pair[1]}, "kernel_size", field),
    )


def _base_kind(kind: str) -> str:
    """The bnlab type ``kind`` derives from (SyncBatchNorm -> BatchNorm), else ``kind``."""
    from bnlab.layers import LAYER_REGISTRY

    cls = LAYER_REGISTRY.get(kind)
    names = [c.__name__ for c in cls.__mro__] if cls is not None else [kind]
    known = ("BatchRenorm", "BatchNorm", "Dense", "Conv2D", "ChannelAffine", *_NO_STATE)
    known += ("GroupNorm", "LayerNorm")
    return next((n for n in names if n in known), kind)


_LAZY = {"Dense": "in_features", "Conv2D": "in_channels", "GroupNorm": "num_channels"}
_LAZY |= {"BatchNorm": "num_features", "BatchRenorm": "num_features"}


def _layer_shapes(p: Path, kind: str, cfg: dict[str, Any], field: str) -> Shapes | None:
    kind = _base_kind(kind)
    if kind in _LAZY and _LAZY[kind] in cfg and cfg[_LAZY[kind]] is None:
        return {}  # a lazy layer not built yet (Dense(units)): no parameters
    if kind == "Dense":
        i, o = _dim(p, cfg, "in_features", field), _dim(p, cfg, "out_features", field)
        return {"W": (i, o), **({"b": (o,)} if _flag(p, cfg, "use_bias", field) else {})}
    if kind == "Conv2D":
        kh, kw = _kernel(p, cfg, field)
        ci, co = _dim(p, cfg, "in_channels", field), _dim(p, cfg, "out_channels", field)
        bias = {"b": (co,)} if _flag(p, cfg, "use_bias", field) else {}
        return {"W": (kh, kw, ci, co), **bias}
    if kind in ("BatchNorm", "BatchRenorm", "ChannelAffine"):
        c = _dim(p, cfg, "num_features", field)
        if kind == "ChannelAffine":
            return {"scale": (c,), "shift": (c,)}
        shapes: Shapes = {}
        if kind == "BatchRenorm" or _flag(p, cfg, "affine", field):
            shapes.update(gamma=(c,), beta=(c,))
        if kind == "BatchRenorm" or _flag(p, cfg, "track_running_stats", field):
            shapes.update(running_mean=(c,), running_var=(c,), num_batches_tracked=())
        return shapes
    if kind in ("GroupNorm", "LayerNorm"):
        return _norm_shapes(p, kind, cfg, field)
    if kind in _NO_STATE:
        return {}
    return None


def _norm_shapes(p: Path, kind: str, cfg: dict[str, Any], field: str) -> Shapes:
    """gamma and beta of a GroupNorm (num_channels,) or LayerNorm (normalized_shape)."""
    if kind == "GroupNorm":
        shape: tuple[int, ...] = (_dim(p, cfg, "num_channels", field),)
        gamma = beta = _flag(p, cfg, "affine", field)
    else:
        dims = cfg.get("normalized_shape")
        if not isinstance(dims, list) or not dims:
            raise CheckpointError(f"{p}: {field}.normalized_shape must be a list, got {dims!r:.80}")
        shape = tuple(_dim(p, {"d": d}, "d", f"{field}.normalized_shape") for d in dims)
        gamma = _flag(p, cfg, "elementwise_affine", field)
        beta = gamma and _flag(p, cfg, "bias", field)
    return {**({"gamma": shape} if gamma else {}), **({"beta": shape} if beta else {})}


def _entry(p: Path, entry: Any, where: str) -> tuple[str, dict[str, Any], str]:
    """``(type, config, field)`` of one ``{'type': str, 'config': dict}`` at ``where``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise CheckpointError(f"{p}: {where} must be {{'type': str, 'config': dict}}")
    sub = entry.get("config", {})
    if not isinstance(sub, dict):
        raise CheckpointError(f"{p}: {where}.config must be a dict, got {sub!r:.80}")
    return entry["type"], sub, f"{where}.config"


def _residual_entries(p: Path, cfg: dict[str, Any], field: str) -> list[tuple[str, Any, str]]:
    """``(type, config, field)`` of a Residual config's branch and (if any) shortcut."""
    keys = ("branch", "shortcut") if cfg.get("shortcut") is not None else ("branch",)
    return [_entry(p, cfg.get(key), f"{field}.{key}") for key in keys]


def _entries(p: Path, cfg: dict[str, Any], field: str) -> list[tuple[str, dict[str, Any], str]]:
    """``(type, config, field)`` of each layer of a Sequential config."""
    layers = cfg.get("layers")
    if not isinstance(layers, list) or not layers:
        raise CheckpointError(f"{p}: {field}.layers must be a non-empty list, got {layers!r:.80}")
    return [_entry(p, entry, f"{field}.layers[{i}]") for i, entry in enumerate(layers)]


def declared_shapes(
    p: Path, kind: str, cfg: dict[str, Any], field: str = "model_config", depth: int = 0
) -> Shapes | None:
    """State key -> shape the config builds, or None if a layer type's shapes are unknown."""
    if depth > 50:
        raise CheckpointError(f"{p}: {field} nests Sequentials more than 50 deep")
    if kind not in ("Sequential", "Residual"):
        return _layer_shapes(p, kind, cfg, field)
    shapes: Shapes = {}
    entries = _entries(p, cfg, field) if kind == "Sequential" else _residual_entries(p, cfg, field)
    for i, (sub_kind, sub, where) in enumerate(entries):
        inner = declared_shapes(p, sub_kind, sub, where, depth + 1)
        if inner is None:
            return None
        shapes.update({f"{i}.{k}": v for k, v in inner.items()})
    return shapes


def count(shapes: Shapes) -> int:
    return sum(math.prod(s) for s in shapes.values())


def _construct(p: Path, cls: Any, kind: str, cfg: dict[str, Any], field: str) -> Any:
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        sig = None
    if sig is not None and not any(v.kind is v.VAR_KEYWORD for v in sig.parameters.values()):
        unknown = sorted(set(cfg) - set(sig.parameters) - {"self"})
        if unknown:
            raise CheckpointError(f"{p}: {field} has arguments {unknown} that {kind} does not take")
    try:
        return cls(**cfg)
    except Exception as e:  # any refusal of the constructor, named by its field
        raise CheckpointError(
            f"{p}: {field} does not build a {kind}: {type(e).__name__}: {e}"
        ) from None


def build(p: Path, kind: str, cfg: dict[str, Any], field: str = "model_config") -> Any:
    """The model a checkpoint's config describes (fresh weights), every error a CheckpointError."""
    from bnlab.layers import LAYER_REGISTRY, Sequential

    if kind not in LAYER_REGISTRY or kind.startswith("_"):
        known = sorted(k for k in LAYER_REGISTRY if not k.startswith("_"))
        raise CheckpointError(f"{p}: {field}: unknown layer type {kind!r} (known: {known})")
    if kind != "Sequential":
        return _construct(p, LAYER_REGISTRY[kind], kind, cfg, field)
    layers = [build(p, k, c, f) for k, c, f in _entries(p, cfg, field)]
    rest = {k: v for k, v in cfg.items() if k != "layers"}
    return _construct(p, lambda **kw: Sequential(layers, **kw), kind, rest, field)
