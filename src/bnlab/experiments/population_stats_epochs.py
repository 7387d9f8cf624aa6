"""``population-stats-epochs``: moving averages vs Algorithm 2, checkpoint by checkpoint.

For each checkpoint of a trained BN network (for instance one per epoch of ``cifar10-keras``
run with ``--keep-checkpoints``), the test accuracy in eval mode is measured twice: with the
moving averages the checkpoint holds, and with the population statistics of Algorithm 2
(``bnlab.deploy.recompute_population_stats``) over ``recal_examples`` training images drawn
at random (``bnlab.deploy.shuffled_batches``) in batches of ``batch_size``, the weights fixed.
Moving averages lag the weights most where the weights still change fast (early epochs, large
learning rates, small momentum).

Data: ``--data mnist`` (the embedded MNIST) or a CIFAR-10 path accepted by
:func:`bnlab.data.load_cifar10`; pixels scaled to [0, 1], as both experiments train.
Run directory: ``config.json``; ``metrics.json`` (``{"experiment", "status", "rows": [{
"checkpoint", "epoch", "moving_acc", "population_acc"}, ...]}``); ``metrics.csv``;
``report.md``/``report.html``.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.options import (
    Check,
    Opt,
    add_options,
    check_config,
    check_unknown,
    checks_of,
    defaults_of,
)
from bnlab.experiments.progress import Progress
from bnlab.experiments.report import (
    release_run_dir,
    run_status,
    start_run_dir,
    write_json,
)
from bnlab.train import evaluate

DESCRIPTION = "Per checkpoint (e.g. per epoch): test accuracy, moving averages vs Algorithm 2"

# every option once: its flag, default (shown by --help), check and config.json entry
OPTIONS: dict[str, Opt] = {
    "checkpoints": Opt(None, "glob of checkpoint files, e.g. 'D/*.npz'", required=True),
    "data": Opt("mnist", "'mnist' or a CIFAR-10 path"),
    "batch_size": Opt(32, "Algorithm 2's m", Check(int, 2, hint="m/(m-1) needs m >= 2")),
    "recal_examples": Opt(10000, "training images drawn for Algorithm 2", Check(int, 2)),
    "eval_batch_size": Opt(500, "examples per forward", Check(int, 1)),
    "seed": Opt(0, "draw of the recalibration batches", Check(int, 0)),
    "progress": Opt(True, "no progress bar", negate="--no-progress"),
}
DEFAULTS: dict[str, Any] = defaults_of(OPTIONS)
CHECKS: dict[str, Check] = checks_of(OPTIONS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bnlab run population-stats-epochs`` (from :data:`OPTIONS`)."""
    add_options(p, OPTIONS)


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS updated by ``config`` (None means the default), every value checked."""
    where = "population-stats-epochs"
    check_unknown(config, list(DEFAULTS), where)
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    cfg["experiment"] = where
    check_config(cfg, CHECKS, where)
    if int(cfg["recal_examples"]) < int(cfg["batch_size"]):
        raise ValueError(
            f"{where}: --recal-examples {cfg['recal_examples']} is fewer than one batch of "
            f"--batch-size {cfg['batch_size']}"
        )
    if not isinstance(cfg["checkpoints"], str) or not cfg["checkpoints"]:
        raise ValueError(f"{where}: --checkpoints must be a glob of .npz files")
    return cfg


def _load_data(spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_test) as float32 in [0, 1]."""
    from bnlab.data import load_cifar10, load_mnist

    (xtr, _), (xte, yte) = load_mnist() if spec == "mnist" else load_cifar10(spec)
    return xtr.astype(np.float32) / 255, xte.astype(np.float32) / 255, yte


def _inputs_for(model: Any, x: np.ndarray) -> np.ndarray:
    """Flatten images for a model whose first layer is Dense (the MNIST MLPs)."""
    from bnlab.layers import Dense

    return x.reshape(len(x), -1) if isinstance(model.layers[0], Dense) else x


def evaluate_checkpoint(path: str, data: tuple[np.ndarray, ...], cfg: dict[str, Any]) -> dict:
    """Test accuracy of one checkpoint with its moving averages and with Algorithm 2 stats."""
    from bnlab.deploy import load_checkpoint, recompute_population_stats, shuffled_batches

    ck = load_checkpoint(path)
    model = ck.model.eval()
    xtr, xte, yte = (_inputs_for(model, a) if a.ndim > 1 else a for a in data)
    moving = evaluate(model, xte, yte, int(cfg["eval_batch_size"]))["accuracy"]
    batches = shuffled_batches(
        xtr, cfg["batch_size"], limit=cfg["recal_examples"], seed=cfg["seed"]
    )
    recompute_population_stats(model, batches)
    population = evaluate(model, xte, yte, int(cfg["eval_batch_size"]))["accuracy"]
    epoch = (ck.extra or {}).get("epoch")
    return {"checkpoint": path, "epoch": epoch, "moving_acc": moving, "population_acc": population}


def run(config: dict[str, Any], out_dir: str | Path) -> Path:
    cfg = resolve(config)
    paths = sorted(glob.glob(str(cfg["checkpoints"])))
    if not paths:
        raise FileNotFoundError(
            f"population-stats-epochs: no checkpoint matches {cfg['checkpoints']!r}; pass a glob "
            "such as 'runs/cifar10/checkpoints/bn_epoch_*.npz' (cifar10-keras --keep-checkpoints)"
        )
    data = _load_data(str(cfg["data"]))
    out = start_run_dir(out_dir, cfg)
    rows: list[dict[str, Any]] = []
    bar = Progress(len(paths), cfg["experiment"], unit="checkpoint", enabled=cfg["progress"])

    def write(status: str) -> None:
        metrics = {"experiment": cfg["experiment"], "status": status, "rows": rows}
        write_json(out / "metrics.json", metrics)

    def finish(status: str) -> None:
        bar.close()
        try:
            write(status)
            render(out)
        finally:
            release_run_dir(out)

    with run_status(finish):
        write("running")
        for p in paths:
            rows.append(evaluate_checkpoint(p, data, cfg))
            write("running")
            bar.update(1)
    return out


def render(run_dir: str | Path) -> Path:
    """Re-render figures and report from the run's files (see population_stats_report)."""
    from bnlab.experiments import population_stats_report

    return population_stats_report.render_epochs(run_dir)
