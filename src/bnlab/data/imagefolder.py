"""Image folders: ``<root>/<split>/<class>/*.jpg|jpeg|png``, as a directory or a .tar(.gz).

Loading goes in four steps, and nothing is decoded or cached before the first two succeed:

1. list the files; an archive is read to its end, so its gzip CRC and length are checked
   (:mod:`bnlab.data.archive`): a damaged or truncated archive raises
   :class:`~bnlab.data.archive.CorruptArchiveError`;
2. check the layout. Classes are the class folders' names, sorted (CIFAR-10's usual 0..9
   order) and shared by every split. A class folder without images in some split would shift
   the labels of every later class, so it raises FileNotFoundError, as torchvision's
   ``ImageFolder`` does; ``allow_empty=True`` keeps it as a class with no images (torchvision's
   ``allow_empty``). Files and folders whose name starts with "." are ignored; within a class,
   files are taken in natural order (``2.png`` before ``10.png``);
3. decode with Pillow (:func:`bnlab.data.images.decode_image`): each image's declared size is
   checked against the byte limit of :mod:`bnlab.data.limits` (``max_bytes``) before it is
   decoded; progress is shown for long decodes (:mod:`bnlab.data.progress`);
4. cache the arrays as an ``.npz`` in ``cache_dir`` (default ``$BNLAB_CACHE`` or
   ``~/.cache/bnlab``), keyed by the absolute path, size and modification time of the archive
   (of every image file for a directory); one line on stderr names the file when it is
   written (1 MB or more, and not with ``progress=False``). If the cache cannot be written, a
   warning names the directory and the data is returned uncached. A cache whose contents do
   not match the listing is ignored and rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bnlab._atomic import atomic_write
from bnlab.data.archive import CorruptArchiveError, is_tar, link_target, tar_stream
from bnlab.data.files import read_regular_file, regular_stat
from bnlab.data.images import PER_IMAGE_OVERHEAD, declared_size, decode_image
from bnlab.data.limits import ByteBudget, byte_budget
from bnlab.data.progress import Progress

__all__ = ["load_image_folder", "ImageFolderData", "default_cache_dir", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_CACHE_VERSION = 2
_WHERE = "load_image_folder"
_LAYOUT = "expected the layout <root>/<split>/<class>/<image>.jpg|png"


class ImageFolderData(NamedTuple):
    """``splits[name] = (x uint8 (N, H, W, C), y int64 (N,))`` and the sorted class names."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: list[str]


class _Listing(NamedTuple):
    images: list[str]  # relative posix paths of the image files, in source order
    dirs: set[str]  # relative posix paths of the directories
    stored: int  # bytes on disk
    stamp: str  # what the cache key hashes (sizes and modification times)
    links: dict[str, str]  # archive only: image path -> the member whose data it links to


class _Layout(NamedTuple):
    classes: list[str]
    order: dict[str, list[str]]  # split -> image paths sorted by (class, natural file name)
    labels: dict[str, np.ndarray]


def default_cache_dir() -> Path:
    """``$BNLAB_CACHE`` if set, else ``~/.cache/bnlab``."""
    env = os.environ.get("BNLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bnlab"


def _natural_key(name: str) -> list[Any]:
    """``2.png`` before ``10.png``: runs of ASCII digits compare as numbers (only ASCII: "²" is
    a digit to ``str.isdigit`` but not to ``int``)."""
    tokens = re.split(r"([0-9]+)", name)  # the numbers are at the odd indices
    return [(0, int(t), "") if i % 2 else (1, 0, t) for i, t in enumerate(tokens)]


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def _add(images: dict[str, None], rel: str, path: Path) -> None:
    if rel in images:
        raise ValueError(f"{_WHERE}: {path} holds {rel} twice; which copy is meant is ambiguous")
    images[rel] = None


def _list_dir(root: Path) -> _Listing:
    images: dict[str, None] = {}
    dirs: set[str] = set()
    stamp, stored = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath).relative_to(root).as_posix()
        dirs.update(f"{base}/{d}" for d in dirnames)
        for fn in sorted(filenames):
            if is_image_file(fn) and not fn.startswith("."):
                rel = "/".join(_parts(f"{base}/{fn}"))
                st = regular_stat(root / rel, where=_WHERE)
                stored += st.st_size
                stamp.append(f"|{rel}|{st.st_size}|{st.st_mtime_ns}")
                _add(images, rel, root)
    dirs = {"/".join(_parts(d)) for d in dirs}
    return _Listing(list(images), dirs, stored, "".join(stamp), {})


