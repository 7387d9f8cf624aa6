"""Experiment ``cifar10-keras``: Keras' cifar10_cnn example, without and with batch norm.

The claim reproduced (seed text 003, a Keras blog post): the Keras cifar10_cnn example reaches
77% test accuracy after 50 epochs (Keras itself reports 79%), and 87% with batch normalization
after every Conv2D and the Dense 512, before the ReLU, dropout removed and the RMSprop
learning rate raised from 1e-4 to 1e-3; BN is ahead from the first epochs.

Baseline (exactly the example)::

    Conv(32, 3x3, same) ReLU  Conv(32, 3x3, valid) ReLU  MaxPool(2)  Dropout(0.25)
    Conv(64, 3x3, same) ReLU  Conv(64, 3x3, valid) ReLU  MaxPool(2)  Dropout(0.25)
    Flatten  Dense(512) ReLU  Dropout(0.5)  Dense(10)  softmax

Glorot-uniform kernels and zero biases (Keras' defaults); softmax cross-entropy on the logits;
RMSprop(lr=1e-4, rho=0.9, eps=1e-7, decay=1e-6), Keras 2's decay ``lr_t = lr / (1 + decay*t)``
per step; batches of 32; pixels scaled to [0, 1]; random shifts of up to 10% of the width
and height and horizontal flips. The BN net replaces each ``Conv -> ReLU`` and ``Dense(512) ->
ReLU`` by ``Conv(no bias) -> BatchNorm -> ReLU`` (beta replaces the bias), has no dropout and
uses lr 1e-3. BN uses Keras' defaults by default: eps 1e-3 and Keras momentum 0.99, which is
momentum 0.01 in bnlab's (PyTorch's) convention. Both nets start from the same seed: the same
kernels, the same batch order and the same augmentation draws.

Every epoch records, per net: the mean training loss and accuracy over the epoch's batches
(training mode, augmented images, as Keras prints them), the test loss and accuracy on the
whole test set (eval mode, BN with its running statistics), and the wall times. The nets are
trained in alternation, one epoch each, so an interrupted run holds both curves to about the
same epoch. ``metrics.json``/``metrics.csv`` are rewritten after every epoch, and a checkpoint
per net (``checkpoints/<net>.npz``: model, optimizer, epoch) is saved, so ``--resume``
continues an interrupted run (data order, augmentation and dropout masks are re-seeded from
``(seed, epoch)``, so a resumed run follows the same path as an uninterrupted one).

``metrics.json`` (``"schema": "bnlab.cifar10_keras.metrics/1"``)::

    {"schema", "experiment": "cifar10-keras", "status": "running" | "complete" |
     "interrupted" | "failed", "epochs_total": int, "data": {source description},
     "models": {"baseline" | "bn": {"epochs_done": int, "error": str | null,
                                    "history": {key: [one value per epoch]}}}}

with the history keys of :data:`HISTORY_KEYS`. Figures and the report are drawn by
:mod:`bnlab.experiments.cifar10_keras_report`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments import cifar10_keras_data as kd
from bnlab.experiments.cifar10_keras_nets import (
    build_model,
    build_optimizer,
    epoch_batches,
    reseed_dropout,
    train_epoch,
)
from bnlab.experiments.options import (
    BN_SYNC,
    Check,
    Opt,
    add_options,
    check_choices,
    check_config,
    check_count,
    check_unknown,
    checks_of,
    defaults_of,
)
from bnlab.experiments.progress import Progress
from bnlab.experiments.report import (
    lock_run_dir,
    read_json,
    release_run_dir,
    run_status,
    start_run_dir,
    write_csv,
    write_json,
)
from bnlab.parallel import for_experiment, is_root

DESCRIPTION = "Keras cifar10_cnn on CIFAR-10 without and with BN (77% -> 87% claim)"
SCHEMA = "bnlab.cifar10_keras.metrics/1"
MODELS = ("baseline", "bn")
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
ENV_DATA = kd.ENV_DATA


def _models_arg(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in MODELS]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"--models takes a comma-separated subset of {','.join(MODELS)}, got {text!r}"
        )
    return names


_MOMENTUM_HINT = "the weight of the new batch (PyTorch's convention: Keras' 0.99 is 0.01 here)"
_LR = Check(float, 0, lo_open=True)
# every option once: its flag, default (shown by --help), check and config.json entry
OPTIONS: dict[str, Opt] = {
    "data": Opt(None, f"CIFAR-10: {kd.FORMATS_HELP} (default: ${ENV_DATA})"),
    "epochs": Opt(50, "epochs per net", Check(int, 1)),
    "models": Opt(list(MODELS), "comma-separated nets to train", parse=_models_arg),
    "seed": Opt(7, "one seed for both (the post's numpy seed)", Check(int, 0)),
    "batch_size": Opt(
        32, "examples per step", Check(int, 2, hint="BatchNorm needs at least 2 examples a batch")
    ),
    "eval_batch_size": Opt(500, "examples per forward", Check(int, 1)),
    "train_subset": Opt(
        None, "N training images (a fixed random choice)", Check(int, 2, optional=True)
    ),
    "test_subset": Opt(None, "N test images (a fixed random choice)", Check(int, 1, optional=True)),
    "lr_baseline": Opt(1e-4, "RMSprop lr, plain", _LR),
    "lr_bn": Opt(1e-3, "RMSprop lr, BN net", _LR),
    "rho": Opt(0.9, "RMSprop rho", Check(float, 0, 1, hi_open=True), cli=False),
    "rms_eps": Opt(1e-7, "RMSprop eps", Check(float, 0, lo_open=True), cli=False),
    "decay": Opt(1e-6, "Keras lr decay per step", Check(float, 0)),
    "shift": Opt(
        0.1,
        "random shifts, a fraction of the width and height",
        Check(float, 0, 1, hi_open=True, hint="a fraction of the width and height"),
        cli=False,
    ),
    "flip": Opt(True, "random horizontal flips", cli=False),
    "bn_momentum": Opt(0.01, _MOMENTUM_HINT, Check(float, 0, 1, hint=_MOMENTUM_HINT)),
    "bn_eps": Opt(1e-3, "BN's epsilon (Keras')", Check(float, 0, lo_open=True)),
    "bn_conv_bias": Opt(False, "keep the conv bias before BN", cli=False),
    "resume": Opt(False, "continue the run in --out from its checkpoints"),
    "keep_checkpoints": Opt(
        False,
        "also keep checkpoints/<net>_epoch_NNN.npz after every epoch "
        "(for `bnlab run population-stats-epochs`)",
    ),
    "progress": Opt(True, "no progress bar", negate="--no-progress"),
    "bn_sync": BN_SYNC,
}
DEFAULTS: dict[str, Any] = defaults_of(OPTIONS)
CHECKS: dict[str, Check] = checks_of(OPTIONS)
# keys that must match for --resume to continue a run directory
_RESUME_KEYS = tuple(
    k
    for k in DEFAULTS
    if k
    not in (
        "data",
        "epochs",
        "eval_batch_size",
        "test_subset",
        "resume",
        "progress",
        "keep_checkpoints",
        "bn_sync",  # a run may resume at another world size
    )
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bnlab run cifar10-keras`` (from :data:`OPTIONS`)."""
    add_options(p, OPTIONS)


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated by ``config``; unknown keys and bad values raise ValueError."""
    check_unknown(config, [*DEFAULTS, "data_source"], "cifar10-keras")
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None or k == "data"}}
    cfg["experiment"] = "cifar10-keras"
    models = cfg["models"]
    if isinstance(models, str):
        models = _models_arg(models)
    if not models or any(m not in MODELS for m in models):
        raise ValueError(f"cifar10-keras: models must be a non-empty subset of {MODELS}: {models}")
    cfg["models"] = [m for m in MODELS if m in models]
    check_config(cfg, CHECKS, "cifar10-keras")
    check_choices(cfg, OPTIONS, "cifar10-keras")
    sub = cfg["train_subset"]
    if sub is not None and int(cfg["batch_size"]) > int(sub):
        raise ValueError(
            f"cifar10-keras: --batch-size {cfg['batch_size']} is larger than --train-subset "
            f"{sub}; pass a smaller --batch-size or a larger --train-subset"
        )
    return cfg


def check_data(cfg: dict[str, Any], n_train: int, n_test: int) -> None:
    """The options that depend on the size of the data found."""
    n = check_count(cfg["train_subset"], n_train, "train_subset", "images", "cifar10-keras")
    check_count(cfg["test_subset"], n_test, "test_subset", "images", "cifar10-keras")
    if int(cfg["batch_size"]) > n:
        raise ValueError(
            f"cifar10-keras: --batch-size {cfg['batch_size']} is larger than the {n} training "
            "images; pass a smaller --batch-size"
        )


# -- the run ----------------------------------------------------------------------------------


def _empty_history() -> dict[str, list[Any]]:
    return {k: [] for k in HISTORY_KEYS}


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` and ``metrics.csv`` (one row per net and epoch), atomically."""
    write_json(out / "metrics.json", metrics)
    rows = []
    for name, m in metrics["models"].items():
        h = m["history"]
        rows += [[name, *(h[k][i] for k in HISTORY_KEYS)] for i in range(len(h["epoch"]))]
    write_csv(out / "metrics.csv", ["model", *HISTORY_KEYS], rows)


