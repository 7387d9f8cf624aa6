"""Where a CIFAR-10 copy is, and loading it for training with fixed random subsets.

The path comes from an explicit argument (``--data``) or the environment variable
``BNLAB_CIFAR10`` (:data:`ENV_DATA`); :func:`resolve_data_path` raises a
:class:`DataNotFoundError` that says where to download CIFAR-10 and which formats are accepted
(:data:`FORMATS_HELP`). What kind of copy a path holds is :func:`bnlab.data.describe_source`
(:mod:`bnlab.data.sources`); :func:`load_cifar10_data` loads it with
:func:`bnlab.data.load_cifar10` and keeps a fixed random subset of each split if asked.
(Moved here from ``bnlab.experiments.cifar10_keras_data``, issue 12.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ENV_DATA",
    "FORMATS_HELP",
    "CifarData",
    "DataNotFoundError",
    "load_cifar10_data",
    "resolve_data_path",
]

ENV_DATA = "BNLAB_CIFAR10"
FORMATS_HELP = (
    "the official python version (cifar-10-python.tar.gz, or the cifar-10-batches-py "
    "directory with data_batch_1..5 and test_batch, or a directory holding it), or an image "
    "folder <root>/{train,test}/<class>/*.png|jpg as a directory or .tar.gz"
)
WHERE_TO_GET = (
    "Download cifar-10-python.tar.gz (the 'CIFAR-10 python version', 163 MB) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and pass it with --data PATH (no need to "
    f"unpack it) or set {ENV_DATA}=PATH. Accepted: {FORMATS_HELP}."
)


class DataNotFoundError(FileNotFoundError):
    """No CIFAR-10 path was given, or the given one does not exist."""


def resolve_data_path(
    data: str | os.PathLike[str] | None, *, where: str = "bnlab", flag: str = "--data"
) -> Path:
    """``data`` or ``$BNLAB_CIFAR10``; a :class:`DataNotFoundError` says where to get CIFAR-10.

    ``where`` starts the error messages (the command), ``flag`` names the option ``data``
    came from.
    """
    if data is None or str(data) == "":
        env = os.environ.get(ENV_DATA, "")
        if not env:
            raise DataNotFoundError(f"{where}: no CIFAR-10 data given. {WHERE_TO_GET}")
        data, origin = env, f"${ENV_DATA}"
    else:
        origin = flag
    path = Path(data).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"{where}: {origin} path {path} does not exist. {WHERE_TO_GET}")
    return path


@dataclass
class CifarData:
    """Training images as uint8 NHWC (scaled per batch), test images as float32 in [0, 1]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: dict[str, Any]


def load_cifar10_data(
    path: Path,
    source: dict[str, Any],
    train_subset: int | None,
    test_subset: int | None,
    *,
    progress: bool | None = None,
    where: str = "bnlab",
) -> CifarData:
    """Load with :func:`bnlab.data.load_cifar10`, optionally keeping N images of a split.

    ``source`` (:func:`bnlab.data.describe_source`) is kept with the data. Test images are
    scaled once, ``x / 255`` in float32; training images stay uint8. ``progress=False``
    hides the decoding progress of an image folder (``--no-progress``).

    A subset is a fixed random choice (``default_rng(0)``, kept in the original order), not
    the first N: an image folder is sorted by class, so its first N images are one class.
    """
    from bnlab.data.cifar import load_cifar10

    (xtr, ytr), (xte, yte) = load_cifar10(path, progress=progress)
    if xtr.shape[1:] != (32, 32, 3) or xte.shape[1:] != (32, 32, 3):
        raise ValueError(
            f"{where}: {path} holds images of shape {xtr.shape[1:]} / {xte.shape[1:]}, "
            "expected 32x32 RGB (32, 32, 3)"
        )
    xtr, ytr = _subset(xtr, ytr, train_subset, where)
    xte, yte = _subset(xte, yte, test_subset, where)
    x_test = xte.astype(np.float32) * np.float32(1 / 255)
    return CifarData(xtr, ytr.astype(np.int64), x_test, yte.astype(np.int64), source)


def _subset(
    x: np.ndarray, y: np.ndarray, n: int | None, where: str
) -> tuple[np.ndarray, np.ndarray]:
    if n is not None and int(n) > len(x):
        raise ValueError(
            f"{where}: a subset of {n} images asks for more than the {len(x)} there are; "
            f"pass at most {len(x)} (or leave --train-subset/--test-subset out for all)"
        )
    if n is None or int(n) == len(x):
        return x, y
    keep = np.sort(np.random.default_rng(0).permutation(len(x))[: int(n)])
    return x[keep], y[keep]
