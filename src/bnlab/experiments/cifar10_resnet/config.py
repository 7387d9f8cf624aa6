"""The options of ``cifar10-resnet``: :class:`Cifar10ResnetConfig`."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bnlab.data.cifar_source import ENV_DATA, FORMATS_HELP
from bnlab.experiments.config import Check, ExperimentConfig, bn_sync_option, check_batch, option
from bnlab.models import NORMS

__all__ = ["CONFIG", "DEFAULT_ITERATIONS", "FULL_ITERATIONS", "NAME", "Cifar10ResnetConfig"]

NAME = "cifar10-resnet"
FULL_ITERATIONS = 64000  # the paper's; lr / 10 at 32k and 48k
DEFAULT_ITERATIONS = 1000  # 1.5-2 s a step at batch 128 here: ~28 min plus 3 test passes


@dataclasses.dataclass(frozen=True)
class Cifar10ResnetConfig(ExperimentConfig):
    """Every option of ``bnlab run cifar10-resnet``, in ``config.json``'s order.

    The default schedule: :data:`DEFAULT_ITERATIONS` (1000) iterations of batch 128 on all
    50,000 training images (2.6 epochs), lr 0.1, 0.01 from iteration 500, 0.001 from 750: the
    paper's 64k-iteration schedule scaled by 1000/64000. ``--full``: 64,000 iterations, lr
    divided at 32,000 and 48,000 (``iterations`` is then ignored).
    """

    NAME: ClassVar[str] = NAME
    EXTRA_KEYS: ClassVar[tuple[str, ...]] = ("data_source",)
    RESUME_FREE: ClassVar[tuple[str, ...]] = (
        "data", "eval_batch_size", "test_subset", "resume", "progress", "bn_sync",
    )  # fmt: skip

    data: str | None = option(None, f"CIFAR-10: {FORMATS_HELP} (default: ${ENV_DATA})")
    iterations: int = option(
        DEFAULT_ITERATIONS, "SGD steps (lr / 10 at 1/2 and 3/4)", Check(int, 4)
    )
    full: bool = option(False, f"the paper's {FULL_ITERATIONS} iterations (lr / 10 at 32k, 48k)")
    seed: int = option(0, "weights, batch order and augmentation", Check(int, 0))
    batch_size: int = option(128, "examples per step", Check(int, 2))
    lr: float = option(0.1, "initial learning rate", Check(float, 0, lo_open=True))
    momentum: float = option(0.9, "SGD momentum", Check(float, 0, 1, hi_open=True))
    weight_decay: float = option(
        1e-4, "L2 on conv/dense kernels: gradient + wd * W (bnlab's L2(wd / 2))", Check(float, 0)
    )
    norm: str = option("bn", "the normalization of every block", choices=NORMS)
    shortcut: str = option("A", "A: zero-padded identity, B: 1x1 projections", choices=("A", "B"))
    eval_batch_size: int = option(500, "examples per forward", Check(int, 1))
    train_subset: int | None = option(
        None, "N training images (a fixed random choice)", Check(int, 2, optional=True)
    )
    test_subset: int | None = option(
        None, "N test images (a fixed random choice)", Check(int, 1, optional=True)
    )
    resume: bool = option(False, "continue the run in --out from its checkpoint")
    progress: bool = option(True, "no progress bar", negate="--no-progress")
    bn_sync: str = bn_sync_option()

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``--full`` sets ``iterations`` to the paper's 64,000."""
        return {**values, "iterations": FULL_ITERATIONS} if values.get("full") else values

    @property
    def milestones(self) -> list[int]:
        """The steps where lr is divided by 10: 1/2 and 3/4 of ``iterations``."""
        t = int(self.iterations)
        return [t // 2, (3 * t) // 4]

    def check_data(self, n_train: int, n_test: int) -> None:
        """The options that depend on the size of the data found."""
        check_batch(self, n_train, n_test, int(self.batch_size), "--batch-size", NAME)


CONFIG = Cifar10ResnetConfig