class _Net:
    """One net being trained: model, optimizer, history and checkpoint path."""

    def __init__(self, kind: str, cfg: dict[str, Any], out: Path) -> None:
        from bnlab.losses import SoftmaxCrossEntropy

        self.kind = kind
        self.error: str | None = None
        # under mpiexec: SyncBN for --bn-sync global, and a DataParallel (else None)
        self.model, self.dp = for_experiment(build_model(kind, cfg), cfg)
        self.opt = build_optimizer(kind, self.model, cfg)
        self.loss_fn = SoftmaxCrossEntropy()
        self.history = _empty_history()
        self.ckpt = out / "checkpoints" / f"{kind}.npz"
        self.keep = bool(cfg.get("keep_checkpoints"))

    @property
    def epochs_done(self) -> int:
        return len(self.history["epoch"])

    def to_json(self) -> dict[str, Any]:
        return {"epochs_done": self.epochs_done, "error": self.error, "history": self.history}

    def save(self) -> None:
        from bnlab.deploy.checkpoint import save_checkpoint

        if not is_root():
            return
        self.ckpt.parent.mkdir(exist_ok=True)
        extra = {"epoch": self.epochs_done}
        save_checkpoint(self.ckpt, self.model, self.opt, extra=extra)
        if self.keep:
            epoch_ckpt = self.ckpt.with_name(f"{self.kind}_epoch_{self.epochs_done:03d}.npz")
            save_checkpoint(epoch_ckpt, self.model, self.opt, extra=extra)

    def restore(self, history: dict[str, list[Any]]) -> None:
        """Load the checkpoint and keep ``history`` up to its epoch."""
        from bnlab.deploy.checkpoint import load_checkpoint

        ck = load_checkpoint(self.ckpt)
        self.model.load_state_dict(ck.model.state_dict())
        if ck.optimizer_state is not None:
            self.opt.load_state_dict(ck.optimizer_state)
        n = int((ck.extra or {}).get("epoch", 0))
        if len(history.get("epoch", [])) < n:
            raise ValueError(f"cifar10-keras: {self.ckpt} is at epoch {n}, metrics.json is not")
        self.history = {k: list(history[k][:n]) for k in HISTORY_KEYS}


