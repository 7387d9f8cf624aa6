"""Checkpoints: model, optimizer and loop state in one ``.npz`` file, written atomically.

File layout (``numpy.savez``, no pickles; readable with ``np.load(path)``):

- ``__meta__``: a JSON string ``{"format": "bnlab-checkpoint", "version": 1, "model_class",
  "model_config" (``model.get_config()``), "optimizer", "extra"}``; arrays inside the
  optimizer state and ``extra`` are replaced by ``{"__ndarray__": key}`` references; and
  ``"rng"``: the ``bit_generator.state`` of every generator the model declares
  (``layer.generators()``: Dropout's masks), so that a resumed run is bit-exact;
- ``model/<key>``: ``model.state_dict()`` (parameters and buffers);
- ``optimizer/...`` and ``extra/...``: the referenced arrays.

Atomicity: everything that :func:`load_checkpoint` checks is checked before anything is
written (a value that cannot be loaded back, e.g. an object array or a NaN weight, raises
and leaves the old file as it was). The file is written to a temporary file in the same
directory, flushed, fsync'ed and read back (every array compared byte for byte), then renamed
over ``path`` with ``os.replace`` and the directory fsync'ed. A crash at any point leaves
either the previous checkpoint or the new one, never a mix; temporaries of killed saves are
removed by the next save.

Loading trusts nothing in the file: a malformed ``__meta__`` (wrong JSON types, missing
fields, unknown layer types, bad constructor arguments), an array of the wrong dtype
(complex, bool, dates, objects), shape or value (NaN, Inf, a negative ``running_var``), a
missing ``extra`` or optimizer array, or a broken generator state raises
:class:`CheckpointError` naming the field, before the model or anything else is changed.
The shapes a config declares are checked against the file, and their total against
``max_params`` (default :data:`MAX_PARAMS`), before the model is built.

Example (``model``, optimizer ``opt`` and ``BatchIterator`` ``it`` of a training loop)::

    save_checkpoint("ckpt.npz", model, opt, extra={"iterator": it.state_dict(), "step": 100})
    ckpt = load_checkpoint("ckpt.npz")           # rebuilds the model from its config
    opt = ckpt.make_optimizer()                   # same type, hyperparameters and slots
    it.load_state_dict(ckpt.extra["iterator"])
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from bnlab._atomic import atomic_write, check_target
from bnlab.deploy import _ckpt_config as config_check
from bnlab.deploy._ckpt_codec import decode as _decode
from bnlab.deploy._ckpt_codec import encode as _encode
from bnlab.deploy._ckpt_read import FORMAT, VERSION, CheckpointError, parse_meta, read_members

if TYPE_CHECKING:  # bnlab.layers imports the kernels (Numba): imported where used
    from bnlab.layers.base import Layer
    from bnlab.optim import Optimizer

__all__ = ["save_checkpoint", "load_checkpoint", "Checkpoint", "CheckpointError", "MAX_PARAMS"]
__all__ += ["save", "load"]


class Stateful(Protocol):
    """What :func:`save_checkpoint` needs of an optimizer: its ``state_dict()``."""

    def state_dict(self) -> dict[str, Any]: ...


#: Default cap on the number of model parameters and buffer entries :func:`load_checkpoint`
#: accepts from a file (400 MB of float32); pass ``max_params=`` to load a bigger model.
MAX_PARAMS = 100_000_000


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model: Layer
    optimizer_state: dict[str, Any] | None
    extra: dict[str, Any] | None
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def make_optimizer(self, model: Layer | None = None) -> Optimizer:
        """Rebuild the saved optimizer on ``model`` (default: the loaded one), state restored."""
        if self.optimizer_state is None:
            raise CheckpointError(f"{self.path} holds no optimizer state")
        return _make_optimizer(self.optimizer_state, self.model if model is None else model)


def _make_optimizer(state: dict[str, Any], model: Layer) -> Optimizer:
    from bnlab.optim import OPTIMIZERS, schedule_from_config

    cls = OPTIMIZERS[state["type"]]
    config = dict(state["config"])
    if isinstance(config["lr"], dict):
        config["lr"] = schedule_from_config(config["lr"])
    opt = cls.from_model(model, **config)
    opt.load_state_dict(state)
    return opt


_FIX = "use an earlier checkpoint, or re-run the training that wrote it"


# -- validation: everything before anything changes -------------------------------------------
@dataclass
class _Plan:
    """A checked checkpoint, ready to be assigned by :func:`_apply`."""

    model: Layer
    state: dict[str, np.ndarray]
    optimizer_state: dict[str, Any] | None
    extra: dict[str, Any] | None
    rng: dict[str, dict[str, Any]]


def _layer_label(model: Layer, key: str) -> str:
    """``layer 2 (Dense 'dense_2')`` for a Sequential state key ``"2.W"``."""
    head = key.split(".", 1)[0]
    layers = model.sublayers()
    if layers and head.isdigit() and int(head) < len(layers):
        layer = layers[int(head)]
        return f"layer {head} ({type(layer).__name__} {layer.name!r})"
    return f"{type(model).__name__} {model.name!r}"


def _mismatch(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first key (``a``'s order, then ``b``'s) whose shape differs or is absent in one."""
    return next((k for k in [*a, *(k for k in b if k not in a)] if a.get(k) != b.get(k)), None)


