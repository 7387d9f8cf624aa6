"""The run of ``batch-size`` (see the package docstring): one training per (norm, batch size),
each from the same seed for the same epochs, its final test error recorded."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.data.cifar_source import CifarData
from bnlab.experiments.batch_size.config import NAME, BatchSizeConfig
from bnlab.experiments.batch_size.report import render
from bnlab.experiments.cifar import load, recorded
from bnlab.experiments.cifar10_resnet.nets import (
    add_weight_decay,
    build_optimizer,
    epoch_batches,
    pixel_mean,
)
from bnlab.experiments.progress import EpochTraining
from bnlab.experiments.rundir import RunDir, start_run_dir
from bnlab.train import is_root

__all__ = ["RUN_KEYS", "SCHEMA", "build_net", "run", "train_one"]

SCHEMA = "bnlab.batch_size.metrics/1"
RUN_KEYS = (
    "norm", "batch_size", "global_batch", "world_size", "bn_sync", "lr", "steps",
    "train_loss", "test_loss", "test_error", "time_s",
)  # fmt: skip


def build_net(cfg: BatchSizeConfig, norm: str) -> Any:
    """``cfg.net`` with ``norm`` (seeded by ``cfg.seed``, so every run starts alike)."""
    from bnlab.layers import Conv2D, Dense, GlobalAveragePool2D, ReLU, Sequential
    from bnlab.models import norm_layer, resnet20

    g, seed = int(cfg.gn_groups), int(cfg.seed)
    if cfg.net == "resnet20":
        return resnet20(10, norm, "A", gn_groups=g, seed=seed)
    layers: list[Any] = []
    for i, (cin, cout, stride) in enumerate(((3, 16, 1), (16, 32, 2), (32, 64, 2))):
        conv = Conv2D(cin, cout, 3, stride=stride, padding=1, use_bias=False,
                      init="he_normal", seed=seed * 100 + i)  # fmt: skip
        layers += [conv, norm_layer(norm, cout, g), ReLU()]
    return Sequential([*layers, GlobalAveragePool2D(), Dense(64, 10, seed=seed * 100 + 9)])


def train_one(
    cfg: BatchSizeConfig, record: dict[str, Any], data: CifarData, norm: str, b: int
) -> dict[str, Any]:
    """Train ``norm`` at per-device batch ``b`` (global ``world * b``); its record."""
    from bnlab.comm import world
    from bnlab.losses import SoftmaxCrossEntropy

    p = world().size
    gb = p * b
    mean = pixel_mean(data.x_train)
    per_epoch = len(epoch_batches(data.x_train, data.y_train, mean, gb, cfg.seed, 1))
    total = per_epoch * int(cfg.epochs)
    lr = float(cfg.lr) * gb / 32
    net = EpochTraining(
        add_weight_decay(build_net(cfg, norm), cfg.weight_decay), record, SoftmaxCrossEntropy(),
        lambda model: build_optimizer(model, lr, cfg.momentum, [math.ceil(0.75 * total)]),
    )  # fmt: skip
    opt = net.trainer.optimizer
    t0, row = time.perf_counter(), {}
    show = bool(cfg.progress) and is_root()
    try:
        for epoch in range(1, int(cfg.epochs) + 1):
            batches = epoch_batches(data.x_train, data.y_train, mean, gb, cfg.seed, epoch)
            row = net.fit_epoch(batches, len(batches), f"{norm} b={b} epoch {epoch}", show)
        ev = net.evaluate(data.x_test - mean, data.y_test, cfg.eval_batch_size)
    finally:
        net.trainer.end()
    return {
        "norm": norm, "batch_size": b, "global_batch": gb, "world_size": p,
        "bn_sync": str(cfg.bn_sync) if p > 1 else "n/a", "lr": lr, "steps": int(opt.iterations),
        "train_loss": row.get("train_loss"), "test_loss": ev["loss"],
        "test_error": 1 - ev["accuracy"], "time_s": round(time.perf_counter() - t0, 3),
    }  # fmt: skip


def _load(cfg: BatchSizeConfig) -> tuple[BatchSizeConfig, dict[str, Any], CifarData]:
    """The data, the config with the path found, and the ``config.json`` record."""
    from bnlab.comm import world

    ref = Path(cfg.reference).expanduser().resolve() if cfg.reference else None
    if ref is not None and not (ref / "metrics.json").is_file():  # before the data's seconds
        raise FileNotFoundError(
            f"{NAME}: --reference {cfg.reference} holds no metrics.json; pass the directory "
            "of a finished `bnlab run batch-size`"
        )
    cfg, record, data = load(cfg, NAME)
    cfg = cfg.replace(reference=None if ref is None else str(ref))
    record = {**cfg.to_dict(), "data_source": record["data_source"], "world_size": world().size}
    return cfg, record, data


def run(config: BatchSizeConfig | Mapping[str, Any] | None, out_dir: str | Path) -> Path:
    """Train every (norm, batch size) of the config; write metrics and the report."""
    cfg, record, data = _load(BatchSizeConfig.of(config))
    out = Path(out_dir)
    if is_root():
        start_run_dir(out, record)
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def snapshot(status: str) -> None:
        if is_root():
            rd = RunDir(out)
            rd.write_metrics({
                "schema": SCHEMA, "experiment": NAME, "status": status, "data": data.source,
                "n_train": len(data.y_train), "n_test": len(data.y_test),
                "world_size": record["world_size"],
                "wall_time_s": round(time.perf_counter() - t0, 3), "runs": runs,
            })  # fmt: skip
            rd.write_csv("metrics.csv", list(RUN_KEYS), [[r[k] for k in RUN_KEYS] for r in runs])

    with (
        recorded(out, snapshot, render),
        np.errstate(over="ignore", under="ignore", invalid="ignore"),
    ):
        for norm in cfg.norms:
            for b in cfg.batch_sizes:
                try:
                    r = train_one(cfg, record, data, norm, int(b))
                except FloatingPointError as e:  # diverged: recorded, the others go on
                    r = {**dict.fromkeys(RUN_KEYS), "norm": norm, "batch_size": b, "error": str(e)}
                    runs.append(r)
                    continue
                runs.append(r)
                if is_root():
                    print(f"[{NAME}] {norm:6s} batch {b:3d} (global {r['global_batch']}): "
                          f"{r['steps']} steps, test error {r['test_error']:.4f}, "
                          f"{r['time_s']:.0f} s", flush=True)  # fmt: skip
                snapshot("running")
    return out
