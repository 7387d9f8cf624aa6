"""Figure and report of ``cifar10-resnet``, drawn from a run directory's files only.

``fig_error.png``: training and test error against the iteration, with the paper's 8.75%.
``report.md``/``report.html``: our test error beside the paper's, the schedule run, the data
tag (e.g. "JPEG q75 CIFAR-10": JPEG-compressed pixels, not the original ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnlab.experiments.cifar import read_run, subsets_note
from bnlab.experiments.report import Report, new_figure, pct, renders, save_figure

__all__ = ["PAPER_ERROR", "render"]

PAPER_ERROR = 0.0875  # He et al. 2016, Table 6: ResNet-20, 64k iterations (91.25% accuracy)


def _plot(run_dir: Path, h: dict[str, list[Any]], tag: str) -> str:
    fig, axes = new_figure(size=(9.6, 4.2))  # the page width, as the MNIST figures
    ax = axes[0, 0]
    its = h["iterations"]
    ax.plot(its, [1 - a for a in h["train_accuracy"]], "s--", mfc="none", label="train (augm.)")
    ax.plot(its, [1 - a for a in h["test_accuracy"]], "o-", label=f"test ({tag})")
    ax.axhline(PAPER_ERROR, color="k", ls=":", lw=0.8, label="paper, 64k iterations (8.75%)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("error")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"ResNet-20 on CIFAR-10 ({tag})", fontsize=10)
    save_figure(fig, run_dir / "fig_error.png")
    return "fig_error.png"


def _schedule(cfg: dict[str, Any]) -> str:
    t = cfg.get("iterations")
    if not isinstance(t, int):
        return "unknown schedule"
    name = "the paper's schedule" if t == 64000 else f"the paper's schedule scaled by {t}/64000"
    return (
        f"{t} iterations of batch {cfg.get('batch_size')} ({name}): lr {cfg.get('lr')}, "
        f"/10 at iteration {t // 2} and {(3 * t) // 4}; SGD momentum {cfg.get('momentum')}, "
        f"weight decay {cfg.get('weight_decay')} on the conv/dense kernels (gradient + wd W)"
    )


def _notes(cfg: dict[str, Any], src: dict[str, Any]) -> list[str]:
    data = f"Data: `{src.get('path')}`, format {src.get('format')}"
    if src.get("encoding") == "JPEG":
        data += (
            f", JPEG quality {src.get('jpeg_quality')}: the pixels are JPEG-compressed, so the "
            "error is close to, not exactly, the one on the original CIFAR-10."
        )
    out = [
        data,
        f"Schedule: {_schedule(cfg)}.",
        f"Net: ResNet-20, norm {cfg.get('norm')}, shortcut option {cfg.get('shortcut')}, seed "
        f"{cfg.get('seed')} (weights, batch order and augmentation).",
        "Input: per-pixel mean of the training images subtracted; 4-pixel zero padding and a "
        "random 32x32 crop, horizontal flips with probability 1/2 (training only).",
    ]
    return out + subsets_note(cfg, "paper")


@renders
def render(run_dir: str | Path) -> None:
    """Draw the figure and write report.md/report.html."""
    rd, cfg, metrics, src, tag = read_run(run_dir, history={})
    h: dict[str, list[Any]] = metrics.get("history") or {}
    rep = Report(f"ResNet-20 on CIFAR-10 ({tag})")
    wall = metrics.get("wall_time_s")
    rep.paragraph(
        f"Status: **{metrics.get('status')}**, {metrics.get('iterations_done', 0)} of "
        f"{cfg.get('iterations')} iterations, {metrics.get('n_train', '?')} training and "
        f"{metrics.get('n_test', '?')} test images"
        + (f", wall time {wall:.0f} s (this session)." if isinstance(wall, int | float) else ".")
    )
    rep.paragraph(
        "The claim (He et al. 2016, section 4.2, Table 6): ResNet-20 reaches 8.75% test error "
        "(91.25% accuracy) after 64k iterations."
    )
    rep.heading("Results")
    last = h["test_accuracy"][-1] if h.get("test_accuracy") else None
    rep.table(
        ["", "iterations", f"test error ({tag})", "test accuracy"],
        [
            ["ours", metrics.get("iterations_done", 0), pct(None if last is None else 1 - last),
             pct(last)],
            ["paper (original CIFAR-10)", 64000, pct(PAPER_ERROR), pct(1 - PAPER_ERROR)],
        ],
    )  # fmt: skip
    if metrics.get("error"):
        rep.paragraph(f"**Stopped:** {metrics['error']}")
    if h.get("epoch"):
        rep.figure(_plot(rd.path, h, tag), f"Error against iteration ({tag})")
        rows = [
            [e, i, pct(tr), pct(te), f"{lr:g}", f"{s:.0f}"]
            for e, i, tr, te, lr, s in zip(
                h["epoch"], h["iterations"], h["train_accuracy"], h["test_accuracy"], h["lr"],
                h["epoch_time_s"], strict=False,
            )
        ]  # fmt: skip
        rep.table(["epoch", "iterations", "train acc", "test acc", "next lr", "s"], rows)
    rep.heading("Setup")
    rep.bullets(_notes(cfg, src))
    rd.write_report(rep)
