"""``metrics.json`` of ``mnist-sigmoid`` and ``mnist-lr``: its schema, writing it, reading it.

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

Non-finite numbers are written as null. ``metrics.csv`` holds the same histories, one row per
run and evaluation step. Everything that reads a run (figures, numbers, reports) takes this
dict, so a finished or interrupted run can be rendered again from its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bnlab.experiments.config import ExperimentConfig
from bnlab.experiments.rundir import RunDir

__all__ = ["HISTORY_KEYS", "SCHEMA", "group", "load_run", "lrs_of", "write_metrics"]

SCHEMA = "bnlab.mnist.metrics/1"
HISTORY_KEYS = ("step", "train_loss", "accuracy", "p15", "p50", "p85")

C = TypeVar("C", bound=ExperimentConfig)


def write_metrics(rd: RunDir, metrics: dict[str, Any]) -> None:
    """``metrics.json`` and ``metrics.csv`` (one row per run and evaluation step)."""
    rd.write_metrics(metrics)
    rows = []
    for r in metrics["runs"]:
        h = r["history"]
        for i in range(len(h["step"])):
            rows.append([r["name"], r["net"], r["lr"], r["seed"], *(h[k][i] for k in HISTORY_KEYS)])
    rd.write_csv("metrics.csv", ["run", "net", "lr", "seed", *HISTORY_KEYS], rows)


def load_run(run_dir: str | Path, config_class: type[C]) -> tuple[C, dict[str, Any]]:
    """``(config, metrics)`` of a run directory, the config checked by ``config_class``
    (metrics say "not started" if training never started)."""
    rd = RunDir(run_dir)
    cfg = config_class.from_dict(rd.read_json("config.json"))
    if (rd.path / "metrics.json").is_file():
        return cfg, rd.read_json("metrics.json")
    return cfg, {"status": "not started", "runs": []}


def group(metrics: dict[str, Any], lr: float, net: str) -> list[dict[str, Any]]:
    """The runs (one per seed) of ``net`` at learning rate ``lr``."""
    return [r for r in metrics["runs"] if r["net"] == net and np.isclose(r["lr"], lr)]


def lrs_of(metrics: dict[str, Any]) -> list[float]:
    """The learning rates of a metrics dict, in first-seen order."""
    out: list[float] = []
    for r in metrics["runs"]:
        if not any(np.isclose(r["lr"], v) for v in out):
            out.append(float(r["lr"]))
    return out
