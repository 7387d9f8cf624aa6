"""The options of ``batch-size``: :class:`BatchSizeConfig`."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, ClassVar

from bnlab.data.cifar_source import ENV_DATA, FORMATS_HELP
from bnlab.experiments.config import Check, ExperimentConfig, bn_sync_option, check_batch, option

__all__ = ["CONFIG", "NAME", "NETS", "NORMS", "BatchSizeConfig", "parse_norms"]

NAME = "batch-size"
NORMS = ("bn", "renorm", "gn", "ln")
NETS = ("cnn3", "resnet20")
WIDTHS = (16, 32, 64)  # the channel counts of both nets (run.build_net, models.resnet20)
# --full: Wu & He's net replaced by ResNet-20 on all of CIFAR-10
FULL = {"net": "resnet20", "train_subset": 0, "test_subset": 0, "epochs": 30}


def parse_norms(text: str) -> list[str]:
    """``--norms bn,gn``: a comma-separated subset of :data:`NORMS`."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(n not in NORMS for n in names):
        raise argparse.ArgumentTypeError(
            f"--norms takes a comma-separated subset of {','.join(NORMS)}, got {text!r}"
        )
    return names


@dataclasses.dataclass(frozen=True)
class BatchSizeConfig(ExperimentConfig):
    """Every option of ``bnlab run batch-size``, in ``config.json``'s order.

    Default: net cnn3 (conv 3x3 16 / 32 stride 2 / 64 stride 2, each norm + ReLU, global
    average pooling, Dense 10), 5,000 training and 2,000 test images (fixed random subsets),
    4 epochs per run, per-device batches 32, 16, 8, 4, 2, GroupNorm with 8 groups (resnet20's
    16 channels allow 16 at most; 8 gives 2-8 channels a group, within Wu & He's good range).
    ``--full``: ResNet-20, all 50,000/10,000 images, 30 epochs.
    """

    NAME: ClassVar[str] = NAME
    EXTRA_KEYS: ClassVar[tuple[str, ...]] = ("data_source", "world_size")

    data: str | None = option(None, f"CIFAR-10: {FORMATS_HELP} (default: ${ENV_DATA})")
    full: bool = option(False, "ResNet-20 on all images, 30 epochs per run")
    net: str = option("cnn3", "cnn3 (3 conv layers) or resnet20", choices=NETS)
    norms: list[str] = option(list(NORMS), "comma-separated norms to train", parse=parse_norms)
    batch_sizes: list[int] = option(
        [32, 16, 8, 4, 2], "per-device batch sizes", Check(int, 2), nargs="+"
    )
    epochs: int = option(4, "epochs per run (the same for every batch size)", Check(int, 1))
    train_subset: int = option(
        5000, "N training images (a fixed random choice; 0: all)", Check(int, 0)
    )
    test_subset: int = option(2000, "N test images (a fixed random choice; 0: all)", Check(int, 0))
    seed: int = option(0, "weights, batch order and augmentation (the same for every run)",
                       Check(int, 0))  # fmt: skip
    lr: float = option(0.05, "SGD lr at a global batch of 32 (scaled linearly)",
                       Check(float, 0, lo_open=True))  # fmt: skip
    momentum: float = option(0.9, "SGD momentum", Check(float, 0, 1, hi_open=True))
    weight_decay: float = option(1e-4, "L2 on the kernels: gradient + wd * W", Check(float, 0))
    gn_groups: int = option(8, "GroupNorm groups (at most the channels)", Check(int, 1))
    eval_batch_size: int = option(500, "examples per forward", Check(int, 1))
    reference: str | None = option(
        None,
        "another batch-size run directory drawn dashed beside this one (e.g. the "
        "one-process run beside a SyncBN run under mpiexec)",
    )
    progress: bool = option(True, "no progress bar", negate="--no-progress")
    bn_sync: str = bn_sync_option()

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``--full`` sets the net, subsets and epochs; ``norms`` in :data:`NORMS` order."""
        out = {**values, **FULL} if values.get("full") else dict(values)
        norms = out.get("norms")
        if isinstance(norms, str):
            norms = [t.strip() for t in norms.split(",") if t.strip()]
        if isinstance(norms, list):
            if not norms or any(n not in NORMS for n in norms):
                raise ValueError(f"{NAME}: norms must be a non-empty subset of {NORMS}: {norms}")
            out["norms"] = [n for n in NORMS if n in norms]
        return out

    def validate(self) -> None:
        """Each batch size once; GroupNorm's min(gn_groups, C) groups divide every width C."""
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ValueError(f"{NAME}: --batch-sizes repeats a size: {self.batch_sizes}")
        g = int(self.gn_groups)
        if "gn" in self.norms and any(c % min(g, c) for c in WIDTHS):
            raise ValueError(
                f"{NAME}: --gn-groups {g} does not divide the nets' channel counts "
                f"{WIDTHS} (a layer of C channels has min(groups, C) groups); choose a "
                "power of two"
            )

    def check_data(self, n_train: int, n_test: int) -> None:
        """The options that depend on the size of the data found."""
        check_batch(self, n_train, n_test, max(self.batch_sizes), "--batch-sizes", NAME)


CONFIG = BatchSizeConfig
