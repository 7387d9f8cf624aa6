"""Reading a file that a user points at, without trusting what the name refers to.

An image folder or a data file may hold a FIFO (a read blocks forever), a link to a device
(``/dev/zero`` never ends) or a sparse file of gigabytes. :func:`regular_stat` refuses anything
but a regular file, naming it; :func:`read_regular_file` opens without blocking, checks the
opened file again (it may have been swapped since it was listed) and its size against a
:class:`~bnlab.data.limits.ByteBudget` before reading a byte.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bnlab.data.limits import ByteBudget

__all__ = ["regular_stat", "read_regular_file"]


def regular_stat(path: Path, *, where: str) -> os.stat_result:
    """``stat`` of ``path`` (a symlink is followed); ValueError unless it is a regular file."""
    try:
        st = path.stat()
    except OSError as e:
        raise ValueError(f"{where}: cannot read {path} ({e.strerror}); remove or fix it") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(
            f"{where}: {path} is not a regular file (a FIFO, device or socket, or a link to "
            "one); point at a regular file, or remove it from the folder"
        )
    return st


def read_regular_file(path: Path, budget: ByteBudget) -> bytes:
    """The bytes of the regular file ``path``, refused (DataLimitError) past ``budget.limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ValueError(f"{budget.where}: cannot read {path} ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            regular_stat(path, where=budget.where)  # raises, naming the file
            raise ValueError(f"{budget.where}: {path} changed while it was read; try again")
        if st.st_size > budget.limit:
            budget.charge(st.st_size, f"the file {path} ({st.st_size} bytes)")
        return f.read(budget.limit + 1)
