"""Tar archives (plain, .gz, .bz2, .xz) read as one sequential, checked stream.

``tarfile`` stops at the tar end marker and never reads a gzip trailer, so a bit flip inside a
``.tar.gz`` goes unnoticed by it. Here the decompressor is Python's own ``gzip``/``bz2``/
``lzma`` reader and, once the members have been read, the stream is read to its very end:
gzip's CRC-32 and length (bzip2's block CRCs, xz's check) are verified, and a damaged or
truncated archive raises :class:`CorruptArchiveError` naming the file. An uncompressed
``.tar`` carries no checksum of its contents; only its headers are checked.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CorruptArchiveError", "compression_of", "tar_stream", "is_tar", "link_target"]

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


class CorruptArchiveError(ValueError):
    """An archive whose compressed stream or tar structure is damaged or truncated."""


def compression_of(path: Path) -> str | None:
    """ "gzip", "bzip2", "xz" from the file's magic bytes, or None (uncompressed or other)."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def _open(path: Path, kind: str | None) -> io.BufferedIOBase:
    if kind == "gzip":
        return gzip.GzipFile(path, "rb")
    if kind == "bzip2":
        return bz2.BZ2File(path, "rb")
    if kind == "xz":
        return lzma.LZMAFile(path, "rb")
    return open(path, "rb")


class _Tail:
    """A read-only stream that remembers its last bytes, to look at the block where ``tarfile``
    stopped: ``tarfile`` ends silently at a truncated or invalid header after the first one."""

    KEEP = 1 << 16

    def __init__(self, f: io.BufferedIOBase) -> None:
        self.f, self.pos, self.tail = f, 0, b""

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.pos += len(data)
        self.tail = (self.tail + data)[-self.KEEP :]
        return data

    def block(self, offset: int) -> bytes | None:
        """The 512 bytes at ``offset`` (short at the end of the data), None if forgotten."""
        start = self.pos - len(self.tail)
        if offset < start:
            return None
        return self.tail[offset - start : offset - start + tarfile.BLOCKSIZE]


def _check_end_marker(tf: tarfile.TarFile, tail: _Tail) -> None:
    block = tail.block(tf.offset)
    if block is None or len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0"):
        return  # the zero block that ends a tar archive
    if len(block) < tarfile.BLOCKSIZE:
        raise tarfile.ReadError("unexpected end of data")
    raise tarfile.ReadError(f"invalid tar header at byte {tf.offset}")


def _explain(e: BaseException, kind: str | None) -> str:
    text = str(e)
    fix = "re-download or re-create it"
    if "CRC check failed" in text:
        return f"corrupt archive: gzip CRC check failed; {fix}"
    if "Incorrect length" in text:
        return f"corrupt archive: gzip length check failed; {fix}"
    if isinstance(e, EOFError) or "unexpected end of data" in text:
        return (
            f"truncated archive: the data ends before the end of the {kind or 'tar'} stream; {fix}"
        )
    return f"corrupt archive ({kind or 'tar'}): {type(e).__name__}: {text}; {fix}"


@contextmanager
def tar_stream(path: Path, *, where: str, check_end: bool = True) -> Iterator[tarfile.TarFile]:
    """A ``tarfile`` in stream mode ("r|") over ``path``: iterate members in archive order and
    ``extractfile`` the current one. With ``check_end`` the compressed stream is read to its end
    when the block exits normally, which verifies its checksums. Every read error becomes a
    :class:`CorruptArchiveError` naming ``path``."""
    kind = compression_of(path)
    f = _open(path, kind)
    tail = _Tail(f)
    try:
        with tarfile.open(fileobj=tail, mode="r|") as tf:  # type: ignore[call-overload]
            yield tf
            if check_end:
                _check_end_marker(tf, tail)
                while tail.read(1 << 20):
                    pass
    except _READ_ERRORS as e:
        raise CorruptArchiveError(f"{where}: {path}: {_explain(e, kind)}") from None
    finally:
        f.close()


def is_tar(path: Path) -> bool:
    """True if ``path`` (after decompression) starts with a valid tar header. A compressed file
    whose stream is damaged raises :class:`CorruptArchiveError` instead of passing for "not a
    tar"; a compressed file of another kind (a gzipped IDX file) is simply not a tar."""
    kind = compression_of(path)
    try:
        with _open(path, kind) as f:
            block = f.read(tarfile.BLOCKSIZE)
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as e:
        if kind is None:
            return False
        raise CorruptArchiveError(f"{path}: {_explain(e, kind)}") from None
    try:
        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def link_target(m: tarfile.TarInfo, path: Path, *, where: str) -> str:
    """The member a link member points at, as a relative archive path. GNU tar stores the
    second name of a hard-linked file as a link; a folder would load both names, so the archive
    does too. Hard links name a path from the archive's root, symlinks one from their folder."""
    target = [] if m.islnk() else _parts(m.name)[:-1]
    for part in _parts(m.linkname):
        if part != "..":
            target.append(part)
        elif target:
            target.pop()
        else:
            target = []
            break
    if not target or m.linkname.startswith("/"):
        raise ValueError(
            f"{where}: {path}: the link member {m.name!r} points outside the archive "
            f"({m.linkname!r}); replace it by a copy of the image"
        )
    return "/".join(target)


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]