def _list_tar(path: Path, budget: ByteBudget) -> _Listing:
    """Every member's name, reading the archive to its end (which checks its CRC)."""
    images: dict[str, None] = {}
    dirs: set[str] = set()
    links: dict[str, str] = {}
    probe = dataclasses.replace(budget)  # member counts and sizes, before anything is decoded
    with tar_stream(path, where=_WHERE) as tf:
        for k, m in enumerate(tf, start=1):
            probe.charge(
                PER_IMAGE_OVERHEAD, f"member {k} ({PER_IMAGE_OVERHEAD} bytes of bookkeeping)"
            )
            parts = _parts(m.name)
            if not parts or any(p.startswith(".") for p in parts):
                continue
            rel, image = "/".join(parts), is_image_file(parts[-1])
            if m.isdir():
                dirs.add(rel)
            elif m.isfile() and image:
                if m.size > budget.limit:
                    probe.charge(m.size, f"the member {m.name} ({m.size} bytes)")
                _add(images, rel, path)
            elif (m.islnk() or m.issym()) and image:
                links[rel] = link_target(m, path, where=_WHERE)
                _add(images, rel, path)
            elif image:
                raise ValueError(
                    f"{_WHERE}: {path}: the member {m.name!r} is not a regular file (a device "
                    "or FIFO entry); an image folder archive holds image files only"
                )
    st = path.stat()
    stamp = f"|{st.st_size}|{st.st_mtime_ns}"
    return _Listing(list(images), dirs, st.st_size, stamp, _resolve_links(links, path))


def _resolve_links(links: dict[str, str], path: Path) -> dict[str, str]:
    """Each link's final regular-file member (a link to a link is followed, at most 8 deep)."""
    resolved = {}
    for rel, target in links.items():
        for _ in range(8):
            if target not in links:
                break
            target = links[target]
        if target in links:
            raise ValueError(f"{_WHERE}: {path}: the link member {rel!r} is part of a loop")
        resolved[rel] = target
    return resolved


def _layout(listing: _Listing, path: Path, allow_empty: bool) -> _Layout:
    if not listing.images:
        raise FileNotFoundError(f"{_WHERE}: no .jpg/.jpeg/.png images found in {path}; {_LAYOUT}")
    shallow = [rel for rel in listing.images if len(_parts(rel)) < 3]
    if shallow:
        raise ValueError(
            f"{_WHERE}: {path}: image {shallow[0]!r} is not inside <split>/<class>/; {_LAYOUT}"
        )
    roots = {tuple(_parts(rel)[:-3]) for rel in listing.images}
    if len(roots) > 1:
        raise ValueError(
            f"{_WHERE}: {path}: images lie under several roots "
            f"{sorted('/'.join(r) for r in roots)}; expected one <root>/<split>/<class>/ tree"
        )
    root = roots.pop()
    n = len(root)
    folders: dict[str, set[str]] = {}
    for d in listing.dirs:
        parts = _parts(d)
        if len(parts) == n + 2 and tuple(parts[:n]) == root:
            folders.setdefault(parts[n], set()).add(parts[n + 1])
    members: dict[tuple[str, str], list[str]] = {}
    for rel in listing.images:
        split, cls, _ = _parts(rel)[-3:]
        folders.setdefault(split, set()).add(cls)
        members.setdefault((split, cls), []).append(rel)
    classes = sorted(set().union(*folders.values()))
    empty = [f"{s}/{c}" for s in sorted(folders) for c in classes if (s, c) not in members]
    if empty and not allow_empty:
        raise FileNotFoundError(
            f"{_WHERE}: {path}: no image file in the class folder(s) {', '.join(empty)} "
            f"(classes: {classes}; supported extensions: {', '.join(IMAGE_EXTENSIONS)}). An "
            "empty class would shift the label of every later class; add its images, remove "
            "the folder, or pass allow_empty=True to keep it as a class without images"
        )
    order, labels = {}, {}
    for split in sorted(folders):
        pairs = [(i, r) for i, c in enumerate(classes) for r in members.get((split, c), [])]
        pairs.sort(key=lambda ir: (ir[0], _natural_key(_parts(ir[1])[-1])))
        order[split] = [r for _, r in pairs]
        labels[split] = np.array([i for i, _ in pairs], dtype=np.int64)
    return _Layout(classes, order, labels)


