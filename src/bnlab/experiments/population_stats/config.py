"""The options of ``population-stats`` (:class:`StatsConfig`): each option once, its flag,
default, check and ``config.json`` entry (the checks of the options it shares with the MNIST
experiments are theirs)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from bnlab.experiments.config import Check, ExperimentConfig, check_model_bytes, mlp_params, option
from bnlab.experiments.mnist.config import MnistConfig, check_mnist_counts

__all__ = ["CONFIG", "StatsConfig"]

# the MNIST experiments' checks of the options shared with them
_C = {k: o.check for k, o in MnistConfig.options().items()}


@dataclasses.dataclass(frozen=True)
class StatsConfig(ExperimentConfig):
    """``bnlab run population-stats``. ``eval_every`` left out is ``steps // 10`` (at least 1),
    as ``config.json`` records it."""

    NAME: ClassVar[str] = "population-stats"

    steps: int = option(3000, "SGD steps", _C["steps"])
    batch_size: int = option(60, "examples per step", _C["batch_size"])
    lr: float = option(0.5, "SGD learning rate", Check(float, 0, lo_open=True))
    momenta: list[float] = option(
        [0.01, 0.1, 0.5],
        "BN momenta, one net each (the weight of the new batch)",
        _C["bn_momentum"],
        nargs="+",
    )
    seed: int = option(0, "weights, batches and the draw", _C["seed"])
    hidden: list[int] = option([100, 100, 100], "hidden widths", _C["hidden"], nargs="+")
    init_std: float = option(0.1, "std of the N(0, std^2) weights", _C["init_std"])
    bn_eps: float = option(1e-5, "BN's epsilon", _C["bn_eps"])
    eval_every: int | None = option(None, "evaluate every N steps (steps/10)", _C["eval_every"])
    recal_examples: int = option(12000, "training images drawn for Algorithm 2", Check(int, 2))
    train_subset: int | None = option(None, "first N train images (all)", _C["train_subset"])
    test_subset: int | None = option(None, "first N test images (all)", _C["test_subset"])
    progress: bool = option(True, "no progress bar", negate="--no-progress")

    def __post_init__(self) -> None:
        # runs after each value passed its check
        if self.eval_every is None:
            object.__setattr__(self, "eval_every", max(int(self.steps) // 10, 1))

    def validate(self) -> None:
        """Subsets within MNIST, a batch within the images and Algorithm 2's draw, memory."""
        where = self.NAME
        n_train = check_mnist_counts(self.train_subset, self.test_subset, where)
        bs = int(self.batch_size)
        if bs > n_train or int(self.recal_examples) < bs:
            raise ValueError(
                f"{where}: need --batch-size {bs} <= the {n_train} training images and "
                f"--recal-examples {self.recal_examples} >= --batch-size"
            )
        fix = "lower --hidden or the number of --momenta"
        check_model_bytes(len(self.momenta) + 1, mlp_params(784, self.hidden, 10), where, fix)


CONFIG = StatsConfig
