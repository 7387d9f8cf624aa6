"""``population-stats-epochs``: moving averages vs Algorithm 2, checkpoint by checkpoint.

For each checkpoint of a trained BN network (for instance one per epoch of ``cifar10-keras``
run with ``--keep-checkpoints``), the test accuracy in eval mode is measured twice: with the
moving averages the checkpoint holds, and with the population statistics of Algorithm 2
(``bnlab.deploy.recompute_population_stats``) over ``recal_examples`` training images drawn
at random (``bnlab.deploy.shuffled_batches``) in batches of ``batch_size``, the weights fixed.
Moving averages lag the weights most where the weights still change fast (early epochs, large
learning rates, small momentum).

Options: :class:`bnlab.experiments.population_stats_epochs.config.EpochsConfig`. Data:
``--data mnist`` (the embedded MNIST) or a CIFAR-10 path accepted by
:func:`bnlab.data.load_cifar10`; pixels
scaled to [0, 1], as both experiments train. Before the run directory is touched, the config
is checked, the checkpoints found, the data loaded and every checkpoint read and its model
checked against the data's shape. Run directory: ``config.json``; ``metrics.json``
(``{"experiment", "status", "rows": [{"checkpoint", "epoch", "moving_acc",
"population_acc"}, ...]}``); ``metrics.csv``; ``fig_accuracy.png``; ``report.md``/``.html``.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.population_stats_epochs.config import EpochsConfig
from bnlab.experiments.population_stats_epochs.report import render
from bnlab.experiments.progress import Progress, recording
from bnlab.experiments.rundir import RunDir
from bnlab.layers import Layer
from bnlab.train import evaluate

__all__ = ["check_checkpoints", "evaluate_checkpoint", "find_checkpoints", "load_data", "run"]

Data = tuple[np.ndarray, np.ndarray, np.ndarray]


def load_data(spec: str, test_subset: int | None = None) -> Data:
    """(x_train, x_test, y_test) of ``--data`` as float32 in [0, 1], the first
    ``test_subset`` test images (all when None)."""
    from bnlab.data import load_cifar10, load_mnist

    (xtr, _), (xte, yte) = load_mnist() if spec == "mnist" else load_cifar10(spec)
    if test_subset is not None and test_subset > len(yte):
        raise ValueError(f"--test-subset {test_subset}: --data {spec} has {len(yte)} test images")
    xte, yte = xte[:test_subset], yte[:test_subset]
    return xtr.astype(np.float32) / 255, xte.astype(np.float32) / 255, yte


def _inputs_for(model: Any, x: np.ndarray) -> np.ndarray:
    """Flatten images for a model whose first layer is Dense (the MNIST MLPs)."""
    from bnlab.layers import Dense

    return x.reshape(len(x), -1) if isinstance(model.layers[0], Dense) else x


def find_checkpoints(cfg: EpochsConfig) -> list[str]:
    """The files ``--checkpoints`` matches, sorted; FileNotFoundError if there are none."""
    paths = sorted(glob.glob(str(cfg.checkpoints)))
    if not paths:
        raise FileNotFoundError(
            f"{cfg.NAME}: no checkpoint matches {cfg.checkpoints!r}; pass a glob such as "
            "'runs/cifar10/checkpoints/bn_epoch_*.npz' (cifar10-keras --keep-checkpoints)"
        )
    return paths


def _check_model(path: str, model: Layer, data: Data, spec: str) -> None:
    """ValueError unless ``model`` takes the images of ``data`` (flattened for an MLP)."""
    shape = (2, *_inputs_for(model, data[1][:2]).shape[1:])
    try:
        model.output_shape(shape)
    except ValueError as e:
        raise ValueError(
            f"population-stats-epochs: the model of {path} does not take the images of --data "
            f"{spec} (shape {shape[1:]}): {e}; pass the data the checkpoint was trained on"
        ) from e


def check_checkpoints(paths: list[str], data: Data, spec: str) -> None:
    """Read every checkpoint (one at a time) and check its model against the data, so that a
    bad file stops the run before its directory is touched (a CheckpointError or
    ValueError naming the file)."""
    from bnlab.deploy import load_checkpoint

    for p in paths:
        _check_model(p, load_checkpoint(p).model, data, spec)


def evaluate_checkpoint(
    path: str, data: Data, cfg: EpochsConfig, bar: Progress | None = None
) -> dict[str, Any]:
    """Test accuracy of one checkpoint with its moving averages and with Algorithm 2 stats;
    ``bar`` advances by one after each of the three phases and names the next."""
    from bnlab.deploy import load_checkpoint, recompute_population_stats, shuffled_batches

    def phase(done: bool, next_phase: str) -> None:
        if bar is not None:
            bar.update(int(done))
            bar.set_postfix_str(f"{Path(path).name}: {next_phase}", refresh=True)

    phase(False, "test accuracy, moving averages")
    ck = load_checkpoint(path)
    model = ck.model.eval()
    xtr, xte, yte = (_inputs_for(model, a) if a.ndim > 1 else a for a in data)
    moving = evaluate(model, xte, yte, int(cfg.eval_batch_size))["accuracy"]
    phase(True, "Algorithm 2 pass")
    batches = shuffled_batches(xtr, cfg.batch_size, limit=cfg.recal_examples, seed=cfg.seed)
    recompute_population_stats(model, batches)
    phase(True, "test accuracy, population statistics")
    population = evaluate(model, xte, yte, int(cfg.eval_batch_size))["accuracy"]
    phase(True, "done")
    epoch = (ck.extra or {}).get("epoch")
    return {"checkpoint": path, "epoch": epoch, "moving_acc": moving, "population_acc": population}


def run(config: dict[str, Any] | EpochsConfig, out_dir: str | Path) -> Path:
    """Evaluate every checkpoint in turn; metrics after each, the report at the end (also
    after Ctrl-C: the rows so far)."""
    cfg = EpochsConfig.of(config)
    paths = find_checkpoints(cfg)
    data = load_data(str(cfg.data), cfg.test_subset)
    if cfg.progress:
        print(f"{cfg.NAME}: reading {len(paths)} checkpoint(s)...", file=sys.stderr, flush=True)
    check_checkpoints(paths, data, str(cfg.data))
    rows: list[dict[str, Any]] = []
    # three phases a checkpoint: eval with moving averages, Algorithm 2, eval again
    bar = Progress(3 * len(paths), cfg.NAME, unit="phase", enabled=cfg.progress)

    with RunDir.start(out_dir, cfg.to_dict()) as rd:

        def write(status: str) -> None:
            rd.write_metrics({"experiment": cfg.NAME, "status": status, "rows": rows})

        with recording(rd, bar, write, render):
            for p in paths:
                rows.append(evaluate_checkpoint(p, data, cfg, bar))
                write("running")
    return rd.path
