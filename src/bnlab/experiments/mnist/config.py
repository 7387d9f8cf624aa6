"""The options of ``mnist-sigmoid`` and ``mnist-lr``, each declared once.

:class:`MnistConfig` holds what both experiments share (the net, the data, the evaluation);
:class:`MnistSigmoidConfig` and :class:`MnistLrConfig` add their own options and change a
shared default with :func:`~bnlab.experiments.config.inherit` (mnist-lr trains 10,000 steps).
Every check runs in ``from_dict`` before a run directory is touched: each value on its own,
then :meth:`MnistConfig.validate` for the values that depend on each other (``monitor_unit``
< the last hidden width, the subsets <= MNIST's images, ``batch_size`` <= the training images).

Derived values are resolved in :meth:`MnistConfig.normalize` and written to ``config.json``:
``eval_every`` None means ``max(steps // 100, min(steps, 50))`` (at most about 100
evaluations, at least 50 steps apart: a 100-step run evaluates at steps 50 and 100, not after
every step); ``--sweep`` sets ``steps`` to
``sweep_steps``. Loading a ``config.json`` again gives the same config.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from bnlab.experiments.config import ExperimentConfig, inherit, option
from bnlab.experiments.options import (
    BN_SYNC,
    Check,
    Opt,
    check_count,
    check_model_bytes,
    checks_of,
    mlp_params,
)

__all__ = [
    "COMMON_CHECKS",
    "MNIST_TEST",
    "MNIST_TRAIN",
    "MOMENTUM_HINT",
    "MnistConfig",
    "MnistLrConfig",
    "MnistSigmoidConfig",
]

MNIST_TRAIN, MNIST_TEST = 60_000, 10_000
MOMENTUM_HINT = "the weight of the new batch (PyTorch's convention: Keras' 0.99 is 0.01 here)"
_LR = Check(float, 0, lo_open=True)
_STEPS = Check(int, 1)


def _from_opt(o: Opt) -> Any:
    """A config field declared by an existing :class:`Opt` (such as ``BN_SYNC``)."""
    kw = {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
    return option(kw.pop("default"), kw.pop("help"), kw.pop("check"), **kw)


def _as_ints(values: dict[str, Any], opts: dict[str, Opt]) -> dict[str, Any]:
    """Whole floats of integer options as ints (a config from code: ``steps=600.0``)."""

    def conv(v: Any) -> Any:
        return int(v) if isinstance(v, float) and v.is_integer() else v

    for key, o in opts.items():
        v = values.get(key)
        if o.check is None or o.check.kind is not int or v is None:
            continue
        values[key] = [conv(x) for x in v] if isinstance(v, list | tuple) else conv(v)
    return values


@dataclasses.dataclass(frozen=True)
class MnistConfig(ExperimentConfig):
    """The options both MNIST experiments share (see the module docstring)."""

    NAME: ClassVar[str] = "mnist"

    steps: int = option(50_000, "SGD steps per run", _STEPS)
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
    bn_sync: str = _from_opt(BN_SYNC)

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Integers as ints; ``eval_every`` None -> ``max(steps // 100, min(steps, 50))``
        (the one place it is derived)."""
        values = _as_ints(values, cls.options())
        steps = values["steps"]
        if values["eval_every"] is None and _STEPS.ok(steps):
            values["eval_every"] = max(int(steps) // 100, min(int(steps), 50))
        return values

    def validate(self) -> None:
        """The values that depend on each other, and on MNIST's size."""
        last = self.hidden[-1]
        if self.monitor_unit >= last:
            raise ValueError(
                f"{self.NAME}: --monitor-unit {self.monitor_unit} is not a unit of the last "
                f"hidden layer, which has {last}; pass 0..{last - 1}"
            )
        n_train = self.n_train
        check_count(self.test_subset, MNIST_TEST, "test_subset", "images", self.NAME)
        if self.batch_size > n_train:
            raise ValueError(
                f"{self.NAME}: --batch-size {self.batch_size} is larger than the {n_train} "
                "training images; pass a smaller --batch-size or a larger --train-subset"
            )

    @property
    def n_train(self) -> int:
        """Training images used (``train_subset``, or all 60,000); ValueError if too many."""
        return check_count(self.train_subset, MNIST_TRAIN, "train_subset", "images", self.NAME)

    def learning_rates(self) -> list[float]:
        """The learning rates trained (each with both nets and every seed)."""
        raise NotImplementedError(f"{type(self).__name__} trains no learning rates")

    def check_size(self) -> None:
        """Refuse a config whose nets (2 per learning rate and seed) would not fit in memory."""
        n_nets = 2 * len(self.learning_rates()) * self.seeds
        fix = "lower --hidden, --seeds or the number of learning rates"
        check_model_bytes(n_nets, mlp_params(784, self.hidden, 10), self.NAME, fix)


# the shared options' checks, for experiments that reuse them (population-stats)
COMMON_CHECKS: dict[str, Check] = checks_of(MnistConfig.options())


@dataclasses.dataclass(frozen=True)
class MnistSigmoidConfig(MnistConfig):
    """``mnist-sigmoid``: Figure 1 at ``lrs``, or a short sweep over ``sweep_lrs``."""

    NAME: ClassVar[str] = "mnist-sigmoid"

    lrs: list[float] = option(
        [0.1, 3.0], "SGD learning rate(s), the same for both nets", _LR, nargs="+", flag="--lr"
    )
    sweep: bool = option(False, "run a short learning-rate sweep instead")
    sweep_lrs: list[float] = option(
        [0.03, 0.1, 0.3, 1.0, 3.0, 10.0], "learning rates of --sweep", _LR, nargs="+"
    )
    sweep_steps: int = option(5000, "steps of --sweep", _STEPS)

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """In sweep mode ``steps`` is ``sweep_steps`` (then the shared normalization)."""
        if values["sweep"] and _STEPS.ok(values["sweep_steps"]):
            values["steps"] = int(values["sweep_steps"])
        return super().normalize(values)

    def learning_rates(self) -> list[float]:
        """``sweep_lrs`` in sweep mode, else ``lrs``."""
        return [float(v) for v in (self.sweep_lrs if self.sweep else self.lrs)]


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
