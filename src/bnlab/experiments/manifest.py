"""Which files of a run directory bnlab wrote: the ownership rule behind ``bnlab run --force``.

A run directory holds ``.bnlab-manifest.json``, the list of the files bnlab wrote there.
The rule: a file is bnlab's if it appeared or changed in the directory (or under its
``checkpoints/``, the only subdirectory a run writes) while a bnlab run held the directory's
lock (:func:`bnlab.experiments.rundir.lock_run_dir` takes a :func:`snapshot` of the files;
:func:`record` adds every file new or changed since then when the run releases the
directory, also after a failure or Ctrl-C); it stays bnlab's while it exists.

- A new run in the directory (``--force``) deletes the files of the manifest (:func:`clear`)
  and nothing else: a stale ``checkpoints/bn-lr0.5-seed0.npz`` of the previous run goes, the
  ``notes.txt`` a user put beside it stays.
- A file bnlab did not write whose name is one a run writes (``config.json``, ``metrics.*``,
  ``report.*``, a top-level ``.png``/``.csv``, anything under ``checkpoints/``) makes the run
  refuse the directory (:func:`check_takeover`), with or without ``--force``: bnlab would
  overwrite it or leave it beside its own files as if it were part of the run. The user
  moves it away (the explicit choice) or picks another ``--out``.
- A run killed with SIGKILL records nothing: its files count as foreign and, by the rule
  above, make the next run refuse the directory, naming them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bnlab._atomic import atomic_write

__all__ = ["MANIFEST_NAME", "check_takeover", "clear", "foreign", "owned", "record", "snapshot"]

MANIFEST_NAME = ".bnlab-manifest.json"
_LOCK_NAME = ".bnlab-run.lock"  # bnlab.experiments.rundir.LOCK_NAME (rundir imports this module)
_RUN_NAMES = ("config.json", "metrics.json", "metrics.csv", "report.md", "report.html")

Stat = tuple[int, int, int]  # size, mtime_ns, inode


def snapshot(root: str | Path) -> dict[str, Stat]:
    """``relative path -> (size, mtime_ns, inode)`` of the files where a run writes: those
    directly in ``root`` and under ``root/checkpoints`` (the lock and the manifest left out;
    other subdirectories are never walked, so ``--out .`` stays fast); empty if ``root`` does
    not exist."""
    root = Path(root)
    out: dict[str, Stat] = {}
    for dirpath, dirs, files in os.walk(root):
        if Path(dirpath) == root:
            dirs[:] = [d for d in dirs if d == "checkpoints"]
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel in (MANIFEST_NAME, _LOCK_NAME):
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:  # removed meanwhile
                continue
            out[rel] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def owned(root: str | Path) -> set[str]:
    """The files the manifest lists (relative paths; existing or not); empty without one.

    A manifest that is not a bnlab manifest raises ValueError naming it."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return set()
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files")
    except (ValueError, AttributeError):
        files = None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError(
            f"{path} is not a bnlab manifest (a JSON object with a list of file names); "
            "delete it and the run's files yourself, or choose another --out"
        )
    return set(files)


def record(root: str | Path, before: dict[str, Stat]) -> None:
    """Rewrite the manifest: the files it listed that still exist, plus every file new or
    changed since ``before`` (a :func:`snapshot`)."""
    root = Path(root)
    if not root.is_dir():
        return
    now = snapshot(root)
    mine = {f for f in owned(root) if f in now}
    mine |= {f for f, st in now.items() if before.get(f) != st}
    if not mine and not (root / MANIFEST_NAME).exists():
        return
    data = (json.dumps({"files": sorted(mine)}, indent=1) + "\n").encode("utf-8")
    atomic_write(root / MANIFEST_NAME, lambda f: f.write(data))


def foreign(root: str | Path) -> list[str]:
    """The files under ``root`` that bnlab did not write (not in the manifest), sorted."""
    mine = owned(root)
    return sorted(f for f in snapshot(root) if f not in mine)


def _collides(rel: str) -> bool:
    top = "/" not in rel
    return (
        rel in _RUN_NAMES
        or rel.startswith("checkpoints/")
        or (top and rel.endswith((".png", ".csv")))
    )


def check_takeover(root: str | Path) -> list[str]:
    """Raise FileExistsError if ``root`` holds files bnlab did not write under names a run
    writes (see the module docstring); return the other foreign files (left untouched)."""
    files = foreign(root)
    clash = [f for f in files if _collides(f)]
    if clash:
        shown = ", ".join(clash[:6]) + (f" and {len(clash) - 6} more" if len(clash) > 6 else "")
        raise FileExistsError(
            f"{root} holds files bnlab did not write ({shown}; not in its {MANIFEST_NAME}), "
            "under names a run writes: bnlab does not overwrite or delete them. Move them "
            "away, or choose another --out"
        )
    return files


def clear(root: str | Path) -> list[str]:
    """Delete the files of the manifest (never another), then the directories they leave
    empty; return the deleted files' relative paths."""
    root = Path(root)
    gone = []
    for rel in sorted(owned(root)):
        path = root / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            gone.append(rel)
    for rel in sorted({str(Path(r).parent) for r in gone if "/" in r}, key=len, reverse=True):
        for d in (root / rel, *(root / rel).parents):
            if d == root or root not in d.parents:
                break
            try:
                d.rmdir()
            except OSError:  # not empty: a file bnlab did not write
                break
    return gone
