"""The report of ``population-stats``, from a run directory's files.

It compares test accuracy in eval mode with the moving averages against the population
statistics of Algorithm 2. Accuracies are in percent, differences in percentage points (pp);
one seed and one draw of recalibration images give no spread, and the report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnlab.experiments.report import (
    TRAINED,
    Report,
    new_figure,
    pct,
    pp,
    renders,
    save_figure,
    status_text,
)
from bnlab.experiments.rundir import RunDir

__all__ = ["render"]


def _conclusion(hist: dict[str, Any], keys: list[str]) -> str:
    """Algorithm 2 against each moving average, at the end and at the first evaluation."""
    if not hist["step"]:
        return "No evaluation finished; nothing to conclude yet."
    pop = hist["population"][-1]
    ends = {k: hist["moving"][k][-1] for k in keys}
    best = max(keys, key=lambda k: ends[k])
    diff = pop - ends[best]
    if abs(diff) < 0.001:
        word = "as good as the best moving average, not better"
    else:
        word = "better than every moving average" if diff > 0 else "below the best moving average"
    text = (
        f"At the end (step {hist['step'][-1]:,}) Algorithm 2 gives {pct(pop)}: {word} "
        f"(momentum {best}: {pct(ends[best])}, {pp(diff)}). "
    )
    slow = min(keys, key=float)
    lag = hist["population"][0] - hist["moving"][slow][0]
    side = "below" if lag > 0 else "above"
    text += (
        f"At the first evaluation (step {hist['step'][0]:,}) the slowest average (momentum "
        f"{slow}) is {100 * abs(lag):.2f} pp {side} Algorithm 2. One seed and one draw of the "
        "recalibration images: no spread to judge these differences against."
    )
    if max(pop, *ends.values()) < TRAINED:
        text += (
            f" The run is too short to judge: every accuracy is below {100 * TRAINED:.0f}%, "
            "the nets have barely started training."
        )
    return text


def _plot(rd: RunDir, hist: dict[str, Any], keys: list[str]) -> str:
    """Accuracy (full 0-1 axis) and Algorithm 2 minus each moving average (points)."""
    fig, axes = new_figure(1, 2, size=(5.2, 3.6))
    acc, diff = axes[0][0], axes[0][1]
    marker = "o" if len(hist["step"]) < 30 else None
    for k in keys:
        (line,) = acc.plot(hist["step"], hist["moving"][k], marker=marker, label=f"moving, {k}")
        gap = [100 * (p - m) for p, m in zip(hist["population"], hist["moving"][k], strict=True)]
        diff.plot(hist["step"], gap, marker=marker, color=line.get_color(), label=f"momentum {k}")
    acc.plot(hist["step"], hist["population"], "k--", marker=marker, label="Algorithm 2")
    acc.set_ylim(0.0, 1.0)
    acc.set_ylabel("test accuracy (eval mode)")
    acc.set_title("test accuracy", fontsize=10)
    diff.axhline(0.0, color="0.4", lw=0.8)
    diff.set_ylabel("Algorithm 2 minus moving average (points)")
    diff.set_title("what recomputing the statistics gains", fontsize=10)
    for ax in (acc, diff):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, rd.figure("accuracy")).name


@renders
def render(run_dir: str | Path) -> None:
    """``population-stats``: accuracy.csv, fig_accuracy.png and report.md/html from metrics.json."""
    rd = RunDir(run_dir)
    cfg = rd.read_json("config.json")
    metrics = rd.read_metrics()
    keys = [str(k) for k in metrics.get("momenta", [str(m) for m in cfg["momenta"]])]
    hist = metrics.get("history") or {"step": [], "moving": {k: [] for k in keys}, "population": []}
    csv_rows = [
        [s, *[hist["moving"][k][i] for k in keys], hist["population"][i]]
        for i, s in enumerate(hist["step"])
    ]
    header = ["step", *[f"moving_momentum_{k}" for k in keys], "population"]
    rd.write_csv("accuracy.csv", header, csv_rows)
    done = metrics.get("steps_done", hist["step"][-1] if hist["step"] else 0)
    rep = Report("Population statistics (Algorithm 2) vs moving averages")
    after = f"after {done:,} of {int(cfg['steps']):,} steps"
    rep.paragraph(status_text(metrics, after, "every evaluation includes the Algorithm 2 pass"))
    rep.paragraph(
        f"BN MLP 784-{'-'.join(str(h) for h in cfg['hidden'])}-10 with sigmoids on MNIST, SGD "
        f"lr {cfg['lr']}, batch {cfg['batch_size']}, {int(cfg['steps']):,} steps, seed "
        f"{cfg['seed']}. The nets differ only in the BN momentum (the weight of the new batch in "
        "the moving average); their weights are identical. Population statistics: Algorithm 2 "
        f"over {cfg['recal_examples']:,} training images drawn at random (seed {cfg['seed']})."
    )
    rep.heading("Conclusion")
    rep.paragraph(_conclusion(hist, keys))
    rep.heading("Test accuracy")
    rows = [
        [f"{s:,}", *[pct(hist["moving"][k][i]) for k in keys], pct(hist["population"][i])]
        + [pp(hist["population"][i] - max(hist["moving"][k][i] for k in keys))]
        for i, s in enumerate(hist["step"])
    ]
    rep.table(
        ["step", *[f"moving avg, momentum {k}" for k in keys], "population (Alg. 2)"]
        + ["Alg. 2 minus best moving"],
        rows,
    )
    if rows:
        rep.figure(
            _plot(rd, hist, keys),
            "Test accuracy in eval mode against the training step (left); Algorithm 2 minus "
            "each moving average in percentage points (right; above 0: Algorithm 2 better)",
        )
    rd.write_report(rep)
