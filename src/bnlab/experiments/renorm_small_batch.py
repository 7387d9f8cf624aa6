"""Deprecated: ``renorm-small-batch`` lives in :mod:`bnlab.experiments.renorm` now.

This module re-exports the public names of :mod:`bnlab.experiments.renorm.experiment` and
:mod:`~bnlab.experiments.renorm.config` (and ``NonIIDBatches`` from :mod:`bnlab.data.noniid`)
for one release; the functions that took a config dict still accept one.
"""

from __future__ import annotations

import warnings
from typing import Any

from bnlab.data.noniid import NonIIDBatches
from bnlab.experiments.renorm import config as _config
from bnlab.experiments.renorm import experiment as _experiment
from bnlab.experiments.renorm.config import RenormConfig
from bnlab.experiments.renorm.experiment import (
    CHECKS,
    DEFAULTS,
    DESCRIPTION,
    OPTIONS,
    RecordCallback,
    add_arguments,
    norm_layers,
    render,
    run,
    train_mode_accuracy,
    train_mode_order,
)

__all__ = [
    "CHECKS",
    "DEFAULTS",
    "DESCRIPTION",
    "NonIIDBatches",
    "OPTIONS",
    "RecordCallback",
    "RenormConfig",
    "add_arguments",
    "build_net",
    "norm_layers",
    "render",
    "renorm_schedule",
    "resolve_config",
    "run",
    "run_specs",
    "train_mode_accuracy",
    "train_mode_order",
    "train_one",
]

warnings.warn(
    "bnlab.experiments.renorm_small_batch moved to bnlab.experiments.renorm (experiment, config; "
    "NonIIDBatches to bnlab.data.noniid); import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def _cfg(cfg: dict[str, Any] | RenormConfig) -> RenormConfig:
    return RenormConfig.of(cfg)


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """The checked config as a dict (``RenormConfig.from_dict(config).to_dict()``)."""
    return RenormConfig.from_dict(config).to_dict()


def run_specs(cfg: dict[str, Any] | RenormConfig) -> list[dict[str, Any]]:
    """:func:`bnlab.experiments.renorm.config.run_specs` of a config dict or object."""
    return _config.run_specs(_cfg(cfg))


def renorm_schedule(cfg: dict[str, Any] | RenormConfig) -> dict[str, int]:
    """:func:`bnlab.experiments.renorm.config.renorm_schedule` of a config dict or object."""
    return _config.renorm_schedule(_cfg(cfg))


def build_net(spec: dict[str, Any], cfg: dict[str, Any] | RenormConfig) -> Any:
    """:func:`bnlab.experiments.renorm.experiment.build_net` of a config dict or object."""
    return _experiment.build_net(spec, _cfg(cfg))


def train_one(
    spec: dict[str, Any], cfg: dict[str, Any] | RenormConfig, data: Any, bar: Any = None
) -> Any:
    """:func:`bnlab.experiments.renorm.experiment.train_one` of a config dict or object."""
    return _experiment.train_one(spec, _cfg(cfg), data, bar)
