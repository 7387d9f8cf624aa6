"""Verdicts, figures and report of ``scale-invariance`` (the metrics files and their content: the
docstring of :mod:`bnlab.experiments.scale_invariance.run`). It reads everything back from the
run directory and imports nothing of the experiment.

Verdicts, from the numbers: a BN net from aW with eps scaled **follows the reference** if its
largest difference in softmax outputs over the run is below ``EQUAL`` (1e-9: rounding in
float64); a plain net from aW **diverged** if its loss stopped being finite, **stalls** if its
final test accuracy is more than ``STALL`` (10 percentage points) below the plain reference's,
and otherwise trains like it. The norm of a kernel feeding BN **only grows** without L2 if no
step decreased it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bnlab.experiments.report import (
    Report,
    finish_axes,
    new_figure,
    pct,
    renders,
    save_figure,
    status_text,
)
from bnlab.experiments.rundir import RunDir

__all__ = ["HISTORY_KEYS", "SCHEMA", "findings", "render"]

SCHEMA = "bnlab.scale_invariance.metrics/1"
HISTORY_KEYS = ("step", "train_loss", "test_acc", "prob_diff", "max_prob_diff", "w_norm", "eff_lr")
EQUAL, STALL = 1e-9, 0.10
CLAIM = (
    "BN((aW)u) = BN(Wu) and the gradient with respect to aW is 1/a times the gradient with "
    "respect to W. With plain SGD, the net from aW with learning rate a^2 lr for those "
    "kernels and eps x a^2 follows the net from W exactly; with a fixed eps, to within "
    "terms of order |1/a^2 - 1| eps / var at a step. Without weight decay the gradient is "
    "orthogonal to W, so ||W|| only grows and the effective learning rate lr/||W||^2 falls "
    "(van Laarhoven 2017; Hoffer et al. 2018)."
)


def _last(n: dict[str, Any], key: str) -> Any:
    vals = [v for v in n["history"][key] if v is not None]
    return vals[-1] if vals else None


def findings(metrics: dict[str, Any]) -> list[str]:
    """One sentence per scale (BN with eps scaled, with eps fixed, plain) and per norm run."""
    by = {n["name"]: n for n in metrics["nets"]}
    out, plain_acc = [], _last(by["plain"], "test_acc") if "plain" in by else None
    for n in metrics["nets"]:
        if n["kind"] != "bn" or n["scale"] == 1.0 or not n["name"].endswith("eps-scaled"):
            continue
        a = n["scale"]
        fixed_net = by.get(f"bn-a{a:g}-eps-fixed", {})
        d, fixed = n["max_prob_diff"], fixed_net.get("max_prob_diff")
        first = fixed_net.get("first_prob_diff")
        same = d is not None and d < EQUAL
        text = (
            f"a = {a:g}: the BN net from aW with eps x a^2 "
            f"{'**follows the net from W**' if same else '**departs from the net from W**'} "
            f"(largest softmax difference over {metrics['steps_done']:,} steps: {_e(d)}); with "
            f"the default eps the difference is {_e(first)} at the first step (the eps term "
            f"alone) and the largest over the run {_e(fixed)} (the trajectories separate)"
        )
        plain = by.get(f"plain-a{a:g}")
        if plain is not None:
            acc = _last(plain, "test_acc")
            if plain["error"]:
                fate = f"**diverges** ({plain['error']})"
            elif acc is not None and plain_acc is not None and acc < plain_acc - STALL:
                fate = f"**stalls** (test accuracy {pct(acc)} against {pct(plain_acc)} from W)"
            else:
                fate = (
                    f"trains like the net from W (test accuracy {pct(acc)} against "
                    f"{pct(plain_acc)})"
                )
            text += f"; the plain net with the same change {fate}"
        out.append(text + ".")
    for name in ("bn", "bn-l2"):
        n = by.get(name)
        if n is None or len(n["history"]["step"]) < 2:
            continue
        w0, w1 = n["history"]["w_norm"][0], n["history"]["w_norm"][-1]
        e0, e1 = n["history"]["eff_lr"][0], n["history"]["eff_lr"][-1]
        growth = ", ".join(f"{a:.3g} -> {b:.3g}" for a, b in zip(w0, w1, strict=True))
        eff = ", ".join(f"x{b / a:.3g}" for a, b in zip(e0, e1, strict=True))
        falls = sum(n["norm_decreases"])
        l2 = f"with L2 {n['l2']:g}" if n["l2"] else "without L2"
        steps = len(w0) * int(metrics["steps_done"])
        only = (
            "**only grew** (no step decreased it)"
            if not falls
            else f"fell at {falls:,} of {steps:,} (kernel, step) pairs"
        )
        out.append(
            f"BN net {l2}: the norm of each hidden kernel {only}: {growth}; the effective "
            f"learning rate lr/||W||^2 changed by {eff}."
        )
    return out


def _e(v: Any) -> str:
    return "—" if v is None or not math.isfinite(float(v)) else f"{float(v):.2e}"


def _plot_trajectories(rd: RunDir, metrics: dict[str, Any]) -> None:
    fig, axes = new_figure(1, 2, size=(5.2, 3.8))
    for n in metrics["nets"]:
        h = n["history"]
        if n["kind"] == "bn" and n["ref"]:
            pts = [(s, d) for s, d in zip(h["step"], h["prob_diff"], strict=True) if d]
            if pts:
                ls = "-" if n["name"].endswith("scaled") else "--"
                axes[0, 0].plot(*zip(*pts, strict=True), ls=ls, label=n["name"])
        if n["kind"] == "plain" or n["name"] == "bn":
            pts = [(s, v) for s, v in zip(h["step"], h["test_acc"], strict=True) if v is not None]
            if pts:
                axes[0, 1].plot(*zip(*pts, strict=True), label=n["name"])
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_title("BN nets from aW: max |p - p_ref| on the batch", fontsize=10)
    axes[0, 1].set_ylim(0.0, 1.0)
    axes[0, 1].set_title("test accuracy: plain nets from W and aW, BN from W", fontsize=10)
    finish_axes(axes, legend=7)
    save_figure(fig, rd.figure("trajectories"))


def _plot_norms(rd: RunDir, metrics: dict[str, Any]) -> None:
    fig, axes = new_figure(1, 2, size=(5.2, 3.8))
    for n in metrics["nets"]:
        if n["name"] not in ("bn", "bn-l2") or not n["history"]["step"]:
            continue
        h, ls = n["history"], "-" if n["name"] == "bn" else "--"
        for i in range(len(h["w_norm"][0])):
            label = f"{n['name']}, kernel {i + 1}"
            axes[0, 0].plot(h["step"], [w[i] for w in h["w_norm"]], ls=ls, label=label)
            axes[0, 1].plot(h["step"], [e[i] for e in h["eff_lr"]], ls=ls, label=label)
    axes[0, 0].set_title("||W|| of the kernels feeding BN (solid: no L2)", fontsize=10)
    axes[0, 1].set_title("effective learning rate lr / ||W||^2", fontsize=10)
    axes[0, 1].set_yscale("log")
    finish_axes(axes, legend=7)
    save_figure(fig, rd.figure("weight_norms"))


@renders
def render(run_dir: str | Path) -> Path:
    """Figures and ``report.md``/``report.html`` from the files of a (possibly partial) run."""
    rd = RunDir(run_dir)
    cfg, metrics = rd.read_json("config.json"), rd.read_metrics(nets=[])
    metrics.setdefault("steps_done", 0)
    rep = Report("Scale invariance of batch normalization (MNIST)")
    done = f"after {metrics['steps_done']:,} of {int(cfg['steps']):,} steps"
    rep.paragraph(status_text(metrics, done, "training every net side by side"))
    rep.heading("The claim")
    rep.paragraph(CLAIM)
    rep.heading("Setup")
    hidden = "-".join(str(w) for w in cfg["hidden"])
    rep.paragraph(
        f"784-{hidden}-10 nets, He-normal weights, float64, plain SGD with learning rate "
        f"{cfg['lr']} (a^2 x that for the scaled kernels), batches of {cfg['batch_size']}, "
        f"seed {cfg['seed']}, BN eps {cfg['eps']}, L2 {cfg['l2']} in the run with L2. The "
        "scaled nets are compared with their reference after every step on the step's batch; "
        f"test accuracy in eval mode on {cfg['eval_examples']} test images."
    )
    rep.heading("Results")
    rep.bullets(findings(metrics) if metrics["nets"] else ["No results yet."])
    rows = [
        [
            n["name"],
            f"{n['scale']:g}",
            f"{n['eps']:g}",
            _e(n["max_prob_diff"]),
            _last(n, "train_loss"),
            pct(_last(n, "test_acc")),
            "diverged" if n["error"] else "",
        ]
        for n in metrics["nets"]
    ]
    rep.table(["net", "a", "eps", "max prob diff", "final train loss", "test acc", ""], rows)
    if metrics["nets"]:
        _plot_trajectories(rd, metrics)
        _plot_norms(rd, metrics)
        rep.figure(
            "fig_trajectories.png",
            "Left: how far each BN net from aW is from the net "
            "from W (eps scaled: solid; default eps: dashed). Right: test accuracy of "
            "the plain nets from W and aW, and of the BN net from W",
        )
        rep.figure(
            "fig_weight_norms.png",
            "Norms of the kernels feeding BN and the effective "
            "learning rate, without L2 (solid) and with L2 (dashed)",
        )
    return rd.write_report(rep)[1]
