"""The report of ``mnist-sigmoid`` (Figure 1, and the learning-rate sweep) from a run's files.

Everything here reads the ``metrics.json`` dict of :mod:`bnlab.experiments.mnist.metrics`
and the run's :class:`~bnlab.experiments.mnist_sigmoid.config.MnistSigmoidConfig`, so a
finished or interrupted run can be re-rendered. Accuracies are shown in percent, differences in
percentage points (pp); the paper's claims and how a difference is judged are in
:mod:`bnlab.experiments.mnist_sigmoid.claims`. The README's results table comes from
``bnlab run mnist-sigmoid --steps 50000 --seeds 3 --lr 0.1 3`` (``README_RUN``); a shorter or
one-seed run, such as ``make demo``'s, says what differs and which of the README's columns its
numbers compare with.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.mnist.metrics import as_float, group, lrs_of, mean_curve, summarize
from bnlab.experiments.mnist.nets import NETS
from bnlab.experiments.mnist.report import (
    COLOR,
    LABEL,
    acc_cell,
    accuracy_caption,
    fig_accuracy,
    setup_paragraph,
    status_text,
)
from bnlab.experiments.mnist_sigmoid.claims import PAPER_SOURCE, advantage_sentence, comparison_rows
from bnlab.experiments.mnist_sigmoid.config import MnistSigmoidConfig
from bnlab.experiments.report import TRAINED, Report, new_figure, pct, pp, renders, save_figure
from bnlab.experiments.rundir import RunDir

__all__ = [
    "README_EARLY_STEP",
    "README_RUN",
    "final_table",
    "readme_paragraph",
    "render",
    "suggest_rates",
]


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


def fig_percentiles(rd: RunDir, metrics: dict[str, Any]) -> str:
    """15th/50th/85th percentiles of the monitored unit's sigmoid input (Figures 1b, 1c):
    one row per learning rate, without BN left, with BN right, all on one y axis; first seed."""
    lrs = lrs_of(metrics) or [math.nan]
    fig, axes = new_figure(len(lrs), 2)
    for i, lr in enumerate(lrs):
        for j, net in enumerate(NETS):
            ax = axes[i][j]
            runs = group(metrics, lr, net)[:1]
            if runs:
                h = runs[0]["history"]
                # at step 0 a BN net's running statistics are still their initial (0, 1), so
                # its eval-mode input there says nothing about training: start after it
                first = 1 if net == "bn" and len(h["step"]) > 1 else 0
                for key, style in (("p85", "--"), ("p50", "-"), ("p15", ":")):
                    vals = [as_float(v) for v in h[key][first:]]
                    ax.plot(
                        h["step"][first:], vals, style, color=COLOR[net], label=key[1:] + "th pct"
                    )
            tag = "(b)" if net == "plain" else "(c)"
            ax.set_title(f"{tag} {LABEL[net]}, lr = {lr:g}")
            ax.set_xlabel("training step")
            ax.set_ylabel("input of the sigmoid")
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
    ys = [a.get_ylim() for a in axes.ravel()]
    lim = (min(y[0] for y in ys), max(y[1] for y in ys))
    for ax in axes.ravel():
        ax.set_ylim(*lim)
    save_figure(fig, rd.figure("percentiles"))
    return rd.figure("percentiles").name


def fig_sweep(rd: RunDir, metrics: dict[str, Any], finals: dict[str, list[float]]) -> str:
    """Final test accuracy of both nets against the (log) learning rate."""
    fig, axes = new_figure(1, 1)
    ax = axes[0][0]
    for net in NETS:
        ax.plot(lrs_of(metrics), finals[net], "o-", color=COLOR[net], label=LABEL[net])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"test accuracy after {metrics.get('steps_done')} steps")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, rd.figure("sweep"))
    return rd.figure("sweep").name


def final_table(r: Report, metrics: dict[str, Any], lrs: list[float]) -> None:
    """The "Final numbers" section: one row per (lr, net)."""
    r.heading("Final numbers")
    rows, early, seeds = [], None, 0
    for lr in lrs:
        for net in NETS:
            s = summarize(metrics, lr, net)
            early, seeds = early or s["early_step"], max(seeds, s["n_seeds"])
            rows.append(
                [
                    f"{lr:g}",
                    LABEL[net],
                    acc_cell(s),
                    pct(s["early_acc"]),
                    f"{s['steps_to_95']:,}" if s["steps_to_95"] else "not reached",
                    f"{s['p50_range']:.2f}",
                    f"{s['spread_first']:.2f} -> {s['spread_last']:.2f}",
                    f"{s['diverged']}/{s['n_seeds']}",
                ]
            )
    head = (
        f"final test acc (min–max over {seeds} seeds)" if seeds > 1 else "final test acc (one seed)"
    )
    r.table(
        [
            "lr",
            "net",
            head,
            f"acc at step {early:,} (10% of the steps)" if early else "acc at 10% of the steps",
            "step reaching 95%",
            "median drift (max - min of the median after step 0)",
            "15-85 spread first -> last",
            "diverged",
        ],
        rows,
    )


def render_full(rd: RunDir, cfg: MnistSigmoidConfig, metrics: dict[str, Any]) -> None:
    """Figures and report of a full (non-sweep) run."""
    lrs = lrs_of(metrics)
    r = Report("mnist-sigmoid: batch normalization on a sigmoid MLP (Ioffe & Szegedy 2015, Fig. 1)")
    r.paragraph(status_text(metrics))
    r.paragraph(readme_paragraph(cfg, metrics))
    r.heading("Setup")
    r.paragraph(setup_paragraph(cfg))
    r.paragraph(
        "The paper gives no learning rate, and BN's gain depends on it, so the runs are shown "
        f"at each of these rates: {', '.join(f'{v:g}' for v in lrs) or 'none yet'} "
        "(chosen from a short sweep, `bnlab run mnist-sigmoid --sweep`)."
    )
    if not lrs:
        r.paragraph("No training step finished; nothing to show yet.")
        rd.write_report(r)
        return
    fa, fp = fig_accuracy(rd, metrics), fig_percentiles(rd, metrics)
    r.heading("How large is BN's advantage?")
    r.bullets([advantage_sentence(metrics, lr) for lr in lrs])
    r.heading("Paper vs this run")
    r.paragraph(f"Claims of {PAPER_SOURCE}, beside what we measured (BN vs plain).")
    r.table(["claim (paper)", *[f"ours, lr = {lr:g}" for lr in lrs]], comparison_rows(metrics, lrs))
    r.paragraph(
        "Where a cell says 'does not agree', our figure does not show what the paper's shows; "
        "we report it as measured rather than tuning the setup until it does. (The seed slides "
        "swap the 15th and 85th percentile lines of Figure 1; here the top line is the 85th.)"
    )
    r.figure(fa, accuracy_caption(metrics))
    r.figure(
        fp,
        "Figures 1b, 1c: 15th, 50th and 85th percentiles of the input of one sigmoid of the last "
        "hidden layer over the test set (first seed; BN net in eval mode, from the first "
        "evaluation after step 0, when its running statistics are still the initial 0 and 1), "
        "same y axis",
    )
    final_table(r, metrics, lrs)
    r.paragraph(
        "Raw numbers: `metrics.json` (schema in `bnlab.experiments.mnist.metrics`), "
        "`metrics.csv`; configuration: `config.json`."
    )
    rd.write_report(r)


def suggest_rates(metrics: dict[str, Any]) -> dict[str, float | None]:
    """From a sweep: the rate best for the plain net, and a slower one where it learns slowly:
    the largest swept rate below the best whose plain accuracy is >= 3 points below the best."""
    finals = {}
    for lr in lrs_of(metrics):
        finals[lr] = summarize(metrics, lr, "plain")["final_mean"]
    valid = {k: v for k, v in finals.items() if math.isfinite(v)}
    if not valid:
        return {"best": None, "slow": None}
    best = max(valid, key=lambda k: valid[k])
    slower = [k for k in valid if k < best and valid[k] <= valid[best] - 0.03]
    return {"best": best, "slow": max(slower) if slower else None}


def render_sweep(rd: RunDir, cfg: MnistSigmoidConfig, metrics: dict[str, Any]) -> None:
    """Figures and report of a learning-rate sweep."""
    lrs = lrs_of(metrics)
    r = Report("mnist-sigmoid: learning-rate sweep")
    r.paragraph(status_text(metrics))
    r.paragraph(setup_paragraph(cfg))
    if not lrs:
        rd.write_report(r)
        return
    rows: list[list[str]] = []
    fin: dict[str, list[float]] = {net: [] for net in NETS}
    for lr in lrs:
        p, b = summarize(metrics, lr, "plain"), summarize(metrics, lr, "bn")
        fin["plain"].append(p["final_mean"])
        fin["bn"].append(b["final_mean"])
        rows.append(
            [
                f"{lr:g}",
                acc_cell(p),
                acc_cell(b),
                pp(b["final_mean"] - p["final_mean"]),
                f"{p['diverged']}/{b['diverged']}",
            ]
        )
    r.table(["lr", "without BN", "with BN", "BN gain", "diverged plain/BN"], rows)
    r.figure(fig_sweep(rd, metrics, fin), "Final test accuracy against learning rate")
    r.figure(fig_accuracy(rd, metrics), "Test accuracy during the sweep runs")
    sug = suggest_rates(metrics)
    chosen = [v for v in (sug["slow"], sug["best"]) if v is not None]
    trained = any(max(fin["plain"][i], fin["bn"][i]) >= TRAINED for i in range(len(lrs)))
    caveat = (
        ""
        if trained
        else f" (the sweep is too short to choose from: no net is above {100 * TRAINED:.0f}% yet)"
    )
    r.paragraph(
        f"Best rate for the plain net: **{sug['best']}**; a rate where it learns slowly: "
        f"**{sug['slow']}**{caveat}. Full run at these rates: `bnlab run mnist-sigmoid --lr "
        f"{' '.join(f'{v:g}' for v in chosen)} --seeds 3 --out runs/mnist-sigmoid`."
    )
    rd.write_report(r)


@renders
def render(run_dir: str | Path) -> None:
    """Re-draw the figures and rewrite report.md/report.html from the run's files."""
    rd = RunDir(run_dir)
    cfg = MnistSigmoidConfig.from_dict(rd.read_json("config.json"))
    metrics = rd.read_metrics(runs=[])
    (render_sweep if cfg.sweep else render_full)(rd, cfg, metrics)
