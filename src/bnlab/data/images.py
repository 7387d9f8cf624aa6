"""Decoding one image file to uint8 pixels, refusing what would silently change the data.

Accepted: 8-bit JPEG and PNG; a PNG's chunk CRCs are checked (Pillow skips those of the
pixel data, so a bit flip there would change pixels silently). Grayscale ("L", and 1-bit
images scaled to 0/255) gives one channel; palette, RGB, RGBA, LA and CMYK images are
converted to RGB (an alpha channel is dropped, as torchvision's default loader does).
Refused with a ValueError: 16-bit PNGs (Pillow would keep only the high byte of an RGB one
and clip a grayscale one to 255) and 32-bit integer or float images. Before any pixel is
decoded, the size the header declares is charged to a
:class:`~bnlab.data.limits.ByteBudget`, so a tiny file claiming 50000x50000 pixels is
refused without allocating them.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np

from bnlab.data.limits import ByteBudget, DataLimitError

__all__ = ["decode_image", "declared_size", "PER_IMAGE_OVERHEAD"]

PER_IMAGE_OVERHEAD = 512  # bytes charged per image beyond its pixels (array and list entries)
_PNG = b"\x89PNG\r\n\x1a\n"
_WIDE_MODES = ("I", "F")  # "I", "I;16", "I;16B", "F": more than 8 bits per value


def _png_bit_depth(data: bytes) -> int | None:
    """The bit depth in a PNG's IHDR chunk (byte 24), or None for other files."""
    if data.startswith(_PNG) and len(data) > 25 and data[12:16] == b"IHDR":
        return data[24]
    return None


def _check_png_chunks(data: bytes, name: str, where: str) -> None:
    """Every chunk's CRC-32 and the final IEND: Pillow skips the CRC of the pixel data."""
    i = len(_PNG)
    while i + 12 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        end = i + 12 + length
        if end > len(data):
            break
        kind = data[i + 4 : i + 8]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[i + 4 : end - 4]) != crc:
            raise ValueError(
                f"{where}: {name} is a corrupt PNG (CRC check of its {kind.decode('latin-1')!r} "
                "chunk failed); re-download or re-create it"
            )
        if kind == b"IEND":
            return
        i = end
    raise ValueError(
        f"{where}: {name} is a truncated PNG (no IEND chunk); re-download or re-create it"
    )


def _jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from a JPEG's start-of-frame segment, by walking markers."""
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height, data[i + 9]
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def declared_size(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, channels after decoding) read from a PNG or JPEG header, or None."""
    if _png_bit_depth(data) is not None:
        width, height = struct.unpack(">II", data[16:24])
        return width, height, 1 if data[25] == 0 else 3  # colour type 0 is plain grayscale
    if data.startswith(b"\xff\xd8"):
        found = _jpeg_header(data)
        if found is not None:
            return found[0], found[1], 1 if found[2] == 1 else 3
    return None


def decode_image(data: bytes, name: str, budget: ByteBudget) -> np.ndarray:
    """``data`` (a JPEG or PNG file's bytes) as uint8 (H, W, 1) or (H, W, 3)."""
    from PIL import Image  # Pillow is imported only where images are decoded

    depth = _png_bit_depth(data)
    if depth is not None and depth > 8:
        raise ValueError(
            f"{budget.where}: {name} is a {depth}-bit PNG; bnlab loads 8-bit images only and "
            "will not drop bits silently. Convert the images to 8 bits per channel first"
        )
    if depth is not None:
        _check_png_chunks(data, name, budget.where)
    size = declared_size(data)
    if size is not None:  # checked before Pillow sees the file (its own bomb check is 179 Mpx)
        budget.charge(
            size[0] * size[1] * size[2] + PER_IMAGE_OVERHEAD, f"{name} ({size[0]}x{size[1]} pixels)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit rules
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if img.mode.startswith(_WIDE_MODES):
                    raise ValueError(f"{img.mode!r} pixels (more than 8 bits per value)")
                gray = img.mode in ("1", "L")
                if size is None:
                    nbytes = width * height * (1 if gray else 3) + PER_IMAGE_OVERHEAD
                    budget.charge(nbytes, f"{name} ({width}x{height} pixels)")
                rgb = img.convert("L" if gray else "RGB") if img.mode not in ("L", "RGB") else img
                arr = np.asarray(rgb, dtype=np.uint8)
    except DataLimitError:
        raise
    except Image.DecompressionBombError as e:
        raise DataLimitError(
            f"{budget.where}: {name}: {e} (Pillow's own limit, PIL.Image.MAX_IMAGE_PIXELS)"
        ) from None
    except Exception as e:  # Pillow raises many types for a damaged file
        raise ValueError(f"{budget.where}: cannot decode image {name}: {e}") from None
    return arr[..., None] if arr.ndim == 2 else arr
