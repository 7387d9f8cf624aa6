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

Files in the run directory: ``config.json`` (the resolved config), ``metrics.json``,
``metrics.csv`` (one row per run and evaluation), ``fig_accuracy.png`` (Figure 1a),
``fig_percentiles.png`` (Figures 1b and 1c side by side, shared y axis), ``fig_sweep.png``
(sweep only), ``report.md``, ``report.html``.

``metrics.json`` schema (``"schema": "bnlab.mnist.metrics/1"``)::

    {
      "schema": "bnlab.mnist.metrics/1",
      "experiment": "mnist-sigmoid",          # or "mnist-lr"
      "status": "running" | "complete" | "interrupted" | "failed",
      "steps_done": int,                       # lockstep steps finished by every live run
      "steps_total": int,
      "wall_time_s": float,                    # training + evaluation wall time so far
      "runs": [                                # one per (lr, seed, net)
        {
          "name": "bn-lr0.5-seed0", "net": "plain" | "bn", "lr": float, "seed": int,
          "diverged_at": int | null,           # step whose loss was NaN/Inf, if any
          "error": str | null,
          "time_s": float,                     # this run's share of the wall time
          "history": {                         # parallel lists, one entry per evaluation
            "step": [int],                     # 0, eval_every, 2 eval_every, ..., last step
            "train_loss": [float | null],      # mean training loss since the previous entry
            "accuracy": [float],               # test accuracy (eval mode)
            "p15": [float], "p50": [float], "p85": [float]  # the unit's sigmoid input
          }
        }
      ]
    }

Non-finite numbers are written as null.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bnlab.experiments import mnist_common as mc
from bnlab.experiments import mnist_sigmoid_report as rep
from bnlab.experiments.options import Check, Opt, add_options, check_config, checks_of, defaults_of
from bnlab.experiments.report import release_run_dir, start_run_dir
from bnlab.parallel import is_root

DESCRIPTION = "Ioffe & Szegedy 2015, Figure 1: sigmoid MLP on MNIST with and without BN"

_LR = Check(float, 0, lo_open=True)
# this experiment's own options, each once (flag, default in --help, check, config.json)
OPTIONS: dict[str, Opt] = {
    "lrs": Opt([0.1, 3.0], "SGD learning rate(s), the same for both nets", _LR, "+", flag="--lr"),
    "sweep": Opt(False, "run a short learning-rate sweep instead"),
    "sweep_lrs": Opt([0.03, 0.1, 0.3, 1.0, 3.0, 10.0], "learning rates of --sweep", _LR, "+"),
    "sweep_steps": Opt(5000, "steps of --sweep", Check(int, 1)),
}
DEFAULTS: dict[str, Any] = {**mc.COMMON_DEFAULTS, **defaults_of(OPTIONS)}
CHECKS: dict[str, Check] = checks_of(OPTIONS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bnlab run mnist-sigmoid``: the shared ones, then :data:`OPTIONS`."""
    mc.add_common_arguments(p, DEFAULTS)
    add_options(p, OPTIONS)


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """The full config: defaults, then ``config``; in sweep mode steps = sweep_steps."""
    config = dict(config)
    if config.get("sweep"):
        config["steps"] = int(config.get("sweep_steps", DEFAULTS["sweep_steps"]))
        config.setdefault("eval_every", None)
    cfg = mc.resolve_config(config, DEFAULTS, "mnist-sigmoid")
    check_config(cfg, CHECKS, "mnist-sigmoid")
    mc.check_size(cfg, len(cfg["sweep_lrs"] if cfg["sweep"] else cfg["lrs"]), "mnist-sigmoid")
    return cfg


def run(config: dict[str, Any], out_dir: str | Path) -> Path:
    """Train both nets at every learning rate and seed, then write metrics and the report."""
    cfg = resolve(config)
    data = mc.load_data(cfg)
    runs = mc.make_runs(cfg, cfg["sweep_lrs"] if cfg["sweep"] else cfg["lrs"], data)
    out = start_run_dir(out_dir, cfg) if is_root() else Path(out_dir)  # rank 0 writes
    try:
        mc.train_lockstep(cfg if is_root() else {**cfg, "progress": False}, runs, out)
    finally:
        try:
            render(out) if is_root() else None
        finally:
            release_run_dir(out)
    return out


def render(run_dir: str | Path) -> Path:
    """Re-draw the figures and rewrite report.md/report.html from the run's files."""
    run_dir = Path(run_dir)
    cfg, metrics = mc.load_run(run_dir)
    if cfg.get("sweep"):
        rep.render_sweep(run_dir, cfg, metrics)
    else:
        rep.render_full(run_dir, cfg, metrics)
    return run_dir / "report.html"
