"""CIFAR-10 for ``cifar10-keras``: where it is, what kind of copy it is, and loading it.

The path comes from ``--data`` or the environment variable ``BNLAB_CIFAR10``. The copy is
described (:func:`describe_source`) so that every reported number can say what it was measured
on: the official python batches hold the original pixels; an image folder of JPEG files holds
re-encoded pixels, and the JPEG quality is estimated from the first image's quantization table
(the IJG scaling of the standard luminance table, as written by libjpeg, Pillow and OpenCV).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ENV_DATA",
    "FORMATS_HELP",
    "CifarData",
    "DataNotFoundError",
    "describe_source",
    "jpeg_quality",
    "load",
    "resolve_data_path",
]

ENV_DATA = "BNLAB_CIFAR10"
FORMATS_HELP = (
    "the official python version (cifar-10-python.tar.gz, or the cifar-10-batches-py "
    "directory with data_batch_1..5 and test_batch, or a directory holding it), or an image "
    "folder <root>/{train,test}/<class>/*.png|jpg as a directory or .tar.gz"
)
_WHERE = (
    "Download cifar-10-python.tar.gz (the 'CIFAR-10 python version', 163 MB) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and pass it with --data PATH (no need to "
    f"unpack it) or set {ENV_DATA}=PATH. Accepted: {FORMATS_HELP}."
)

# IJG standard luminance quantization table (JPEG Annex K), row-major
_STD_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55)
    + (14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62)
    + (18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92)
    + (49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
)
_IMAGE_EXT = (".png", ".jpg", ".jpeg")


class DataNotFoundError(FileNotFoundError):
    """No CIFAR-10 path was given, or the given one does not exist."""


def resolve_data_path(data: str | os.PathLike[str] | None) -> Path:
    """``data`` or ``$BNLAB_CIFAR10``; a :class:`DataNotFoundError` says where to get CIFAR-10."""
    if data is None or str(data) == "":
        env = os.environ.get(ENV_DATA, "")
        if not env:
            raise DataNotFoundError(f"cifar10-keras: no CIFAR-10 data given. {_WHERE}")
        data, origin = env, f"${ENV_DATA}"
    else:
        origin = "--data"
    path = Path(data).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"cifar10-keras: {origin} path {path} does not exist. {_WHERE}")
    return path


def jpeg_quality(table: Any) -> int | None:
    """The IJG quality (1..100) whose scaled standard luminance table equals ``table``.

    Scaling: ``s = 5000 / q`` for q < 50, ``200 - 2 q`` otherwise; entry ``clip((b s + 50) //
    100, 1, 255)``. Compared as sorted values, so zigzag or row-major order both work. None if
    no quality matches (a custom table).
    """
    got = sorted(int(v) for v in table)
    if len(got) != 64:
        return None
    base = np.array(_STD_LUMA, dtype=np.int64)
    for q in range(1, 101):
        s = 5000 // q if q < 50 else 200 - 2 * q
        if sorted(np.clip((base * s + 50) // 100, 1, 255).tolist()) == got:
            return q
    return None


def _image_info(name: str, raw: bytes) -> dict[str, Any]:
    if not name.lower().endswith((".jpg", ".jpeg")):
        return {"encoding": "PNG (lossless)", "jpeg_quality": None}
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as img:
            tables = getattr(img, "quantization", None) or {}
    except Exception:  # undecodable: load_cifar10 reports it properly later
        tables = {}
    q = jpeg_quality(tables[0]) if 0 in tables else None
    return {"encoding": "JPEG", "jpeg_quality": q}


def _first_image_in_dir(root: Path) -> tuple[str, bytes] | None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn.lower().endswith(_IMAGE_EXT):
                return fn, (Path(dirpath) / fn).read_bytes()
    return None


def _scan_tar(path: Path) -> dict[str, Any]:
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if base == "data_batch_1":
                    return {"format": "python-batches", "encoding": "original pixels"}
                if m.isfile() and base.lower().endswith(_IMAGE_EXT):
                    f = tf.extractfile(m)
                    raw = f.read() if f is not None else b""
                    return {"format": "image-folder", **_image_info(base, raw)}
    except (tarfile.TarError, OSError, EOFError):
        pass
    return {"format": "unknown"}


def describe_source(path: Path) -> dict[str, Any]:
    """``{"path", "format", "encoding", "jpeg_quality", "tag"}`` of a CIFAR-10 copy.

    ``format`` is "python-batches", "image-folder" or "unknown" (then loading will fail with
    the accepted formats); ``tag`` is the short label written next to every number.
    """
    info: dict[str, Any]
    if path.is_dir():
        if any((d / "data_batch_1").is_file() for d in (path, path / "cifar-10-batches-py")):
            info = {"format": "python-batches", "encoding": "original pixels"}
        else:
            first = _first_image_in_dir(path)
            info = {"format": "unknown"} if first is None else _image_info(*first)
            info.setdefault("format", "image-folder")
    else:
        info = _scan_tar(path)
    info = {"path": str(path), "encoding": None, "jpeg_quality": None, **info}
    if info["encoding"] == "JPEG":
        q = info["jpeg_quality"]
        info["tag"] = f"JPEG q{q} CIFAR-10" if q else "JPEG CIFAR-10 (quality unknown)"
    elif info["format"] == "image-folder":
        info["tag"] = "CIFAR-10 (PNG image folder)"
    else:
        info["tag"] = "CIFAR-10 (original python batches)"
    return info


@dataclass
class CifarData:
    """Training images as uint8 NHWC (scaled per batch), test images as float32 in [0, 1]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: dict[str, Any]


def load(
    path: Path, source: dict[str, Any], train_subset: int | None, test_subset: int | None
) -> CifarData:
    """Load with :func:`bnlab.data.load_cifar10`, optionally keeping N images of a split.

    A subset is a fixed random choice (``default_rng(0)``, kept in the original order), not
    the first N: an image folder is sorted by class, so its first N images are one class.
    """
    from bnlab.data import load_cifar10

    (xtr, ytr), (xte, yte) = load_cifar10(path)
    if xtr.shape[1:] != (32, 32, 3) or xte.shape[1:] != (32, 32, 3):
        raise ValueError(
            f"cifar10-keras: {path} holds images of shape {xtr.shape[1:]} / {xte.shape[1:]}, "
            "expected 32x32 RGB (32, 32, 3)"
        )
    xtr, ytr = _subset(xtr, ytr, train_subset)
    xte, yte = _subset(xte, yte, test_subset)
    x_test = xte.astype(np.float32) * np.float32(1 / 255)
    return CifarData(xtr, ytr.astype(np.int64), x_test, yte.astype(np.int64), source)


def _subset(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    if n is not None and int(n) > len(x):
        raise ValueError(
            f"cifar10-keras: a subset of {n} images asks for more than the {len(x)} there are; "
            f"pass at most {len(x)} (or leave --train-subset/--test-subset out for all)"
        )
    if n is None or int(n) == len(x):
        return x, y
    keep = np.sort(np.random.default_rng(0).permutation(len(x))[: int(n)])
    return x[keep], y[keep]
