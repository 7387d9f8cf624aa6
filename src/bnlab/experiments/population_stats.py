"""Deprecated: ``population-stats`` lives in :mod:`bnlab.experiments.population.stats` now.

This module re-exports its public names for one release; ``resolve`` (the checked config as
a dict) and the functions that took a config dict still accept one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from bnlab.experiments.population import stats as _stats
from bnlab.experiments.population.config import StatsConfig
from bnlab.experiments.population.stats import (
    CHECKS,
    DEFAULTS,
    DESCRIPTION,
    OPTIONS,
    add_arguments,
    make_trainers,
    render,
    run,
)

__all__ = [
    "CHECKS",
    "DEFAULTS",
    "DESCRIPTION",
    "OPTIONS",
    "StatsConfig",
    "add_arguments",
    "build_nets",
    "make_trainers",
    "render",
    "resolve",
    "run",
    "train",
]

warnings.warn(
    "bnlab.experiments.population_stats moved to bnlab.experiments.population.stats; import it "
    "from there",
    DeprecationWarning,
    stacklevel=2,
)


def _cfg(cfg: dict[str, Any] | StatsConfig) -> StatsConfig:
    if isinstance(cfg, StatsConfig):
        return cfg
    return StatsConfig.from_dict({k: v for k, v in cfg.items() if k != "experiment"})


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """The checked config as a dict (``StatsConfig.from_dict(config).to_dict()``)."""
    return StatsConfig.from_dict(config).to_dict()


def build_nets(cfg: dict[str, Any] | StatsConfig) -> list[Any]:
    """:func:`bnlab.experiments.population.stats.build_nets` of a config dict or object."""
    return _stats.build_nets(_cfg(cfg))


def train(
    nets: list[Any],
    cfg: dict[str, Any] | StatsConfig,
    data: Any,
    on_eval: Callable[[int, list[float]], None],
    bar: Any = None,
) -> Any:
    """:func:`bnlab.experiments.population.stats.train` with a config dict or object."""
    return _stats.train(nets, _cfg(cfg), data, on_eval, bar)
