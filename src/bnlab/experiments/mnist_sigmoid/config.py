"""The options of ``mnist-sigmoid``: the shared MNIST ones and the learning rates or sweep."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bnlab.experiments.config import Check, option
from bnlab.experiments.mnist.config import STEPS, MnistConfig

__all__ = ["CONFIG", "MnistSigmoidConfig"]

_LR = Check(float, 0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class MnistSigmoidConfig(MnistConfig):
    """``mnist-sigmoid``: Figure 1 at ``lrs``, or a short sweep over ``sweep_lrs``
    (``--sweep`` sets ``steps`` to ``sweep_steps``, as ``config.json`` records it)."""

    NAME: ClassVar[str] = "mnist-sigmoid"

    lrs: list[float] = option(
        [0.1, 3.0], "SGD learning rate(s), the same for both nets", _LR, nargs="+", flag="--lr"
    )
    sweep: bool = option(False, "run a short learning-rate sweep instead")
    sweep_lrs: list[float] = option(
        [0.03, 0.1, 0.3, 1.0, 3.0, 10.0], "learning rates of --sweep", _LR, nargs="+"
    )
    sweep_steps: int = option(5000, "steps of --sweep", STEPS)

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """In sweep mode ``steps`` is ``sweep_steps`` (then the shared normalization)."""
        if values["sweep"] and STEPS.ok(values["sweep_steps"]):
            values["steps"] = int(values["sweep_steps"])
        return super().normalize(values)

    def learning_rates(self) -> list[float]:
        """``sweep_lrs`` in sweep mode, else ``lrs``."""
        return [float(v) for v in (self.sweep_lrs if self.sweep else self.lrs)]


CONFIG = MnistSigmoidConfig
