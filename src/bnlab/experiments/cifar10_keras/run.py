"""The run of ``cifar10-keras`` (see the package docstring): both nets trained epoch by epoch
in alternation through :meth:`bnlab.train.Trainer.fit_epoch`, with metrics, checkpoints and
``--resume``.

Per net and epoch: re-seed the dropout masks from ``(seed, epoch)``, build the epoch's batches
(:func:`~bnlab.experiments.cifar10_keras.nets.epoch_batches`), ``fit_epoch`` (mean training
loss weighted by batch size and training accuracy over the global batches), evaluate on the
test set, save ``checkpoints/<net>.npz`` (``extra``: the epoch and the history, the resume
position: a kill before metrics.json is rewritten loses nothing) and rewrite
``metrics.json``/``metrics.csv``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.comm import world
from bnlab.data.cifar_source import CifarData
from bnlab.experiments.cifar import load, recorded, resumed_config
from bnlab.experiments.cifar10_keras.config import NAME, Cifar10KerasConfig
from bnlab.experiments.cifar10_keras.nets import (
    build_model,
    build_optimizer,
    epoch_batches,
    reseed_dropout,
)
from bnlab.experiments.cifar10_keras.report import render
from bnlab.experiments.progress import EpochTraining
from bnlab.experiments.rundir import RunDir, read_json, release_run_dir, start_run_dir
from bnlab.train import check_agree, is_root

__all__ = ["HISTORY_KEYS", "SCHEMA", "Net", "run", "write_metrics"]

SCHEMA = "bnlab.cifar10_keras.metrics/1"
HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "lr",
    "train_time_s",
    "eval_time_s",
    "epoch_time_s",
)


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` and ``metrics.csv`` (one row per net and epoch), atomically."""
    rd = RunDir(out)
    rd.write_metrics(metrics)
    models = [((name,), m["history"]) for name, m in metrics["models"].items()]
    rd.write_history_csv(["model"], models, HISTORY_KEYS)


class Net(EpochTraining):
    """One net being trained: its :class:`~bnlab.train.Trainer`, history and checkpoint."""

    def __init__(self, kind: str, cfg: Cifar10KerasConfig, record: dict[str, Any], out: Path):
        from bnlab.losses import SoftmaxCrossEntropy

        # under mpiexec: SyncBN for --bn-sync global, and a DataParallel (else None)
        super().__init__(
            build_model(kind, cfg), record, SoftmaxCrossEntropy(),
            lambda model: build_optimizer(kind, model, cfg), HISTORY_KEYS,
        )  # fmt: skip
        self.kind = kind
        self.error: str | None = None
        self.ckpt = out / "checkpoints" / f"{kind}.npz"
        self.keep = bool(cfg.keep_checkpoints)
        self.cfg = cfg

    @property
    def model(self) -> Any:
        return self.trainer.model

    @property
    def epochs_done(self) -> int:
        return len(self.history["epoch"])

    def to_json(self) -> dict[str, Any]:
        return {"epochs_done": self.epochs_done, "error": self.error, "history": self.history}

    def save(self) -> None:
        """``checkpoints/<net>.npz`` (and ``<net>_epoch_NNN.npz`` if kept), rank 0 only."""
        from bnlab.deploy.checkpoint import save_checkpoint

        if not is_root():
            return
        self.ckpt.parent.mkdir(exist_ok=True)
        h, n = self.history, self.epochs_done
        rows = [[np.nan if h[k][i] is None else h[k][i] for k in HISTORY_KEYS] for i in range(n)]
        history = np.array(rows, dtype=np.float64).reshape(n, len(HISTORY_KEYS))
        extra = {"epoch": n, "history": history}  # the resume position
        opt = self.trainer.optimizer
        save_checkpoint(self.ckpt, self.model, opt, extra=extra)
        if self.keep:
            epoch_ckpt = self.ckpt.with_name(f"{self.kind}_epoch_{self.epochs_done:03d}.npz")
            save_checkpoint(epoch_ckpt, self.model, opt, extra=extra)

    def restore(self) -> None:
        """Load the checkpoint and its history (the run's position: a kill between the
        checkpoint and metrics.json loses nothing); ValueError naming the file if it is not
        this net's, before anything of the net changed."""
        from bnlab.deploy.checkpoint import load_checkpoint

        bad = f"{NAME} --resume: {self.ckpt} is not a checkpoint of this run's {self.kind!r} net"
        model = build_model(self.kind, self.cfg)  # validated in a scratch copy first
        opt = build_optimizer(self.kind, model, self.cfg)
        try:
            ck = load_checkpoint(self.ckpt, model)
            opt.load_state_dict(ck.optimizer_state or {})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{bad} ({e}); use --force to start afresh") from None
        extra = ck.extra or {}
        n, hist = extra.get("epoch"), extra.get("history")
        shape = (n, len(HISTORY_KEYS))
        if not (type(n) is int and isinstance(hist, np.ndarray) and hist.shape == shape):
            raise ValueError(f"{bad} (no epoch and history of that many epochs); it is crafted")
        self.model.load_state_dict(model.state_dict())
        self.trainer.optimizer.load_state_dict(opt.state_dict())
        self.history = {k: [_cell(k, v) for v in hist[:, j]] for j, k in enumerate(HISTORY_KEYS)}
        st = self.trainer.state
        st.epoch, st.step = n, int(self.trainer.optimizer.iterations)

    def epoch(self, data: CifarData, cfg: Cifar10KerasConfig) -> dict[str, Any]:
        """Train one epoch, evaluate, append to the history; returns the epoch's row."""
        epoch = self.epochs_done + 1
        reseed_dropout(self.model, cfg, epoch)
        if self.dp is not None:  # each rank its own masks (bnlab.train.data_parallel)
            self.dp.decorrelate_dropout(self.model)
        batches = epoch_batches(data.x_train, data.y_train, cfg, epoch)
        label, show = f"{self.kind} epoch {epoch}", bool(cfg.progress) and is_root()
        test = (data.x_test, data.y_test, cfg.eval_batch_size)
        return self.run_epoch(epoch, batches, len(batches), label, show, test)


