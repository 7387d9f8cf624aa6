"""Reading a checkpoint file without trusting it (private helpers of bnlab.deploy.checkpoint).

Before any array is allocated: the file must start with a zip signature, every member must be
a ``.npy`` array whose header declares a plain dtype (no Python objects, nothing that needs
pickle) and no more bytes than the member holds, and the total must stay under the caller's
limit. Every member is then read to its end, which checks its CRC-32.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np

__all__ = ["CheckpointError", "read_members", "parse_meta"]

FORMAT = "bnlab-checkpoint"
VERSION = 1
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_FIX = "use an earlier checkpoint, or re-run the training that wrote it"


class CheckpointError(ValueError):
    """A file that is not a readable bnlab checkpoint, or one that does not fit the model."""


def _signature(p: Path) -> None:
    with open(p, "rb") as f:
        head = f.read(8)
    if not head or any(z.startswith(head) for z in _ZIP):
        raise CheckpointError(
            f"{p} is truncated or corrupt ({len(head)} bytes, an empty or cut-off file); {_FIX}"
        )
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{p} is a single .npy array, not a bnlab checkpoint (.npz)")
    if head[:4] not in _ZIP:
        raise CheckpointError(
            f"{p} is not a bnlab checkpoint (.npz): it starts with {head!r}, not a zip "
            "signature; pass a file written by bnlab.deploy.save_checkpoint (e.g. a run's "
            "checkpoint.npz)"
        )


def _header(p: Path, name: str, f: Any) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise CheckpointError(f"{p}: member {name!r} uses .npy format {version}; bnlab writes 1.0")
    if dtype.hasobject or dtype.kind == "V" or dtype.fields is not None:
        raise CheckpointError(
            f"{p}: member {name!r} has dtype {dtype} (Python objects or a structured/void "
            "record, which need pickle or are no numbers); bnlab never writes such arrays"
        )
    return tuple(int(s) for s in shape), bool(fortran), dtype


class _Member(NamedTuple):
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype[Any]
    nbytes: int


def _probe(p: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    """A member's .npy header (a few hundred bytes inflated), checked against the size the zip
    directory declares: nothing of its data is inflated yet."""
    name = info.filename[:-4]
    with zf.open(info) as f:
        shape, fortran, dtype = _header(p, name, f)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise CheckpointError(
            f"{p}: member {name!r} declares shape {shape} of {dtype} ({nbytes:,} bytes) but "
            f"holds {info.file_size:,} bytes: the file is truncated or crafted; {_FIX}"
        )
    return _Member(info, shape, fortran, dtype, nbytes)


def _read_member(p: Path, zf: zipfile.ZipFile, m: _Member) -> np.ndarray:
    name = m.info.filename[:-4]
    with zf.open(m.info) as f:
        _header(p, name, f)
        arr = np.empty(math.prod(m.shape), dtype=m.dtype)
        raw = arr.view(np.uint8).reshape(-1) if m.nbytes else np.zeros(0, np.uint8)
        view = raw.data  # a memoryview on arr's bytes
        reader = cast(io.BufferedIOBase, f)  # a zipfile.ZipExtFile: it has readinto
        got = 0
        while got < m.nbytes:
            n = reader.readinto(view[got:])
            if not n:
                raise CheckpointError(f"{p}: member {name!r} is truncated; {_FIX}")
            got += n
        if f.read(1):  # reading to the end also checks the member's CRC-32
            raise CheckpointError(f"{p}: member {name!r} has data after its array; {_FIX}")
    return arr.reshape(m.shape[::-1]).T if m.fortran else arr.reshape(m.shape)


def read_members(
    p: Path,
    max_bytes: int,
    check: Callable[[np.ndarray, dict[str, tuple[int, ...]]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of the zip file ``p`` (key without ``.npy``), CRCs checked.

    Nothing large is inflated before it is known to fit: first every member's header is read
    and the declared sizes are added up against ``max_bytes``; then ``__meta__`` is read and
    ``check(meta, shapes)`` may refuse the file from the shapes alone; only then the arrays.
    """
    if not p.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {p}")
    _signature(p)
    try:
        with zipfile.ZipFile(p) as zf:
            members = _probe_all(p, zf, max_bytes)
            if "__meta__" not in members:
                raise CheckpointError(
                    f"{p} is not a bnlab checkpoint (no __meta__ entry); write checkpoints with "
                    "bnlab.deploy.save_checkpoint"
                )
            meta = _read_member(p, zf, members["__meta__"])
            if check is not None:
                check(meta, {k: m.shape for k, m in members.items()})
            arrays = {k: _read_member(p, zf, m) for k, m in members.items() if k != "__meta__"}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, RuntimeError) as e:
        raise CheckpointError(
            f"{p} is truncated or corrupt and cannot be read ({type(e).__name__}: {e}); {_FIX}"
        ) from None
    return {"__meta__": meta, **arrays}


def _probe_all(p: Path, zf: zipfile.ZipFile, max_bytes: int) -> dict[str, _Member]:
    members: dict[str, _Member] = {}
    total = 0
    for info in zf.infolist():
        if not info.filename.endswith(".npy") or info.filename[:-4] in members:
            raise CheckpointError(
                f"{p}: unexpected or repeated member {info.filename!r}; a bnlab "
                "checkpoint holds only distinct .npy arrays"
            )
        m = members[info.filename[:-4]] = _probe(p, zf, info)
        total += m.nbytes
        if total > max_bytes:
            raise CheckpointError(
                f"{p}: the arrays in the file declare more than the size limit of "
                f"{max_bytes:,} bytes (member {info.filename[:-4]!r}, {m.nbytes:,} bytes); "
                "if you trust the file, raise max_params"
            )
    return members


_META_TYPES: dict[str, tuple[type, ...]] = {
    "model_class": (str,),
    "model_config": (dict,),
    "model_keys": (list,),
    "optimizer": (dict, type(None)),
    "extra": (dict, type(None)),
}


def parse_meta(p: Path, raw: np.ndarray) -> dict[str, Any]:
    """The ``__meta__`` JSON, every field's type checked (CheckpointError naming the field)."""
    if raw.dtype.kind != "U" or raw.shape != ():
        raise CheckpointError(
            f"{p}: __meta__ must be one JSON string, got dtype {raw.dtype} shape {raw.shape}"
        )
    try:
        meta = json.loads(str(raw))
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{p}: the __meta__ entry is not valid JSON ({e}); {_FIX}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{p} is not a bnlab checkpoint (__meta__ format {got!r})")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{p}: __meta__ field 'version' must be an int >= 1, got {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format version {version}, this bnlab reads up to {VERSION}; "
            "upgrade bnlab"
        )
    for key, types in _META_TYPES.items():
        if key not in meta:
            raise CheckpointError(f"{p}: __meta__ lacks the field {key!r}; {_FIX}")
        if not isinstance(meta[key], types):
            raise CheckpointError(
                f"{p}: __meta__ field {key!r} must be {' or '.join(t.__name__ for t in types)}, "
                f"got {type(meta[key]).__name__}"
            )
    keys = meta["model_keys"]
    if not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise CheckpointError(f"{p}: __meta__ field 'model_keys' must be distinct strings")
    if not isinstance(meta.get("rng", {}), dict):
        raise CheckpointError(f"{p}: __meta__ field 'rng' must be a dict")
    return meta
