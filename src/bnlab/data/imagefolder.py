"""Image folders: ``<root>/<split>/<class>/*.jpg|jpeg|png``, as a directory or a .tar(.gz).

The images are decoded with Pillow once and cached as an ``.npz`` file in ``cache_dir``
(default ``$BNLAB_CACHE`` or ``~/.cache/bnlab``); the cache key is derived from the absolute
path, size and modification time of the archive (of every image file for a directory), so an
edited dataset is decoded again. Classes are numbered in alphabetical order of their folder
names (CIFAR-10's usual 0..9 order); within a class, files are taken in natural order
(``2.png`` before ``10.png``).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bnlab._atomic import atomic_write

__all__ = ["load_image_folder", "ImageFolderData", "default_cache_dir", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_CACHE_VERSION = 1


class ImageFolderData(NamedTuple):
    """``splits[name] = (x uint8 (N, H, W, C), y int64 (N,))`` and the sorted class names."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: list[str]


def default_cache_dir() -> Path:
    """``$BNLAB_CACHE`` if set, else ``~/.cache/bnlab``."""
    env = os.environ.get("BNLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bnlab"


def _natural_key(name: str) -> list[Any]:
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", name)]


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _dir_entries(root: Path) -> Iterator[tuple[str, Any]]:
    """(relative posix path, Path) of every image file under ``root``."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            if is_image_file(fn):
                full = Path(dirpath) / fn
                yield full.relative_to(root).as_posix(), full


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{path.resolve()}".encode())
    if path.is_dir():
        for rel, full in sorted(_dir_entries(path)):
            st = full.stat()
            h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        st = path.stat()
        h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _decode(data: bytes, name: str) -> np.ndarray:
    from PIL import Image  # Pillow is imported only where images are decoded

    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img if img.mode in ("L", "RGB") else img.convert("RGB")
            arr = np.asarray(rgb, dtype=np.uint8)
    except Exception as e:  # Pillow raises many types for a damaged file
        raise ValueError(f"load_image_folder: cannot decode image {name}: {e}") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _scan(path: Path) -> list[tuple[str, str, str, np.ndarray]]:
    """Decode every image into (split, class, file name, array), checking the layout."""
    items: list[tuple[str, str, str, np.ndarray]] = []
    roots: set[str] = set()

    def add(rel: str, data: bytes) -> None:
        parts = rel.strip("/").split("/")
        if len(parts) < 3:
            raise ValueError(
                f"load_image_folder: {path}: image {rel!r} is not inside <split>/<class>/; "
                "expected the layout <root>/<split>/<class>/<image>.jpg|png"
            )
        roots.add("/".join(parts[:-3]))
        items.append((parts[-3], parts[-2], parts[-1], _decode(data, f"{path}:{rel}")))

    if path.is_dir():
        for rel, full in _dir_entries(path):
            add(rel, full.read_bytes())
    else:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                f = tf.extractfile(m) if m.isfile() and is_image_file(m.name) else None
                if f is not None:
                    add(m.name, f.read())
    if not items:
        raise FileNotFoundError(
            f"load_image_folder: no .jpg/.jpeg/.png images found in {path}; expected the "
            "layout <root>/<split>/<class>/<image>"
        )
    if len(roots) > 1:
        raise ValueError(
            f"load_image_folder: {path}: images lie under several roots {sorted(roots)}; "
            "expected one <root>/<split>/<class>/ tree"
        )
    return items


def _assemble(items: list[tuple[str, str, str, np.ndarray]], path: Path) -> ImageFolderData:
    classes = sorted({c for _, c, _, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    channels = max(a.shape[2] for *_, a in items)
    shape = items[0][3].shape[:2]
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in sorted({s for s, *_ in items}):
        chosen = sorted(
            (it for it in items if it[0] == split), key=lambda it: (it[1], _natural_key(it[2]))
        )
        x = np.empty((len(chosen), *shape, channels), dtype=np.uint8)
        for i, (_, cls, fn, arr) in enumerate(chosen):
            if arr.shape[:2] != shape:
                raise ValueError(
                    f"load_image_folder: {path}: {split}/{cls}/{fn} is {arr.shape[1]}x"
                    f"{arr.shape[0]} pixels, expected {shape[1]}x{shape[0]} like the others"
                )
            x[i] = arr  # a grayscale image broadcasts to RGB if the folder mixes them
        y = np.array([index[cls] for _, cls, _, _ in chosen], dtype=np.int64)
        splits[split] = (x, y)
    return ImageFolderData(splits, classes)


def _save_cache(file: Path, data: ImageFolderData) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"classes": np.array(data.classes, dtype=str)}
    for split, (x, y) in data.splits.items():
        arrays[f"x/{split}"], arrays[f"y/{split}"] = x, y
    atomic_write(file, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def _load_cache(file: Path) -> ImageFolderData | None:
    try:
        with np.load(file, allow_pickle=False) as z:
            classes = [str(c) for c in z["classes"]]
            splits = {k[2:]: (z[k], z["y/" + k[2:]]) for k in z.files if k.startswith("x/")}
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    return ImageFolderData(splits, classes)


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> ImageFolderData:
    """Load ``<root>/<split>/<class>/*.jpg|png`` (a directory or a .tar/.tar.gz archive).

    Returns :class:`ImageFolderData` with ``splits[split] = (x, y)``, ``x`` uint8 NHWC
    (grayscale images get C=1; a folder mixing grayscale and RGB gets C=3) and ``y`` int64
    indices into ``classes`` (sorted folder names, shared by every split).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"load_image_folder: {p} does not exist")
    cache_file = None
    if use_cache:
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", p.name)
        cache_file = base / f"imagefolder-{stem}-{_fingerprint(p)}.npz"
        if cache_file.is_file():
            cached = _load_cache(cache_file)
            if cached is not None:
                return cached
    data = _assemble(_scan(p), p)
    if cache_file is not None:
        _save_cache(cache_file, data)
    return data