def _decode_all(
    path: Path, listing: _Listing, budget: ByteBudget, progress: bool | None
) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    with Progress(len(listing.images), f"{_WHERE}: decoding {path.name}", progress) as bar:

        def add(rel: str, data: bytes) -> None:
            arrays[rel] = decode_image(data, f"{path}:{rel}", budget)
            bar.update()

        if path.is_dir():
            for rel in listing.images:
                add(rel, read_regular_file(path / rel, budget))
        else:
            wanted = set(listing.images) - set(listing.links)
            targets = set(listing.links.values())
            kept: dict[str, bytes] = {}
            with tar_stream(path, where=_WHERE) as tf:
                for m in tf:
                    rel = "/".join(_parts(m.name))
                    f = tf.extractfile(m) if m.isfile() and rel in wanted | targets else None
                    data = f.read() if f is not None else None
                    if data is not None and rel in targets:
                        kept[rel] = data
                    if data is not None and rel in wanted:
                        add(rel, data)
            for rel, target in listing.links.items():
                if target not in kept:
                    raise ValueError(
                        f"{_WHERE}: {path}: the link member {rel!r} points at {target!r}, which "
                        "is not a regular file in the archive; replace the link by the image"
                    )
                add(rel, kept[target])
    if len(arrays) != len(listing.images):
        raise CorruptArchiveError(
            f"{_WHERE}: {path} changed while it was being read; load it again"
        )
    return arrays


def _assemble(arrays: dict[str, np.ndarray], layout: _Layout, path: Path) -> ImageFolderData:
    channels = max(a.shape[2] for a in arrays.values())
    shape = next(iter(arrays.values())).shape[:2]
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, rels in layout.order.items():
        x = np.empty((len(rels), *shape, channels), dtype=np.uint8)
        for i, rel in enumerate(rels):
            arr = arrays.pop(rel)
            if arr.shape[:2] != shape:
                raise ValueError(
                    f"{_WHERE}: {path}: {'/'.join(_parts(rel)[-3:])} is {arr.shape[1]}x"
                    f"{arr.shape[0]} pixels, expected {shape[1]}x{shape[0]} like the others"
                )
            x[i] = arr  # a grayscale image broadcasts to RGB if the folder mixes them
        splits[split] = (x, layout.labels[split])
    return ImageFolderData(splits, layout.classes)


def _cache_file(p: Path, listing: _Listing, allow_empty: bool, cache_dir: Any) -> Path:
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = f"v{_CACHE_VERSION}|{p.resolve()}|empty={allow_empty}{listing.stamp}"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", p.name)
    return base / f"imagefolder-{stem}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


# a cache file this large is named on stderr when written (CIFAR-10's is about 185 MB)
SAY_CACHE_BYTES = 2**20


def _save_cache(file: Path, data: ImageFolderData, say: bool) -> None:
    """Write the cache (with ``say``, one line on stderr names a file of at least
    :data:`SAY_CACHE_BYTES`); on failure (read-only, full disk, not a directory) warn, go on."""
    xy = {f"{k}/{s}": a for s, pair in data.splits.items() for k, a in zip("xy", pair, strict=True)}
    arrays = {"classes": np.array(data.classes, dtype=str), **xy}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
        if say and file.stat().st_size >= SAY_CACHE_BYTES:
            size = file.stat().st_size / 2**20
            print(
                f"bnlab: cached the decoded images in {file} ({size:.0f} MB; BNLAB_CACHE "
                "chooses another directory; delete the file to free the space)",
                file=sys.stderr,
            )
    except OSError as e:
        warnings.warn(
            f"{_WHERE}: cannot write the cache in {file.parent} ({type(e).__name__}: {e}); "
            "continuing without a cache, so the images will be decoded again next time. Pass "
            "cache_dir= (or set BNLAB_CACHE to) a writable directory, or use_cache=False",
            RuntimeWarning,
            stacklevel=3,
        )


