"""Deprecated: experiment ``mnist-sigmoid`` moved to :mod:`bnlab.experiments.mnist.sigmoid`
(its config to :class:`bnlab.experiments.mnist.config.MnistSigmoidConfig`, the
``metrics.json`` schema to :mod:`bnlab.experiments.mnist.metrics`). Importing this module
warns; its names stay for one release (``resolve`` still returns a dict)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bnlab.experiments.mnist import sigmoid as _sigmoid
from bnlab.experiments.mnist.compat import warn_moved
from bnlab.experiments.mnist.sigmoid import (
    CHECKS,
    CONFIG,
    DEFAULTS,
    DESCRIPTION,
    OPTIONS,
    add_arguments,
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
    "render",
    "resolve",
    "run",
]

warn_moved("mnist_sigmoid", "mnist.sigmoid")


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """The full config as a dict (now: ``mnist.sigmoid.resolve``, a config object)."""
    return _sigmoid.resolve(config).to_dict()
