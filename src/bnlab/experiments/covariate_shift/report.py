"""Verdicts, figures and report of ``covariate-shift`` (the metrics files and their content: the
docstring of :mod:`bnlab.experiments.covariate_shift.run`). It reads everything back from the
run directory and imports nothing of the experiment.

The verdicts beside the paper's findings, decided from the numbers (medians over the
measurements, and over the layers for ICS):

1. noisy BN **trains as well as BN** if its final test accuracy is within ``SAME`` (2 percentage
   points) of BN's or above it;
2. BN **reduces ICS** only if its l2 distance is lower *and* its cosine higher than the
   standard net's; the paper found it does not;
3. BN **makes the landscape smoother** if its loss range, its largest gradient change and its
   effective beta are all lower than the standard net's; the paper found they are.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.report import finish_axes, new_figure, pct, renders, run_report, save_figure
from bnlab.experiments.rundir import RunDir

__all__ = ["HISTORY_KEYS", "SCHEMA", "render", "summary", "verdicts"]

SCHEMA = "bnlab.covariate_shift.metrics/1"
# per net, one list entry per measurement (module docstring of ``run``)
HISTORY_KEYS: tuple[str, ...] = (
    "step",
    "train_loss",
    "test_acc",
    "ics_l2",
    "ics_cos",
    "losses",
    "grad_diffs",
)
HISTORY_KEYS += ("loss_range", "beta", "grad_norm", "act_mean", "act_std")
SAME = 0.02
_COLORS = {"standard": "tab:gray", "bn": "tab:blue", "noisy-bn": "tab:orange"}


def _median(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and v == v]
    return statistics.median(vals) if vals else None


def summary(net: dict[str, Any]) -> dict[str, Any]:
    """Final test accuracy and the medians of every measurement of one net."""
    h = net["history"]
    flat = lambda key: [v for row in h[key] for v in row]  # noqa: E731
    return {
        "steps": h["step"][-1] if h["step"] else 0,
        "acc": h["test_acc"][-1] if h["test_acc"] else None,
        "ics_l2": _median(flat("ics_l2")),
        "ics_cos": _median(flat("ics_cos")),
        "loss_range": _median(h["loss_range"]),
        "grad_change": _median([max(r) for r in h["grad_diffs"] if r]),
        "beta": _median(h["beta"]),
    }


def _lt(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a < b


def verdicts(metrics: dict[str, Any]) -> list[str]:
    """One sentence per finding of the paper, with this run's numbers and whether it agrees."""
    s = {n["name"]: summary(n) for n in metrics["nets"] if n["history"]["step"]}
    out = []
    if {"bn", "noisy-bn"} <= set(s):
        bn, noisy, std = s["bn"]["acc"], s["noisy-bn"]["acc"], s.get("standard", {}).get("acc")
        same = noisy is not None and bn is not None and noisy >= bn - SAME
        out.append(
            "Paper: BN nets with time-varying noise after every BN layer train about as well as "
            f"BN nets (and better than standard nets). Here: test accuracy BN {pct(bn)}, noisy "
            f"BN {pct(noisy)}, standard {pct(std)}: "
            + ("**agrees**." if same else "**disagrees** (noisy BN is more than 2 pp behind BN).")
        )
    if {"bn", "standard"} <= set(s):
        a, b = s["standard"], s["bn"]
        reduces = _lt(b["ics_l2"], a["ics_l2"]) and _lt(a["ics_cos"], b["ics_cos"])
        out.append(
            "Paper: by the gradient-change measure, BN does not reduce internal covariate shift "
            f"(it can increase it). Here (medians over layers and steps): l2 distance standard "
            f"{_g(a['ics_l2'])}, BN {_g(b['ics_l2'])}; cosine standard {_g(a['ics_cos'])}, BN "
            f"{_g(b['ics_cos'])}: "
            + (
                "**disagrees**: BN has less ICS by both measures."
                if reduces
                else "**agrees**: BN does not have less ICS by both measures."
            )
        )
        keys = ("loss_range", "grad_change", "beta")
        smoother = all(_lt(b[k], a[k]) for k in keys)
        out.append(
            "Paper: BN makes the landscape smoother: the loss varies less along the gradient, "
            "the gradient changes less (more predictive) and the effective beta-smoothness is "
            f"lower. Here (medians over steps), standard vs BN: loss range {_g(a['loss_range'])} "
            f"vs {_g(b['loss_range'])}, largest gradient change {_g(a['grad_change'])} vs "
            f"{_g(b['grad_change'])}, beta {_g(a['beta'])} vs {_g(b['beta'])}: "
            + ("**agrees**." if smoother else "**disagrees** on at least one of the three.")
        )
    return out


def _g(v: Any) -> str:
    return "—" if v is None else f"{float(v):.3g}"


