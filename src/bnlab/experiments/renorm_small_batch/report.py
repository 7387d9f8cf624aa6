"""Metrics files, figures and report of ``renorm-small-batch`` (file format: the docstring of
:mod:`bnlab.experiments.renorm_small_batch.run`).

This module owns the run's file format (``SCHEMA``, ``HISTORY_KEYS``, :func:`write_metrics`)
and reads everything back from the run directory; it imports nothing of the experiment (the
experiment imports it to write its files), so ``bnlab report`` re-renders a run from its files
alone. Accuracies are in percent, gaps and
differences in percentage points (pp).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnlab.experiments.report import TRAINED, Report, new_figure, pct, pp, renders, save_figure
from bnlab.experiments.rundir import RunDir

__all__ = ["HISTORY_KEYS", "SCHEMA", "finals", "render", "spread", "summary_rows", "write_metrics"]

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
    ids = [((_label(r), r["norm"], r["group"], r["batches"]), r["history"]) for r in runs]
    rd.write_history_csv(["run", "norm", "group", "batches"], ids, HISTORY_KEYS)


def _last(values: list[Any]) -> float | None:
    return values[-1] if values else None


def _label(run: dict[str, Any]) -> str:
    """``bn-micro4``, or ``bn-micro4 seed 2`` in a run over several seeds."""
    return run["name"] + (f" seed {run['seed']}" if "seed" in run else "")


def finals(metrics: dict[str, Any]) -> dict[str, dict[str, list[float | None]]]:
    """Per run name, in run order, one value per seed (in seed order): the final inference
    accuracy ``acc``, training-mode accuracy ``tm`` and ``gap`` = tm - acc (None if missing)."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for r in metrics["runs"]:
        acc, tm = _last(r["history"]["test_acc"]), _last(r["history"]["train_mode_acc"])
        d = out.setdefault(r["name"], {"acc": [], "tm": [], "gap": []})
        d["acc"].append(acc)
        d["tm"].append(tm)
        d["gap"].append(None if acc is None or tm is None else tm - acc)
    return out


def spread(values: Sequence[float | None]) -> tuple[float, float, float] | None:
    """``(mean, min, max)`` of the values present (fsum / n: the same bits in any order of
    summation), None when there is none."""
    v = [float(x) for x in values if x is not None]
    return (math.fsum(v) / len(v), min(v), max(v)) if v else None


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
        label = f"{_label(r)} (diverged)" if r.get("error") else _label(r)
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
    tags, seen = _tags(metrics), set()
    for r in metrics["runs"]:
        h = r["history"]
        if not h["step"]:
            continue
        marker = "." if len(h["step"]) < 30 else None
        label = "_nolegend_" if r["name"] in seen else r["name"]  # one entry for all seeds
        seen.add(r["name"])
        for ax, key in zip(axes[0], ("test_acc", "train_mode_acc"), strict=True):
            ax.plot(h["step"], h[key], marker=marker, label=label, **_style(r["name"], tags))
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


def _plot_final(rd: RunDir, fin: dict[str, dict[str, list[float | None]]]) -> None:
    """Final test accuracy per run in both modes (the mean over seeds, min-max as error bars),
    bars from 0, legend above the axes."""
    import numpy as np

    fig, axes = new_figure(1, 1, size=(8.0, 4.2))
    ax = axes[0, 0]
    pos = np.arange(len(fin))
    modes = [("acc", -0.2, "inference mode (moving statistics)")]
    modes.append(("tm", 0.2, "training mode (batch statistics)"))
    for key, dx, label in modes:
        s = [spread(d[key]) or (np.nan,) * 3 for d in fin.values()]
        mean, lo, hi = (100 * np.array(c, dtype=float) for c in zip(*s, strict=True))  # percent
        err = (
            np.array([mean - lo, hi - mean]) if any(len(d[key]) > 1 for d in fin.values()) else None
        )
        ax.bar(pos + dx, mean, width=0.4, yerr=err, capsize=2, label=label)
        for x, v, top in zip(pos + dx, mean, hi if err is not None else mean, strict=True):
            if np.isfinite(v):  # the label above the bar and its min-max whisker
                ax.text(x, top + 1, f"{v:.1f}", ha="center", fontsize=7)
    ax.set_xticks(pos)
    ax.set_xticklabels(list(fin), rotation=20, fontsize=8)
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
        f"minibatches of {cfg['batch_size']}, {int(cfg['steps']):,} steps, {_seeds_text(cfg)}.",
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


