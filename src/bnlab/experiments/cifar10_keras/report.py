"""Figures and report of ``cifar10-keras``, drawn from a run directory's files only.

``fig_accuracy.png`` and ``fig_loss.png`` are the post's two plots: training and test
accuracy (loss) of both nets against the epoch. ``report.md``/``report.html`` put the post's
numbers beside ours; every number carries the data tag (e.g. "JPEG q75 CIFAR-10").
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bnlab.experiments.cifar import read_run, subsets_note
from bnlab.experiments.report import Report, new_figure, pct, renders, save_figure

__all__ = ["render", "POST"]

# The seed post's numbers (Keras, GeForce GTX 1080, original CIFAR-10 pixels).
POST: dict[str, Any] = {
    "baseline": {"acc50": 0.77, "keras_acc50": 0.79, "label": "baseline (Keras cifar10_cnn)"},
    "bn": {"acc50": 0.87, "label": "with batch normalization"},
    "epoch_time": "24-25 s per epoch for either net on a GeForce GTX 1080",
}
_COLORS = {"baseline": "tab:blue", "bn": "tab:red"}
_LABELS = {"baseline": "baseline", "bn": "BN"}


def _hist(metrics: dict[str, Any], kind: str) -> dict[str, list[Any]]:
    return metrics.get("models", {}).get(kind, {}).get("history", {}) or {}


def _plot(run_dir: Path, metrics: dict[str, Any], key: str, ylabel: str, tag: str) -> str:
    fig, axes = new_figure(size=(9.6, 4.2))  # the page width, as the MNIST figures
    ax = axes[0, 0]
    n = 0
    for kind in metrics.get("models", {}):
        h = _hist(metrics, kind)
        if not h.get("epoch"):
            continue
        n = max(n, len(h["epoch"]))
        c = _COLORS.get(kind)
        few = len(h["epoch"]) < 30  # markers; train hollow squares, test filled dots
        mk_train = {"marker": "s", "ms": 5, "mfc": "none"} if few else {}
        mk_test = {"marker": "o", "ms": 4} if few else {}
        ax.plot(
            h["epoch"], h[f"train_{key}"], color=c, ls="--", label=f"{_LABELS[kind]} train",
            **mk_train,
        )  # fmt: skip
        ax.plot(h["epoch"], h[f"test_{key}"], color=c, label=f"{_LABELS[kind]} test", **mk_test)
    if key == "accuracy":
        for kind in (k for k in ("baseline", "bn") if _hist(metrics, k).get("epoch")):
            v = POST[kind]["acc50"]
            lab = f"post, {_LABELS[kind]}, 50 epochs ({v:.0%})"
            ax.axhline(v, color=_COLORS[kind], lw=0.8, ls=":", label=lab)
        ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(n, 1) + 0.5)  # one epoch: a point in a sane range, not 0.96-1.04
    if n <= 12:
        ax.set_xticks(range(1, max(n, 1) + 1))
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} ({tag})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    name = f"fig_{key}.png"
    save_figure(fig, run_dir / name)
    return name


def _best(h: dict[str, list[Any]]) -> tuple[float | None, int | None]:
    accs = [a for a in h.get("test_accuracy", []) if a is not None]
    if not accs:
        return None, None
    i = max(range(len(accs)), key=lambda j: accs[j])
    return accs[i], h["epoch"][i]


def _summary(rep: Report, metrics: dict[str, Any], tag: str) -> None:
    rows = []
    for kind in metrics.get("models", {}):
        h = _hist(metrics, kind)
        n = len(h.get("epoch", []))
        best, at = _best(h)
        last = h["test_accuracy"][-1] if n else None
        times = [t for t in h.get("epoch_time_s", []) if t is not None]
        post = pct(POST[kind]["acc50"])
        if kind == "baseline":
            post += f" (Keras reports {pct(POST['baseline']['keras_acc50'])})"
        rows.append(
            [
                _LABELS[kind],
                n,
                pct(last),
                f"{pct(best)} (epoch {at})" if at else "—",
                post,
                f"{statistics.median(times):.1f}" if times else "—",
            ]
        )
    rep.table(
        [
            "net",
            "epochs done",
            f"last test accuracy ({tag})",
            f"best test accuracy ({tag})",
            "post, 50 epochs (original CIFAR-10, Keras)",
            "median s/epoch (ours, CPU)",
        ],
        rows,
    )


def _lead(metrics: dict[str, Any]) -> str | None:
    """A sentence on whether BN's test accuracy is above the baseline's epoch by epoch."""
    b, n = _hist(metrics, "baseline"), _hist(metrics, "bn")
    k = min(len(b.get("epoch", [])), len(n.get("epoch", [])))
    if k == 0:
        return None
    ahead = [e + 1 for e in range(k) if n["test_accuracy"][e] > b["test_accuracy"][e]]
    first = "from epoch 1" if ahead[:1] == [1] else "not at epoch 1"
    return (
        f"BN's test accuracy is above the baseline's at {len(ahead)} of the {k} epochs both "
        f"nets finished ({first}); the post: BN ahead from the first epochs. One seed (the "
        "post's), so no spread to judge the differences against."
    )


def _epoch_table(rep: Report, metrics: dict[str, Any], tag: str) -> None:
    kinds = list(metrics.get("models", {}))
    n = max((len(_hist(metrics, k).get("epoch", [])) for k in kinds), default=0)
    header = ["epoch"]
    for k in kinds:
        header += [f"{_LABELS[k]} train acc", f"{_LABELS[k]} test acc", f"{_LABELS[k]} s"]
    rows = []
    for e in range(n):
        row: list[Any] = [e + 1]
        for k in kinds:
            h = _hist(metrics, k)
            if e < len(h.get("epoch", [])):
                row += [
                    pct(h["train_accuracy"][e]),
                    pct(h["test_accuracy"][e]),
                    f"{h['epoch_time_s'][e]:.0f}",
                ]
            else:
                row += ["—", "—", "—"]
        rows.append(row)
    rep.paragraph(
        f"Per epoch ({tag}; train accuracy on augmented batches, training mode; seconds are "
        "training plus test evaluation, and epoch 1 also includes compiling the Numba kernels "
        "when their cache is cold, the first run after an install):"
    )
    rep.table(header, rows)


def _keras_momentum(momentum: Any) -> str:
    """Keras' momentum (the weight of the old running value): 1 - ours."""
    return f"{1 - float(momentum):g}" if isinstance(momentum, int | float) else "?"


