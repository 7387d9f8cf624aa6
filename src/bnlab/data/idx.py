"""The IDX file format of MNIST and Fashion-MNIST (raw or gzip-compressed).

Compression is detected from the gzip magic bytes, not the file name. Layout (big-endian):
two zero bytes, a type code, the number of dimensions ``ndim``, then ``ndim`` 32-bit sizes,
then ``prod(sizes)`` values of the type. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import IO, Any

import numpy as np

__all__ = ["read_idx", "write_idx", "IDXError"]

_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_CODES: dict[str, int] = {np.dtype(v).str[1:]: k for k, v in _DTYPES.items()}


class IDXError(ValueError):
    """A file that is not a valid IDX file (wrong magic, truncated, trailing bytes)."""


def _read_bytes(path: Any) -> bytes:
    """All bytes of ``path`` (a path or an importlib.resources Traversable), gunzipped if needed."""
    f: IO[bytes]
    with path.open("rb") if hasattr(path, "open") else open(path, "rb") as f:
        raw = f.read()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: str | os.PathLike[str] | Any) -> np.ndarray:
    """Read an IDX file (``.gz`` is decompressed on the fly) into an array of its sizes.

    Raises FileNotFoundError if the file is missing, :class:`IDXError` if the magic number is
    wrong or the data is shorter or longer than its header declares.
    """
    name = str(path)
    try:
        raw = _read_bytes(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {name}") from None
    except (EOFError, OSError, zlib.error) as e:
        raise IDXError(
            f"{name}: the gzip stream is truncated or corrupt ({e}); re-download or re-copy it"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise IDXError(
            f"{name}: not an IDX file: expected the magic bytes 00 00 <type code in "
            f"{[hex(c) for c in _DTYPES]}> <ndim>, got {raw[:4].hex(' ') or 'an empty file'}"
        )
    dtype = np.dtype(_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{name}: truncated header: expected {header} bytes, got {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise IDXError(
            f"{name}: file {what}: the header declares shape {tuple(shape)} of {dtype.name} "
            f"({expected} data bytes), the file holds {got} data bytes"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends with ``.gz``)."""
    arr = np.asarray(array)
    key = arr.dtype.str[1:]
    if key not in _CODES:
        raise TypeError(
            f"write_idx: dtype {arr.dtype} has no IDX type code; "
            "use uint8, int8, int16, int32, float32 or float64"
        )
    big = arr.astype(np.dtype(_DTYPES[_CODES[key]]), copy=False)
    data = bytes([0, 0, _CODES[key], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data += big.tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)
