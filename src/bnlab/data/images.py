"""Decoding one image file to uint8 pixels, refusing what would silently change the data.

Accepted: 8-bit JPEG and PNG. Grayscale ("L", and 1-bit images scaled to 0/255) gives one
channel; palette, RGB, RGBA, LA and CMYK images are converted to RGB (an alpha channel is
dropped, as torchvision's default loader does). Refused with a ValueError: 16-bit PNGs (Pillow
would keep only the high byte of an RGB one and clip a grayscale one to 255) and 32-bit
integer or float images. Before any pixel is decoded, the size the header declares is charged
to a :class:`~bnlab.data.limits.ByteBudget`, so a tiny file claiming 50000x50000 pixels is
refused without allocating them.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from bnlab.data.limits import ByteBudget, DataLimitError

__all__ = ["decode_image", "PER_IMAGE_OVERHEAD"]

PER_IMAGE_OVERHEAD = 512  # bytes charged per image beyond its pixels (array and list entries)
_PNG = b"\x89PNG\r\n\x1a\n"
_WIDE_MODES = ("I", "F")  # "I", "I;16", "I;16B", "F": more than 8 bits per value


def _png_bit_depth(data: bytes) -> int | None:
    """The bit depth in a PNG's IHDR chunk (byte 24), or None for other files."""
    if data.startswith(_PNG) and len(data) > 25 and data[12:16] == b"IHDR":
        return data[24]
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit rules
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if img.mode.startswith(_WIDE_MODES):
                    raise ValueError(f"{img.mode!r} pixels (more than 8 bits per value)")
                gray = img.mode in ("1", "L")
                budget.charge(
                    width * height * (1 if gray else 3) + PER_IMAGE_OVERHEAD,
                    f"{name} ({width}x{height} pixels)",
                )
                rgb = img.convert("L" if gray else "RGB") if img.mode not in ("L", "RGB") else img
                arr = np.asarray(rgb, dtype=np.uint8)
    except DataLimitError:
        raise
    except Image.DecompressionBombError as e:
        raise DataLimitError(f"{budget.where}: {name}: {e}") from None
    except Exception as e:  # Pillow raises many types for a damaged file
        raise ValueError(f"{budget.where}: cannot decode image {name}: {e}") from None
    return arr[..., None] if arr.ndim == 2 else arr
