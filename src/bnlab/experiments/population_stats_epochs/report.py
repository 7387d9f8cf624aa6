"""The report of ``population-stats-epochs``, from a run directory's files: test accuracy in
eval mode with each checkpoint's moving averages against the population statistics of
Algorithm 2. Accuracies are in percent, differences in percentage points (pp); one draw of
recalibration images gives no spread, and the report says so.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bnlab.experiments.report import Report, new_figure, pct, pp, renders, save_figure, status_text
from bnlab.experiments.rundir import RunDir

__all__ = ["render"]


def _plot_epochs(rd: RunDir, rows: list[dict[str, Any]]) -> str:
    fig, axes = new_figure(1, 1, size=(9.6, 3.8))  # the page width
    ax = axes[0][0]
    x = [r["epoch"] if r.get("epoch") is not None else i + 1 for i, r in enumerate(rows)]
    marker = "o" if len(rows) < 40 else None
    ax.plot(x, [r["moving_acc"] for r in rows], marker=marker, label="moving averages")
    ax.plot(x, [r["population_acc"] for r in rows], "k--", marker=marker, label="Algorithm 2")
    if len(x) == 1:
        ax.set_xlim(x[0] - 1, x[0] + 1)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("epoch" if all(r.get("epoch") is not None for r in rows) else "checkpoint")
    ax.set_ylabel("test accuracy (eval mode)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, rd.figure("accuracy"))
    return "fig_accuracy.png"


@renders
def render(run_dir: str | Path) -> None:
    """``population-stats-epochs``: metrics.csv, a figure and report.md/html from metrics.json."""
    rd = RunDir(run_dir)
    cfg = rd.read_json("config.json")
    metrics = rd.read_metrics(rows=[])
    got = metrics["rows"]
    header = ["epoch", "checkpoint", "moving averages", "population (Alg. 2)", "gain"]
    rows = [
        [
            "—" if r["epoch"] is None else r["epoch"],
            Path(r["checkpoint"]).name,
            pct(r["moving_acc"]),
            pct(r["population_acc"]),
            pp(r["population_acc"] - r["moving_acc"]),
        ]
        for r in got
    ]
    rd.write_csv(
        "metrics.csv",
        ["epoch", "checkpoint", "moving_acc", "population_acc"],
        [[r["epoch"], r["checkpoint"], r["moving_acc"], r["population_acc"]] for r in got],
    )
    rep = Report("Population statistics (Algorithm 2) vs moving averages, per checkpoint")
    after = f"after {len(got)} checkpoint(s)"
    rep.paragraph(status_text(metrics, after, "every evaluation includes the Algorithm 2 pass"))
    rep.paragraph(
        f"Data: {cfg['data']} (pixels scaled to [0, 1]). For each checkpoint, test accuracy in "
        "eval mode with the checkpoint's moving averages, then with Algorithm 2 statistics over "
        f"{cfg['recal_examples']:,} training images drawn at random (seed {cfg.get('seed', 0)}) "
        f"in batches of {cfg['batch_size']} (weights fixed)."
    )
    if got:
        gains = [100 * (r["population_acc"] - r["moving_acc"]) for r in got]
        wins = sum(g > 0 for g in gains)
        rep.paragraph(
            f"Algorithm 2 is better at {wins} of {len(got)} checkpoints; the gain ranges from "
            f"{min(gains):+.2f} to {max(gains):+.2f} pp (median {statistics.median(gains):+.2f}). "
            "One draw of the recalibration images: no spread to judge the gains against."
        )
    rep.table(header, rows)
    if got:
        rep.figure(
            _plot_epochs(rd, got),
            "Test accuracy per checkpoint: moving averages and Algorithm 2",
        )
    rd.write_report(rep)
