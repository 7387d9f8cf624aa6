"""Size limits for decoded data, so that a small file cannot claim gigabytes of memory.

A loader computes how many bytes a file will decode to (from the IDX header, from each image
header) and compares it with the limit BEFORE allocating. The limit is

- ``max_bytes`` if the caller passes it, else the environment variable ``BNLAB_MAX_BYTES``:
  the user's explicit ceiling, whatever the compression;
- otherwise the default ``min(1 GiB, max(64 MiB, 100 x the stored size))``: no more than 1 GiB,
  and no more than a hundred times the bytes on disk (real images and IDX files compress
  2-20x; a file that expands a thousandfold is a decompression bomb or a forged header).

CIFAR-10 decodes to 184 MB from 19 MB of JPEG files and MNIST to 55 MB from 11 MB, well inside
the default; ImageNet-sized folders need ``max_bytes`` (or ``BNLAB_MAX_BYTES``) raised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "DataLimitError",
    "ByteBudget",
    "ENV_MAX_BYTES",
    "DEFAULT_MAX_BYTES",
    "MAX_EXPANSION",
    "byte_budget",
]

ENV_MAX_BYTES = "BNLAB_MAX_BYTES"
DEFAULT_MAX_BYTES = 1 << 30
MAX_EXPANSION = 100
_FLOOR = 64 << 20


class DataLimitError(ValueError):
    """A file declares more decoded data than the size limit allows (see :mod:`limits`)."""


def _explicit_limit(max_bytes: int | None, where: str) -> int | None:
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"{where}: max_bytes must be a positive int, got {max_bytes!r}")
        return max_bytes
    env = os.environ.get(ENV_MAX_BYTES, "").strip()
    if not env:
        return None
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"{where}: the environment variable {ENV_MAX_BYTES}={env!r} must be a positive "
            "integer number of bytes (e.g. 4294967296 for 4 GiB)"
        )
    return value


@dataclass
class ByteBudget:
    """A running count of decoded bytes against ``limit``; :meth:`charge` refuses past it."""

    limit: int
    why: str
    where: str
    used: int = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Add ``nbytes`` for ``what``, or raise :class:`DataLimitError` (nothing is added)."""
        if self.used + nbytes > self.limit:
            so_far = f" after {self.used} bytes already decoded" if self.used else ""
            raise DataLimitError(
                f"{self.where}: {what} would decode to {nbytes} bytes{so_far}, more than the "
                f"limit of {self.limit} bytes ({self.why}). If the data is genuine, raise the "
                f"limit with max_bytes=N or the environment variable {ENV_MAX_BYTES}=N"
            )
        self.used += nbytes


def byte_budget(max_bytes: int | None, stored_bytes: int, *, where: str) -> ByteBudget:
    """The budget for data stored in ``stored_bytes`` bytes on disk (module docstring)."""
    explicit = _explicit_limit(max_bytes, where)
    if explicit is not None:
        how = "max_bytes" if max_bytes is not None else f"${ENV_MAX_BYTES}"
        return ByteBudget(explicit, f"{how}={explicit}", where)
    limit = min(DEFAULT_MAX_BYTES, max(_FLOOR, MAX_EXPANSION * stored_bytes))
    why = (
        f"the default: min(1 GiB, max(64 MiB, {MAX_EXPANSION} x the {stored_bytes} bytes "
        "stored on disk))"
    )
    return ByteBudget(limit, why, where)
