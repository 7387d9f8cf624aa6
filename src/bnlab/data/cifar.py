"""CIFAR-10 (Krizhevsky 2009) from the official python batches or an image folder.

Accepted formats, detected automatically:

1. the official python version: the ``cifar-10-batches-py`` directory (``data_batch_1`` ..
   ``data_batch_5``, ``test_batch``) or a directory containing it, or the
   ``cifar-10-python.tar.gz`` archive (members are read without extracting to disk);
2. an image folder ``<root>/{train,test}/<class>/*.jpg|png`` as a directory or a .tar(.gz)
   archive (see :func:`bnlab.data.imagefolder.load_image_folder`; decoded once and cached).

The python batches are pickles. They are read with a restricted unpickler that only admits
the NumPy array reconstruction functions, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.data.imagefolder import is_image_file, load_image_folder

__all__ = ["load_cifar10", "CIFAR10_CLASSES"]

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


def _parse_batch(raw: bytes, where: str) -> Split:
    """One python batch: ``{b"data": uint8 (N, 3072) as CHW rows, b"labels": [N ints]}``."""
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
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
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _concat(batches: list[Split]) -> Split:
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _from_batch_dir(d: Path) -> tuple[Split, Split]:
    out = []
    for names in (_TRAIN, _TEST):
        parts = []
        for n in names:
            f = d / n
            if not f.is_file():
                raise FileNotFoundError(
                    f"load_cifar10: {f} is missing; a cifar-10-batches-py directory holds "
                    f"{list(_TRAIN + _TEST)}"
                )
            parts.append(_parse_batch(f.read_bytes(), str(f)))
        out.append(_concat(parts))
    return out[0], out[1]


def _from_batch_tar(path: Path) -> tuple[Split, Split] | None:
    """Read the python batches from a tar archive; None if it holds no ``data_batch_1``."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in _TRAIN + _TEST:
                    f = tf.extractfile(m)
                    if f is not None:
                        found[base] = f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(
            f"load_cifar10: {path} is not a readable tar archive ({e}); accepted: {_FORMATS}"
        ) from None
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
    try:
        with tarfile.open(path, "r:*") as tf:
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
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(
            f"load_cifar10: {path} is not a readable tar archive ({e}); accepted: {_FORMATS}"
        ) from None
    return None


def _from_image_folder(path: Path, cache_dir: Any) -> tuple[Split, Split]:
    data = load_image_folder(path, cache_dir=cache_dir)
    missing = [s for s in ("train", "test") if s not in data.splits]
    if missing:
        raise ValueError(
            f"load_cifar10: the image folder {path} has splits {sorted(data.splits)}, "
            f"expected 'train' and 'test' (missing {missing})"
        )
    return data.splits["train"], data.splits["test"]


def load_cifar10(
    path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[Split, Split]:
    """CIFAR-10 as ``((x_train, y_train), (x_test, y_test))``: uint8 (N, 32, 32, 3), int64.

    ``path`` is any of the formats in the module docstring; ``cache_dir`` is where decoded
    image folders are cached (default ``$BNLAB_CACHE`` or ``~/.cache/bnlab``).
    Labels follow :data:`CIFAR10_CLASSES` (alphabetical, the usual 0..9 order).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"load_cifar10: {p} does not exist; accepted: {_FORMATS}")
    if p.is_dir():
        for d in (p, p / "cifar-10-batches-py"):
            if (d / "data_batch_1").is_file():
                return _from_batch_dir(d)
        if any(is_image_file(f.name) for f in p.rglob("*")):
            return _from_image_folder(p, cache_dir)
    elif tarfile.is_tarfile(p):
        kind = _tar_kind(p)
        if kind == "batches":
            batches = _from_batch_tar(p)
            if batches is not None:
                return batches
        elif kind == "images":
            return _from_image_folder(p, cache_dir)
    raise ValueError(f"load_cifar10: cannot recognize {p} as CIFAR-10; accepted: {_FORMATS}")
