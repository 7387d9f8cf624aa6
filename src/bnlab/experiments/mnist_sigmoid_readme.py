"""Deprecated: moved to :mod:`bnlab.experiments.mnist.readme` (importing this module warns;
its names stay for one release, ``readme_paragraph`` also taking a config dict)."""

from __future__ import annotations

from typing import Any

from bnlab.experiments.mnist import readme as _readme
from bnlab.experiments.mnist.compat import config_of, warn_moved
from bnlab.experiments.mnist.config import MnistSigmoidConfig
from bnlab.experiments.mnist.readme import README_EARLY_STEP, README_RUN

__all__ = ["README_EARLY_STEP", "README_RUN", "readme_paragraph"]

warn_moved("mnist_sigmoid_readme", "mnist.readme")


def readme_paragraph(cfg: Any, metrics: dict[str, Any]) -> str:
    """:func:`bnlab.experiments.mnist.readme.readme_paragraph` of a config dict or object."""
    return _readme.readme_paragraph(config_of(cfg, MnistSigmoidConfig), metrics)
