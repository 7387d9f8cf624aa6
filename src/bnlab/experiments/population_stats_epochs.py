"""Deprecated: ``population-stats-epochs`` lives in
:mod:`bnlab.experiments.population.epochs` now.

This module re-exports its public names for one release; ``resolve`` (the checked config as
a dict) and ``evaluate_checkpoint`` with a config dict still work.
"""

from __future__ import annotations

import warnings
from typing import Any

from bnlab.experiments.population import epochs as _epochs
from bnlab.experiments.population.config import EpochsConfig
from bnlab.experiments.population.epochs import (
    CHECKS,
    DEFAULTS,
    DESCRIPTION,
    OPTIONS,
    add_arguments,
    render,
    run,
)

__all__ = [
    "CHECKS",
    "DEFAULTS",
    "DESCRIPTION",
    "EpochsConfig",
    "OPTIONS",
    "add_arguments",
    "evaluate_checkpoint",
    "render",
    "resolve",
    "run",
]

warnings.warn(
    "bnlab.experiments.population_stats_epochs moved to bnlab.experiments.population.epochs; "
    "import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """The checked config as a dict (``EpochsConfig.from_dict(config).to_dict()``)."""
    return EpochsConfig.from_dict(config).to_dict()


def evaluate_checkpoint(
    path: str, data: tuple[Any, ...], cfg: dict[str, Any] | EpochsConfig
) -> dict[str, Any]:
    """:func:`bnlab.experiments.population.epochs.evaluate_checkpoint` with a config dict."""
    return _epochs.evaluate_checkpoint(path, data, EpochsConfig.of(cfg))
