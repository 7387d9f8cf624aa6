"""The IDX file format of MNIST and Fashion-MNIST (raw or gzip-compressed).

Compression is detected from the gzip magic bytes, not the file name. Layout (big-endian):
two zero bytes, a type code, the number of dimensions ``ndim``, then ``ndim`` 32-bit sizes,
then ``prod(sizes)`` values of the type. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64.

The header is read first and the declared size ``prod(sizes) * itemsize`` is checked against
the file and against the size limit of :mod:`bnlab.data.limits` before the data is read, so a
forged header or a gzip bomb is refused without allocating it. A gzip file is read to its end:
its CRC-32 and length are checked.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from typing import IO, Any

import numpy as np

from bnlab._atomic import atomic_write
from bnlab.data.limits import byte_budget

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
    """A file that is not a valid IDX file (wrong magic, truncated, trailing bytes, corrupt)."""


def _read_upto(f: IO[bytes], n: int) -> bytearray:
    """Up to ``n`` bytes of ``f`` (fewer only at the end of the stream)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            break
        got += k
    del view
    if got < n:
        del buf[got:]
    return buf


def _header(f: IO[bytes], name: str) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """(dtype, shape, header length) from the start of an IDX stream."""
    magic = bytes(_read_upto(f, 4))
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES:
        raise IDXError(
            f"{name}: not an IDX file: expected the magic bytes 00 00 <type code in "
            f"{[hex(c) for c in _DTYPES]}> <ndim>, got {magic.hex(' ') or 'an empty file'}"
        )
    ndim = magic[3]
    sizes = bytes(_read_upto(f, 4 * ndim))
    if len(sizes) < 4 * ndim:
        raise IDXError(
            f"{name}: truncated header: expected {4 + 4 * ndim} bytes, got {4 + len(sizes)}"
        )
    return np.dtype(_DTYPES[magic[2]]), struct.unpack(f">{ndim}I", sizes), 4 + 4 * ndim


def _size_error(name: str, shape: tuple[int, ...], dtype: Any, expected: int, got: str) -> IDXError:
    what = "has trailing bytes" if got.startswith("more") else "truncated"
    return IDXError(
        f"{name}: file {what}: the header declares shape {tuple(shape)} of {dtype.name} "
        f"({expected} data bytes), the file holds {got} data bytes"
    )


def _read(f: Any, name: str, stored: int, compressed: bool, max_bytes: int | None) -> np.ndarray:
    dtype, shape, header = _header(f, name)
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if not compressed and expected != stored - header:
        more = stored - header > expected
        got = f"more than {expected} ({stored - header})" if more else str(max(0, stored - header))
        raise _size_error(name, shape, dtype, expected, got)
    byte_budget(max_bytes, stored, where=f"read_idx: {name}").charge(
        expected, f"the header's shape {tuple(shape)} of {dtype.name}"
    )
    buf = _read_upto(f, expected)
    if len(buf) < expected:
        raise _size_error(name, shape, dtype, expected, str(len(buf)))
    extra = f.read(1 << 16)  # at the end of a gzip stream this checks its CRC and length
    if extra:
        raise _size_error(name, shape, dtype, expected, f"more than {expected}")
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike[str] | Any, *, max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` is decompressed on the fly) into an array of its sizes.

    ``max_bytes`` caps the decoded size (default: :mod:`bnlab.data.limits`, overridable with
    ``$BNLAB_MAX_BYTES``). Raises FileNotFoundError if the file is missing, :class:`IDXError`
    if the magic number is wrong, the data is shorter or longer than its header declares or
    the gzip stream is corrupt, :class:`~bnlab.data.limits.DataLimitError` if the header
    declares more than the limit.
    """
    name = str(path)
    f: IO[bytes]
    try:
        f = path.open("rb") if hasattr(path, "open") else open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {name}") from None
    with f:
        stored = f.seek(0, os.SEEK_END)
        f.seek(0)
        compressed = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        stream: Any = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
        try:
            return _read(stream, name, stored, compressed, max_bytes)
        except (EOFError, OSError, zlib.error) as e:
            raise IDXError(
                f"{name}: the gzip stream is truncated or corrupt ({e}); re-download or re-copy it"
            ) from None


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends with ``.gz``).

    The file is replaced atomically; an array IDX cannot hold raises before anything is written.
    """
    arr = np.asarray(array)
    key = arr.dtype.str[1:]
    if key not in _CODES:
        raise TypeError(
            f"write_idx: dtype {arr.dtype} has no IDX type code; "
            "use uint8, int8, int16, int32, float32 or float64"
        )
    if any(s >= 1 << 32 for s in arr.shape) or arr.ndim > 255:
        raise ValueError(
            f"write_idx: IDX stores at most 255 dimensions of size < 2**32, got {arr.shape}"
        )
    big = arr.astype(np.dtype(_DTYPES[_CODES[key]]), copy=False)
    data = bytes([0, 0, _CODES[key], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data += big.tobytes()
    if os.fspath(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write(path, lambda f: f.write(data))  # a failed write leaves no partial file
