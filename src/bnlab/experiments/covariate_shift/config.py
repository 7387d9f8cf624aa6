"""The options of ``covariate-shift`` (:class:`ShiftConfig`)."""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

from bnlab.experiments.config import Check, ExperimentConfig, option
from bnlab.experiments.mnist.config import MNIST_TEST

__all__ = ["CIFAR_ENV", "NETS", "ShiftConfig"]

CIFAR_ENV = "BNLAB_CIFAR"
NETS = ("standard", "bn", "noisy-bn")


_POSITIVE = Check(float, 0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class ShiftConfig(ExperimentConfig):
    """``bnlab run covariate-shift``. Left out: ``steps`` 6000 on MNIST, 300 on CIFAR-10
    (15,000 / 39,000 = 100 epochs of 128 with ``--full``); ``measure_every`` steps/60 (MNIST)
    or steps/20 (CIFAR-10); ``batch_size`` 60 (MNIST) or 128 (CIFAR-10, the paper's)."""

    NAME: ClassVar[str] = "covariate-shift"
    EXTRA_KEYS: ClassVar[tuple[str, ...]] = ("cifar_source",)

    dataset: str = option(
        "mnist", "the MNIST MLP or the Keras CIFAR-10 net", choices=("mnist", "cifar10")
    )
    cifar: str | None = option(
        None, f"CIFAR-10 data (any format bnlab reads; default ${CIFAR_ENV})"
    )
    steps: int | None = option(
        None, "SGD steps per net (6000 MNIST, 300 CIFAR-10)", Check(int, 1, optional=True)
    )
    batch_size: int | None = option(
        None, "minibatch size (60 MNIST, 128 CIFAR-10)", Check(int, 2, optional=True)
    )
    lr: float = option(0.1, "SGD learning rate (plain SGD)", _POSITIVE)
    hidden: list[int] = option([100, 100, 100], "MNIST MLP hidden widths", Check(int, 1), nargs="+")
    measure_every: int | None = option(
        None,
        "measure every N steps (steps/60 MNIST, steps/20 CIFAR-10)",
        Check(int, 1, optional=True),
    )
    step_sizes: list[float] = option(
        [0.05, 0.1, 0.2, 0.4],
        "step sizes along the gradient for the landscape",
        _POSITIVE,
        nargs="+",
    )
    noise_mean: float = option(
        1.0, "noisy BN: the mean of the noise is drawn from U(-n, n)", Check(float, 0)
    )
    noise_scale: float = option(
        2.0, "noisy BN: the scale of the noise is drawn from U(1, n)", Check(float, 1)
    )
    noise_spread: float = option(0.1, "noisy BN: per-sample spread of the noise", Check(float, 0))
    eval_examples: int = option(
        2000, "test images for the test accuracy", Check(int, 1, MNIST_TEST)
    )
    seed: int = option(0, "weights, batches and noise", Check(int, 0))
    full: bool = option(False, "a longer run: 15,000 steps (MNIST) / 39,000, 100 epochs (CIFAR-10)")
    progress: bool = option(True, "no progress bar", negate="--no-progress")

    def __post_init__(self) -> None:
        set_, mnist = object.__setattr__, self.dataset == "mnist"
        if self.steps is None:
            steps = (15_000 if mnist else 39_000) if self.full else (6000 if mnist else 300)
            set_(self, "steps", steps)
        if self.batch_size is None:
            set_(self, "batch_size", 60 if mnist else 128)
        if self.measure_every is None and isinstance(self.steps, int):
            set_(self, "measure_every", max(1, self.steps // (60 if mnist else 20)))
        if self.cifar is None and not mnist:
            set_(self, "cifar", os.environ.get(CIFAR_ENV) or None)

    def validate(self) -> None:
        """CIFAR-10 needs a data path that exists."""
        where = self.NAME  # the numbers are checked by their options
        if self.dataset == "cifar10":
            if not self.cifar:
                raise ValueError(
                    f"{where}: --dataset cifar10 needs the data: pass --cifar PATH or set "
                    f"{CIFAR_ENV}=PATH (a CIFAR-10 archive or directory bnlab.data reads)"
                )
            if not os.path.exists(self.cifar):
                raise ValueError(
                    f"{where}: --cifar {self.cifar} does not exist; pass the CIFAR-10 data"
                )
        elif self.cifar:  # given for nothing: the user meant --dataset cifar10
            raise ValueError(
                f"{where}: --cifar is read only with --dataset cifar10 (the dataset is "
                f"{self.dataset}); add --dataset cifar10 or drop --cifar"
            )


CONFIG = ShiftConfig
