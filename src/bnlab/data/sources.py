"""What kind of CIFAR-10 copy a path holds, so that every reported number can say what it was
measured on (moved here from ``experiments/cifar10_keras_data.py``, issue 12, so that any
command can describe any CIFAR source).

The official python batches hold the original pixels; an image folder of JPEG files holds
re-encoded pixels, and the JPEG quality is estimated from the first image's quantization table
(the IJG scaling of the standard luminance table, as written by libjpeg, Pillow and OpenCV).
Only the first image is read: this is a description, not a check (loading checks everything).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.data.archive import CorruptArchiveError, tar_stream

__all__ = ["describe_source", "jpeg_quality"]

# IJG standard luminance quantization table (JPEG Annex K), row-major
_STD_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55)
    + (14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62)
    + (18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92)
    + (49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
)
_IMAGE_EXT = (".png", ".jpg", ".jpeg")


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
        with tar_stream(path, where="describe_source", check_end=False) as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if base == "data_batch_1":
                    return {"format": "python-batches", "encoding": "original pixels"}
                if m.isfile() and base.lower().endswith(_IMAGE_EXT):
                    f = tf.extractfile(m)
                    raw = f.read() if f is not None else b""
                    return {"format": "image-folder", **_image_info(base, raw)}
    except (CorruptArchiveError, OSError):
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
