"""Metrics files, figures and report of ``renorm-small-batch`` (file format: the docstring of
:mod:`bnlab.experiments.renorm_small_batch.run`).

This module owns the run's file format (``SCHEMA``, ``HISTORY_KEYS``, :func:`write_metrics`)
and reads everything back from the run directory; it imports nothing of the experiment (the
experiment imports it to write its files), so ``bnlab report`` re-renders a run from its files
alone. Accuracies are in percent, gaps and
differences in percentage points (pp).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnlab.experiments.report import TRAINED, Report, new_figure, pct, pp, save_figure
from bnlab.experiments.rundir import RunDir

__all__ = ["HISTORY_KEYS", "SCHEMA", "render", "summary_rows", "write_metrics"]

SCHEMA = "bnlab.renorm.metrics/1"
HISTORY_KEYS = ("step", "train_loss", "test_acc", "train_mode_acc")

# Ioffe 2017, Inception-v3 on ImageNet, microbatches of 4 within minibatches of 32.
PAPER = [("batch norm, microbatches of 4", 0.742), ("batch renorm, microbatches of 4", 0.765)]
_TAG_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def write_metrics(
    rd: RunDir,
    cfg: dict[str, Any],
    schedule: dict[str, int],
    runs: list[dict[str, Any]],
    status: str,
    wall: float,
) -> None:
    """``metrics.json`` (with the renorm ``schedule`` in steps) and ``metrics.csv`` (one row per
    run and evaluation)."""
    metrics = {
        "schema": SCHEMA,
        "experiment": cfg["experiment"],
        "status": status,
        "steps_total": int(cfg["steps"]),
        "wall_time_s": round(wall, 3),
        "schedule": dict(schedule),
        "runs": runs,
    }
    rd.write_metrics(metrics)
    ids = [((r["name"], r["norm"], r["group"], r["batches"]), r["history"]) for r in runs]
    rd.write_history_csv(["run", "norm", "group", "batches"], ids, HISTORY_KEYS)


def _last(values: list[Any]) -> float | None:
    return values[-1] if values else None


def summary_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """Per run: name, statistics over, batches, inference acc, train-mode acc, gap, time (s)
    without Numba compilation; accuracies and the gap (training-mode minus inference) as
    fractions, None if missing. Runs written before ``compile_s`` was recorded keep their
    whole time."""
    rows = []
    for r in metrics["runs"]:
        h = r["history"]
        acc, tm = _last(h["test_acc"]), _last(h["train_mode_acc"])
        gap = None if acc is None or tm is None else tm - acc
        label = f"{r['name']} (diverged)" if r.get("error") else r["name"]
        t = r.get("time_s")
        t = None if t is None else t - float(r.get("compile_s") or 0.0)
        rows.append(
            [label, r["group"], r["batches"], acc, tm, gap, None if t is None else round(t)]
        )
    return rows


def _tags(metrics: dict[str, Any]) -> list[str]:
    """The settings BN and renorm are compared at ("micro4", "noniid", ...), in run order."""
    out: list[str] = []
    for r in metrics["runs"]:
        tag = r["name"].split("-", 1)[1]
        if r["name"] != "bn-full" and tag not in out:
            out.append(tag)
    return out


def _style(name: str, tags: list[str]) -> dict[str, Any]:
    """BN and renorm at one setting share a colour: BN solid, renorm dashed; bn-full black."""
    if name == "bn-full":
        return {"color": "black", "ls": "-", "lw": 1.6}
    norm, tag = name.split("-", 1)
    color = _TAG_COLORS[tags.index(tag) % len(_TAG_COLORS)] if tag in tags else "gray"
    return {"color": color, "ls": "-" if norm == "bn" else "--", "lw": 1.3}


def _plot_curves(rd: RunDir, metrics: dict[str, Any]) -> None:
    """Test accuracy in both modes against the step, on the full 0-1 axis, legend outside."""
    fig, axes = new_figure(1, 2, size=(5.0, 4.0))
    tags = _tags(metrics)
    for r in metrics["runs"]:
        h = r["history"]
        if not h["step"]:
            continue
        marker = "." if len(h["step"]) < 30 else None
        for ax, key in zip(axes[0], ("test_acc", "train_mode_acc"), strict=True):
            ax.plot(h["step"], h[key], marker=marker, label=r["name"], **_style(r["name"], tags))
    titles = ("inference mode (moving statistics)", "training mode (batch statistics)")
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(f"test accuracy, {title}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    save_figure(fig, rd.figure("accuracy"))


def _plot_final(rd: RunDir, rows: list[list[Any]]) -> None:
    """Final test accuracy per run in both modes, bars from 0, legend above the axes."""
    import numpy as np

    fig, axes = new_figure(1, 1, size=(8.0, 4.2))
    ax = axes[0, 0]
    pos = np.arange(len(rows))
    acc = [np.nan if r[3] is None else 100 * r[3] for r in rows]  # percent, as the labels
    tm = [np.nan if r[4] is None else 100 * r[4] for r in rows]
    ax.bar(pos - 0.2, acc, width=0.4, label="inference mode (moving statistics)")
    ax.bar(pos + 0.2, tm, width=0.4, label="training mode (batch statistics)")
    for x, v in [*zip(pos - 0.2, acc, strict=True), *zip(pos + 0.2, tm, strict=True)]:
        if np.isfinite(v):
            ax.text(x, v + 1, f"{v:.1f}", ha="center", fontsize=7)
    ax.set_xticks(pos)
    ax.set_xticklabels([r[0] for r in rows], rotation=20, fontsize=8)
    ax.set_ylim(0.0, 108)
    ax.set_yticks(np.linspace(0, 100, 6))
    ax.set_ylabel("final test accuracy (%)")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, rd.figure("final"))


def _schedule_text(cfg: dict[str, Any], metrics: dict[str, Any]) -> str:
    s = metrics.get("schedule")
    if not s:  # a run written before the schedule was recorded
        return (
            f"plain BN for the first {cfg['warmup_frac']:g} of the steps, dmax 0 -> {cfg['dmax']} "
            f"by {cfg['dmax_frac']:g} of them, rmax 1 -> {cfg['rmax']} by {cfg['rmax_frac']:g}"
        )
    steps = "step" if s["warmup_steps"] == 1 else "steps"
    return (
        f"plain BN for {s['warmup_steps']:,} {steps}, dmax 0 -> {cfg['dmax']} by step "
        f"{s['dmax_steps']:,}, rmax 1 -> {cfg['rmax']} by step {s['rmax_steps']:,}"
    )


def _setup(cfg: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    hidden = "-".join(str(h) for h in cfg["hidden"])
    return [
        f"Network 784-{hidden}-10, each hidden layer Dense (no bias) -> BatchNorm or "
        f"BatchRenorm -> {cfg['activation']}; SGD with momentum 0.9, learning rate {cfg['lr']}, "
        f"minibatches of {cfg['batch_size']}, {int(cfg['steps']):,} steps, one seed "
        f"({cfg['seed']}).",
        "`bn-full`: statistics over the whole minibatch (the reference). `bn-microK`, "
        "`renorm-microK`: statistics over microbatches of K examples (ghost batches), gradients "
        "over the whole minibatch. `bn-noniid`, `renorm-noniid`: statistics over the whole "
        "minibatch, each drawn from 2 classes.",
        f"Both normalizations: momentum {cfg['momentum']} (weight of the new batch), eps "
        f"{cfg['eps']}. Renorm schedule, the paper's 5k/25k/40k scaled to the run: "
        f"{_schedule_text(cfg, metrics)}.",
        "Inference mode: moving statistics, all test images. Training mode: the test images "
        "go through the net in training mode, grouped as at training time (microbatches, or "
        "2-class minibatches), the state restored afterwards. Gap = training-mode minus "
        "inference-mode accuracy, in percentage points.",
    ]


def _time_note(metrics: dict[str, Any]) -> str:
    """What the time column holds, and how much Numba compilation was left out of it."""
    runs = metrics["runs"]
    if runs and all("compile_s" in r for r in runs):
        spent = [f"{r['name']} {r['compile_s']:.0f} s" for r in runs if r["compile_s"] >= 0.5]
        left_out = (
            "here: " + ", ".join(spent)
            if spent
            else "none here: every kernel came from Numba's cache"
        )
        return (
            "Time: wall time of each run, training and evaluation, without the time Numba "
            f"spent compiling kernels (the first run after an install compiles them; {left_out})."
        )
    return (
        "Time: wall time of each run, training and evaluation. The first BN run and the first "
        "renorm run also include compiling their Numba kernels when the kernel cache is cold "
        "(the first run after an install), so their times are not comparable with the others'."
    )


def render(run_dir: str | Path) -> None:
    """Figures and ``report.md``/``report.html`` from the files of a (possibly partial) run."""
    rd = RunDir(run_dir)
    cfg = rd.read_json("config.json")
    metrics = rd.read_metrics(runs=[])
    rows = summary_rows(metrics)
    rep = Report("Batch renormalization on small and non-i.i.d. minibatches (MNIST)")
    rep.paragraph(
        f"Status: **{metrics['status']}**, {len(metrics['runs'])} run(s), wall time "
        f"{metrics.get('wall_time_s', 0):.0f} s. Ioffe 2017 (arXiv 1702.03275), sections "
        "4.3-4.4, scaled down from Inception-v3 on ImageNet to an MLP on MNIST."
    )
    rep.heading("Setup")
    rep.bullets(_setup(cfg, metrics))
    rep.heading("Results")
    rep.table(
        ["run", "stats over", "batches", "test acc (inference)", "test acc (training mode)",
         "gap", "time (s)"],
        [[r[0], r[1], r[2], pct(r[3]), pct(r[4]), pp(r[5]), r[6]] for r in rows],
    )  # fmt: skip
    rep.paragraph(_time_note(metrics))
    rep.paragraph(findings(rows, int(cfg["steps"])))
    rep.heading("Beside the paper")
    ours = {r[0].split(" ")[0]: r[3] for r in rows}
    table = [[f"paper (ImageNet, Inception-v3): {name}", f"{100 * v:.1f}%"] for name, v in PAPER]
    for name in ("bn-full", "bn-micro4", "renorm-micro4"):
        if name in ours:
            table.append([f"ours (MNIST): {name}", pct(ours[name])])
    rep.table(["setting", "accuracy"], table)
    rep.paragraph(
        "The paper's numbers are Inception-v3 on ImageNet, trained far longer; ours a small "
        f"MLP on MNIST after {int(cfg['steps']):,} steps. Compare the direction of the effect "
        "(renorm recovers part of what small-microbatch BN loses), not its size."
    )
    if metrics["runs"]:
        _plot_curves(rd, metrics)
        _plot_final(rd, rows)
        rep.figure(
            "fig_accuracy.png",
            "Test accuracy during training, both modes; each setting in one colour, BN solid, "
            "renorm dashed, the full-minibatch BN reference black",
        )
        rep.figure("fig_final.png", "Final test accuracy per run, inference and training mode")
    rd.write_report(rep)


def findings(rows: list[list[Any]], steps: int) -> str:
    """One sentence per microbatch size / batch kind: BN vs renorm vs the reference."""
    acc = {r[0].split(" ")[0]: r[3] for r in rows}  # "bn-micro2 (diverged)" -> "bn-micro2"
    gap = {r[0].split(" ")[0]: r[5] for r in rows}
    parts = []
    if acc.get("bn-full") is not None:
        parts.append(f"Reference (BN over the whole minibatch): {pct(acc['bn-full'])}.")
    for tag in sorted({n.split("-", 1)[1] for n in acc if n != "bn-full" and "-" in n}):
        bn, rn = acc.get(f"bn-{tag}"), acc.get(f"renorm-{tag}")
        if bn is None or rn is None:
            continue
        parts.append(
            f"{tag}: BN {pct(bn)} (gap {pp(gap.get(f'bn-{tag}'))}), renorm {pct(rn)} "
            f"(gap {pp(gap.get(f'renorm-{tag}'))}); renorm minus BN {pp(rn - bn)}."
        )
    if not parts:
        return "No finished runs yet."
    best = max((v for v in acc.values() if v is not None), default=0.0)
    caveat = (
        f" After {steps:,} steps no run is above {100 * TRAINED:.0f}%: the run is too short to "
        "judge, these are nets that have barely started training."
        if best < TRAINED
        else ""
    )
    return " ".join(parts) + " One seed: no spread to judge these differences against." + caveat
