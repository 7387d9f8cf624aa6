"""What the CIFAR-10 experiments share (cifar10-keras, cifar10-resnet, batch-size): finding
and loading the data named by ``--data`` (or ``$BNLAB_CIFAR``), and the checks that depend
on how many images were found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnlab.data.cifar_source import CifarData, load_cifar10_data, resolve_data_path
from bnlab.data.sources import describe_source
from bnlab.experiments.config import check_count

__all__ = ["load_data", "check_batch"]


def load_data(cfg: Any, name: str) -> tuple[Path, dict[str, Any], CifarData]:
    """``(path, source description, data)`` of ``cfg.data`` with its train/test subsets (0 or
    None: all), progress shown on rank 0 only."""
    from bnlab.train import is_root  # the training floor (Numba) only when data is loaded

    path = resolve_data_path(cfg.data, where=name)
    source = describe_source(path)
    data = load_cifar10_data(
        path, source, cfg.train_subset or None, cfg.test_subset or None,
        progress=None if cfg.progress and is_root() else False, where=name,
    )  # fmt: skip
    return path, source, data


def check_batch(cfg: Any, n_train: int, n_test: int, batch: int, flag: str, name: str) -> None:
    """The subsets fit the images found and ``batch`` (the ``flag`` option) fits the subset."""
    n = check_count(cfg.train_subset or None, n_train, "train_subset", "images", name)
    check_count(cfg.test_subset or None, n_test, "test_subset", "images", name)
    if int(batch) > n:
        raise ValueError(
            f"{name}: {flag} {batch} is larger than the {n} training images; pass a smaller "
            f"{flag}" + (" or a larger --train-subset" if flag == "--batch-sizes" else "")
        )
