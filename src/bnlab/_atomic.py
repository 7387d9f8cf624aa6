"""Atomic file writes: a crash at any moment leaves the old file or the new one, never a mix.

The temporary file is ``.NAME.bnlab-XXXXXXXX.tmp`` beside ``NAME`` (``tempfile.mkstemp``: a
unique name, so two processes saving the same target never share one). A save killed with
SIGKILL cannot remove its temporary; the next successful save of the same target removes
those left by earlier saves (that pattern, marked ``bnlab-``, a regular file of this user,
last modified before this save started): a file of the user's is never taken for one.
Two processes saving the same target at once stay safe: the file is always one whole save;
a save whose temporary stalled before the other started may fail at its rename.

A target that is a symbolic link is written through: the file it points at gets the new
content and the link stays. A target (or link target) that is a device, FIFO or socket is
refused: the rename would replace the device node itself. An OSError names the target
(never the temporary) and says that the old file is unchanged.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "check_target", "not_special", "stale_temporaries"]


def check_target(path: str | os.PathLike[str], where: str, own: tuple[bytes, ...] = ()) -> Path:
    """Raise an OSError with a clear message if ``path`` cannot be written as a file.

    Checked: the parent directory exists and is a directory, ``path`` is not a directory, not
    a device, FIFO or socket (:func:`not_special`), and, given ``own`` (the leading bytes of
    the files this save writes), not a non-empty file of another kind (a user's file that a
    swapped argument would destroy: FileExistsError); the parent is writable. Nothing is
    created.
    """
    p = Path(path)
    not_special(p, where)
    if own and p.is_file() and p.stat().st_size:
        with open(p, "rb") as f:
            head = f.read(max(map(len, own)))
        if not head.startswith(own):
            raise FileExistsError(
                f"{where}: {p} exists and is not a file of this kind (it starts with "
                f"{head[:8]!r}); it is replaced only by its own kind: move it away or choose "
                "another path"
            )
    parent = p.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"{where}: directory {parent} does not exist (or is not a directory); create it "
            "or choose another path"
        )
    if p.is_dir():
        raise IsADirectoryError(
            f"{where}: {p} is a directory; give a file name, e.g. {p / 'model.npz'}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{where}: directory {parent} is not writable (read-only filesystem or "
            "permissions); choose another path"
        )
    return p


def not_special(path: Path, where: str) -> None:
    """FileExistsError if ``path`` (or what a link there points at) is a device, FIFO or
    socket: a save renames a regular file over its target, which would replace ``/dev/zero``
    itself for a link to it (as root), or hang on a FIFO's reader."""
    real = Path(os.path.realpath(path))
    if real.exists() and not real.is_file() and not real.is_dir():
        via = f" (through the link {path})" if real != path else ""
        raise FileExistsError(
            errno.EEXIST,
            f"{where}: {real}{via} is not a regular file (a device, FIFO or socket); bnlab "
            "writes regular files only: choose another path",
        )


def stale_temporaries(path: str | os.PathLike[str], before: float) -> list[Path]:
    """Temporaries of earlier :func:`atomic_write` calls on ``path`` last modified before
    ``before`` (a ``time.time()`` value): the leftovers of killed saves."""
    p = Path(path)
    pattern = re.compile(rf"^\.{re.escape(p.name)}\.bnlab-[A-Za-z0-9_]{{8}}\.tmp$")
    found = []
    try:
        entries = list(os.scandir(p.parent))
    except OSError:
        return []
    for entry in entries:
        if not pattern.match(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            mine = entry.is_file(follow_symlinks=False) and st.st_uid == os.getuid()
            if mine and st.st_mtime < before:
                found.append(Path(entry.path))
        except OSError:
            continue
    return found


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], object],
    verify: Callable[[Path], object] | None = None,
) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, rename it over ``path``.

    ``verify(tmp_path)``, if given, reads the finished temporary file back and raises if it is
    not what was meant to be written; ``path`` is then untouched. The new file keeps the
    permissions of the one it replaces (0o644 for a new file); the directory is fsync'ed after
    the rename. On any error (a full disk, a read-only directory, ``path`` being a directory)
    the temporary file is removed and ``path`` is untouched. After a successful rename the
    temporaries of earlier killed saves of ``path`` are removed (see the module docstring).
    """
    path = Path(path)
    not_special(path, "cannot write")
    if path.is_symlink():  # write through the link: its target changes, the link stays
        path = Path(os.path.realpath(path))
    started = time.time()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.bnlab-", suffix=".tmp")
    except OSError as e:
        raise _named(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(Path(tmp))
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _named(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    for stale in stale_temporaries(path, started):
        if stale.name != Path(tmp).name:
            try:
                stale.unlink(missing_ok=True)
            except OSError:  # another user's file, a read-only mount: leave it
                pass
    return path


def _named(e: OSError, path: Path) -> OSError:
    """The same kind of OSError (errno kept), naming the target instead of the temporary."""
    if e.errno is None:
        return e
    why = e.strerror or str(e)
    return type(e)(e.errno, f"cannot write {path}: {why}; the previous file (if any) is unchanged")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
