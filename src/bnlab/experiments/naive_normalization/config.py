"""The options of ``naive-normalization`` (:class:`NaiveConfig`) and the runs they ask for."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bnlab.experiments.config import Check, ExperimentConfig, option
from bnlab.experiments.mnist.config import MNIST_TEST

__all__ = ["NaiveConfig", "run_specs"]


@dataclasses.dataclass(frozen=True)
class NaiveConfig(ExperimentConfig):
    """``bnlab run naive-normalization``. ``steps``/``hidden``/``eval_every`` left out take
    the default size, or the paper's MNIST size with ``--full`` (50,000 steps, 3 x 100)."""

    NAME: ClassVar[str] = "naive-normalization"

    steps: int | None = option(
        None, "SGD steps per run (3000; 50000 with --full)", Check(int, 1, optional=True)
    )
    batch_size: int = option(60, "minibatch size", Check(int, 2))
    lr: float = option(0.5, "SGD learning rate", Check(float, 0, lo_open=True))
    hidden: list[int] | None = option(
        None,
        "hidden widths (100 100; 100 100 100 with --full)",
        Check(int, 1, optional=True),
        nargs="+",
    )
    activation: str = option("sigmoid", "hidden units", choices=("sigmoid", "relu"))
    train: str = option(
        "both",
        "what SGD updates: all parameters, only the biases before the normalization (the "
        "paper's argument on its own), or both settings",
        choices=("both", "all", "bias"),
    )
    eps: float = option(1e-5, "eps of the full normalization", Check(float, 0, lo_open=True))
    eval_every: int | None = option(
        None, "evaluate every N steps (steps/50)", Check(int, 1, optional=True)
    )
    eval_examples: int = option(
        2000, "test images of the fixed evaluation batch", Check(int, 2, MNIST_TEST)
    )
    seed: int = option(0, "weights and batches", Check(int, 0))
    full: bool = option(False, "the paper's MNIST size: 50,000 steps, 3 hidden layers of 100")
    progress: bool = option(True, "no progress bar", negate="--no-progress")

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.steps is None:
            set_(self, "steps", 50_000 if self.full else 3000)
        if self.hidden is None:
            set_(self, "hidden", [100, 100, 100] if self.full else [100, 100])
        if self.eval_every is None and isinstance(self.steps, int):
            set_(self, "eval_every", max(1, self.steps // 50))


def run_specs(cfg: NaiveConfig) -> list[dict[str, Any]]:
    """The runs: ``norm`` ("centre" / "bn") x ``gradient`` ("proper" / "naive") x ``train``."""
    trains = ["all", "bias"] if cfg.train == "both" else [cfg.train]
    return [
        {"name": f"{norm}-{grad}-{train}", "norm": norm, "gradient": grad, "train": train}
        for train in trains
        for norm in ("centre", "bn")
        for grad in ("proper", "naive")
    ]


CONFIG = NaiveConfig
