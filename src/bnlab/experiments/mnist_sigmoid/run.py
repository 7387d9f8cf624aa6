"""Experiment ``mnist-sigmoid``: Ioffe & Szegedy (2015), section 4.1 and Figure 1.

A 784-100-100-100-10 network with sigmoid hidden units, weights from N(0, init_std^2)
(``init_std`` 0.1 by default: the paper only says "small random Gaussian values"), trained by
SGD on batches of 60 for 50,000 steps, without and with batch normalization (every hidden
layer Dense(use_bias=False) -> BatchNorm -> Sigmoid), at the same learning rate(s). Inputs are
the MNIST pixels scaled to [0, 1] (x / 255, no other preprocessing). Every ``eval_every``
steps both nets are evaluated on the full 10,000-image test set, and for one fixed unit
(``monitor_unit``) of the last hidden layer the 15th, 50th and 85th percentiles of its
sigmoid's input over the test set are recorded. Evaluation is in eval mode: the BN net uses
its population (running) statistics, not the statistics of a test batch.

``--sweep`` runs a short learning-rate sweep instead (``sweep_lrs`` for ``sweep_steps``).

Files in the run directory: ``config.json`` (the resolved config), ``metrics.json`` (schema in
:mod:`bnlab.experiments.mnist.metrics`), ``metrics.csv`` (one row per run and evaluation),
``fig_accuracy.png`` (Figure 1a), ``fig_percentiles.png`` (Figures 1b and 1c side by side,
shared y axis), ``fig_sweep.png`` (sweep only), ``report.md``, ``report.html``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bnlab.experiments.mnist.training import run_experiment
from bnlab.experiments.mnist_sigmoid.config import MnistSigmoidConfig
from bnlab.experiments.mnist_sigmoid.report import render

__all__ = ["run"]


def run(config: MnistSigmoidConfig | Mapping[str, Any] | None, out_dir: str | Path) -> Path:
    """Train both nets at every learning rate and seed, then write metrics and the report."""
    return run_experiment(MnistSigmoidConfig.of(config), out_dir, render)
