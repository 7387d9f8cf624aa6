"""The options of ``scale-invariance`` (:class:`ScaleConfig`) and the nets they ask for."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bnlab.experiments.config import Check, ExperimentConfig, option
from bnlab.experiments.mnist.config import MNIST_TEST

__all__ = ["ScaleConfig", "net_specs"]

_POSITIVE = Check(float, 0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class ScaleConfig(ExperimentConfig):
    """``bnlab run scale-invariance``. ``steps``/``record_every`` left out: 2000 steps (20,000
    with ``--full``), a record every steps/100."""

    NAME: ClassVar[str] = "scale-invariance"

    steps: int | None = option(
        None, "SGD steps (2000; 20000 with --full)", Check(int, 1, optional=True)
    )
    batch_size: int = option(60, "minibatch size", Check(int, 2))
    lr: float = option(0.1, "SGD learning rate of the reference nets", _POSITIVE)
    hidden: list[int] = option([100, 100, 100], "hidden widths", Check(int, 1), nargs="+")
    scales: list[float] = option(
        [0.1, 10.0], "the factors a: the weights feeding BN start at a W", _POSITIVE, nargs="+"
    )
    eps: float = option(1e-5, "BN eps of the reference net", _POSITIVE)
    l2: float = option(
        5e-4, "L2 coefficient of the run with L2 (gradient + l2 * W on every kernel)", _POSITIVE
    )
    record_every: int | None = option(
        None, "record every N steps (steps/100)", Check(int, 1, optional=True)
    )
    eval_examples: int = option(
        2000, "test images for the test accuracy", Check(int, 1, MNIST_TEST)
    )
    seed: int = option(0, "weights and batches", Check(int, 0))
    full: bool = option(False, "a longer run: 20,000 steps")
    progress: bool = option(True, "no progress bar", negate="--no-progress")

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.steps is None:
            set_(self, "steps", 20_000 if self.full else 2000)
        if self.record_every is None and isinstance(self.steps, int):
            set_(self, "record_every", max(1, self.steps // 100))

    def validate(self) -> None:
        """a != 1 (that is the reference net)."""
        if 1.0 in [float(a) for a in self.scales]:
            raise ValueError(
                f"{self.NAME}: --scales must not contain 1 (that is the reference net)"
            )


def net_specs(cfg: ScaleConfig) -> list[dict[str, Any]]:
    """The nets trained side by side: name, kind ("bn"/"plain"), scale a, eps, l2, and the
    reference whose predictions each is compared with."""
    eps = float(cfg.eps)
    specs = [
        {"name": "bn", "kind": "bn", "scale": 1.0, "eps": eps, "l2": 0.0, "ref": None},
        {"name": "bn-l2", "kind": "bn", "scale": 1.0, "eps": eps, "l2": float(cfg.l2), "ref": None},
        {"name": "plain", "kind": "plain", "scale": 1.0, "eps": eps, "l2": 0.0, "ref": None},
    ]
    for a in map(float, cfg.scales):
        specs += [
            {
                "name": f"bn-a{a:g}-eps-scaled",
                "kind": "bn",
                "scale": a,
                "eps": eps * a * a,
                "l2": 0.0,
                "ref": "bn",
            },
            {
                "name": f"bn-a{a:g}-eps-fixed",
                "kind": "bn",
                "scale": a,
                "eps": eps,
                "l2": 0.0,
                "ref": "bn",
            },
            {
                "name": f"plain-a{a:g}",
                "kind": "plain",
                "scale": a,
                "eps": eps,
                "l2": 0.0,
                "ref": "plain",
            },
        ]
    return specs


CONFIG = ScaleConfig
