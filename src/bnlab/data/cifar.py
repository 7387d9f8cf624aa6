"""CIFAR-10 (Krizhevsky 2009) from the official python batches or an image folder.

Accepted formats, detected automatically:

1. the official python version: the ``cifar-10-batches-py`` directory (``data_batch_1`` ..
   ``data_batch_5``, ``test_batch``) or a directory containing it, or the
   ``cifar-10-python.tar.gz`` archive (members are read without extracting to disk);
2. an image folder ``<root>/{train,test}/<class>/*.jpg|png`` as a directory or a .tar(.gz)
   archive (see :func:`bnlab.data.imagefolder.load_image_folder`; decoded once and cached).
   The class folders must be named after :data:`CIFAR10_CLASSES`; labels are the index of
   the folder's name there, so a folder holding a subset of the classes keeps their meaning.

The python batches are pickles. They are read with a restricted unpickler that only admits
the NumPy array reconstruction functions, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.data.archive import is_tar, tar_stream
from bnlab.data.imagefolder import is_image_file, load_image_folder
from bnlab.data.limits import byte_budget

__all__ = ["load_cifar10", "CIFAR10_CLASSES", "source_kind"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = ("test_batch",)
_FORMATS = (
    "the cifar-10-batches-py directory (data_batch_1..5, test_batch) or a directory holding "
    "it; cifar-10-python.tar.gz; an image folder <root>/{train,test}/<class>/*.jpg|png as a "
    "directory or .tar.gz"
)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}

Split = tuple[np.ndarray, np.ndarray]


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _integers_in(values: np.ndarray, lo: int, hi: int, what: str, where: str) -> np.ndarray:
    """``values`` if they are integers in [lo, hi], else a ValueError naming the bad one."""
    if values.dtype.kind not in "iu":
        raise ValueError(
            f"load_cifar10: {where}: {what} must be integers in {lo}..{hi}, got dtype "
            f"{values.dtype}; a cast would change them silently (NaN, fractions, wrap-around)"
        )
    bad = np.flatnonzero((values < lo) | (values > hi))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"load_cifar10: {where}: {what} must be integers in {lo}..{hi}, got "
            f"{values.flat[i]} at flat index {i} ({bad.size} out of range in all); the file is "
            "damaged or not a CIFAR-10 batch"
        )
    return values


def _parse_batch(raw: bytes, where: str) -> Split:
    """One python batch: ``{b"data": uint8 (N, 3072) as CHW rows, b"labels": [N ints]}``.

    Pixels of another integer dtype are accepted if every value is in 0..255 (converted to
    uint8 without loss); float, bool or out-of-range pixels and labels outside 0..9 raise.
    """
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(d[b"data"])
        labels = np.asarray(d[b"labels"])
    except Exception as e:
        raise ValueError(
            f"load_cifar10: {where} is not a valid CIFAR-10 python batch "
            f"(a pickled dict with b'data' and b'labels'): {type(e).__name__}: {e}"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise ValueError(
            f"load_cifar10: {where}: expected data of shape (N, 3072) and N labels, got "
            f"data {data.shape} and labels {labels.shape}"
        )
    data = _integers_in(data, 0, 255, "pixel values", where).astype(np.uint8, copy=False)
    labels = _integers_in(labels, 0, 9, "labels", where).astype(np.int64)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _concat(batches: list[Split]) -> Split:
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _from_batch_dir(d: Path, max_bytes: int | None) -> tuple[Split, Split]:
    for n in _TRAIN + _TEST:
        if not (d / n).is_file():
            raise FileNotFoundError(
                f"load_cifar10: {d / n} is missing; a cifar-10-batches-py directory holds "
                f"{list(_TRAIN + _TEST)}"
            )
    sizes = {n: (d / n).stat().st_size for n in _TRAIN + _TEST}
    budget = byte_budget(max_bytes, sum(sizes.values()), where="load_cifar10")
    for n, size in sizes.items():
        budget.charge(size, f"the batch file {d / n}")
    out = []
    for names in (_TRAIN, _TEST):
        out.append(_concat([_parse_batch((d / n).read_bytes(), str(d / n)) for n in names]))
    return out[0], out[1]


def _from_batch_tar(path: Path, max_bytes: int | None) -> tuple[Split, Split] | None:
    """Read the python batches from a tar archive; None if it holds no ``data_batch_1``.

    The whole archive is read first (its gzip CRC is checked) and only then parsed.
    """
    found: dict[str, bytes] = {}
    budget = byte_budget(max_bytes, path.stat().st_size, where="load_cifar10")
    with tar_stream(path, where="load_cifar10") as tf:
        for m in tf:
            base = m.name.rsplit("/", 1)[-1]
            if m.isfile() and base in _TRAIN + _TEST:
                if base in found:
                    raise ValueError(f"load_cifar10: {path} holds {base} twice (ambiguous)")
                budget.charge(m.size, f"the member {m.name}")
                f = tf.extractfile(m)
                if f is not None:
                    found[base] = f.read()
    if "data_batch_1" not in found:
        return None
    missing = [n for n in _TRAIN + _TEST if n not in found]
    if missing:
        raise ValueError(f"load_cifar10: {path} lacks the members {missing} (truncated?)")
    train = _concat([_parse_batch(found[n], f"{path}:{n}") for n in _TRAIN])
    test = _concat([_parse_batch(found[n], f"{path}:{n}") for n in _TEST])
    return train, test


def _tar_kind(path: Path, max_files: int = 200) -> str | None:
    """ "batches" or "images" from the first regular files of a tar archive (fast: no full scan)."""
    seen = 0
    with tar_stream(path, where="load_cifar10", check_end=False) as tf:
        for m in tf:
            if not m.isfile():
                continue
            if m.name.rsplit("/", 1)[-1] in _TRAIN + _TEST + ("batches.meta",):
                return "batches"
            if is_image_file(m.name):
                return "images"
            seen += 1
            if seen >= max_files:
                break
    return None


def _from_image_folder(path: Path, cache_dir: Any, **kw: Any) -> tuple[Split, Split]:
    """The train and test splits, labels mapped to :data:`CIFAR10_CLASSES` by folder name."""
    data = load_image_folder(path, cache_dir=cache_dir, **kw)
    missing = [s for s in ("train", "test") if s not in data.splits]
    if missing:
        raise ValueError(
            f"load_cifar10: the image folder {path} has splits {sorted(data.splits)}, "
            f"expected 'train' and 'test' (missing {missing})"
        )
    unknown = [c for c in data.classes if c not in CIFAR10_CLASSES]
    if unknown:
        raise ValueError(
            f"load_cifar10: the image folder {path} has class folders {unknown} that are not "
            f"CIFAR-10 classes {list(CIFAR10_CLASSES)}; their labels would mean nothing. Rename "
            "them, or load other datasets with load_image_folder"
        )
    to_cifar = np.array([CIFAR10_CLASSES.index(c) for c in data.classes], dtype=np.int64)
    (xtr, ytr), (xte, yte) = data.splits["train"], data.splits["test"]
    return (xtr, to_cifar[ytr]), (xte, to_cifar[yte])


def load_cifar10(
    path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    max_bytes: int | None = None,
    progress: bool | None = None,
) -> tuple[Split, Split]:
    """CIFAR-10 as ``((x_train, y_train), (x_test, y_test))``: uint8 (N, 32, 32, 3), int64.

    ``path`` is any of the formats in the module docstring; ``cache_dir`` is where decoded
    image folders are cached (default ``$BNLAB_CACHE`` or ``~/.cache/bnlab``); ``max_bytes``
    raises the decoded-size limit (:mod:`bnlab.data.limits`); ``progress=False`` hides the
    progress of decoding an image folder (:mod:`bnlab.data.progress`).
    Labels follow :data:`CIFAR10_CLASSES` (alphabetical, the usual 0..9 order). A damaged
    archive raises :class:`~bnlab.data.archive.CorruptArchiveError`; labels outside 0..9 or
    pixels that are not integers in 0..255 raise ValueError naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"load_cifar10: {p} does not exist; accepted: {_FORMATS}")
    kind = source_kind(p)
    if kind == "batch-dir":
        d = p if (p / "data_batch_1").is_file() else p / "cifar-10-batches-py"
        return _from_batch_dir(d, max_bytes)
    if kind == "batch-tar":
        batches = _from_batch_tar(p, max_bytes)
        if batches is not None:
            return batches
    elif kind in ("image-dir", "image-tar"):
        return _from_image_folder(p, cache_dir, max_bytes=max_bytes, progress=progress)
    raise ValueError(f"load_cifar10: cannot recognize {p} as CIFAR-10; accepted: {_FORMATS}")


def source_kind(path: Path) -> str | None:
    """What a CIFAR-10 path holds: "batch-dir", "batch-tar", "image-dir", "image-tar" or None.

    Decided from the directory's files or the archive's first members (no full read); a
    damaged compressed file raises :class:`~bnlab.data.archive.CorruptArchiveError`.
    """
    if path.is_dir():
        if any((d / "data_batch_1").is_file() for d in (path, path / "cifar-10-batches-py")):
            return "batch-dir"
        if any(is_image_file(f.name) for f in path.rglob("*")):
            return "image-dir"
        return None
    if path.is_file() and is_tar(path):
        kind = _tar_kind(path)
        return None if kind is None else {"batches": "batch-tar", "images": "image-tar"}[kind]
    return None
