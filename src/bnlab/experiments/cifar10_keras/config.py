"""The options of ``cifar10-keras``: :class:`Cifar10KerasConfig`, the single source of each
(flag, ``--help`` default, check, ``config.json`` key)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, ClassVar

from bnlab.data.cifar_source import ENV_DATA, FORMATS_HELP
from bnlab.experiments.config import (
    MOMENTUM_HINT,
    Check,
    ExperimentConfig,
    bn_sync_option,
    check_batch,
    option,
)

__all__ = ["CONFIG", "MODELS", "NAME", "Cifar10KerasConfig", "parse_models"]

NAME = "cifar10-keras"
MODELS = ("baseline", "bn")


def parse_models(text: str) -> list[str]:
    """``--models baseline,bn``: a comma-separated subset of :data:`MODELS`."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in MODELS]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"--models takes a comma-separated subset of {','.join(MODELS)}, got {text!r}"
        )
    return names


_LR = Check(float, 0, lo_open=True)
_SHIFT_HINT = "a fraction of the width and height"


@dataclasses.dataclass(frozen=True)
class Cifar10KerasConfig(ExperimentConfig):
    """Every option of ``bnlab run cifar10-keras``, in ``config.json``'s order.

    ``data_source`` (what :func:`bnlab.data.describe_source` found) is recorded in
    ``config.json`` beside the options; :data:`RESUME_FREE` are the options a ``--resume``
    may change (the others must equal the run directory's).
    """

    NAME: ClassVar[str] = NAME
    EXTRA_KEYS: ClassVar[tuple[str, ...]] = ("data_source",)
    RESUME_FREE: ClassVar[tuple[str, ...]] = (
        "data",
        "epochs",
        "eval_batch_size",
        "test_subset",
        "resume",
        "progress",
        "keep_checkpoints",
        "bn_sync",  # a run may resume at another world size
    )

    data: str | None = option(None, f"CIFAR-10: {FORMATS_HELP} (default: ${ENV_DATA})")
    epochs: int = option(50, "epochs per net", Check(int, 1))
    models: list[str] = option(list(MODELS), "comma-separated nets to train", parse=parse_models)
    seed: int = option(7, "one seed for both (the post's numpy seed)", Check(int, 0))
    batch_size: int = option(
        32, "examples per step", Check(int, 2, hint="BatchNorm needs at least 2 examples a batch")
    )
    eval_batch_size: int = option(500, "examples per forward", Check(int, 1))
    train_subset: int | None = option(
        None, "N training images (a fixed random choice)", Check(int, 2, optional=True)
    )
    test_subset: int | None = option(
        None, "N test images (a fixed random choice)", Check(int, 1, optional=True)
    )
    lr_baseline: float = option(1e-4, "RMSprop lr, plain", _LR)
    lr_bn: float = option(1e-3, "RMSprop lr, BN net", _LR)
    rho: float = option(0.9, "RMSprop rho", Check(float, 0, 1, hi_open=True), cli=False)
    rms_eps: float = option(1e-7, "RMSprop eps", Check(float, 0, lo_open=True), cli=False)
    decay: float = option(1e-6, "Keras lr decay per step", Check(float, 0))
    shift: float = option(
        0.1,
        "random shifts, a fraction of the width and height",
        Check(float, 0, 1, hi_open=True, hint=_SHIFT_HINT),
        cli=False,
    )
    flip: bool = option(True, "random horizontal flips", cli=False)
    bn_momentum: float = option(0.01, MOMENTUM_HINT, Check(float, 0, 1, hint=MOMENTUM_HINT))
    bn_eps: float = option(1e-3, "BN's epsilon (Keras')", Check(float, 0, lo_open=True))
    bn_conv_bias: bool = option(False, "keep the conv bias before BN", cli=False)
    resume: bool = option(False, "continue the run in --out from its checkpoints")
    keep_checkpoints: bool = option(
        False,
        "also keep checkpoints/<net>_epoch_NNN.npz after every epoch "
        "(for `bnlab run population-stats-epochs`)",
    )
    progress: bool = option(True, "no progress bar", negate="--no-progress")
    bn_sync: str = bn_sync_option()
    conv_algorithm: str = option(
        "auto",
        "Conv2D algorithm: auto (Winograd F(2x2,3x3) for 3x3 layers with >= 8 input channels), "
        "winograd, or im2col (the engine of the 50-epoch table in docs/cifar10-keras.md)",
        choices=("auto", "im2col", "winograd"),
    )

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``models`` as a list in :data:`MODELS` order (a comma-separated string too)."""
        models = values["models"]
        if isinstance(models, str):
            models = parse_models(models)
        if not models or any(m not in MODELS for m in models):
            raise ValueError(f"{NAME}: models must be a non-empty subset of {MODELS}: {models}")
        return {**values, "models": [m for m in MODELS if m in models]}

    def validate(self) -> None:
        """A batch must fit in the training subset."""
        sub = self.train_subset
        if sub is not None and int(self.batch_size) > int(sub):
            raise ValueError(
                f"{NAME}: --batch-size {self.batch_size} is larger than --train-subset "
                f"{sub}; pass a smaller --batch-size or a larger --train-subset"
            )

    def check_data(self, n_train: int, n_test: int) -> None:
        """The options that depend on the size of the data found."""
        check_batch(self, n_train, n_test, int(self.batch_size), "--batch-size", NAME)


CONFIG = Cifar10KerasConfig
