"""Experiment ``mnist-lr``: does BN allow higher learning rates on the sigmoid MLP?

The network, data and evaluation of ``mnist-sigmoid`` (see :mod:`bnlab.experiments.mnist.sigmoid`
for the setup, :mod:`bnlab.experiments.mnist.metrics` for ``metrics.json``), trained without and
with BN at 1x, 5x and 30x a base learning rate: the multiples of the paper's BN-x5 and BN-x30
(Ioffe & Szegedy 2015, section 4.2.2). A run **diverges** when its loss becomes NaN or Inf
(recorded with its step) and **stalls** when its final test accuracy is below
``stall_threshold`` (chance is 0.10).

Files: ``config.json``, ``metrics.json``, ``metrics.csv``, ``fig_lr.png`` (test accuracy,
one panel per multiple), ``report.md``, ``report.html``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bnlab.experiments.mnist.config import MnistLrConfig
from bnlab.experiments.mnist.figures import LABEL, fig_accuracy
from bnlab.experiments.mnist.metrics import group, load_run, lrs_of
from bnlab.experiments.mnist.nets import NETS
from bnlab.experiments.mnist.numbers import final, summarize
from bnlab.experiments.mnist.text import (
    acc_cell,
    accuracy_caption,
    setup_paragraph,
    short_run_note,
    status_text,
)
from bnlab.experiments.mnist.training import run_experiment
from bnlab.experiments.options import checks_of
from bnlab.experiments.report import Report, pct
from bnlab.experiments.rundir import RunDir

__all__ = [
    "CONFIG",
    "DESCRIPTION",
    "add_arguments",
    "outcome",
    "outcome_rows",
    "render",
    "resolve",
    "run",
]

DESCRIPTION = "BN-x5 / BN-x30: the sigmoid MLP at 1x, 5x and 30x a base learning rate"
CONFIG = MnistLrConfig
# views of the config's fields (the one source), for callers of the old option tables
OPTIONS = CONFIG.options()
DEFAULTS = CONFIG.defaults()
CHECKS = checks_of(OPTIONS)
_COLUMNS = ["multiple", "lr", "net", "final test acc", "best test acc", "step reaching 95%"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bnlab run mnist-lr`` (the fields of :class:`MnistLrConfig`)."""
    CONFIG.add_arguments(p)


def resolve(config: Mapping[str, Any] | None = None) -> MnistLrConfig:
    """The checked config: defaults, then ``config``; the nets must fit in memory."""
    cfg = CONFIG.from_dict(config)
    cfg.check_size()
    return cfg


def run(config: Mapping[str, Any] | None, out_dir: str | Path) -> Path:
    """Train both nets at every multiple of the base rate; write metrics, figure and report."""
    return run_experiment(resolve(config), out_dir, render)


def outcome(run: dict[str, Any], stall_threshold: float) -> str:
    """ "diverged at step k", "stalled" or "trains" for one run of metrics.json."""
    if run["diverged_at"] is not None:
        return f"diverged at step {run['diverged_at']}"
    acc = final(run)
    if acc is None or not math.isfinite(acc) or acc < stall_threshold:
        return "stalled"
    return "trains"


def outcome_rows(cfg: MnistLrConfig, metrics: dict[str, Any], lrs: list[float]) -> list[list[Any]]:
    """One table row per (multiple, net): accuracies and what happened to the run(s)."""
    rows: list[list[Any]] = []
    for m, lr in zip(cfg.multipliers, lrs, strict=False):
        for net in NETS:
            runs = group(metrics, lr, net)
            outs = sorted({outcome(x, cfg.stall_threshold) for x in runs})
            s = summarize(metrics, lr, net)
            accs = [v for x in runs for v in x["history"]["accuracy"] if v is not None]
            best = max(accs) if accs else math.nan
            to95 = f"{s['steps_to_95']:,}" if s["steps_to_95"] else "not reached"
            rows.append(
                [f"{m:g}x", f"{lr:g}", LABEL[net], acc_cell(s), pct(best), to95] + ["; ".join(outs)]
            )
    return rows


def _outcomes(r: Report, rd: RunDir, cfg: MnistLrConfig, metrics: dict[str, Any]) -> None:
    """The figure and the table of which runs diverge or stall."""
    fig = fig_accuracy(rd, metrics, name="lr")
    rows = outcome_rows(cfg, metrics, lrs_of(metrics))
    r.heading("Which runs diverge or stall")
    r.bullets(
        [
            f"{kind}: "
            + (", ".join(f"{row[2]} at {row[0]}" for row in rows if kind in row[6]) or "none")
            for kind in ("diverged", "stalled")
        ]
    )
    r.table([*_COLUMNS, "outcome"], rows)
    r.paragraph(
        f"'stalled' = final test accuracy below {cfg.stall_threshold}; 'diverged' = the "
        "loss became NaN or Inf (training of that net stopped at that step)."
    )
    r.figure(fig, accuracy_caption(metrics))


def render(run_dir: str | Path) -> Path:
    """Re-draw the figure and rewrite the report from the run's files."""
    rd = RunDir(run_dir)
    cfg, metrics = load_run(rd.path, CONFIG)
    r = Report("mnist-lr: higher learning rates with and without BN")
    r.paragraph(status_text(metrics))
    if note := short_run_note(metrics):
        r.paragraph(note)
    r.paragraph(setup_paragraph(cfg))
    r.paragraph(
        "The paper (section 4.2.2) trains Inception with BN at 5x and 30x its base learning "
        "rate (BN-x5, BN-x30) and says BN allows higher rates without divergence and makes "
        "saturating nonlinearities trainable; the same network without BN at the higher rates "
        "is not shown there. Here both MNIST sigmoid nets run at "
        f"{', '.join(f'{m:g}x' for m in cfg.multipliers)} the base rate {cfg.base_lr:g}."
    )
    if lrs_of(metrics):
        _outcomes(r, rd, cfg, metrics)
    rd.write_report(r)
    return rd.path / "report.html"