def _load_cache(file: Path, layout: _Layout, probe: tuple[int, ...]) -> ImageFolderData | None:
    """The cached arrays if they match the listing and the first image's shape ``probe``
    (H, W, C) exactly; None to decode again. Declared sizes are checked before reading."""
    h, w, c0 = probe
    try:
        if not file.is_file():
            return None
        with np.load(file, allow_pickle=False) as z:
            sizes = {i.filename[:-4]: i.file_size for i in z.zip.infolist()}
            for split, rels in layout.order.items():
                if sizes.get(f"x/{split}", 1 << 62) > len(rels) * h * w * 3 + 4096:
                    return None
            classes = [str(c) for c in z["classes"]]
            splits = {k[2:]: (z[k], z["y/" + k[2:]]) for k in z.files if k.startswith("x/")}
    except Exception:  # unreadable or damaged: rebuilt, never trusted
        return None
    if classes != layout.classes or sorted(splits) != sorted(layout.order):
        return None
    if len({x.shape[-1] for x, _ in splits.values() if x.ndim == 4}) != 1:
        return None  # one channel count for every split
    for split, (x, y) in splits.items():
        shape = (len(layout.order[split]), h, w)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != shape or x.shape[3] not in (c0, 3):
            return None
        if not np.array_equal(y, layout.labels[split]):
            return None
    return ImageFolderData({s: (x, y.astype(np.int64)) for s, (x, y) in splits.items()}, classes)


def _first_image(path: Path, listing: _Listing, budget: ByteBudget) -> tuple[int, ...]:
    """(H, W, C) of the first image in source order (a cache is checked against it)."""
    rel = listing.links.get(listing.images[0], listing.images[0])
    data = read_regular_file(path / rel, budget) if path.is_dir() else b""
    if not path.is_dir():
        with tar_stream(path, where=_WHERE, check_end=False) as tf:
            for m in tf:
                f = tf.extractfile(m) if m.isfile() and "/".join(_parts(m.name)) == rel else None
                if f is not None:
                    data = f.read()
                    break
    size = declared_size(data)  # the header alone: a cached load decodes nothing
    if size is not None:
        return size[1], size[0], size[2]
    return decode_image(data, f"{path}:{rel}", dataclasses.replace(budget)).shape


def _check_flags(**flags: Any) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool) and not (name == "progress" and value is None):
            raise TypeError(f"{_WHERE}: {name} must be True or False, got {value!r}")


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    allow_empty: bool = False,
    max_bytes: int | None = None,
    progress: bool | None = None,
) -> ImageFolderData:
    """Load ``<root>/<split>/<class>/*.jpg|png`` (a directory or a .tar/.tar.gz archive).

    Returns :class:`ImageFolderData` with ``splits[split] = (x, y)``, ``x`` uint8 NHWC
    (grayscale images get C=1; a folder mixing grayscale and RGB gets C=3) and ``y`` int64
    indices into ``classes`` (sorted folder names, shared by every split). Steps and errors:
    the module docstring. ``allow_empty`` keeps empty class folders as classes, ``max_bytes``
    raises the decoded-size limit, ``progress=False`` hides the progress display.
    """
    _check_flags(use_cache=use_cache, allow_empty=allow_empty, progress=progress)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{_WHERE}: {p} does not exist")
    byte_budget(max_bytes, 0, where=_WHERE)  # a bad max_bytes or $BNLAB_MAX_BYTES fails first
    if p.is_dir():
        listing = _list_dir(p)
        budget = byte_budget(max_bytes, listing.stored, where=_WHERE)
    else:
        if not is_tar(p):
            raise ValueError(
                f"{_WHERE}: {p} is neither a directory nor a tar archive (.tar, .tar.gz, "
                ".tar.bz2, .tar.xz); {_LAYOUT}"
            )
        budget = byte_budget(max_bytes, p.stat().st_size, where=_WHERE)
        listing = _list_tar(p, budget)
    layout = _layout(listing, p, allow_empty)
    cache_file = _cache_file(p, listing, allow_empty, cache_dir) if use_cache else None
    if cache_file is not None:
        cached = _load_cache(cache_file, layout, _first_image(p, listing, budget))
        if cached is not None:
            return cached
    data = _assemble(_decode_all(p, listing, budget, progress), layout, p)
    if cache_file is not None:
        _save_cache(cache_file, data, say=progress is not False)
    return data