def _run_epoch(net: _Net, data: kd.CifarData, cfg: dict[str, Any]) -> None:
    from bnlab.train import evaluate

    epoch = net.epochs_done + 1
    reseed_dropout(net.model, cfg, epoch)
    if net.dp is not None:  # each rank its own masks (bnlab.parallel)
        net.dp.decorrelate_dropout(net.model)
    batches = epoch_batches(data.x_train, data.y_train, cfg, epoch)
    note = "(the first batches compile Numba kernels, first run only)" if epoch == 1 else None
    desc = f"{net.kind} epoch {epoch}"
    show = bool(cfg["progress"]) and is_root()
    bar = Progress(len(batches), desc, unit="batch", enabled=show, first_note=note)
    t0 = time.perf_counter()
    try:
        row: dict[str, Any] = train_epoch(net.model, net.opt, net.loss_fn, batches, bar, dp=net.dp)
    finally:
        bar.close()
    t1 = time.perf_counter()
    # under mpiexec every rank evaluates its share of the test set (rank 0's statistics)
    run_eval = evaluate if net.dp is None else net.dp.evaluate
    ev = run_eval(
        net.model, data.x_test, data.y_test, int(cfg["eval_batch_size"]), loss_fn=net.loss_fn
    )
    t2 = time.perf_counter()
    row.update(epoch=epoch, test_loss=ev["loss"], test_accuracy=ev["accuracy"])
    row.update(lr=net.opt.current_lr(), train_time_s=t1 - t0, eval_time_s=t2 - t1)
    row["epoch_time_s"] = t2 - t0
    for k in HISTORY_KEYS:
        net.history[k].append(row[k])
    if not is_root():
        return
    print(
        f"[cifar10-keras] {net.kind:8s} epoch {epoch:3d}: train loss {row['train_loss']:.4f} "
        f"acc {row['train_accuracy']:.4f} | test loss {row['test_loss']:.4f} "
        f"acc {row['test_accuracy']:.4f} | {row['epoch_time_s']:.1f} s ({data.source['tag']})",
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
            f"cifar10-keras --resume: {path} is not a cifar10-keras metrics file (no per-net "
            "history); resume needs the run's own files: use --force to start afresh"
        )
    return models  # type: ignore[return-value]


