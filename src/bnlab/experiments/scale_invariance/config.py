"""The options of ``scale-invariance`` (:class:`ScaleConfig`) and the nets they ask for."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bnlab.experiments.config import ExperimentConfig, option

__all__ = ["MNIST_TEST", "ScaleConfig", "check_number", "net_specs"]

MNIST_TEST = 10_000


def check_number(where: str, key: str, value: Any, lo: float, kind: type = float) -> None:
    """ValueError naming ``--key`` unless ``value`` is a ``kind`` (int: integral) >= ``lo``
    (> 0 when ``lo`` is 0 and ``kind`` is float)."""
    strict = kind is float and lo == 0
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    ok = ok and (float(value).is_integer() if kind is int else abs(value) != float("inf"))
    ok = ok and (value > lo if strict else value >= lo)
    if not ok:
        what = "an integer" if kind is int else "a finite number"
        flag = "--" + key.replace("_", "-")
        raise ValueError(
            f"{where}: {flag} must be {what} {'>' if strict else '>='} {lo:g}, got {value!r}"
        )


@dataclasses.dataclass(frozen=True)
class ScaleConfig(ExperimentConfig):
    """``bnlab run scale-invariance``. ``steps``/``record_every`` left out: 2000 steps (20,000
    with ``--full``), a record every steps/100."""

    NAME: ClassVar[str] = "scale-invariance"

    steps: int | None = option(None, "SGD steps (2000; 20000 with --full)", parse=int)
    batch_size: int = option(60, "minibatch size", parse=int)
    lr: float = option(0.1, "SGD learning rate of the reference nets", parse=float)
    hidden: list[int] = option([100, 100, 100], "hidden widths", nargs="+", parse=int)
    scales: list[float] = option(
        [0.1, 10.0], "the factors a: the weights feeding BN start at a W", nargs="+", parse=float
    )
    eps: float = option(1e-5, "BN eps of the reference net", parse=float)
    l2: float = option(
        5e-4, "L2 coefficient of the run with L2 (gradient + l2 * W on every kernel)", parse=float
    )
    record_every: int | None = option(None, "record every N steps (steps/100)", parse=int)
    eval_examples: int = option(2000, "test images for the test accuracy", parse=int)
    seed: int = option(0, "weights and batches", parse=int)
    full: bool = option(False, "a longer run: 20,000 steps")
    progress: bool = option(True, "no progress bar", negate="--no-progress")

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.steps is None:
            set_(self, "steps", 20_000 if self.full else 2000)
        if self.record_every is None and isinstance(self.steps, int):
            set_(self, "record_every", max(1, self.steps // 100))

    def validate(self) -> None:
        """Every number in range; a != 1; the test images within the test set."""
        where = self.NAME
        for key, lo in (("steps", 1), ("batch_size", 2), ("record_every", 1), ("seed", 0)):
            check_number(where, key, getattr(self, key), lo, int)
        check_number(where, "eval_examples", self.eval_examples, 1, int)
        for key in ("lr", "eps"):
            check_number(where, key, getattr(self, key), 0)
        check_number(where, "l2", self.l2, 0)
        for key, lo, kind in (("hidden", 1, int), ("scales", 0, float)):
            values = getattr(self, key)
            if not isinstance(values, list) or not values:
                raise ValueError(f"{where}: --{key} must be one or more values, got {values!r}")
            for v in values:
                check_number(where, key, v, lo, kind)
        if 1.0 in [float(a) for a in self.scales]:
            raise ValueError(f"{where}: --scales must not contain 1 (that is the reference net)")
        if self.eval_examples > MNIST_TEST:
            raise ValueError(
                f"{where}: --eval-examples must be at most {MNIST_TEST}, got {self.eval_examples}"
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
