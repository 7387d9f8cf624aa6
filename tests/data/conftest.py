"""Helpers for the data tests: tiny archives built in tmp dirs, and a snapshot of files on disk."""

import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def raw_png(width: int, height: int, depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written chunk by chunk, so its header can declare anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def add_dir(tf: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    tf.addfile(info)


def folder_items(rng, classes=("cat", "airplane", "bird"), n_train=3, n_test=2, size=8):
    """{relative path: image} for a two-split image folder under ``cifar10/``."""
    items = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            for i in range(n):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                items[f"cifar10/{split}/{cls}/{i}.png"] = arr
    return items


def write_tar(path: Path, files: dict, mode: str = "w:gz", dirs=()) -> Path:
    with tarfile.open(path, mode) as tf:
        for d in dirs:
            add_dir(tf, d)
        for rel, content in files.items():
            add_bytes(tf, rel, content if isinstance(content, bytes) else png_bytes(content))
    return path


def write_dir(root: Path, files: dict) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content if isinstance(content, bytes) else png_bytes(content))
    return root


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its bytes (None for directories): compare before/after."""
    return {
        p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An isolated cache directory (also $BNLAB_CACHE), and no $BNLAB_MAX_BYTES."""
    d = tmp_path / "cache"
    monkeypatch.setenv("BNLAB_CACHE", str(d))
    monkeypatch.delenv("BNLAB_MAX_BYTES", raising=False)
    return d


@pytest.fixture
def kit():
    """The helpers above (tests run with --import-mode=importlib, so they come as a fixture)."""
    import types

    return types.SimpleNamespace(
        png_bytes=png_bytes,
        raw_png=raw_png,
        add_bytes=add_bytes,
        add_dir=add_dir,
        folder_items=folder_items,
        write_tar=write_tar,
        write_dir=write_dir,
        snapshot=snapshot,
    )
