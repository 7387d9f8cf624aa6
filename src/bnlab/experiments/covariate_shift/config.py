"""The options of ``covariate-shift`` (:class:`ShiftConfig`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

from bnlab.experiments.config import ExperimentConfig, option

__all__ = ["CIFAR_ENV", "NETS", "ShiftConfig"]

CIFAR_ENV = "BNLAB_CIFAR"
NETS = ("standard", "bn", "noisy-bn")


def _bad(where: str, key: str, what: str, value: Any) -> ValueError:
    return ValueError(f"{where}: --{key.replace('_', '-')} must be {what}, got {value!r}")


def _number(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return False
    return float(value).is_integer() if kind is int else abs(value) != float("inf")


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
    steps: int | None = option(None, "SGD steps per net (6000 MNIST, 300 CIFAR-10)", parse=int)
    batch_size: int | None = option(None, "minibatch size (60 MNIST, 128 CIFAR-10)", parse=int)
    lr: float = option(0.1, "SGD learning rate (plain SGD)", parse=float)
    hidden: list[int] = option([100, 100, 100], "MNIST MLP hidden widths", nargs="+", parse=int)
    measure_every: int | None = option(
        None, "measure every N steps (steps/60 MNIST, steps/20 CIFAR-10)", parse=int
    )
    step_sizes: list[float] = option(
        [0.05, 0.1, 0.2, 0.4],
        "step sizes along the gradient for the landscape",
        nargs="+",
        parse=float,
    )
    noise_mean: float = option(
        1.0, "noisy BN: the mean of the noise is drawn from U(-n, n)", parse=float
    )
    noise_scale: float = option(
        2.0, "noisy BN: the scale of the noise is drawn from U(1, n)", parse=float
    )
    noise_spread: float = option(0.1, "noisy BN: per-sample spread of the noise", parse=float)
    eval_examples: int = option(2000, "test images for the test accuracy", parse=int)
    seed: int = option(0, "weights, batches and noise", parse=int)
    full: bool = option(False, "a longer run: 15,000 steps (MNIST) / 39,000, 100 epochs (CIFAR-10)")
    progress: bool = option(True, "no progress bar", negate="--no-progress")

    def __post_init__(self) -> None:
        set_, mnist = object.__setattr__, self.dataset == "mnist"
        if self.steps is None:
            set_(
                self,
                "steps",
                (15_000 if mnist else 39_000) if self.full else (6000 if mnist else 300),
            )
        if self.batch_size is None:
            set_(self, "batch_size", 60 if mnist else 128)
        if self.measure_every is None and isinstance(self.steps, int):
            set_(self, "measure_every", max(1, self.steps // (60 if mnist else 20)))
        if self.cifar is None and not mnist:
            set_(self, "cifar", os.environ.get(CIFAR_ENV) or None)

    def validate(self) -> None:
        """Numbers in range; CIFAR-10 needs a data path that exists."""
        where = self.NAME
        ints = {"steps": 1, "batch_size": 2, "measure_every": 1, "eval_examples": 1, "seed": 0}
        for key, lo in ints.items():
            v = getattr(self, key)
            if not _number(v, int) or v < lo:
                raise _bad(where, key, f"an integer >= {lo}", v)
        # (key, lower bound, bound included)
        for key, lo, closed in (
            ("lr", 0, False),
            ("noise_mean", 0, True),
            ("noise_scale", 1, True),
            ("noise_spread", 0, True),
        ):
            v = getattr(self, key)
            if not _number(v, float) or v < lo or (v == lo and not closed):
                raise _bad(where, key, f"a finite number {'>=' if closed else '>'} {lo}", v)
        for key, kind in (("hidden", int), ("step_sizes", float)):
            vals = getattr(self, key)
            if (
                not isinstance(vals, list)
                or not vals
                or not all(_number(v, kind) and v > 0 for v in vals)
            ):
                raise _bad(where, key, "one or more positive numbers", vals)
        if self.eval_examples > 10_000:
            raise _bad(where, "eval_examples", "at most 10000 (the test set)", self.eval_examples)
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
