"""``metrics.json`` of ``mnist-sigmoid`` and ``mnist-lr``: its schema, writing it, its numbers.

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
dict, so a finished or interrupted run can be rendered again from its files. Accuracies are
fractions here; :func:`summarize` gives the numbers of one (learning rate, net) group.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from bnlab.experiments.report import stack_curves
from bnlab.experiments.rundir import RunDir

__all__ = [
    "HISTORY_KEYS",
    "SCHEMA",
    "as_float",
    "curves",
    "final",
    "first_step_reaching",
    "group",
    "lrs_of",
    "mean_curve",
    "summarize",
    "write_metrics",
]

SCHEMA = "bnlab.mnist.metrics/1"
HISTORY_KEYS = ("step", "train_loss", "accuracy", "p15", "p50", "p85")


def write_metrics(rd: RunDir, metrics: dict[str, Any]) -> None:
    """``metrics.json`` and ``metrics.csv`` (one row per run and evaluation step)."""
    rd.write_metrics(metrics)
    runs = [((r["name"], r["net"], r["lr"], r["seed"]), r["history"]) for r in metrics["runs"]]
    rd.write_history_csv(["run", "net", "lr", "seed"], runs, HISTORY_KEYS)


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


def as_float(v: Any) -> float:
    """A recorded number as a float, None (a non-finite number in metrics.json) as NaN."""
    return math.nan if v is None else float(v)


def curves(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[list[float]]]:
    """``(steps, one curve per run)`` for a history key; steps from the longest run."""
    if not runs:
        return [], []
    longest = max(runs, key=lambda r: len(r["history"]["step"]))
    return longest["history"]["step"], [[as_float(v) for v in r["history"][key]] for r in runs]


def mean_curve(runs: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and the mean over runs (seeds) of a history key, NaN where no run got that far."""
    steps, cs = curves(runs, key)
    arr = stack_curves(cs, len(steps))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of an all-NaN column
        return np.asarray(steps, dtype=np.int64), np.nanmean(arr, axis=0)


def final(run: dict[str, Any]) -> float | None:
    """The last recorded test accuracy of a run (None if nothing was recorded)."""
    acc = run["history"]["accuracy"]
    return acc[-1] if acc else None


def first_step_reaching(steps: np.ndarray, acc: np.ndarray, threshold: float) -> int | None:
    """The first evaluated step whose (mean) accuracy is >= ``threshold``, or None."""
    hit = np.nonzero(np.nan_to_num(acc, nan=-1.0) >= threshold)[0]
    return int(steps[hit[0]]) if hit.size else None


def _at(runs: list[dict[str, Any]], index: int | None) -> list[float]:
    """Each run's test accuracy at evaluation ``index`` (runs that did not get there left out)."""
    if index is None:
        return []
    return [
        as_float(r["history"]["accuracy"][index]) for r in runs if len(r["history"]["step"]) > index
    ]


def summarize(metrics: dict[str, Any], lr: float, net: str) -> dict[str, Any]:
    """Numbers of one (lr, net) group over its seeds: final accuracy mean/min/max (and per
    seed), early accuracy (at ~10% of the steps), steps to 95%, and the drift of the monitored
    unit's sigmoid input: the range (max - min) of its median after step 0 and its 85-15 spread
    at the first evaluation after step 0 and at the end (means over seeds)."""
    runs = group(metrics, lr, net)
    finals = [as_float(final(r)) for r in runs]
    steps, acc = mean_curve(runs, "accuracy")
    _, p15 = mean_curve(runs, "p15")
    _, p50 = mean_curve(runs, "p50")
    _, p85 = mean_curve(runs, "p85")
    later = np.nonzero(steps > 0)[0]
    total = int(metrics.get("steps_total") or (steps[-1] if len(steps) else 0))
    early_idx = np.nonzero(steps >= total / 10)[0]
    if not early_idx.size and len(steps):  # a partial run that has not got there yet
        early_idx = np.array([len(steps) - 1])
    early = int(early_idx[0]) if early_idx.size else None
    fin = [v for v in finals if math.isfinite(v)]
    with np.errstate(all="ignore"):
        return {
            "final_mean": float(np.mean(fin)) if fin else math.nan,
            "final_min": float(np.min(fin)) if fin else math.nan,
            "final_max": float(np.max(fin)) if fin else math.nan,
            "finals": finals,
            "early_step": int(steps[early]) if early is not None else None,
            "early_acc": float(acc[early]) if early is not None else math.nan,
            "early_seeds": _at(runs, early),
            "steps_to_95": first_step_reaching(steps, acc, 0.95),
            "p50_range": float(np.nanmax(p50[later]) - np.nanmin(p50[later]))
            if later.size and np.isfinite(p50[later]).any()
            else math.nan,
            "spread_first": float(p85[later[0]] - p15[later[0]]) if later.size else math.nan,
            "spread_last": float(p85[-1] - p15[-1]) if len(steps) else math.nan,
            "diverged": sum(r["diverged_at"] is not None for r in runs),
            "n_seeds": len(runs),
            "steps": steps,
            "acc": acc,
        }
