"""Reports of ``population-stats`` and ``population-stats-epochs``, from a run directory's files.

Both compare test accuracy in eval mode with the moving averages against the population
statistics of Algorithm 2. Accuracies are in percent, differences in percentage points (pp);
one seed and one draw of recalibration images give no spread, and the reports say so.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bnlab.experiments.report import Report, new_figure, pct, pp, save_figure
from bnlab.experiments.rundir import RunDir

__all__ = ["TRAINED", "pct", "pp", "render", "render_epochs"]

TRAINED = 0.9  # below this test accuracy an MNIST MLP has barely started training


def _status(metrics: dict[str, Any], done: str) -> str:
    wall = metrics.get("wall_time_s")
    text = f"Status: **{metrics.get('status', 'unknown')}** {done}"
    if isinstance(wall, int | float):
        text += (
            f", wall time {wall:.0f} s (every evaluation includes the Algorithm 2 pass; a first "
            "run after an install also compiles the Numba kernels, about a minute)"
        )
    if metrics.get("status") != "complete":
        text += "; the numbers below are those of a partial run"
    return text + "."


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


def render(run_dir: str | Path) -> Path:
    """``population-stats``: accuracy.csv, fig_accuracy.png and report.md/html from metrics.json."""
    rd = RunDir(run_dir)
    cfg = rd.read_json("config.json")
    has_metrics = (rd.path / "metrics.json").is_file()
    metrics: dict[str, Any] = (
        rd.read_json("metrics.json") if has_metrics else {"status": "not started"}
    )
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
    rep.paragraph(_status(metrics, f"after {done:,} of {int(cfg['steps']):,} steps"))
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
    return rd.write_report(rep)[1]


def _plot_epochs(rd: RunDir, rows: list[dict[str, Any]]) -> str:
    fig, axes = new_figure(1, 1, size=(6.4, 3.8))
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


def render_epochs(run_dir: str | Path) -> Path:
    """``population-stats-epochs``: metrics.csv, a figure and report.md/html from metrics.json."""
    rd = RunDir(run_dir)
    cfg = rd.read_json("config.json")
    has_metrics = (rd.path / "metrics.json").is_file()
    metrics: dict[str, Any] = (
        rd.read_json("metrics.json") if has_metrics else {"status": "not started", "rows": []}
    )
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
    rep.paragraph(_status(metrics, f"after {len(got)} checkpoint(s)"))
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
    return rd.write_report(rep)[1]
