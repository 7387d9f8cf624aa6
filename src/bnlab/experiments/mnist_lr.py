"""Deprecated: experiment ``mnist-lr`` moved to :mod:`bnlab.experiments.mnist.lr` (its config
to :class:`bnlab.experiments.mnist.config.MnistLrConfig`). Importing this module warns; its
names stay for one release (``resolve`` still returns a dict, ``outcome_rows`` takes one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bnlab.experiments.mnist import lr as _lr
from bnlab.experiments.mnist.compat import config_of, warn_moved
from bnlab.experiments.mnist.config import MnistLrConfig
from bnlab.experiments.mnist.lr import (
    CHECKS,
    CONFIG,
    DEFAULTS,
    DESCRIPTION,
    OPTIONS,
    add_arguments,
    outcome,
    render,
    run,
)

__all__ = [
    "CHECKS",
    "CONFIG",
    "DEFAULTS",
    "DESCRIPTION",
    "OPTIONS",
    "add_arguments",
    "outcome",
    "outcome_rows",
    "render",
    "resolve",
    "run",
]

warn_moved("mnist_lr", "mnist.lr")


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """The full config as a dict (now: ``mnist.lr.resolve``, a config object)."""
    return _lr.resolve(config).to_dict()


def outcome_rows(cfg: Any, metrics: dict[str, Any], lrs: list[float]) -> list[list[Any]]:
    """:func:`bnlab.experiments.mnist.lr.outcome_rows` of a config dict or object."""
    return _lr.outcome_rows(config_of(cfg, MnistLrConfig), metrics, lrs)