def _plot_training(rd: RunDir, metrics: dict[str, Any]) -> None:
    fig, axes = new_figure(1, 2, size=(5.0, 3.6))
    for n in metrics["nets"]:
        h, c = n["history"], _COLORS.get(n["name"])
        if not h["step"]:
            continue
        axes[0, 0].plot(h["step"], h["test_acc"], color=c, label=n["name"])
        mean, std = (np.array([v[0] for v in h[k]]) for k in ("act_mean", "act_std"))
        axes[0, 1].plot(h["step"], mean, color=c, label=n["name"])
        axes[0, 1].fill_between(h["step"], mean - std, mean + std, color=c, alpha=0.2)
    axes[0, 0].set_title("test accuracy (eval mode)", fontsize=10)
    axes[0, 1].set_title("input of the last hidden ReLU, unit 0: batch mean ± std", fontsize=10)
    finish_axes(axes)
    save_figure(fig, rd.figure("training"))


def _plot_ics(rd: RunDir, metrics: dict[str, Any]) -> None:
    nets = [n for n in metrics["nets"] if n["history"]["step"] and n["history"]["ics_l2"][0]]
    if not nets:
        return
    layers = len(nets[0]["history"]["ics_l2"][0])
    fig, axes = new_figure(2, layers, size=(3.4, 3.0))
    for n in nets:
        h, c = n["history"], _COLORS.get(n["name"])
        for j in range(layers):
            axes[0, j].plot(h["step"], [r[j] for r in h["ics_l2"]], color=c, label=n["name"])
            axes[1, j].plot(h["step"], [r[j] for r in h["ics_cos"]], color=c, label=n["name"])
    for j in range(layers):
        axes[0, j].set_title(f"weight layer {j + 2}: ||G - G'||", fontsize=9)
        axes[1, j].set_title(f"weight layer {j + 2}: cos(G, G')", fontsize=9)
    finish_axes(axes, legend=None)
    axes[0, 0].legend(fontsize=7)
    save_figure(fig, rd.figure("ics"))


def _plot_landscape(rd: RunDir, metrics: dict[str, Any]) -> None:
    fig, axes = new_figure(1, 3, size=(4.2, 3.4))
    for n in metrics["nets"]:
        h, c = n["history"], _COLORS.get(n["name"])
        if not h["step"]:
            continue
        for ax, key in zip(axes[0, :2], ("losses", "grad_diffs"), strict=True):
            lo = [min(r) if r else None for r in h[key]]
            hi = [max(r) if r else None for r in h[key]]
            ax.fill_between(h["step"], lo, hi, color=c, alpha=0.3, label=n["name"])
        axes[0, 2].plot(h["step"], h["beta"], color=c, label=n["name"])
    titles = (
        "loss at theta - eta G (range over eta)",
        "||G - G(theta - eta G)|| (range)",
        "effective beta-smoothness",
    )
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_yscale("log")
    finish_axes(axes, legend=7)
    save_figure(fig, rd.figure("landscape"))


def _setup(cfg: dict[str, Any]) -> str:
    """The setup paragraph."""
    net = (
        "MLP 784-" + "-".join(map(str, cfg["hidden"])) + "-10 on MNIST"
        if cfg["dataset"] == "mnist"
        else "the Keras CIFAR-10 convnet (no dropout) on CIFAR-10"
    )
    return (
        f"{net}; standard (no BN), BN, and noisy BN (after every BN, per activation and sample "
        f"y' = s y + m, the mean of m from U(-{cfg['noise_mean']}, {cfg['noise_mean']}) and "
        f"of s from U(1, {cfg['noise_scale']}) drawn anew every step, spread "
        f"{cfg['noise_spread']}). float32, plain SGD, learning rate {cfg['lr']}, batches of "
        f"{cfg['batch_size']}, {int(cfg['steps']):,} steps, seed {cfg['seed']}; measurements "
        f"every {cfg['measure_every']} steps on that step's batch, step sizes eta "
        f"{', '.join(map(str, cfg['step_sizes']))}."
    )


@renders
def render(run_dir: str | Path) -> Path:
    """Figures and ``report.md``/``report.html`` from the files of a (possibly partial) run."""
    title = "Does BN reduce internal covariate shift? (Santurkar et al. 2018)"
    rd, cfg, metrics, rep = run_report(run_dir, title, "net", "training and measuring every net")
    rep.heading("Setup")
    rep.paragraph(_setup(cfg))
    rep.heading("Beside the paper")
    rep.bullets(verdicts(metrics) or ["No finished nets yet."])
    cols = ("steps", "acc", "ics_l2", "ics_cos", "loss_range", "grad_change", "beta")
    rows = []
    for n in metrics["nets"]:
        s = summary(n) if n["history"]["step"] else {}
        cells = [pct(s.get(k)) if k == "acc" else s.get(k) for k in cols]
        rows.append([n["name"], *cells, "diverged" if n.get("error") else ""])
    rep.table(
        ["net", "steps", "test acc", "ICS l2", "ICS cos", "loss range", "grad change", "beta", ""],
        rows,
    )
    if any(n["history"]["step"] for n in metrics["nets"]):
        _plot_training(rd, metrics)
        _plot_ics(rd, metrics)
        _plot_landscape(rd, metrics)
        rep.figure("fig_training.png", "Test accuracy, and the shift of one pre-activation")
        rep.figure(
            "fig_ics.png",
            "ICS per weight layer: l2 distance and cosine of its gradient "
            "before and after the layers below it are updated",
        )
        rep.figure(
            "fig_landscape.png",
            "Loss and gradient along the gradient direction, and the effective beta-smoothness",
        )
    return rd.write_report(rep)[1]
