"""Checkpoints: model, optimizer and loop state in one ``.npz`` file, written atomically.

File layout (``numpy.savez``, no pickles; readable with ``np.load(path)``):

- ``__meta__``: a JSON string ``{"format": "bnlab-checkpoint", "version": 1, "model_class",
  "model_config" (``model.get_config()``), "optimizer", "extra"}``; arrays inside the
  optimizer state and ``extra`` are replaced by ``{"__ndarray__": key}`` references;
- ``model/<key>``: ``model.state_dict()`` (parameters and buffers);
- ``optimizer/...`` and ``extra/...``: the referenced arrays.

Atomicity: the file is written to a temporary file in the same directory, flushed and
fsync'ed, then renamed over ``path`` with ``os.replace`` and the directory fsync'ed. A crash
at any point leaves either the previous checkpoint or the new one, never a mix.

Example (``model``, optimizer ``opt`` and ``BatchIterator`` ``it`` of a training loop)::

    save_checkpoint("ckpt.npz", model, opt, extra={"iterator": it.state_dict(), "step": 100})
    ckpt = load_checkpoint("ckpt.npz")           # rebuilds the model from its config
    opt = ckpt.make_optimizer()                   # same type, hyperparameters and slots
    it.load_state_dict(ckpt.extra["iterator"])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from bnlab._atomic import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "Checkpoint", "CheckpointError"]

FORMAT = "bnlab-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable bnlab checkpoint, or one that does not fit the model."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model: Any
    optimizer_state: dict[str, Any] | None
    extra: dict[str, Any] | None
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def make_optimizer(self, model: Any = None) -> Any:
        """Rebuild the saved optimizer on ``model`` (default: the loaded one), state restored."""
        if self.optimizer_state is None:
            raise CheckpointError(f"{self.path} holds no optimizer state")
        from bnlab.optim import OPTIMIZERS, schedule_from_config

        state = self.optimizer_state
        cls = OPTIMIZERS[state["type"]]
        config = dict(state["config"])
        if isinstance(config["lr"], dict):
            config["lr"] = schedule_from_config(config["lr"])
        opt = cls.from_model(self.model if model is None else model, **config)
        opt.load_state_dict(state)
        return opt


# -- nested state <-> JSON + arrays ---------------------------------------------------------
def _encode(obj: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-able copy of ``obj`` with every ndarray moved to ``arrays[key...]``."""
    if isinstance(obj, np.ndarray):
        name = key
        while name in arrays:
            name += "_"
        arrays[name] = obj
        return {"__ndarray__": name}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"save_checkpoint: key {k!r} in {key} must be a str")
            out[k] = _encode(v, f"{key}/{k}", arrays)
        return out
    if isinstance(obj, list | tuple):
        return [_encode(v, f"{key}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(
        f"save_checkpoint: {key} holds a {type(obj).__name__}; only dicts, lists, numbers, "
        "strings, None and numpy arrays can be saved (call .state_dict() on objects)"
    )


def _decode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return arrays[obj["__ndarray__"]]
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


# -- writing --------------------------------------------------------------------------------
def _write_npz(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    np.savez(f, **arrays)  # type: ignore[arg-type]


def _atomic_write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: _write_npz(f, arrays))


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Any,
    optimizer: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (architecture + state), ``optimizer.state_dict()`` and ``extra``.

    ``extra`` is a dict of JSON-able values and numpy arrays, e.g. the step count and
    ``BatchIterator.state_dict()``. Returns the path written. The previous file at ``path``
    survives intact if anything fails (see the module docstring).
    """
    p = Path(path)
    if not p.parent.is_dir():
        raise FileNotFoundError(f"save_checkpoint: directory {p.parent} does not exist")
    arrays: dict[str, np.ndarray] = {}
    state = model.state_dict()
    for k, v in state.items():
        arrays[f"model/{k}"] = np.asarray(v)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": type(model).__name__,
        "model_config": model.get_config(),
        "model_keys": list(state),
        "optimizer": None
        if optimizer is None
        else _encode(optimizer.state_dict(), "optimizer", arrays),
        "extra": None if extra is None else _encode(dict(extra), "extra", arrays),
    }
    try:
        text = json.dumps(meta)
    except TypeError as e:
        raise TypeError(
            f"save_checkpoint: the model config is not JSON-serializable: {e}"
        ) from None
    arrays["__meta__"] = np.array(text)
    _atomic_write(p, arrays)
    return p


# -- reading --------------------------------------------------------------------------------
def _read(p: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not p.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {p}")
    fix = "use an earlier checkpoint, or re-run the training that wrote it"
    try:
        z = np.load(p, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{p} is a single .npy array, not a bnlab checkpoint (.npz)")
        with z:
            if "__meta__" not in z.files:
                raise CheckpointError(
                    f"{p} is not a bnlab checkpoint (no __meta__ entry); write checkpoints "
                    "with bnlab.deploy.save_checkpoint"
                )
            arrays = {k: z[k] for k in z.files}  # reading every member verifies its CRC
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"{p} is truncated or corrupt and cannot be read ({type(e).__name__}: {e}); {fix}"
        ) from None
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except ValueError as e:
        raise CheckpointError(f"{p}: the __meta__ entry is not valid JSON ({e}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a bnlab checkpoint (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format version {meta['version']}, this bnlab reads up to "
            f"{VERSION}; upgrade bnlab"
        )
    return meta, arrays


def _build_model(cls_name: str, config: dict[str, Any], p: Path) -> Any:
    from bnlab.layers import LAYER_REGISTRY

    if cls_name not in LAYER_REGISTRY:
        raise CheckpointError(
            f"{p}: the model class {cls_name!r} is unknown to this bnlab "
            f"(known: {sorted(LAYER_REGISTRY)})"
        )
    cls: Any = LAYER_REGISTRY[cls_name]
    return cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)


def _layer_label(model: Any, key: str) -> str:
    """``layer 2 (Dense 'dense_2')`` for a Sequential state key ``"2.W"``."""
    head = key.split(".", 1)[0]
    layers = getattr(model, "layers", None)
    if layers is not None and head.isdigit() and int(head) < len(layers):
        layer = layers[int(head)]
        return f"layer {head} ({type(layer).__name__} {getattr(layer, 'name', '')!r})"
    return f"{type(model).__name__} {getattr(model, 'name', '')!r}"


def _check_fits(model: Any, state: dict[str, np.ndarray], meta: dict[str, Any], p: Path) -> None:
    """Raise a CheckpointError naming the first layer whose parameters do not match."""
    own = model.state_dict()
    for key in list(own) + [k for k in state if k not in own]:
        mine, theirs = own.get(key), state.get(key)
        if mine is None or theirs is None or np.shape(mine) != np.shape(theirs):
            where = _layer_label(model, key)
            have = "absent" if mine is None else f"shape {np.shape(mine)}"
            want = "absent" if theirs is None else f"shape {np.shape(theirs)}"
            raise CheckpointError(
                f"{p} does not fit the model at {where}: '{key}' is {want} in the checkpoint "
                f"but {have} in the model. The checkpoint was saved from "
                f"{meta['model_class']} {json.dumps(meta['model_config'])[:300]}; load it "
                "without a model to rebuild that architecture"
            )


def load_checkpoint(path: str | os.PathLike[str], model: Any = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    With ``model=None`` the model is rebuilt from its saved config (``Sequential.from_config``
    or the layer class) and its weights loaded. Given an existing ``model``, the weights are
    loaded into it after checking that every parameter and buffer matches in name and shape;
    a mismatch raises :class:`CheckpointError` naming the layer, and nothing is changed.
    """
    p = Path(path)
    meta, arrays = _read(p)
    keys = meta.get("model_keys", [])
    missing = [k for k in keys if f"model/{k}" not in arrays]
    if missing:
        raise CheckpointError(f"{p} lacks the model arrays {missing[:5]}; the file is damaged")
    state = {k: arrays[f"model/{k}"] for k in keys}
    if model is None:
        model = _build_model(meta["model_class"], meta["model_config"], p)
    _check_fits(model, state, meta, p)
    model.load_state_dict(state)
    optimizer_state = None if meta["optimizer"] is None else _decode(meta["optimizer"], arrays)
    extra = None if meta["extra"] is None else _decode(meta["extra"], arrays)
    return Checkpoint(model, optimizer_state, extra, p, meta)
