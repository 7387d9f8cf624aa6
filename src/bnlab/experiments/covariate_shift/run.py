"""Experiment ``covariate-shift``: Santurkar et al. 2018 ("How Does Batch Normalization Help
Optimization?", NeurIPS), three measurements on standard, BN and "noisy BN" nets.

Options: :class:`bnlab.experiments.covariate_shift.config.ShiftConfig`.

The nets (:func:`~bnlab.experiments.covariate_shift.nets.build_net`): ``standard`` (weight
layer with bias -> ReLU), ``bn`` (weight layer -> BN -> ReLU) and ``noisy-bn`` (weight layer ->
BN -> :class:`~bnlab.experiments.covariate_shift.nets.ShiftNoise` -> ReLU), the MNIST MLP
784-100-100-100-10 by default or the Keras CIFAR-10 convnet (``--dataset cifar10``), float32,
He-normal weights, trained one after the other with plain SGD on the same batches.

Every ``measure_every`` steps, before that step's update and on its batch
(:mod:`~bnlab.experiments.covariate_shift.measure`): ICS of every weight layer after the
first (l2 distance and cosine between its gradient before and after the layers below it are
updated), the losses and gradient changes at ``theta - eta G`` for every eta of
``step_sizes``, the loss range and the effective beta-smoothness; the test accuracy (eval
mode); the batch mean and standard deviation of the first four pre-activations of the last
hidden layer (the input of its ReLU: what the next layer sees shift). A net whose loss stops
being finite is recorded as diverged.

Under ``mpiexec -n P`` the nets train data-parallel: every rank draws the same batches and
runs its shard, BN layers are synchronized (:func:`~bnlab.train.for_experiment`: SyncBN, the
global batch's statistics), the noise is the global batch's rows
(:class:`~bnlab.experiments.covariate_shift.nets.ShiftNoise`), and every gradient, loss and
statistic measured is summed over the ranks first (``parallel`` of
:mod:`~bnlab.experiments.covariate_shift.measure`): the numbers are one process's up to
rounding. Rank 0 writes the run directory.

Files: ``config.json``, ``metrics.json``, ``metrics.csv``, ``fig_training.png``,
``fig_ics.png``, ``fig_landscape.png``, ``report.md``, ``report.html``::

    {"schema": "bnlab.covariate_shift.metrics/1", "experiment": "covariate-shift",
     "status": ..., "wall_time_s": float, "step_sizes": [...],
     "nets": [{"name": "standard" | "bn" | "noisy-bn", "error": str | null, "time_s": float,
               "history": {"step", "train_loss", "test_acc", "ics_l2": [[per layer]],
                           "ics_cos": [[per layer]], "losses": [[per eta]],
                           "grad_diffs": [[per eta]], "loss_range", "beta", "grad_norm",
                           "act_mean": [[4 units]], "act_std": [[4 units]]}}]}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.covariate_shift import report
from bnlab.experiments.covariate_shift.config import NETS, ShiftConfig
from bnlab.experiments.covariate_shift.measure import gradients, ics, kept_state, landscape
from bnlab.experiments.covariate_shift.nets import build_net, noise_layers, weight_layers
from bnlab.experiments.progress import Progress, run_in_turn
from bnlab.layers import ReLU, Sequential
from bnlab.runtime import blas_threads
from bnlab.train import DataParallel, evaluate, for_experiment, is_root

__all__ = ["load_data", "run", "train_net"]


def load_data(cfg: ShiftConfig) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)`` as float32 in [0, 1]: MNIST flattened to 784, or
    CIFAR-10 NHWC; ``eval_examples`` test images drawn at random (seeded)."""
    from bnlab.data import load_cifar10, load_mnist

    if cfg.dataset == "mnist":
        (xtr, ytr), (xte, yte) = load_mnist()
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    else:
        show = bool(cfg.progress) and is_root()  # under mpiexec: rank 0's progress alone
        (xtr, ytr), (xte, yte) = load_cifar10(str(cfg.cifar), progress=show)
    # a seeded random subset: an image-folder copy of CIFAR-10 lists its test set by class
    pick = np.sort(
        np.random.default_rng(int(cfg.seed)).permutation(len(xte))[: int(cfg.eval_examples)]
    )
    scale = np.float32(255)
    return xtr.astype(np.float32) / scale, ytr, xte[pick].astype(np.float32) / scale, yte[pick]


