"""Random shifts and horizontal flips of NHWC image batches (Keras' ImageDataGenerator).

``ImageAugmenter(width_shift=0.1, height_shift=0.1, horizontal_flip=True)`` is the
augmentation of the Keras cifar10_cnn example. Differences from Keras: shifts are whole
pixels (``round(u * W)``, ``u ~ U(-width_shift, width_shift)``) and are applied by index
gathering instead of spline interpolation, so pixel values are copied, never blended.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.data._args import as_generator, check_flag, check_real, check_rng_state, require_keys

__all__ = ["ImageAugmenter"]

_FILL_MODES = ("nearest", "constant", "reflect", "wrap")


def _source_index(size: int, shift: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """For output position ``i`` of sample ``n``, the input index ``i - shift[n]`` after the
    boundary rule, and a mask of the positions that fall outside the image."""
    raw = np.arange(size)[None, :] - shift[:, None]
    outside = (raw < 0) | (raw >= size)
    if mode == "nearest":  # aaaa|abcd|dddd
        idx = np.clip(raw, 0, size - 1)
    elif mode == "wrap":  # abcd|abcd|abcd
        idx = raw % size
    elif mode == "reflect":  # dcba|abcd|dcba (scipy.ndimage 'reflect')
        period = raw % (2 * size)
        idx = np.where(period < size, period, 2 * size - 1 - period)
    else:  # constant: any valid index, masked afterwards
        idx = np.clip(raw, 0, size - 1)
    return idx, outside


class ImageAugmenter:
    """Randomly shift each image by up to ``width_shift``/``height_shift`` of its size and flip
    it left-right with probability 1/2.

    A shift ``s`` moves content by ``s`` pixels: ``out[n, i, j] = x[n, i - dy, j - dx]``;
    positions uncovered by the shift are filled by ``fill_mode`` ("nearest": repeat the edge,
    "constant": ``cval``, "reflect", "wrap"). A shift given as an int >= 1 is a pixel count
    (``U{-s..s}``), as Keras' integer ranges. Draws come from a generator seeded by ``seed``
    (int, None or Generator); ``state_dict()`` saves it for bit-exact resumption. The batch
    (N, H, W, C) keeps its dtype; the input is not modified.
    """

    def __init__(
        self,
        width_shift: float = 0.1,
        height_shift: float = 0.1,
        horizontal_flip: bool = True,
        fill_mode: str = "nearest",
        cval: float = 0.0,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if fill_mode not in _FILL_MODES:
            raise ValueError(
                f"ImageAugmenter: fill_mode must be one of {_FILL_MODES}, got {fill_mode!r}"
            )
        for name, v in (("width_shift", width_shift), ("height_shift", height_shift)):
            if check_real(v, name, "ImageAugmenter", min_value=0.0) >= 1 and v != int(v):
                raise ValueError(
                    f"ImageAugmenter: {name}={v} is neither a fraction of the image size (< 1) "
                    "nor a whole number of pixels (an integer >= 1)"
                )
        check_real(cval, "cval", "ImageAugmenter")
        flip = check_flag(horizontal_flip, "horizontal_flip", "ImageAugmenter")
        rng = as_generator(seed, "ImageAugmenter")
        self.width_shift, self.height_shift = width_shift, height_shift
        self.horizontal_flip, self.fill_mode, self.cval = flip, fill_mode, cval
        self.rng = rng

    def _draw_shift(self, frac: float, size: int, n: int) -> np.ndarray:
        if frac == 0:
            return np.zeros(n, dtype=np.int64)
        if frac >= 1:  # a pixel count
            return self.rng.integers(-int(frac), int(frac), size=n, endpoint=True)
        return np.rint(self.rng.uniform(-frac, frac, size=n) * size).astype(np.int64)

    def __call__(self, x: Any) -> np.ndarray:
        """Return an augmented copy of the NHWC batch ``x``."""
        arr = np.asarray(x)
        if arr.ndim != 4:
            raise ValueError(
                f"ImageAugmenter: expected an NHWC batch of rank 4, got shape {arr.shape}"
            )
        self._check_cval(arr.dtype)  # before any draw: an error leaves the generator as it was
        n, h, w, _ = arr.shape
        dy = self._draw_shift(self.height_shift, h, n)
        dx = self._draw_shift(self.width_shift, w, n)
        flip = np.zeros(n, dtype=bool)
        if self.horizontal_flip:
            flip = np.less(self.rng.random(n), 0.5)
        rows, rows_out = _source_index(h, dy, self.fill_mode)
        cols, cols_out = _source_index(w, dx, self.fill_mode)
        # flip after the shift (as Keras): output column j reads shifted column w-1-j
        cols = np.where(flip[:, None], cols[:, ::-1], cols)
        cols_out = np.where(flip[:, None], cols_out[:, ::-1], cols_out)
        out = arr[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
        if self.fill_mode == "constant":
            mask = rows_out[:, :, None] | cols_out[:, None, :]
            out[mask] = self.cval
        return out

    def _check_cval(self, dtype: np.dtype[Any]) -> None:
        if self.fill_mode != "constant" or dtype.kind not in "iub":
            return
        info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
        hi = 1 if dtype.kind == "b" else info.max
        if self.cval != int(self.cval) or not info.min <= self.cval <= hi:
            raise ValueError(
                f"ImageAugmenter: cval={self.cval!r} cannot be stored in a {dtype} batch "
                f"without changing it; expected an integer in [{info.min}, {hi}] (or pass a "
                "float batch)"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (validated first: an error changes nothing)."""
        require_keys(state, ("rng",), "ImageAugmenter.load_state_dict")
        check_rng_state(self.rng, state["rng"], "ImageAugmenter.load_state_dict")
        self.rng.bit_generator.state = state["rng"]

    def get_config(self) -> dict[str, Any]:
        return {
            "width_shift": self.width_shift,
            "height_shift": self.height_shift,
            "horizontal_flip": self.horizontal_flip,
            "fill_mode": self.fill_mode,
            "cval": self.cval,
        }

    def __repr__(self) -> str:
        return f"ImageAugmenter({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"
