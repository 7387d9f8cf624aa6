"""Numbers of ``mnist-sigmoid`` and ``mnist-lr`` runs, and how a difference is judged.

Everything reads the ``metrics.json`` dict documented in :mod:`bnlab.experiments.mnist.metrics`.
Accuracies are fractions here; :func:`pct` and :func:`pp` format them in percent and in
percentage points. A difference between the nets is judged against the spread of the seeds
when there are several, and a run whose nets are not trained yet (neither above ``TRAINED``
test accuracy) is too short to judge.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from bnlab.experiments.mnist.metrics import group

__all__ = [
    "TRAINED",
    "as_float",
    "curves",
    "final",
    "first_step_reaching",
    "judge",
    "mean_curve",
    "size_word",
    "summarize",
    "versus_seeds",
]

# A trained MLP is above 90% on MNIST (chance 10%); below it, differences are of nets that
# have barely started and say nothing about BN's effect on training.
TRAINED = 0.9


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
    arr = np.full((len(cs), len(steps)), np.nan)
    for i, c in enumerate(cs):
        arr[i, : len(c)] = c
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


# -- judging a difference ------------------------------------------------------------------------


def size_word(points: float, large: float, moderate: float) -> str:
    """ "large", "moderate", "small" or "none/negative" for a gain in percentage points."""
    if not math.isfinite(points) or points <= 0:
        return "none (BN is not ahead)"
    return "large" if points >= large else ("moderate" if points >= moderate else "small")


def versus_seeds(bn: list[float], plain: list[float]) -> str:
    """How BN's per-seed accuracies lie against the plain net's: the seed spread's verdict."""
    bn = [v for v in bn if math.isfinite(v)]
    plain = [v for v in plain if math.isfinite(v)]
    if len(bn) < 2 or len(plain) < 2:
        return "one seed: no spread"
    if min(bn) > max(plain):
        return "every BN seed above every plain seed"
    if max(bn) < min(plain):
        return "every BN seed below every plain seed"
    return "within the seed spread: the seeds' ranges overlap"


def judge(metrics: dict[str, Any], lr: float) -> dict[str, Any]:
    """BN against plain at ``lr``: the two summaries, gains (fractions), their seed verdicts,
    size words (early: >= 3 pp large, >= 1 moderate; final: >= 1 pp large, >= 0.3 moderate;
    "within the seed spread" when the seeds' ranges overlap) and whether the nets are trained."""
    p, b = summarize(metrics, lr, "plain"), summarize(metrics, lr, "bn")
    out: dict[str, Any] = {"plain": p, "bn": b}
    for when, key, seeds, large, moderate in (
        ("early", "early_acc", "early_seeds", 3, 1),
        ("final", "final_mean", "finals", 1, 0.3),
    ):
        gain = b[key] - p[key]
        seen = versus_seeds(b[seeds], p[seeds])
        size = (
            "within the seed spread"
            if seen.startswith("within")
            else size_word(100 * gain, large, moderate)
        )
        out[when] = {"gain": gain, "seeds": seen, "size": size}
    best = max(p["final_mean"], b["final_mean"]) if b["n_seeds"] and p["n_seeds"] else math.nan
    out["best"] = best
    out["trained"] = math.isfinite(best) and best >= TRAINED
    return out
