"""Figures of ``mnist-sigmoid`` and ``mnist-lr``, and the labels and colours of the two nets.

Everything reads the ``metrics.json`` dict documented in :mod:`bnlab.experiments.mnist.metrics`.
matplotlib is imported by :func:`bnlab.experiments.report.new_figure` when a figure is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.mnist.metrics import group, lrs_of
from bnlab.experiments.mnist.nets import NETS
from bnlab.experiments.mnist.numbers import as_float, curves, mean_curve
from bnlab.experiments.report import new_figure, plot_band, save_figure
from bnlab.experiments.rundir import RunDir

__all__ = ["COLOR", "LABEL", "fig_accuracy", "fig_percentiles", "fig_sweep"]

LABEL = {"plain": "without BN", "bn": "with BN"}
COLOR = {"plain": "tab:blue", "bn": "tab:orange"}


def _save(fig: Any, path: Path) -> str:
    """Write ``fig`` to ``path``; its file name, as a report links it."""
    save_figure(fig, path)
    return path.name


def _grid(n: int) -> tuple[int, int]:
    """(groups of rates, columns): at most 3 rates side by side."""
    ncols = max(1, min(3, n))
    return math.ceil(n / ncols), ncols


def _difference(ax: Any, metrics: dict[str, Any], lr: float) -> None:
    """BN minus plain test accuracy (mean over seeds), in percentage points, against the step."""
    sp, ap = mean_curve(group(metrics, lr, "plain"), "accuracy")
    sb, ab = mean_curve(group(metrics, lr, "bn"), "accuracy")
    n = min(len(sp), len(sb))
    ax.axhline(0.0, color="0.4", lw=0.8)
    title = f"BN minus plain, lr = {lr:g}"
    if n:
        x, d = sb[:n], 100 * (ab[:n] - ap[:n])
        ax.plot(x, d, color="tab:green", marker="." if n < 30 else None)
        title += _zoom_late(ax, x, d)
    ax.set_xlabel("training step")
    ax.set_ylabel("BN minus plain (points)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def _zoom_late(ax: Any, x: np.ndarray, d: np.ndarray) -> str:
    """Fit the y axis to the last 80% of the steps when the early difference dwarfs the late
    one (a 70-point gap at step 100 would flatten a 0.4-point gap at the end); returns the
    title's note, or "" when nothing was cut."""
    ok = np.isfinite(d)
    late = ok & (x >= 0.2 * x[-1])
    if late.sum() < 2:
        return ""
    lo, hi = min(0.0, float(d[late].min())), max(0.0, float(d[late].max()))
    if float(np.abs(d[ok]).max()) <= 3 * max(abs(lo), abs(hi), 0.1):
        return ""
    pad = 0.15 * (hi - lo) or 0.5
    ax.set_ylim(lo - pad, hi + pad)
    return "\n(y axis fitted to the last 80% of the steps)"


def fig_accuracy(rd: RunDir, metrics: dict[str, Any], name: str = "accuracy") -> str:
    """Figure 1a: test accuracy against steps on the full 0-1 axis (mean over seeds, min-max
    band when there are several), and under it BN minus plain in points, one column per rate."""
    lrs = lrs_of(metrics) or [math.nan]
    groups, ncols = _grid(len(lrs))
    fig, axes = new_figure(2 * groups, ncols, size=(5.0, 3.2))
    for i, lr in enumerate(lrs):
        ax = axes[2 * (i // ncols)][i % ncols]
        for net in NETS:
            runs = group(metrics, lr, net)
            if runs:
                steps, cs = curves(runs, "accuracy")
                plot_band(ax, steps, cs, label=LABEL[net], color=COLOR[net])
        ax.set_title(f"test accuracy, lr = {lr:g}", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        _difference(axes[2 * (i // ncols) + 1][i % ncols], metrics, lr)
    for j in range(len(lrs), groups * ncols):
        axes[2 * (j // ncols)][j % ncols].axis("off")
        axes[2 * (j // ncols) + 1][j % ncols].axis("off")
    return _save(fig, rd.figure(name))


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
    return _save(fig, rd.figure("percentiles"))


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
    return _save(fig, rd.figure("sweep"))