def _prepare(cfg: dict[str, Any], out: Path, nets: list[_Net]) -> None:
    """Write config.json, or with ``resume`` check it against the old one and restore."""
    old_cfg_path, old_metrics = out / "config.json", out / "metrics.json"
    if cfg["resume"] and old_cfg_path.is_file():
        if is_root():  # rank 0 writes; the other ranks only read
            lock_run_dir(out)
        old = read_json(old_cfg_path)
        if not isinstance(old, dict):
            raise ValueError(f"cifar10-keras --resume: {old_cfg_path} is not a bnlab config")
        diff = [k for k in _RESUME_KEYS if old.get(k) != cfg[k]]
        if diff:
            raise ValueError(
                f"cifar10-keras --resume: {out} was run with different {diff}: "
                f"{ {k: old.get(k) for k in diff} }; use a new --out or the same options"
            )
        hist = _resumable_history(old_metrics)
        for net in nets:
            if net.ckpt.is_file() and net.kind in hist:
                net.restore(hist[net.kind]["history"])
        if is_root():
            write_json(old_cfg_path, cfg)
    elif is_root():
        start_run_dir(out, cfg)


def run(config: dict[str, Any], out_dir: str | Path) -> Path:
    """Train the nets epoch by epoch in alternation; write metrics, checkpoints and report."""
    cfg = resolve(config)
    path = kd.resolve_data_path(cfg["data"])
    source = kd.describe_source(path)
    data = kd.load(
        path, source, cfg["train_subset"], cfg["test_subset"],
        progress=None if cfg["progress"] and is_root() else False,
    )  # fmt: skip
    check_data(cfg, len(data.y_train), len(data.y_test))
    out = Path(out_dir)
    cfg["data"], cfg["data_source"] = str(path), source
    nets = [_Net(kind, cfg, out) for kind in cfg["models"]]
    try:
        _prepare(cfg, out, nets)
    except BaseException:
        release_run_dir(out)
        raise
    t0 = time.perf_counter()

    def snapshot(st: str) -> None:
        if not is_root():
            return
        write_metrics(
            out,
            {
                "schema": SCHEMA,
                "experiment": cfg["experiment"],
                "status": st,
                "epochs_total": int(cfg["epochs"]),
                "data": source,
                "n_train": len(data.y_train),
                "n_test": len(data.y_test),
                "wall_time_s": round(time.perf_counter() - t0, 3),
                "models": {n.kind: n.to_json() for n in nets},
            },
        )

    def finish(st: str) -> None:
        try:
            snapshot(st)
            if is_root():
                render(out)
        finally:
            release_run_dir(out)

    with run_status(finish):
        snapshot("running")
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            for _ in range(int(cfg["epochs"])):
                for net in nets:
                    if net.error is None and net.epochs_done < int(cfg["epochs"]):
                        try:
                            _run_epoch(net, data, cfg)
                        except FloatingPointError as e:
                            net.error = str(e)
                        net.save()
                        snapshot("running")
    return out


def render(run_dir: str | Path) -> Path:
    """Re-draw the figures and rewrite report.md/report.html from the run's files."""
    from bnlab.experiments import cifar10_keras_report

    return cifar10_keras_report.render(Path(run_dir))
