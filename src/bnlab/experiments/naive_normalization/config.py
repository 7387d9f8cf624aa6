"""The options of ``naive-normalization`` (:class:`NaiveConfig`) and the runs they ask for."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bnlab.experiments.config import ExperimentConfig, option

__all__ = ["MNIST_TEST", "NaiveConfig", "run_specs"]

MNIST_TEST = 10_000


def check_number(where: str, key: str, value: Any, lo: float, kind: type = float) -> None:
    """ValueError naming ``--key`` unless ``value`` is a ``kind`` (int: integral) >= ``lo``
    (> 0 when ``lo`` is 0 and ``kind`` is float)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    ok = ok and (float(value).is_integer() if kind is int else abs(value) != float("inf"))
    ok = ok and (value > lo if (kind is float and lo == 0) else value >= lo)
    if not ok:
        what = "an integer" if kind is int else "a finite number"
        op = ">" if (kind is float and lo == 0) else ">="
        raise ValueError(
            f"{where}: --{key.replace('_', '-')} must be {what} {op} {lo:g}, got {value!r}"
        )


@dataclasses.dataclass(frozen=True)
class NaiveConfig(ExperimentConfig):
    """``bnlab run naive-normalization``. ``steps``/``hidden``/``eval_every`` left out take
    the default size, or the paper's MNIST size with ``--full`` (50,000 steps, 3 x 100)."""

    NAME: ClassVar[str] = "naive-normalization"

    steps: int | None = option(None, "SGD steps per run (3000; 50000 with --full)", parse=int)
    batch_size: int = option(60, "minibatch size", parse=int)
    lr: float = option(0.5, "SGD learning rate", parse=float)
    hidden: list[int] | None = option(
        None, "hidden widths (100 100; 100 100 100 with --full)", nargs="+", parse=int
    )
    activation: str = option("sigmoid", "hidden units", choices=("sigmoid", "relu"))
    train: str = option(
        "both",
        "what SGD updates: all parameters, only the biases before the normalization (the "
        "paper's argument on its own), or both settings",
        choices=("both", "all", "bias"),
    )
    eps: float = option(1e-5, "eps of the full normalization", parse=float)
    eval_every: int | None = option(None, "evaluate every N steps (steps/50)", parse=int)
    eval_examples: int = option(2000, "test images of the fixed evaluation batch", parse=int)
    seed: int = option(0, "weights and batches", parse=int)
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

    def validate(self) -> None:
        """Every number in range; the evaluation batch within the test set."""
        where = self.NAME
        for key in ("steps", "batch_size", "eval_every", "eval_examples"):
            check_number(where, key, getattr(self, key), 2 if key == "batch_size" else 1, int)
        check_number(where, "seed", self.seed, 0, int)
        check_number(where, "lr", self.lr, 0)
        check_number(where, "eps", self.eps, 0)
        if not isinstance(self.hidden, list) or not self.hidden:
            raise ValueError(f"{where}: --hidden must be one or more widths, got {self.hidden!r}")
        for w in self.hidden:
            check_number(where, "hidden", w, 1, int)
        if self.eval_examples > MNIST_TEST or self.eval_examples < 2:
            raise ValueError(
                f"{where}: --eval-examples must be in [2, {MNIST_TEST}], got {self.eval_examples}"
            )


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