def _cell(key: str, v: Any) -> Any:
    """A history value from a checkpoint's float64 table (the epoch an int, NaN as None)."""
    return None if not np.isfinite(v) else int(v) if key == "epoch" else v


def _print_row(net: Net, row: dict[str, Any], tag: str) -> None:
    print(
        f"[cifar10-keras] {net.kind:8s} epoch {row['epoch']:3d}: train loss "
        f"{row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | test loss "
        f"{row['test_loss']:.4f} acc {row['test_accuracy']:.4f} | {row['epoch_time_s']:.1f} s "
        f"({tag})",
        flush=True,
    )


def _resumable_history(path: Path) -> dict[str, Any]:
    """``metrics.json``'s per-net history, or a ValueError if it is not one of ours."""
    if not path.is_file():
        return {}
    metrics = read_json(path)
    models = metrics.get("models") if isinstance(metrics, dict) else None
    ok = isinstance(models, dict) and all(
        isinstance(m, dict)
        and isinstance(m.get("history"), dict)
        and all(isinstance(m["history"].get(k), list) for k in HISTORY_KEYS)
        for m in models.values()
    )
    if not ok:
        raise ValueError(
            f"{NAME} --resume: {path} is not a cifar10-keras metrics file (no per-net "
            "history); resume needs the run's own files: use --force to start afresh"
        )
    return models  # type: ignore[return-value]


def _prepare(cfg: Cifar10KerasConfig, record: dict[str, Any], out: Path, nets: list[Net]) -> None:
    """Write config.json, or with ``resume`` check it against the old one and restore each
    net from its checkpoint (position and history: metrics.json is rewritten from them).
    Under mpiexec every rank must then be at the same place (:func:`check_agree`) before
    the first collective, or every rank ends with a ConfigMismatchError."""
    old = resumed_config(cfg, record, out, NAME) if cfg.resume else None
    if cfg.resume and old is None:
        raise FileNotFoundError(
            f"{NAME} --resume: {out} holds no run to resume (no config.json); nothing was "
            "changed. Check --out, or run without --resume to start a run there"
        )
    if old is not None:
        _resumable_history(out / "metrics.json")  # if there, it must be ours (it is rewritten)
        for net in nets:
            if net.ckpt.is_file():
                net.restore()
    where = f"{NAME}{' --resume' if cfg.resume else ''}"
    place = {k: v for k, v in (old or {}).items() if k != "provenance"}
    epochs = {net.kind: net.epochs_done for net in nets}
    check_agree(
        world(), {"--out": str(out.resolve()), "config.json": place, "epochs": epochs}, where=where
    )
    if is_root():  # a resumed run keeps the files; records the provenance, warns if it changed
        start_run_dir(out, record, resume=old)


def _train(cfg: Cifar10KerasConfig, data: CifarData, nets: list[Net], snapshot: Any) -> None:
    """The epochs, one per net in turn; a diverged net stops, the others go on."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        for _ in range(cfg.epochs):
            for net in nets:
                if net.error is None and net.epochs_done < cfg.epochs:
                    try:
                        row = net.epoch(data, cfg)
                        if is_root():
                            _print_row(net, row, data.source["tag"])
                    except FloatingPointError as e:
                        net.error = str(e)
                    net.save()
                    snapshot("running")


def run(config: Cifar10KerasConfig | Mapping[str, Any] | None, out_dir: str | Path) -> Path:
    """Train the nets epoch by epoch in alternation; write metrics, checkpoints and report."""
    cfg, record, data = load(Cifar10KerasConfig.of(config), NAME)
    out = Path(out_dir)
    nets = [Net(kind, cfg, record, out) for kind in cfg.models]
    try:
        _prepare(cfg, record, out, nets)
    except BaseException:
        release_run_dir(out)
        raise
    t0 = time.perf_counter()

    def snapshot(status: str) -> None:
        if not is_root():
            return
        write_metrics(
            out,
            {
                "schema": SCHEMA,
                "experiment": NAME,
                "status": status,
                "epochs_total": cfg.epochs,
                "data": data.source,
                "n_train": len(data.y_train),
                "n_test": len(data.y_test),
                "wall_time_s": round(time.perf_counter() - t0, 3),
                "models": {n.kind: n.to_json() for n in nets},
            },
        )

    with recorded(out, snapshot, render, [net.trainer for net in nets]):
        _train(cfg, data, nets, snapshot)
    return out
