"""What the reports of ``mnist-sigmoid`` and ``mnist-lr`` share: the nets' labels and
colours, the accuracy figure, and the paragraphs on status, setup and caption.

Everything reads the ``metrics.json`` dict (:mod:`bnlab.experiments.mnist.metrics`) and, where
it describes the setup, the run's :class:`~bnlab.experiments.mnist.config.MnistConfig`.
Accuracies are shown in percent, differences in percentage points (pp). matplotlib is imported
by :func:`bnlab.experiments.report.new_figure` when a figure is drawn.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bnlab.experiments.mnist.config import MnistConfig
from bnlab.experiments.mnist.metrics import curves, group, lrs_of, mean_curve, summarize
from bnlab.experiments.mnist.nets import NETS
from bnlab.experiments.report import TRAINED, new_figure, pct, plot_band, save_figure
from bnlab.experiments.report import status_text as _status_text
from bnlab.experiments.rundir import RunDir

__all__ = [
    "COLOR",
    "LABEL",
    "acc_cell",
    "accuracy_caption",
    "fig_accuracy",
    "setup_paragraph",
    "short_run_note",
    "status_text",
]

LABEL = {"plain": "without BN", "bn": "with BN"}
COLOR = {"plain": "tab:blue", "bn": "tab:orange"}


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
    save_figure(fig, rd.figure(name))
    return rd.figure(name).name


def acc_cell(s: dict[str, Any]) -> str:
    """Final accuracy of a group: the mean, and the min-max over seeds when there are several."""
    if s["n_seeds"] > 1:
        return f"{pct(s['final_mean'])} ({pct(s['final_min'])}–{pct(s['final_max'])})"
    return pct(s["final_mean"])


def status_text(metrics: dict[str, Any]) -> str:
    """Status, steps done and wall time of a run (the wall time's compilation caveat said)."""
    done, total = metrics.get("steps_done", 0), metrics.get("steps_total")
    after = f"after {done:,} of {total:,} steps" if total is not None else ""
    return _status_text(metrics, after, "training and evaluation of all nets")


def short_run_note(metrics: dict[str, Any]) -> str | None:
    """A warning when no net of the run is trained yet (none above ``TRAINED``), else None."""
    finals = [summarize(metrics, lr, net)["final_mean"] for lr in lrs_of(metrics) for net in NETS]
    best = max((v for v in finals if math.isfinite(v)), default=math.nan)
    if not finals or (math.isfinite(best) and best >= TRAINED):
        return None
    return (
        f"**Too short to judge:** after {int(metrics.get('steps_done') or 0):,} steps no net is "
        f"above {100 * TRAINED:.0f}% test accuracy (best {pct(best)}); the outcomes below are "
        "those of nets that have barely started training."
    )


def _every(n: int) -> str:
    return "After every step" if int(n) == 1 else f"Every {int(n):,} steps"


def setup_paragraph(cfg: MnistConfig) -> str:
    """The network, the training and the evaluation of the run, in words."""
    hidden = "-".join(str(h) for h in cfg.hidden)
    seeds = cfg.seeds
    return (
        f"Network 784-{hidden}-10 with sigmoid hidden units, weights from N(0, "
        f"{cfg.init_std}^2), biases 0; SGD without momentum, batch {cfg.batch_size}, "
        f"{cfg.steps:,} steps, "
        + (
            f"{seeds} seeds ({cfg.seed} to {cfg.seed + seeds - 1})"
            if seeds > 1
            else f"one seed ({cfg.seed})"
        )
        + ". Inputs: MNIST pixels scaled to [0, 1]. The BN net is Dense(no bias) -> BatchNorm -> "
        f"Sigmoid in every hidden layer (momentum {cfg.bn_momentum}, eps {cfg.bn_eps}); "
        f"both nets start from the same weight matrices and see the same batches. "
        f"{_every(cfg.eval_every)}: accuracy on the {cfg.test_subset or 10000:,} test "
        f"images and the 15th/50th/85th percentiles of the input of the sigmoid of unit "
        f"{cfg.monitor_unit} of the last hidden layer over the same images. Evaluation is in "
        "eval mode: **the BN net uses its population (running) statistics**, not batch ones."
    )


def accuracy_caption(metrics: dict[str, Any]) -> str:
    """Caption of the accuracy figure: seeds (band or not) and the difference panels."""
    n = max((summarize(metrics, lr, "bn")["n_seeds"] for lr in lrs_of(metrics)), default=1)
    over = f"mean over {n} seeds, band: min-max over the seeds" if n > 1 else "one seed"
    what = (
        "Test accuracy at each multiple of the base rate"
        if metrics.get("experiment") == "mnist-lr"
        else "Figure 1a: test accuracy"
    )
    return (
        f"{what} on the full 0-1 axis ({over}); below each panel, BN minus plain test "
        "accuracy in percentage points (above 0: BN ahead)"
    )
