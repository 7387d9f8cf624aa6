"""Metrics files, figures and report of ``renorm-small-batch`` (see its module docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnlab.experiments.report import (
    Report,
    new_figure,
    read_json,
    save_figure,
    write_csv,
    write_json,
)

__all__ = ["write_metrics", "render", "summary_rows"]

SCHEMA = "bnlab.renorm.metrics/1"
HISTORY_KEYS = ("step", "train_loss", "test_acc", "train_mode_acc")

# Ioffe 2017, Inception-v3 on ImageNet, microbatches of 4 within minibatches of 32.
PAPER = [("batch norm, microbatches of 4", 0.742), ("batch renorm, microbatches of 4", 0.765)]


def write_metrics(
    out: Path, cfg: dict[str, Any], runs: list[dict[str, Any]], status: str, wall: float
) -> None:
    """``metrics.json`` and ``metrics.csv`` (one row per run and evaluation)."""
    metrics = {
        "schema": SCHEMA,
        "experiment": cfg["experiment"],
        "status": status,
        "steps_total": int(cfg["steps"]),
        "wall_time_s": round(wall, 3),
        "runs": runs,
    }
    write_json(out / "metrics.json", metrics)
    rows = []
    for r in runs:
        h = r["history"]
        for i in range(len(h["step"])):
            rows.append(
                [r["name"], r["norm"], r["group"], r["batches"]] + [h[k][i] for k in HISTORY_KEYS]
            )
    write_csv(out / "metrics.csv", ["run", "norm", "group", "batches", *HISTORY_KEYS], rows)


def _last(values: list[Any]) -> float | None:
    return values[-1] if values else None


def summary_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """Per run: name, statistics over, batches, inference acc, train-mode acc, gap, time."""
    rows = []
    for r in metrics["runs"]:
        h = r["history"]
        acc, tm = _last(h["test_acc"]), _last(h["train_mode_acc"])
        gap = None if acc is None or tm is None else tm - acc
        label = "diverged" if r.get("error") else r["name"]
        t = r.get("time_s")
        rows.append(
            [label, r["group"], r["batches"], acc, tm, gap, None if t is None else round(t)]
        )
    return rows


def _plot_curves(run_dir: Path, metrics: dict[str, Any]) -> None:
    fig, axes = new_figure(1, 2, size=(6.0, 4.2))
    colors = {}
    later = [
        v
        for r in metrics["runs"]
        for key in ("test_acc", "train_mode_acc")
        for v in r["history"][key][1:]
        if v is not None
    ]
    low = max(0.0, min(later, default=0.5) - 0.05)
    for r in metrics["runs"]:
        h = r["history"]
        if not h["step"]:
            continue
        (line,) = axes[0, 0].plot(h["step"], h["test_acc"], label=r["name"])
        colors[r["name"]] = line.get_color()
        axes[0, 1].plot(h["step"], h["train_mode_acc"], color=line.get_color(), label=r["name"])
    for ax, title in zip(
        axes[0], ("inference mode (moving statistics)", "training mode (batch statistics)"),
        strict=True,
    ):  # fmt: skip
        ax.set_title(f"test accuracy, {title}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(low, 1.0)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=8)
    save_figure(fig, run_dir / "fig_accuracy.png")


def _plot_final(run_dir: Path, rows: list[list[Any]]) -> None:
    import numpy as np

    fig, axes = new_figure(1, 1, size=(8.0, 4.0))
    ax = axes[0, 0]
    names = [r[0] for r in rows]
    pos = np.arange(len(rows))
    acc = [np.nan if r[3] is None else r[3] for r in rows]
    tm = [np.nan if r[4] is None else r[4] for r in rows]
    ax.bar(pos - 0.2, acc, width=0.4, label="inference mode")
    ax.bar(pos + 0.2, tm, width=0.4, label="training mode")
    for x, v in zip(pos - 0.2, acc, strict=True):
        if np.isfinite(v):
            ax.text(x, v + 0.003, f"{100 * v:.1f}", ha="center", fontsize=7)
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    finite = [v for v in acc + tm if np.isfinite(v)]
    ax.set_ylim(max(0.0, min(finite, default=0.0) - 0.05), 1.0)
    ax.set_ylabel("final test accuracy")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, run_dir / "fig_final.png")


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def render(run_dir: str | Path) -> Path:
    """Figures and ``report.md``/``report.html`` from the files of a (possibly partial) run."""
    from bnlab.experiments.renorm_small_batch import renorm_schedule

    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json")
    mpath = run_dir / "metrics.json"
    metrics = read_json(mpath) if mpath.is_file() else {"status": "not started", "runs": []}
    rows = summary_rows(metrics)
    sched = renorm_schedule(cfg)
    rep = Report("Batch renormalization on small and non-i.i.d. minibatches (MNIST)")
    rep.paragraph(
        f"Status: **{metrics['status']}**, {len(metrics['runs'])} run(s), "
        f"wall time {metrics.get('wall_time_s', 0):.0f} s. Ioffe 2017 (arXiv 1702.03275), "
        "sections 4.3-4.4, scaled down from Inception-v3 on ImageNet to an MLP on MNIST."
    )
    rep.heading("Setup")
    hidden = "-".join(str(h) for h in cfg["hidden"])
    rep.bullets([
        f"Network 784-{hidden}-10, each hidden layer Dense (no bias) -> BatchNorm or "
        f"BatchRenorm -> {cfg['activation']}; SGD with momentum 0.9, learning rate {cfg['lr']}, "
        f"minibatches of {cfg['batch_size']}, {cfg['steps']} steps, seed {cfg['seed']}.",
        "`bn-full`: statistics over the whole minibatch (the reference). `*-microK`: "
        "statistics over microbatches of K examples (ghost batches), gradients over the whole "
        "minibatch. `*-noniid`: statistics over the whole minibatch, each drawn from 2 classes.",
        f"Both normalizations: momentum {cfg['momentum']} (weight of the new batch), eps "
        f"{cfg['eps']}. Renorm schedule, the paper's 5k/25k/40k scaled to the run: plain BN for "
        f"{sched['warmup_steps']} steps, dmax 0 -> {cfg['dmax']} by step {sched['dmax_steps']}, "
        f"rmax 1 -> {cfg['rmax']} by step {sched['rmax_steps']}.",
        "Inference mode: moving statistics, all test images. Training mode: the test images "
        "go through the net in training mode, grouped as at training time (microbatches, or "
        "2-class minibatches), the state restored afterwards. Gap = training-mode minus "
        "inference-mode accuracy.",
    ])  # fmt: skip
    rep.heading("Results")
    rep.table(
        ["run", "stats over", "batches", "test acc (inference)", "test acc (training mode)",
         "gap", "time (s)"],
        rows,
    )  # fmt: skip
    rep.paragraph(_findings(rows))
    rep.heading("Beside the paper")
    ours = {r[0]: r[3] for r in rows}
    table = [[f"paper (ImageNet, Inception-v3): {name}", f"{100 * v:.1f}%"] for name, v in PAPER]
    for name in ("bn-full", "bn-micro4", "renorm-micro4"):
        if name in ours:
            table.append([f"ours (MNIST): {name}", _pct(ours[name])])
    rep.table(["setting", "accuracy"], table)
    rep.paragraph(
        "The paper's numbers are Inception-v3 on ImageNet, trained far longer; ours a small "
        "MLP on MNIST after a few thousand steps. Compare the direction of the effect (renorm "
        "recovers part of what small-microbatch BN loses), not its size."
    )
    if (run_dir / "fig_accuracy.png").exists() or metrics["runs"]:
        _plot_curves(run_dir, metrics)
        _plot_final(run_dir, rows)
        rep.figure("fig_accuracy.png", "Test accuracy during training, both modes")
        rep.figure("fig_final.png", "Final test accuracy per run, inference and training mode")
    rep.write(run_dir)
    return run_dir / "report.html"


def _findings(rows: list[list[Any]]) -> str:
    """One sentence per microbatch size / batch kind: BN vs renorm vs the reference."""
    acc = {r[0]: r[3] for r in rows}
    gap = {r[0]: r[5] for r in rows}
    parts = []
    if acc.get("bn-full") is not None:
        parts.append(f"Reference (BN over 32): {_pct(acc['bn-full'])}.")
    for tag in sorted({n.split("-", 1)[1] for n in acc if n != "bn-full" and "-" in n}):
        bn, rn = acc.get(f"bn-{tag}"), acc.get(f"renorm-{tag}")
        if bn is None or rn is None:
            continue
        parts.append(
            f"{tag}: BN {_pct(bn)} (gap {_pct(gap.get(f'bn-{tag}'))}), renorm {_pct(rn)} "
            f"(gap {_pct(gap.get(f'renorm-{tag}'))})."
        )
    return " ".join(parts) if parts else "No finished runs yet."
