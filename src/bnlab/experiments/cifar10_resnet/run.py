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
from bnlab.experiments.cifar import load_data
from bnlab.experiments.cifar10_resnet.config import NAME, Cifar10ResnetConfig
from bnlab.experiments.cifar10_resnet.nets import (
    add_weight_decay,
    build_optimizer,
    epoch_batches,
    pixel_mean,
)
from bnlab.experiments.cifar10_resnet.report import render
from bnlab.experiments.progress import BarCallback, Progress
from bnlab.experiments.rundir import (
    RunDir,
    lock_run_dir,
    read_json,
    release_run_dir,
    run_status,
    start_run_dir,
)
from bnlab.train import Trainer, evaluate, for_experiment, is_root

__all__ = ["HISTORY_KEYS", "SCHEMA", "Net", "run"]

SCHEMA = "bnlab.cifar10_resnet.metrics/1"
HISTORY_KEYS = (
    "epoch", "iterations", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
    "lr", "train_time_s", "eval_time_s", "epoch_time_s",
)  # fmt: skip


class Net:
    """ResNet-20 being trained: its :class:`~bnlab.train.Trainer`, history and checkpoint."""

    def __init__(self, cfg: Cifar10ResnetConfig, record: dict[str, Any], out: Path):
        from bnlab.losses import SoftmaxCrossEntropy
        from bnlab.models import resnet20

        net = resnet20(10, str(cfg.norm), str(cfg.shortcut), seed=int(cfg.seed))
        model, self.dp = for_experiment(add_weight_decay(net, float(cfg.weight_decay)), record)
        opt = build_optimizer(model, cfg.lr, cfg.momentum, cfg.milestones)
        self.bar = BarCallback()
        self.trainer = Trainer(
            model, SoftmaxCrossEntropy(), opt, callbacks=[self.bar], parallel=self.dp
        )
        self.history: dict[str, list[Any]] = {k: [] for k in HISTORY_KEYS}
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

    def run_epoch(self, data: CifarData, mean: np.ndarray, cfg: Cifar10ResnetConfig) -> dict:
        """Train one epoch (cut at the iteration budget), evaluate, append to the history."""
        epoch = len(self.history["epoch"]) + 1
        batches = epoch_batches(data.x_train, data.y_train, mean, cfg.batch_size, cfg.seed, epoch)
        n = min(len(batches), int(cfg.iterations) - self.steps)
        note = "(the first batches compile Numba kernels, first run only)" if epoch == 1 else None
        show = bool(cfg.progress) and is_root()
        self.bar.bar = Progress(n, f"epoch {epoch}", unit="batch", enabled=show, first_note=note)
        t0 = time.perf_counter()
        try:
            row: dict[str, Any] = self.trainer.fit_epoch(itertools.islice(batches, n))
        finally:
            self.bar.bar.close()
            self.bar.bar = None
        t1 = time.perf_counter()
        run_eval = evaluate if self.dp is None else self.dp.evaluate
        x_test = data.x_test - mean
        ev = run_eval(
            self.trainer.model, x_test, data.y_test, cfg.eval_batch_size,
            loss_fn=self.trainer.loss_fn,
        )  # fmt: skip
        t2 = time.perf_counter()
        row.update(epoch=epoch, iterations=self.steps, lr=self.trainer.optimizer.current_lr())
        row.update(test_loss=ev["loss"], test_accuracy=ev["accuracy"])
        row.update(train_time_s=t1 - t0, eval_time_s=t2 - t1, epoch_time_s=t2 - t0)
        for k in HISTORY_KEYS:
            self.history[k].append(row[k])
        return row


def _prepare(cfg: Cifar10ResnetConfig, record: dict[str, Any], out: Path, net: Net) -> None:
    """Write config.json, or with ``resume`` check it against the old one and restore."""
    old_cfg_path, old_metrics = out / "config.json", out / "metrics.json"
    if not (cfg.resume and old_cfg_path.is_file()):
        if is_root():
            start_run_dir(out, record)
        return
    if is_root():
        lock_run_dir(out)
    old = read_json(old_cfg_path)
    if not isinstance(old, dict):
        raise ValueError(f"{NAME} --resume: {old_cfg_path} is not a bnlab config")
    diff = [k for k in cfg.resume_keys() if old.get(k) != record[k]]
    if diff:
        raise ValueError(
            f"{NAME} --resume: {out} was run with different {diff}: "
            f"{ {k: old.get(k) for k in diff} }; use a new --out or the same options"
        )
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


def _load(cfg: Cifar10ResnetConfig) -> tuple[Cifar10ResnetConfig, dict[str, Any], CifarData]:
    """The data, the config with the path found, and the ``config.json`` record."""
    path, source, data = load_data(cfg, NAME)
    cfg.check_data(len(data.y_train), len(data.y_test))
    cfg = cfg.replace(data=str(path))
    return cfg, {**cfg.to_dict(), "data_source": source}, data


def run(config: Cifar10ResnetConfig | Mapping[str, Any] | None, out_dir: str | Path) -> Path:
    """Train ResNet-20 up to ``iterations`` steps; write metrics, checkpoint and report."""
    cfg, record, data = _load(Cifar10ResnetConfig.of(config))
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

    def finish(status: str) -> None:
        try:
            snapshot(status)
            if is_root():
                render(out)
        finally:
            net.trainer.end()
            release_run_dir(out)

    with run_status(finish), np.errstate(over="ignore", under="ignore", invalid="ignore"):
        snapshot("running")
        while net.steps < int(cfg.iterations) and error[0] is None:
            try:
                row = net.run_epoch(data, mean, cfg)
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
