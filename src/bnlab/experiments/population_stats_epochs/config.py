"""The options of ``population-stats-epochs`` (:class:`EpochsConfig`): each option once, its
flag, default, check and ``config.json`` entry."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from bnlab.experiments.config import Check, ExperimentConfig, option

__all__ = ["CONFIG", "EpochsConfig"]


@dataclasses.dataclass(frozen=True)
class EpochsConfig(ExperimentConfig):
    """``bnlab run population-stats-epochs``."""

    NAME: ClassVar[str] = "population-stats-epochs"

    checkpoints: str | None = option(
        None, "glob of checkpoint files, e.g. 'D/*.npz'", required=True
    )
    data: str = option("mnist", "'mnist' or a CIFAR-10 path")
    batch_size: int = option(32, "Algorithm 2's m", Check(int, 2, hint="m/(m-1) needs m >= 2"))
    recal_examples: int = option(10000, "training images drawn for Algorithm 2", Check(int, 2))
    eval_batch_size: int = option(500, "examples per forward", Check(int, 1))
    test_subset: int | None = option(
        None, "use the first N test images (default: all)", Check(int, 1, optional=True)
    )
    seed: int = option(0, "draw of the recalibration batches", Check(int, 0))
    progress: bool = option(True, "no progress bar", negate="--no-progress")

    def validate(self) -> None:
        """Algorithm 2 draws at least one batch; ``checkpoints`` is a glob."""
        where = self.NAME
        if int(self.recal_examples) < int(self.batch_size):
            raise ValueError(
                f"{where}: --recal-examples {self.recal_examples} is fewer than one batch of "
                f"--batch-size {self.batch_size}"
            )
        if not isinstance(self.checkpoints, str) or not self.checkpoints:
            raise ValueError(
                f"{where}: --checkpoints must be a glob of .npz files, got {self.checkpoints!r}; "
                "pass e.g. 'runs/cifar10/checkpoints/bn_epoch_*.npz'"
            )
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(
                f"{where}: --data must be 'mnist' or a CIFAR-10 path, got {self.data!r}"
            )


CONFIG = EpochsConfig
