"""The options of ``renorm-small-batch`` (:class:`RenormConfig`), the runs they ask for
(:func:`run_specs`) and the renorm schedule in steps (:func:`renorm_schedule`)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bnlab.experiments.config import (
    MOMENTUM_HINT,
    Check,
    ExperimentConfig,
    check_count,
    check_model_bytes,
    mlp_params,
    option,
)
from bnlab.experiments.mnist.config import MNIST_TEST, MNIST_TRAIN

__all__ = ["CONFIG", "RenormConfig", "renorm_schedule", "run_specs"]

_FRAC = Check(float, 0, 1)


@dataclasses.dataclass(frozen=True)
class RenormConfig(ExperimentConfig):
    """``bnlab run renorm-small-batch``: every option once (flag, default, check, config.json).

    ``eval_every`` left out is ``steps // 20`` (at least 1), as ``config.json`` records it.
    """

    NAME: ClassVar[str] = "renorm-small-batch"

    steps: int = option(5000, "SGD steps per run", Check(int, 1))
    batch_size: int = option(32, "minibatch size", Check(int, 4))
    micro_sizes: list[int] = option(
        [4, 2], "microbatch sizes for the normalization statistics", Check(int, 2), nargs="*"
    )
    noniid: bool = option(True, "skip 2-class runs", negate="--no-noniid")
    lr: float = option(0.02, "SGD learning rate", Check(float, 0, lo_open=True))
    activation: str = option("relu", "hidden units", choices=("relu", "sigmoid"))
    hidden: list[int] = option([100, 100, 100], "hidden widths", Check(int, 1), nargs="+")
    momentum: float = option(0.01, "BN/renorm momentum", Check(float, 0, 1, hint=MOMENTUM_HINT))
    eps: float = option(1e-3, "BN/renorm eps", Check(float, 0, lo_open=True))
    rmax: float = option(3.0, "batch renorm's final r_max", Check(float, 1, hint="1 = plain BN"))
    dmax: float = option(5.0, "batch renorm's final d_max", Check(float, 0, hint="0 = plain BN"))
    warmup_frac: float = option(0.1, "fraction of the steps trained as plain BN (r=1, d=0)", _FRAC)
    dmax_frac: float = option(0.5, "fraction of the steps at which d_max reaches --dmax", _FRAC)
    rmax_frac: float = option(0.8, "fraction of the steps at which r_max reaches --rmax", _FRAC)
    eval_every: int | None = option(
        None, "evaluate every N steps (steps/20)", Check(int, 1, optional=True)
    )
    seed: int = option(0, "weights and batches (the first seed)", Check(int, 0))
    seeds: int = option(
        1, "repeat every run with seeds seed..seed+N-1; mean and min-max", Check(int, 1)
    )
    train_subset: int | None = option(
        None, "first N train images (all)", Check(int, 1, optional=True)
    )
    test_subset: int | None = option(
        None, "first N test images (all)", Check(int, 1, optional=True)
    )
    progress: bool = option(True, "no progress bar", negate="--no-progress")

    def __post_init__(self) -> None:
        # runs after each value passed its check: eval_every resolved
        if self.eval_every is None:
            object.__setattr__(self, "eval_every", max(1, int(self.steps) // 20))

    def to_dict(self) -> dict[str, Any]:
        """The options as ``config.json`` holds them; ``seeds`` only when above 1, so a
        one-seed run's ``config.json`` keeps the keys it had before ``--seeds`` (read back,
        a missing ``seeds`` is 1)."""
        out = super().to_dict()
        if out["seeds"] == 1:
            del out["seeds"]
        return out

    def validate(self) -> None:
        """The batch size against the microbatches, the data and the schedule; the memory."""
        where, bs = self.NAME, int(self.batch_size)
        if bs < 4 or bs % 2:
            raise ValueError(
                f"{where}: --batch-size must be even and >= 4 (2-class batches), got {bs}"
            )
        for k in self.micro_sizes:
            if k < 2 or bs % k:
                raise ValueError(
                    f"{where}: micro size {k} must be >= 2 and divide --batch-size {bs}"
                )
        if not 0 <= self.warmup_frac <= self.dmax_frac <= 1 or self.rmax_frac > 1:
            raise ValueError(
                f"{where}: expected 0 <= --warmup-frac <= --dmax-frac <= 1 and --rmax-frac <= 1, "
                f"got {self.warmup_frac}, {self.dmax_frac}, {self.rmax_frac}"
            )
        n_train = check_count(self.train_subset, MNIST_TRAIN, "train_subset", "images", where)
        n_test = check_count(self.test_subset, MNIST_TEST, "test_subset", "images", where)
        if bs > min(n_train, n_test):
            raise ValueError(
                f"{where}: --batch-size {bs} is larger than the {n_train} training or {n_test} "
                "test images (the training-mode accuracy needs one whole batch of test images)"
            )
        n_nets = len(run_specs(self))
        check_model_bytes(n_nets, mlp_params(784, self.hidden, 10), where, "lower --hidden")


def run_specs(cfg: RenormConfig) -> list[dict[str, Any]]:
    """The runs: name, norm ("bn"/"renorm"), group (examples per statistic), batches."""
    full = int(cfg.batch_size)
    specs = [{"name": "bn-full", "norm": "bn", "group": full, "batches": "iid"}]
    for k in cfg.micro_sizes:
        for norm in ("bn", "renorm"):
            specs.append({"name": f"{norm}-micro{k}", "norm": norm, "group": k, "batches": "iid"})
    if cfg.noniid:
        for norm in ("bn", "renorm"):
            specs.append(
                {"name": f"{norm}-noniid", "norm": norm, "group": full, "batches": "noniid"}
            )
    return specs


def renorm_schedule(cfg: RenormConfig) -> dict[str, int]:
    """The paper's 5k/25k/40k schedule scaled to ``steps`` by the three fractions."""
    steps = int(cfg.steps)
    return {
        "warmup_steps": int(round(cfg.warmup_frac * steps)),
        "dmax_steps": int(round(cfg.dmax_frac * steps)),
        "rmax_steps": int(round(cfg.rmax_frac * steps)),
    }


CONFIG = RenormConfig