def _check_fits(p: Path, model: Layer, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Raise a CheckpointError naming the first layer whose parameters do not match."""
    own = {k: tuple(np.shape(v)) for k, v in model.state_dict().items()}
    theirs = {k: v.shape for k, v in state.items()}
    key = _mismatch(own, theirs)
    if key is not None:
        have, want = (f"shape {d[key]}" if key in d else "absent" for d in (own, theirs))
        raise CheckpointError(
            f"{p} does not fit the model at {_layer_label(model, key)}: '{key}' is {want} in "
            f"the checkpoint but {have} in the model. The checkpoint was saved from "
            f"{meta['model_class']} {json.dumps(meta['model_config'])[:300]}; load it "
            "without a model to rebuild that architecture"
        )


def _declared(p: Path, meta: dict[str, Any], in_file: dict[str, Any], cap: int | None) -> None:
    """Check the config's declared shapes against the file's (``in_file``) and ``cap``."""
    shapes = config_check.declared_shapes(p, meta["model_class"], meta["model_config"])
    if shapes is None:
        return
    total = config_check.count(shapes)
    if cap is not None and total > cap:
        raise CheckpointError(
            f"{p}: model_config declares {total:,} parameters and buffer entries, more than "
            f"max_params={cap:,}; if you trust the file, pass "
            f"load_checkpoint(..., max_params={total})"
        )
    key = _mismatch(shapes, in_file)
    if key is not None:
        want, have = shapes.get(key), in_file.get(key)
        raise CheckpointError(
            f"{p} is inconsistent: model_config declares '{key}' "
            f"{'absent' if want is None else f'of shape {want}'}, the file's array is "
            f"{'absent' if have is None else f'of shape {have}'}; the file is damaged or "
            f"crafted. {_FIX}"
        )


def _match_dtypes(model: Layer, state: dict[str, np.ndarray]) -> None:
    """Cast each freshly built leaf to the floating dtype of its arrays in the file."""
    from bnlab.deploy._walk import iter_paths

    for path, leaf in iter_paths(model):
        prefix = f"{path}." if path else ""
        dts = {
            state[prefix + k].dtype
            for k, v in {**leaf.params, **leaf.buffers}.items()
            if v.dtype.kind == "f" and state[prefix + k].dtype.kind == "f"
        }
        if len(dts) == 1:
            dt = dts.pop()
            if dt in (np.float32, np.float64) and any(v.dtype != dt for v in leaf.params.values()):
                leaf.astype(dt)


def _check_optimizer(p: Path, opt: Any, model: Layer) -> None:
    from bnlab.optim import OPTIMIZERS

    where = f"{p}: the optimizer state"
    if not isinstance(opt.get("type"), str) or opt["type"] not in OPTIMIZERS:
        raise CheckpointError(
            f"{where}: 'type' must be one of {sorted(OPTIMIZERS)}, got {opt.get('type')!r:.80}"
        )
    config, slots = opt.get("config"), opt.get("slots")
    if not isinstance(config, dict) or not isinstance(config.get("lr"), dict | int | float):
        raise CheckpointError(f"{where}: 'config' must be a dict with a number or schedule 'lr'")
    iterations = opt.get("iterations")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise CheckpointError(f"{where}: 'iterations' must be an int >= 0, got {iterations!r}")
    if not isinstance(slots, dict) or not all(isinstance(d, dict) for d in slots.values()):
        raise CheckpointError(f"{where}: 'slots' must be a dict of dicts of arrays")
    from bnlab.layers.base import check_state_array

    params = model.params
    for s, d in slots.items():
        for k, v in d.items():
            if k in params:
                try:
                    check_state_array(f"slot '{s}' of '{k}'", v, params[k])
                except ValueError as e:
                    raise CheckpointError(f"{where}: {e}") from None
    try:
        _make_optimizer(opt, model)  # a dry run on a throwaway optimizer: the model is unchanged
    except Exception as e:
        raise CheckpointError(f"{where} does not fit: {type(e).__name__}: {e}") from None


def _check_rng(p: Path, saved: dict[str, Any], model: Layer) -> dict[str, dict[str, Any]]:
    own = model.generators()
    if not isinstance(saved, dict):
        raise CheckpointError(f"{p}: __meta__ field 'rng' must be a dict of generator states")
    for key, state in saved.items():
        where = f"{p}: the generator state rng/{key}"
        if key not in own:
            raise CheckpointError(f"{where} has no generator in the model (has {sorted(own)})")
        kind = type(own[key].bit_generator)
        name = state.get("bit_generator") if isinstance(state, dict) else None
        if name != kind.__name__:
            raise CheckpointError(f"{where} is for {name!r:.40}, the model's is {kind.__name__}")
        scratch = kind()
        try:
            scratch.state = state
        except Exception as e:
            raise CheckpointError(f"{where} is malformed: {type(e).__name__}: {e}") from None
    return saved


def _validate(
    p: Path,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    model: Layer | None,
    max_params: int | None,
) -> _Plan:
    """Check every part of a checkpoint (building the model if ``model`` is None); assign
    nothing."""
    keys = meta["model_keys"]
    missing = [k for k in keys if f"model/{k}" not in arrays]
    if missing:
        raise CheckpointError(f"{p} lacks the model arrays {missing[:5]}; the file is damaged")
    state = {k: arrays[f"model/{k}"] for k in keys}
    cap = max_params if model is None else None
    _declared(p, meta, {k: v.shape for k, v in state.items()}, cap)
    if model is None:
        model = config_check.build(p, meta["model_class"], meta["model_config"])
        _match_dtypes(model, state)
    _check_fits(p, model, state, meta)
    try:
        model.check_state_dict(state)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{p}: {e.args[0] if isinstance(e, KeyError) else e}") from None
    opt = None if meta["optimizer"] is None else _decode(meta["optimizer"], arrays, p, "optimizer")
    if opt is not None:
        _check_optimizer(p, opt, model)
    extra = None if meta["extra"] is None else _decode(meta["extra"], arrays, p, "extra")
    rng = _check_rng(p, _decode(meta.get("rng", {}), arrays, p, "rng"), model)
    return _Plan(model, state, opt, extra, rng)


def _apply(plan: _Plan) -> None:
    plan.model.load_state_dict(plan.state)
    own = plan.model.generators()
    for key, state in plan.rng.items():
        own[key].bit_generator.state = state


# -- writing --------------------------------------------------------------------------------
def _write_npz(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    np.savez(f, **arrays)  # type: ignore[arg-type]


def _verify(tmp: Path, arrays: dict[str, np.ndarray]) -> None:
    """Read the written file back; every array must come back with the same bytes."""
    back = read_members(tmp, 2**62)
    for k, v in arrays.items():
        got = back.get(k)
        if got is None or got.dtype != v.dtype or got.shape != v.shape:
            raise OSError(f"save_checkpoint: read-back check failed for {k!r}; nothing replaced")
        if np.ascontiguousarray(got).tobytes() != np.ascontiguousarray(v).tobytes():
            raise OSError(f"save_checkpoint: {k!r} read back different bytes; nothing replaced")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Layer,
    optimizer: Stateful | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (architecture + state), ``optimizer.state_dict()`` and ``extra``.

    ``extra`` is a dict of JSON-able values and numpy arrays, e.g. the step count and
    ``BatchIterator.state_dict()``. Returns the path written. Whatever
    :func:`load_checkpoint` would refuse (object arrays, NaN weights, ...) raises here, before
    anything is written; the previous file at ``path`` survives intact if anything fails
    (see the module docstring).
    """
    from bnlab.deploy._walk import check_model

    check_model(model, "save_checkpoint")
    p = check_target(path, "save_checkpoint", own=(b"PK\x03\x04", b"PK\x05\x06"))  # zip
    state = model.state_dict()
    arrays: dict[str, np.ndarray] = {f"model/{k}": np.asarray(v) for k, v in state.items()}
    opt = None if optimizer is None else _encode(optimizer.state_dict(), "optimizer", arrays)
    gens = model.generators()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": type(model).__name__,
        "model_config": model.get_config(),
        "model_keys": list(state),
        "optimizer": opt,
        "extra": None if extra is None else _encode(dict(extra), "extra", arrays),
        "rng": _encode({k: g.bit_generator.state for k, g in gens.items()}, "rng", arrays),
    }
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"save_checkpoint: the model config is not JSON-serializable: {e}"
        ) from None
    arrays["__meta__"] = np.array(text)
    try:
        _validate(p, parse_meta(p, arrays["__meta__"]), arrays, model, None)
    except CheckpointError as e:
        raise ValueError(
            f"save_checkpoint: refusing to write {p}, it could not be loaded back: {e}"
        ) from None
    atomic_write(p, lambda f: _write_npz(f, arrays), lambda tmp: _verify(tmp, arrays))
    return p


