"""The options ``mnist-sigmoid`` and ``mnist-lr`` share, each declared once.

:class:`MnistConfig` holds what both experiments share (the net, the data, the evaluation);
their own configs (``bnlab.experiments.mnist_sigmoid.config``, ``...mnist_lr.config``) add
their options and change a shared default with :func:`~bnlab.experiments.config.inherit`.
Every check runs in ``from_dict`` before a run directory is touched: each value on its own,
then :meth:`MnistConfig.validate` for the values that depend on each other (``monitor_unit``
< the last hidden width, the subsets <= MNIST's images, ``batch_size`` <= the training images).

Derived values are resolved in :meth:`MnistConfig.normalize` and written to ``config.json``:
``eval_every`` None means ``max(steps // 100, min(steps, 50))`` (at most about 100
evaluations, at least 50 steps apart: a 100-step run evaluates at steps 50 and 100, not after
every step).
Loading a ``config.json`` again gives the same config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bnlab.experiments.config import (
    MOMENTUM_HINT,
    Check,
    ExperimentConfig,
    bn_sync_option,
    check_count,
    check_model_bytes,
    mlp_params,
    option,
)

__all__ = ["MNIST_TEST", "MNIST_TRAIN", "STEPS", "MnistConfig", "check_mnist_counts"]

MNIST_TRAIN, MNIST_TEST = 60_000, 10_000
STEPS = Check(int, 1)


def check_mnist_counts(train_subset: int | None, test_subset: int | None, where: str) -> int:
    """The training images used (``train_subset``, or all 60,000) once both subsets are
    checked against MNIST's sizes (:func:`~bnlab.experiments.config.check_count`)."""
    n_train = check_count(train_subset, MNIST_TRAIN, "train_subset", "images", where)
    check_count(test_subset, MNIST_TEST, "test_subset", "images", where)
    return n_train


@dataclasses.dataclass(frozen=True)
class MnistConfig(ExperimentConfig):
    """The options both MNIST experiments share (see the module docstring)."""

    NAME: ClassVar[str] = "mnist"

    steps: int = option(50_000, "SGD steps per run", STEPS)
    batch_size: int = option(
        60, "examples per step", Check(int, 2, hint="BatchNorm needs at least 2 examples a batch")
    )
    seeds: int = option(1, "repeat with K seeds; mean and min-max band", Check(int, 1))
    seed: int = option(0, "first seed", Check(int, 0))
    hidden: list[int] = option([100, 100, 100], "hidden widths", Check(int, 1), nargs="+")
    init_std: float = option(0.1, "std of the N(0, std^2) weights", Check(float, 0, lo_open=True))
    eval_every: int = option(
        None,
        "evaluate every N steps (default: max(steps/100, 50), at most steps)",
        Check(int, 1, optional=True),
    )
    eval_batch_size: int = option(2000, "examples per forward", Check(int, 1))
    monitor_unit: int = option(
        0, "unit of the last hidden layer whose sigmoid input is tracked", Check(int, 0)
    )
    bn_momentum: float = option(0.1, "BN: " + MOMENTUM_HINT, Check(float, 0, 1, hint=MOMENTUM_HINT))
    bn_eps: float = option(1e-5, "BN's epsilon", Check(float, 0, lo_open=True))
    train_subset: int | None = option(
        None, "use the first N train images (default: all)", Check(int, 1, optional=True)
    )
    test_subset: int | None = option(
        None, "use the first N test images (default: all)", Check(int, 1, optional=True)
    )
    progress: bool = option(True, "no progress bar", negate="--no-progress")
    save_checkpoints: bool = option(False, "save each net's final model to checkpoints/NAME.npz")
    bn_sync: str = bn_sync_option()

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``eval_every`` None -> ``max(steps // 100, min(steps, 50))`` (the one place it is
        derived: at most about 100 evaluations, at least 50 steps apart)."""
        steps = values["steps"]
        if values["eval_every"] is None and STEPS.ok(steps):
            values["eval_every"] = max(int(steps) // 100, min(int(steps), 50))
        return values

    def validate(self) -> None:
        """The values that depend on each other, on MNIST's size, and the memory the nets
        need."""
        last = self.hidden[-1]
        if self.monitor_unit >= last:
            raise ValueError(
                f"{self.NAME}: --monitor-unit {self.monitor_unit} is not a unit of the last "
                f"hidden layer, which has {last}; pass 0..{last - 1}"
            )
        n_train = check_mnist_counts(self.train_subset, self.test_subset, self.NAME)
        if self.batch_size > n_train:
            raise ValueError(
                f"{self.NAME}: --batch-size {self.batch_size} is larger than the {n_train} "
                "training images; pass a smaller --batch-size or a larger --train-subset"
            )
        self.check_size()

    def learning_rates(self) -> list[float]:
        """The learning rates trained (each with both nets and every seed): the experiment's
        config says which."""
        return []

    def check_size(self) -> None:
        """Refuse a config whose nets (2 per learning rate and seed) would not fit in memory."""
        n_nets = 2 * len(self.learning_rates()) * self.seeds
        fix = "lower --hidden, --seeds or the number of learning rates"
        check_model_bytes(n_nets, mlp_params(784, self.hidden, 10), self.NAME, fix)
