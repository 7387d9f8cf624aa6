"""The options of ``mnist-lr``: the shared MNIST ones, a base rate and its multiples."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from bnlab.experiments.config import Check, inherit, option
from bnlab.experiments.mnist.config import MnistConfig

__all__ = ["CONFIG", "MnistLrConfig"]

_LR = Check(float, 0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class MnistLrConfig(MnistConfig):
    """``mnist-lr``: both nets at ``base_lr`` times each of ``multipliers``."""

    NAME: ClassVar[str] = "mnist-lr"

    steps: int = inherit(MnistConfig, "steps", 10_000)
    base_lr: float = option(3.0, "base learning rate", _LR)
    multipliers: list[float] = option(
        [1.0, 5.0, 30.0], "learning rates are base_lr times these", _LR, nargs="+"
    )
    stall_threshold: float = option(
        0.2,
        "final test accuracy below this counts as stalled",
        Check(float, 0, 1, hint="a test accuracy (chance is 0.1)"),
    )

    def validate(self) -> None:
        """The shared checks, and learning rates that stay finite."""
        super().validate()
        if not all(math.isfinite(lr) for lr in self.learning_rates()):
            raise ValueError(
                f"{self.NAME}: --base-lr {self.base_lr} times --multipliers {self.multipliers} "
                "overflows to inf; pass smaller values"
            )

    def learning_rates(self) -> list[float]:
        """``base_lr * m`` for each multiplier."""
        return [float(self.base_lr) * float(m) for m in self.multipliers]


CONFIG = MnistLrConfig
