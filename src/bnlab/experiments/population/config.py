"""The options of ``population-stats`` (:class:`StatsConfig`) and ``population-stats-epochs``
(:class:`EpochsConfig`): each option once, its flag, default, check and ``config.json`` entry."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from bnlab.experiments.config import ExperimentConfig, option
from bnlab.experiments.mnist.config import COMMON_CHECKS, MNIST_TEST, MNIST_TRAIN, MOMENTUM_HINT
from bnlab.experiments.options import Check, check_count, check_model_bytes, mlp_params

__all__ = ["EpochsConfig", "StatsConfig"]

_C = COMMON_CHECKS  # the MNIST experiments' checks of the options shared with them


@dataclasses.dataclass(frozen=True)
class StatsConfig(ExperimentConfig):
    """``bnlab run population-stats``. ``eval_every`` left out is ``steps // 10`` (at least 1),
    as ``config.json`` records it."""

    NAME: ClassVar[str] = "population-stats"

    steps: int = option(3000, "SGD steps", _C["steps"])
    batch_size: int = option(60, "examples per step", _C["batch_size"])
    lr: float = option(0.5, "SGD learning rate", Check(float, 0, lo_open=True))
    momenta: list[float] = option(
        [0.01, 0.1, 0.5],
        "BN momenta, one net each (the weight of the new batch)",
        Check(float, 0, 1, hint=MOMENTUM_HINT),
        nargs="+",
    )
    seed: int = option(0, "weights, batches and the draw", _C["seed"])
    hidden: list[int] = option([100, 100, 100], "hidden widths", _C["hidden"], nargs="+")
    init_std: float = option(0.1, "std of the N(0, std^2) weights", _C["init_std"])
    bn_eps: float = option(1e-5, "BN's epsilon", _C["bn_eps"])
    eval_every: int | None = option(None, "evaluate every N steps (steps/10)", _C["eval_every"])
    recal_examples: int = option(12000, "training images drawn for Algorithm 2", Check(int, 2))
    train_subset: int | None = option(None, "first N train images (all)", _C["train_subset"])
    test_subset: int | None = option(None, "first N test images (all)", _C["test_subset"])
    progress: bool = option(True, "no progress bar", negate="--no-progress")

    def __post_init__(self) -> None:
        # runs after each value passed its check
        if self.eval_every is None:
            object.__setattr__(self, "eval_every", max(int(self.steps) // 10, 1))

    def validate(self) -> None:
        """Subsets within MNIST, a batch within the images and Algorithm 2's draw, memory."""
        where = self.NAME
        n_train = check_count(self.train_subset, MNIST_TRAIN, "train_subset", "images", where)
        check_count(self.test_subset, MNIST_TEST, "test_subset", "images", where)
        bs = int(self.batch_size)
        if bs > n_train or int(self.recal_examples) < bs:
            raise ValueError(
                f"{where}: need --batch-size {bs} <= the {n_train} training images and "
                f"--recal-examples {self.recal_examples} >= --batch-size"
            )
        fix = "lower --hidden or the number of --momenta"
        check_model_bytes(len(self.momenta) + 1, mlp_params(784, self.hidden, 10), where, fix)


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
