"""The report of ``mnist-lr`` from a run's files: which runs diverge or stall at each
multiple of the base learning rate (``metrics.json``: :mod:`bnlab.experiments.mnist.metrics`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bnlab.experiments.mnist.metrics import final, group, lrs_of, summarize
from bnlab.experiments.mnist.nets import NETS
from bnlab.experiments.mnist.report import (
    LABEL,
    acc_cell,
    accuracy_caption,
    fig_accuracy,
    setup_paragraph,
    short_run_note,
    status_text,
)
from bnlab.experiments.mnist_lr.config import MnistLrConfig
from bnlab.experiments.report import Report, pct, renders
from bnlab.experiments.rundir import RunDir

__all__ = ["outcome", "outcome_rows", "render"]

_COLUMNS = ["multiple", "lr", "net", "final test acc", "best test acc", "step reaching 95%"]


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


@renders
def render(run_dir: str | Path) -> None:
    """Re-draw the figure and rewrite the report from the run's files."""
    rd = RunDir(run_dir)
    cfg = MnistLrConfig.from_dict(rd.read_json("config.json"))
    metrics = rd.read_metrics(runs=[])
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
