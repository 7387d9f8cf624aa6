"""The run of ``cifar10-resnet`` (see the package docstring): ResNet-20 trained epoch by epoch
through :meth:`bnlab.train.Trainer.fit_epoch` up to the iteration budget, with metrics, a
checkpoint per epoch and ``--resume``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.data.cifar_source import CifarData
from bnlab.experiments.cifar import load, recorded, resumed_config
from bnlab.experiments.cifar10_resnet.config import NAME, Cifar10ResnetConfig
from bnlab.experiments.cifar10_resnet.nets import (
    add_weight_decay,
    build_optimizer,
    epoch_batches,
    pixel_mean,
)
from bnlab.experiments.cifar10_resnet.report import render
from bnlab.experiments.progress import EpochTraining
from bnlab.experiments.rundir import RunDir, read_json, release_run_dir, start_run_dir
from bnlab.train import is_root

__all__ = ["HISTORY_KEYS", "SCHEMA", "Net", "run"]

SCHEMA = "bnlab.cifar10_resnet.metrics/1"
HISTORY_KEYS = (
    "epoch", "iterations", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
    "lr", "train_time_s", "eval_time_s", "epoch_time_s",
)  # fmt: skip


class Net(EpochTraining):
    """ResNet-20 being trained: its :class:`~bnlab.train.Trainer`, history and checkpoint."""

    def __init__(self, cfg: Cifar10ResnetConfig, record: dict[str, Any], out: Path):
        from bnlab.losses import SoftmaxCrossEntropy
        from bnlab.models import resnet20

        net = resnet20(10, str(cfg.norm), str(cfg.shortcut), seed=int(cfg.seed))
        model = add_weight_decay(net, float(cfg.weight_decay))
        super().__init__(
            model, record, SoftmaxCrossEntropy(),
            lambda m: build_optimizer(m, cfg.lr, cfg.momentum, cfg.milestones), HISTORY_KEYS,
        )  # fmt: skip
        self.ckpt = out / "checkpoints" / "resnet20.npz"

    @property
    def steps(self) -> int:
        return int(self.trainer.optimizer.iterations)

    def save(self) -> None:
        """``checkpoints/resnet20.npz`` (model, optimizer, epoch), rank 0 only."""
        from bnlab.deploy.checkpoint import save_checkpoint

        if is_root():
            self.ckpt.parent.mkdir(exist_ok=True)
            extra = {"epoch": len(self.history["epoch"])}
            save_checkpoint(self.ckpt, self.trainer.model, self.trainer.optimizer, extra=extra)

    def restore(self, history: dict[str, list[Any]]) -> None:
        """Load the checkpoint and keep ``history`` up to its epoch."""
        from bnlab.deploy.checkpoint import load_checkpoint

        ck = load_checkpoint(self.ckpt)
        self.trainer.model.load_state_dict(ck.model.state_dict())
        if ck.optimizer_state is not None:
            self.trainer.optimizer.load_state_dict(ck.optimizer_state)
        n = int((ck.extra or {}).get("epoch", 0))
        if not all(len(history.get(k, [])) >= n for k in HISTORY_KEYS):
            raise ValueError(f"{NAME} --resume: {self.ckpt} is at epoch {n}, metrics.json is not")
        self.history = {k: list(history[k][:n]) for k in HISTORY_KEYS}
        self.trainer.state.epoch, self.trainer.state.step = n, self.steps

    def epoch(self, data: CifarData, mean: np.ndarray, cfg: Cifar10ResnetConfig) -> dict:
        """Train one epoch (cut at the iteration budget), evaluate, append to the history."""
        epoch = len(self.history["epoch"]) + 1
        batches = epoch_batches(data.x_train, data.y_train, mean, cfg.batch_size, cfg.seed, epoch)
        n = min(len(batches), int(cfg.iterations) - self.steps)
        show = bool(cfg.progress) and is_root()
        test = (data.x_test - mean, data.y_test, cfg.eval_batch_size)
        return self.run_epoch(epoch, itertools.islice(batches, n), n, f"epoch {epoch}", show, test)


def _prepare(cfg: Cifar10ResnetConfig, record: dict[str, Any], out: Path, net: Net) -> None:
    """Write config.json, or with ``resume`` check it against the old one and restore."""
    old = resumed_config(cfg, record, out, NAME) if cfg.resume else None
    if old is not None:
        old_metrics = out / "metrics.json"
        metrics = read_json(old_metrics) if old_metrics.is_file() else {}
        hist = metrics.get("history") if isinstance(metrics, dict) else None
        if old_metrics.is_file() and not isinstance(hist, dict):
            raise ValueError(
                f"{NAME} --resume: {old_metrics} is not a cifar10-resnet metrics file (no "
                "history); use --force to start afresh"
            )
        if net.ckpt.is_file() and hist:
            net.restore(hist)
    if is_root():
        start_run_dir(out, record, resume=old)


def run(config: Cifar10ResnetConfig | Mapping[str, Any] | None, out_dir: str | Path) -> Path:
    """Train ResNet-20 up to ``iterations`` steps; write metrics, checkpoint and report."""
    cfg, record, data = load(Cifar10ResnetConfig.of(config), NAME)
    out = Path(out_dir)
    net = Net(cfg, record, out)
    try:
        _prepare(cfg, record, out, net)
    except BaseException:
        release_run_dir(out)
        raise
    mean, t0 = pixel_mean(data.x_train), time.perf_counter()
    error: list[str | None] = [None]

    def snapshot(status: str) -> None:
        if is_root():
            RunDir(out).write_metrics({
                "schema": SCHEMA, "experiment": NAME, "status": status,
                "iterations_total": int(cfg.iterations), "iterations_done": net.steps,
                "data": data.source, "n_train": len(data.y_train), "n_test": len(data.y_test),
                "wall_time_s": round(time.perf_counter() - t0, 3), "error": error[0],
                "history": net.history,
            })  # fmt: skip
            RunDir(out).write_history_csv([], [((), net.history)], HISTORY_KEYS)

    with (
        recorded(out, snapshot, render, [net.trainer]),
        np.errstate(over="ignore", under="ignore", invalid="ignore"),
    ):
        while net.steps < int(cfg.iterations) and error[0] is None:
            try:
                row = net.epoch(data, mean, cfg)
            except FloatingPointError as e:
                error[0] = str(e)
                break
            if is_root():
                print(
                    f"[{NAME}] epoch {row['epoch']:3d} (iteration {row['iterations']}): train "
                    f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | test acc "
                    f"{row['test_accuracy']:.4f} | {row['epoch_time_s']:.0f} s",
                    flush=True,
                )
            net.save()
            snapshot("running")
    return out
