"""Deprecated: moved to :mod:`bnlab.experiments.mnist.figures` (``curves``, ``mean_curve`` to
:mod:`bnlab.experiments.mnist.numbers`). Importing this module warns; its names stay for one
release, the figure functions with their old ``(run_dir, metrics, ...)`` arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnlab.experiments.mnist import figures as _figures
from bnlab.experiments.mnist.compat import warn_moved
from bnlab.experiments.mnist.figures import COLOR, LABEL
from bnlab.experiments.mnist.numbers import curves, mean_curve
from bnlab.experiments.rundir import RunDir

__all__ = ["COLOR", "LABEL", "curves", "fig_accuracy", "fig_percentiles", "fig_sweep", "mean_curve"]

warn_moved("mnist_sigmoid_figures", "mnist.figures")


def fig_accuracy(run_dir: Path, metrics: dict[str, Any], filename: str = "fig_accuracy.png") -> str:
    """Figure 1a into ``run_dir/filename``, which must be ``fig_NAME.png``."""
    if not (filename.startswith("fig_") and filename.endswith(".png")):
        raise ValueError(f"fig_accuracy: filename must be fig_NAME.png, got {filename!r}")
    return _figures.fig_accuracy(RunDir(run_dir), metrics, name=filename[4:-4])


def fig_percentiles(run_dir: Path, metrics: dict[str, Any]) -> str:
    """Figures 1b, 1c into ``run_dir/fig_percentiles.png``."""
    return _figures.fig_percentiles(RunDir(run_dir), metrics)


def fig_sweep(run_dir: Path, metrics: dict[str, Any], finals: dict[str, list[float]]) -> str:
    """The sweep figure into ``run_dir/fig_sweep.png``."""
    return _figures.fig_sweep(RunDir(run_dir), metrics, finals)
