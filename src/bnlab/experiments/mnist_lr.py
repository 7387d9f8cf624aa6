"""Experiment ``mnist-lr``: does BN allow higher learning rates on the sigmoid MLP?

The network, data and evaluation of ``mnist-sigmoid`` (see that module for the setup and
the ``metrics.json`` schema), trained without and with BN at 1x, 5x and 30x a base learning
rate: the multiples of the paper's BN-x5 and BN-x30 (Ioffe & Szegedy 2015, section 4.2.2).
A run **diverges** when its loss becomes NaN or Inf (recorded with its step) and **stalls**
when its final test accuracy is below ``stall_threshold`` (chance is 0.10).

Files: ``config.json``, ``metrics.json``, ``metrics.csv``, ``fig_lr.png`` (test accuracy,
one panel per multiple), ``report.md``, ``report.html``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from bnlab.experiments import mnist_common as mc
from bnlab.experiments import mnist_sigmoid_report as sr
from bnlab.experiments.options import Check, Opt, add_options, check_config, checks_of, defaults_of
from bnlab.experiments.report import Report, release_run_dir, start_run_dir
from bnlab.parallel import is_root

DESCRIPTION = "BN-x5 / BN-x30: the sigmoid MLP at 1x, 5x and 30x a base learning rate"

# this experiment's own options, each once (flag, default in --help, check, config.json)
OPTIONS: dict[str, Opt] = {
    "base_lr": Opt(3.0, "base learning rate", Check(float, 0, lo_open=True)),
    "multipliers": Opt(
        [1.0, 5.0, 30.0],
        "learning rates are base_lr times these",
        Check(float, 0, lo_open=True),
        nargs="+",
    ),
    "stall_threshold": Opt(
        0.2,
        "final test accuracy below this counts as stalled",
        Check(float, 0, 1, hint="a test accuracy (chance is 0.1)"),
    ),
}
DEFAULTS: dict[str, Any] = {**mc.COMMON_DEFAULTS, "steps": 10_000, **defaults_of(OPTIONS)}
CHECKS: dict[str, Check] = checks_of(OPTIONS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bnlab run mnist-lr``: the shared ones, then :data:`OPTIONS`."""
    mc.add_common_arguments(p, DEFAULTS)
    add_options(p, OPTIONS)


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated by ``config``, checked."""
    cfg = mc.resolve_config(config, DEFAULTS, "mnist-lr")
    check_config(cfg, CHECKS, "mnist-lr")
    lrs = [float(cfg["base_lr"]) * float(m) for m in cfg["multipliers"]]
    if not all(math.isfinite(lr) for lr in lrs):
        raise ValueError(
            f"mnist-lr: --base-lr {cfg['base_lr']} times --multipliers {cfg['multipliers']} "
            "overflows to inf; pass smaller values"
        )
    mc.check_size(cfg, len(lrs), "mnist-lr")
    return cfg


def run(config: dict[str, Any], out_dir: str | Path) -> Path:
    """Train both nets at every multiple of the base rate; write metrics, figure and report."""
    cfg = resolve(config)
    data = mc.load_data(cfg)
    lrs = [float(cfg["base_lr"]) * float(m) for m in cfg["multipliers"]]
    runs = mc.make_runs(cfg, lrs, data)
    out = start_run_dir(out_dir, cfg) if is_root() else Path(out_dir)  # rank 0 writes
    try:
        mc.train_lockstep(cfg if is_root() else {**cfg, "progress": False}, runs, out)
    finally:
        try:
            render(out) if is_root() else None
        finally:
            release_run_dir(out)
    return out


def outcome(run: dict[str, Any], stall_threshold: float) -> str:
    """ "diverged at step k", "stalled" or "trains" for one run of metrics.json."""
    if run["diverged_at"] is not None:
        return f"diverged at step {run['diverged_at']}"
    acc = sr.final(run)
    if acc is None or not math.isfinite(acc) or acc < stall_threshold:
        return "stalled"
    return "trains"


def outcome_rows(cfg: dict[str, Any], metrics: dict[str, Any], lrs: list[float]) -> list[list[Any]]:
    """One table row per (multiple, net): accuracies and what happened to the run(s)."""
    rows: list[list[Any]] = []
    for m, lr in zip(cfg["multipliers"], lrs, strict=False):
        for net in mc.NETS:
            runs = mc.group(metrics, lr, net)
            outs = sorted({outcome(x, float(cfg["stall_threshold"])) for x in runs})
            s = sr.summarize(metrics, lr, net)
            accs = [v for x in runs for v in x["history"]["accuracy"] if v is not None]
            best = max(accs) if accs else math.nan
            to95 = f"{s['steps_to_95']:,}" if s["steps_to_95"] else "not reached"
            rows.append(
                [f"{m:g}x", f"{lr:g}", sr.LABEL[net], sr.acc_cell(s), sr.pct(best), to95]
                + ["; ".join(outs)]
            )
    return rows


def render(run_dir: str | Path) -> Path:
    """Re-draw the figure and rewrite the report from the run's files."""
    run_dir = Path(run_dir)
    cfg, metrics = mc.load_run(run_dir)
    r = Report("mnist-lr: higher learning rates with and without BN")
    r.paragraph(sr.status_text(metrics))
    if note := sr.short_run_note(metrics):
        r.paragraph(note)
    r.paragraph(sr.setup_paragraph(cfg))
    r.paragraph(
        "The paper (section 4.2.2) trains Inception with BN at 5x and 30x its base learning "
        "rate (BN-x5, BN-x30) and says BN allows higher rates without divergence and makes "
        "saturating nonlinearities trainable; the same network without BN at the higher rates "
        "is not shown there. Here both MNIST sigmoid nets run at "
        f"{', '.join(f'{m:g}x' for m in cfg['multipliers'])} the base rate {cfg['base_lr']:g}."
    )
    lrs = mc.lrs_of(metrics)
    if lrs:
        fig = sr.fig_accuracy(run_dir, metrics, filename="fig_lr.png")
        rows = outcome_rows(cfg, metrics, lrs)
        r.heading("Which runs diverge or stall")
        r.bullets(
            [
                f"{kind}: "
                + (", ".join(f"{row[2]} at {row[0]}" for row in rows if kind in row[6]) or "none")
                for kind in ("diverged", "stalled")
            ]
        )
        r.table(
            [
                "multiple",
                "lr",
                "net",
                "final test acc",
                "best test acc",
                "step reaching 95%",
                "outcome",
            ],
            rows,
        )
        r.paragraph(
            f"'stalled' = final test accuracy below {cfg['stall_threshold']}; 'diverged' = the "
            "loss became NaN or Inf (training of that net stopped at that step)."
        )
        r.figure(fig, sr.accuracy_caption(metrics))
    r.write(run_dir)
    return run_dir / "report.html"