# -- reading --------------------------------------------------------------------------------
def load_checkpoint(
    path: str | os.PathLike[str], model: Layer | None = None, *, max_params: int = MAX_PARAMS
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    With ``model=None`` the model is rebuilt from its saved config (``Sequential.from_config``
    or the layer class) in the dtype of the saved arrays, and its weights loaded; a config
    declaring more than ``max_params`` parameters and buffer entries is refused before
    anything is built (raise the limit for a model you trust). Given an existing ``model``,
    the weights are loaded into it (cast to its dtype) after checking that every parameter
    and buffer matches in name, shape, dtype and value. The optimizer state, ``extra`` and
    the generator states are checked too. Any problem raises :class:`CheckpointError`
    naming it, and nothing is changed.
    """
    p = Path(path)
    if model is not None:
        from bnlab.deploy._walk import check_model

        check_model(model, "load_checkpoint")
    if isinstance(max_params, bool) or not isinstance(max_params, int) or max_params < 1:
        raise ValueError(f"load_checkpoint: max_params must be a positive int, got {max_params!r}")
    cap = max_params if model is None else None

    def check(raw: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> None:
        """Refuse from the zip directory and headers alone, before any array is inflated."""
        meta = parse_meta(p, raw)
        keys = meta["model_keys"]
        if any(f"model/{k}" not in shapes for k in keys):
            return  # _validate names the missing arrays
        _declared(p, meta, {k: shapes[f"model/{k}"] for k in keys}, cap)
        inside = sum(math.prod(s) for k, s in shapes.items() if k.startswith("model/"))
        outside = sum(math.prod(s) for k, s in shapes.items() if not k.startswith("model/"))
        if outside > 4 * inside + 2**20:  # optimizer slots, generator states, extras
            raise CheckpointError(
                f"{p}: the file holds {outside:,} entries besides the model's {inside:,} (at "
                "most 4x the model is expected: optimizer slots and metadata); it is crafted "
                "or damaged"
            )

    # float64 weights with three optimizer slots: 32 bytes a parameter, plus metadata
    arrays = read_members(p, max_params * 32 + 2**26, check)
    meta = parse_meta(p, arrays.pop("__meta__"))
    plan = _validate(p, meta, arrays, model, max_params)
    _apply(plan)
    return Checkpoint(plan.model, plan.optimizer_state, plan.extra, p, meta)


def save(model: Layer, path: str | os.PathLike[str]) -> Path:
    """``bnlab.save(model, path)``: the model alone (architecture + weights + buffers) as a
    checkpoint, :func:`save_checkpoint` without optimizer state."""
    return save_checkpoint(path, model)


def load(path: str | os.PathLike[str], *, max_params: int = MAX_PARAMS) -> Layer:
    """``bnlab.load(path)``: the model a checkpoint holds, rebuilt from its config with its
    weights, buffers and generator states (:func:`load_checkpoint`)."""
    return load_checkpoint(path, max_params=max_params).model