def _notes(cfg: dict[str, Any], src: dict[str, Any]) -> list[str]:
    out = [
        f"Data: `{src.get('path')}`, format {src.get('format')}, pixels: {src.get('encoding')}"
        + (f", JPEG quality {src['jpeg_quality']}" if src.get("jpeg_quality") else "")
        + ". JPEG smooths the pixels slightly, so accuracies are close to, not exactly, those "
        "on the original CIFAR-10."
        if src.get("encoding") == "JPEG"
        else f"Data: `{src.get('path')}`, format {src.get('format')}.",
        f"Seed {cfg.get('seed')} for both nets (same kernels, batch order, augmentation). "
        f"Batch {cfg.get('batch_size')}; RMSprop rho {cfg.get('rho')}, eps {cfg.get('rms_eps')},"
        f" decay {cfg.get('decay')} per step (Keras 2); lr {cfg.get('lr_baseline')} (baseline),"
        f" {cfg.get('lr_bn')} (BN).",
        f"BatchNorm: eps {cfg.get('bn_eps')}, momentum {cfg.get('bn_momentum')} (weight of the "
        f"new batch; Keras' momentum {_keras_momentum(cfg.get('bn_momentum'))}), conv/dense "
        "bias before BN " + ("kept." if cfg.get("bn_conv_bias") else "dropped (beta replaces it)."),
        "Augmentation: shifts are whole pixels (Keras interpolates sub-pixel shifts), fill "
        "'nearest', horizontal flips with probability 1/2.",
        f"Post's speed: {POST['epoch_time']}; ours are wall times of NumPy + Numba on this "
        "run's CPU (they vary with whatever else the machine runs).",
    ]
    return out + subsets_note(cfg, "post")


@renders
def render(run_dir: str | Path) -> None:
    """Draw the two figures and write report.md/report.html."""
    rd, cfg, metrics, src, tag = read_run(run_dir, models={})
    run_dir = rd.path
    rep = Report(f"Keras cifar10_cnn with and without batch normalization ({tag})")
    rep.paragraph(
        f"Status: **{metrics.get('status')}**, {metrics.get('n_train', '?')} training and "
        f"{metrics.get('n_test', '?')} test images of {tag}, "
        f"{metrics.get('epochs_total', cfg.get('epochs'))} epoch(s) planned"
        + (
            f", wall time {metrics['wall_time_s']:.0f} s."
            if isinstance(metrics.get("wall_time_s"), int | float)
            else "."
        )
    )
    rep.paragraph(
        "The claim (seed post): the Keras cifar10_cnn example reaches 77% test accuracy after "
        "50 epochs (Keras reports 79%), 87% with batch normalization after every Conv2D and "
        "the Dense 512 before the ReLU, dropout removed, learning rate 1e-3 instead of 1e-4."
    )
    rep.heading("Results")
    _summary(rep, metrics, tag)
    lead = _lead(metrics)
    if lead:
        rep.paragraph(lead)
    for kind, m in metrics.get("models", {}).items():
        if m.get("error"):
            rep.paragraph(f"**{_LABELS[kind]} stopped:** {m['error']}")
    if any(_hist(metrics, k).get("epoch") for k in metrics.get("models", {})):
        rep.figure(_plot(run_dir, metrics, "accuracy", "accuracy", tag), f"Accuracy ({tag})")
        rep.figure(_plot(run_dir, metrics, "loss", "cross-entropy loss", tag), f"Loss ({tag})")
        _epoch_table(rep, metrics, tag)
    rep.heading("Setup and differences from the post")
    rep.bullets(_notes(cfg, src))
    rd.write_report(rep)
