"""How an ``mnist-sigmoid`` run relates to the README's results table.

The README's table comes from ``bnlab run mnist-sigmoid --steps 50000 --seeds 3 --lr 0.1 3``
(``README_RUN``); a shorter or one-seed run, such as ``make demo``'s, says what differs and
which of the README's columns its numbers compare with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.experiments.mnist.config import MnistSigmoidConfig
from bnlab.experiments.mnist.figures import LABEL
from bnlab.experiments.mnist.metrics import group, lrs_of
from bnlab.experiments.mnist.numbers import mean_curve
from bnlab.experiments.report import pct

__all__ = ["README_EARLY_STEP", "README_RUN", "readme_paragraph"]

# The README's results table: `bnlab run mnist-sigmoid --steps 50000 --seeds 3 --lr 0.1 3`.
README_RUN: dict[str, Any] = {"steps": 50_000, "seeds": 3, "lrs": [0.1, 3.0]}
README_EARLY_STEP = 5_000  # the README table's "at 5k steps" column


def _differences(cfg: MnistSigmoidConfig) -> list[str]:
    """What sets this run's config apart from the README's run."""
    out = []
    steps, seeds = cfg.steps, cfg.seeds
    if steps != README_RUN["steps"]:
        out.append(f"{steps:,} steps instead of {README_RUN['steps']:,}")
    if seeds != README_RUN["seeds"]:
        band = " (so no min-max band)" if seeds == 1 else ""
        out.append(f"{seeds} seed{'s' if seeds > 1 else ''} instead of {README_RUN['seeds']}{band}")
    lrs = sorted(float(v) for v in cfg.lrs)
    if len(lrs) != len(README_RUN["lrs"]) or not np.allclose(lrs, README_RUN["lrs"]):
        out.append(f"learning rates {', '.join(f'{v:g}' for v in lrs)} instead of 0.1 and 3")
    if cfg.train_subset or cfg.test_subset:
        out.append("a subset of MNIST")
    return out


def readme_paragraph(cfg: MnistSigmoidConfig, metrics: dict[str, Any]) -> str:
    """How this run relates to the README's table (50,000 steps, 3 seeds, lr 0.1 and 3)."""
    cmd = "`bnlab run mnist-sigmoid --steps 50000 --seeds 3 --lr 0.1 3`"
    differs = _differences(cfg)
    if not differs:
        return (
            f"This is the README's run ({cmd}): `python benchmarks/readme_tables.py RUN_DIR` "
            "prints the README's table from this directory."
        )
    text = f"**Beside the README:** its table comes from {cmd}; this run has {'; '.join(differs)}. "
    at, where = [], README_EARLY_STEP
    for lr in lrs_of(metrics):
        for net in ("bn", "plain"):
            steps, acc = mean_curve(group(metrics, lr, net), "accuracy")
            if not len(steps) or steps[-1] < README_EARLY_STEP:
                continue
            i = int(np.argmin(np.abs(steps - README_EARLY_STEP)))  # the evaluation nearest 5k
            where = int(steps[i])
            at.append(f"lr {lr:g} {LABEL[net]} {pct(acc[i])}")
    if at:
        step = f"step {where:,}" + (
            f", the evaluation nearest {README_EARLY_STEP:,}" if where != README_EARLY_STEP else ""
        )
        return text + (
            f"Its numbers compare with the README's column at {README_EARLY_STEP:,} steps "
            f"(here at {step}: {', '.join(at)}), not with the final 50,000-step ones."
        )
    return text + (
        f"It ends before step {README_EARLY_STEP:,}, the README's earliest column: its numbers "
        "show the direction of the effect early in training, not the README's sizes."
    )