def _activations(
    model: Sequential, x: np.ndarray, dp: DataParallel | None
) -> tuple[list[float], list[float]]:
    """Batch mean and std of the first 4 inputs of the last hidden ReLU (training mode); with
    ``dp`` of the global batch ``x``: this rank's shard, sums over the ranks."""
    last = max(i for i, la in enumerate(model.layers) if isinstance(la, ReLU))
    h = x if dp is None else dp.shard(x)[0]
    with kept_state(model):
        for layer in model.layers[:last]:
            h = np.array(layer.forward(h), dtype=np.float64)
    h = h.reshape(-1, h.shape[-1])[:, :4]
    if dp is None:
        return h.mean(axis=0).tolist(), h.std(axis=0).tolist()
    *sums, count = dp.sum([*h.sum(axis=0), len(h)])
    mean = np.array(sums) / count
    var = np.array(dp.sum(((h - mean) ** 2).sum(axis=0).tolist())) / count
    return mean.tolist(), np.sqrt(var).tolist()


def _accuracy(model: Sequential, x: np.ndarray, y: np.ndarray, dp: DataParallel | None) -> float:
    """Test accuracy in eval mode, in batches of 500 (with ``dp``: shared by the ranks)."""
    return (evaluate if dp is None else dp.evaluate)(model, x, y, 500)["accuracy"]


def _measure(
    model: Sequential,
    cfg: ShiftConfig,
    batch: tuple[Any, Any],
    loss: float,
    grads: dict[str, np.ndarray],
    dp: DataParallel | None,
) -> dict[str, Any]:
    """The measurement row of one step (module docstring), before its update."""
    xb, yb = batch
    pairs = ics(model, xb, yb, grads, float(cfg.lr), weight_layers(model), dp)
    land = landscape(model, xb, yb, loss, grads, [float(e) for e in cfg.step_sizes], dp)
    act = dict(zip(("act_mean", "act_std"), _activations(model, xb, dp), strict=True))
    ics_l2, ics_cos = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"ics_l2": ics_l2, "ics_cos": ics_cos, **land, **act}  # land: the landscape's keys


def train_net(
    kind: str,
    cfg: ShiftConfig,
    data: tuple[np.ndarray, ...],
    history: dict[str, list[Any]],
    bar: Progress | None = None,
    on_record: Callable[[], None] | None = None,
) -> None:
    """Train net ``kind``, measuring every ``measure_every`` steps (and after the last) into
    ``history``, which an interrupted run keeps; ``on_record()`` after each measurement.
    FloatingPointError if the loss is not finite. Data-parallel on the process's world."""
    from bnlab.data import BatchIterator

    xtr, ytr, xte, yte = data
    model = build_net(kind, cfg)
    _, dp = for_experiment(model, cfg.to_dict())  # its BN layers made SyncBN in place
    if dp is not None:
        dp.setup(model)
    noises, params = noise_layers(model), model.params
    batches = BatchIterator(xtr, ytr, int(cfg.batch_size or 2), seed=int(cfg.seed), drop_last=True)
    stream = batches.batches()
    steps, every = int(cfg.steps or 0), int(cfg.measure_every or 1)
    window: list[float] = []
    for step in range(steps + 1):
        for noise in noises:
            noise.resample()
        xb, yb = next(stream)
        yb = np.asarray(yb)
        loss, grads = gradients(model, xb, yb, dp)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the training loss is {loss} at step {step + 1}")
        if step % every == 0 or step == steps:
            row = {
                "step": step,
                "train_loss": float(np.mean(window)) if window else None,
                "test_acc": _accuracy(model, xte, yte, dp),
                **_measure(model, cfg, (xb, yb), loss, grads, dp),
            }
            for k in report.HISTORY_KEYS:
                history[k].append(row[k])
            window.clear()
            if on_record is not None:
                on_record()
        if step == steps:
            break
        for k, p in params.items():
            p -= np.float32(cfg.lr) * grads[k].astype(p.dtype)
        window.append(loss)
        if bar is not None:
            bar.update(1)


def run(config: ShiftConfig | dict[str, Any] | None, out_dir: str | Path) -> Path:
    """Train and measure the three nets into ``out_dir``; returns it. The config is checked and
    the data loaded before the run directory changes."""
    cfg = ShiftConfig.of(config)
    data = load_data(cfg)

    def train(spec: dict[str, Any], history: Any, bar: Progress, on_record: Any) -> None:
        train_net(spec["name"], cfg, data, history, bar, on_record)

    # an MLP's products are too small for BLAS threads; a convnet's im2col products need them
    threads = blas_threads(1) if cfg.dataset == "mnist" else None
    specs = [{"name": kind} for kind in NETS]
    return run_in_turn(
        out_dir, cfg, specs, train, report, threads=threads, step_sizes=cfg.step_sizes
    )
