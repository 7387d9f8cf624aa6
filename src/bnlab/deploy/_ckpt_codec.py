"""Nested state (dicts, lists, numbers, strings, arrays) <-> JSON with array references
(private to bnlab.deploy.checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bnlab.deploy._ckpt_read import CheckpointError

__all__ = ["encode", "decode"]

_SAVABLE_KINDS = "biufcUS"  # dtypes that np.load reads back without pickle
_FIX = "use an earlier checkpoint, or re-run the training that wrote it"


def encode(obj: Any, key: str, arrays: dict[str, np.ndarray], depth: int = 0) -> Any:
    """JSON-able copy of ``obj`` with every ndarray moved to ``arrays[key...]``.

    Refuses (TypeError naming ``key``) what could not be loaded back without pickle.
    """
    if depth > 100:
        raise TypeError(f"save_checkpoint: {key} nests more than 100 levels (a cycle?)")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _SAVABLE_KINDS or obj.dtype.fields is not None:
            raise TypeError(
                f"save_checkpoint: {key} is an array of dtype {obj.dtype}, which cannot be "
                "loaded back without pickle; save numbers (bool/int/float/complex) or strings"
            )
        name = key
        while name in arrays:
            name += "_"
        arrays[name] = obj
        return {"__ndarray__": name}
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            raise TypeError(f"save_checkpoint: {key} uses the reserved key '__ndarray__'")
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"save_checkpoint: key {k!r} in {key} must be a str")
            out[k] = encode(v, f"{key}/{k}", arrays, depth + 1)
        return out
    if isinstance(obj, list | tuple):
        return [encode(v, f"{key}/{i}", arrays, depth + 1) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(
        f"save_checkpoint: {key} holds a {type(obj).__name__}; only dicts, lists, numbers, "
        "strings, None and numpy arrays can be saved (call .state_dict() on objects)"
    )


def decode(obj: Any, arrays: dict[str, np.ndarray], p: Path, where: str) -> Any:
    """Inverse of :func:`_encode`; a reference to a missing array is a CheckpointError."""
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            ref = obj["__ndarray__"]
            if len(obj) != 1 or not isinstance(ref, str) or ref not in arrays:
                raise CheckpointError(
                    f"{p}: {where} refers to the array {ref!r:.80}, which the file lacks; {_FIX}"
                )
            return arrays[ref]
        return {k: decode(v, arrays, p, f"{where}/{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, arrays, p, f"{where}/{i}") for i, v in enumerate(obj)]
    return obj
