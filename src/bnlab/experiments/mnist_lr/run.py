"""Experiment ``mnist-lr``: does BN allow higher learning rates on the sigmoid MLP?

The network, data and evaluation of ``mnist-sigmoid`` (see
:mod:`bnlab.experiments.mnist_sigmoid.run` for the setup, :mod:`bnlab.experiments.mnist.metrics`
for ``metrics.json``), trained without and with BN at 1x, 5x and 30x a base learning rate:
the multiples of the paper's BN-x5 and BN-x30 (Ioffe & Szegedy 2015, section 4.2.2). A run
**diverges** when its loss becomes NaN or Inf (recorded with its step) and **stalls** when its
final test accuracy is below ``stall_threshold`` (chance is 0.10).

Files: ``config.json``, ``metrics.json``, ``metrics.csv``, ``fig_lr.png`` (test accuracy,
one panel per multiple), ``report.md``, ``report.html``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bnlab.experiments.mnist.training import run_experiment
from bnlab.experiments.mnist_lr.config import MnistLrConfig
from bnlab.experiments.mnist_lr.report import render

__all__ = ["run"]


def run(config: MnistLrConfig | Mapping[str, Any] | None, out_dir: str | Path) -> Path:
    """Train both nets at every multiple of the base rate; write metrics, figure and report."""
    return run_experiment(MnistLrConfig.of(config), out_dir, render)