def _seeds_text(cfg: dict[str, Any]) -> str:
    first, n = int(cfg["seed"]), int(cfg.get("seeds") or 1)
    return f"one seed ({first})" if n == 1 else f"{n} seeds ({first}-{first + n - 1})"


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


@renders
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
    fin = finals(metrics)
    rep.paragraph(findings(fin, int(cfg["steps"])))
    rep.heading("Beside the paper")
    table = [[f"paper (ImageNet, Inception-v3): {name}", f"{100 * v:.1f}%"] for name, v in PAPER]
    for name in ("bn-full", "bn-micro4", "renorm-micro4"):
        if name in fin:
            table.append([f"ours (MNIST): {name}", _cell(fin[name]["acc"], pct)])
    rep.table(["setting", "accuracy"], table)
    rep.paragraph(
        "The paper's numbers are Inception-v3 on ImageNet, trained far longer; ours a small "
        f"MLP on MNIST after {int(cfg['steps']):,} steps. Compare the direction of the effect "
        "(renorm recovers part of what small-microbatch BN loses), not its size."
    )
    if metrics["runs"]:
        many = any(len(d["acc"]) > 1 for d in fin.values())
        _plot_curves(rd, metrics)
        _plot_final(rd, fin)
        rep.figure(
            "fig_accuracy.png",
            "Test accuracy during training, both modes; each setting in one colour, BN solid, "
            "renorm dashed, the full-minibatch BN reference black",
        )
        rep.figure(
            "fig_final.png",
            "Final test accuracy per run, inference and training mode"
            + ("; bars the mean over the seeds, whiskers min-max" if many else ""),
        )
    rd.write_report(rep)


def _cell(values: Sequence[float | None], fmt: Any) -> str:
    """The mean of ``values`` with ``fmt``, and ``(min to max)`` when the seeds differ."""
    s = spread(values)
    if s is None:
        return str(fmt(None))
    return fmt(s[0]) if s[1] == s[2] else f"{fmt(s[0])} ({fmt(s[1])} to {fmt(s[2])})"


def findings(fin: dict[str, dict[str, list[float | None]]], steps: int) -> str:
    """One sentence per microbatch size / batch kind: BN vs renorm vs the reference (means,
    min-max over the seeds, and in how many seeds renorm is ahead)."""
    n = max((len(d["acc"]) for d in fin.values()), default=1)
    parts = []
    if spread(fin.get("bn-full", {}).get("acc", [])) is not None:
        parts.append(
            f"Reference (BN over the whole minibatch): {_cell(fin['bn-full']['acc'], pct)}."
        )
    for tag in sorted({k.split("-", 1)[1] for k in fin if k != "bn-full" and "-" in k}):
        bn, rn = fin.get(f"bn-{tag}"), fin.get(f"renorm-{tag}")
        if bn is None or rn is None or spread(bn["acc"]) is None or spread(rn["acc"]) is None:
            continue
        pairs = zip(bn["acc"], rn["acc"], strict=False)
        diffs = [b - a for a, b in pairs if a is not None and b is not None]
        ahead = (
            f", renorm ahead in {sum(d > 0 for d in diffs)} of {len(diffs)} seeds" if n > 1 else ""
        )
        parts.append(
            f"{tag}: BN {_cell(bn['acc'], pct)} (gap {_cell(bn['gap'], pp)}), renorm "
            f"{_cell(rn['acc'], pct)} (gap {_cell(rn['gap'], pp)}); renorm minus BN "
            f"{_cell(diffs, pp)}{ahead}."
        )
    if not parts:
        return "No finished runs yet."
    best = max((v for d in fin.values() for v in d["acc"] if v is not None), default=0.0)
    caveat = (
        f" After {steps:,} steps no run is above {100 * TRAINED:.0f}%: the run is too short to "
        "judge, these are nets that have barely started training."
        if best < TRAINED
        else ""
    )
    seeds = (
        " One seed: no spread to judge these differences against."
        if n == 1
        else f" Means over {n} seeds, (min to max) over the seeds."
    )
    return " ".join(parts) + seeds + caveat
