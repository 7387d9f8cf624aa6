"""The machinery shared by ``mnist-sigmoid`` and ``mnist-lr``: data, the two nets, and a loop
that trains many (net, learning rate, seed) runs in lockstep and writes ``metrics.json``.

All runs advance one step at a time together, so an interrupted run directory holds every
curve up to the same step. ``metrics.json`` is rewritten (atomically) after every evaluation,
with ``status`` "running"; at the end it becomes "complete", or "interrupted" after Ctrl-C.
The schema is documented in :mod:`bnlab.experiments.mnist_sigmoid`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.monitor import ActivationMonitor
from bnlab.experiments.options import (
    BN_SYNC,
    Check,
    Opt,
    add_options,
    check_choices,
    check_config,
    check_count,
    check_model_bytes,
    check_unknown,
    checks_of,
    defaults_of,
    mlp_params,
)
from bnlab.experiments.report import read_json, run_status, write_csv, write_json
from bnlab.parallel import for_experiment, is_root
from bnlab.runtime import numba_threads
from bnlab.train import EvalCallback, PeriodicCallback, Trainer

SCHEMA = "bnlab.mnist.metrics/1"
HISTORY_KEYS = ("step", "train_loss", "accuracy", "p15", "p50", "p85")
NETS = ("plain", "bn")

# Options shared by both experiments (config key -> default). Each experiment adds its own.
MOMENTUM_HINT = "the weight of the new batch (PyTorch's convention: Keras' 0.99 is 0.01 here)"
# the options both experiments share, each once: its flag, default (shown by --help), check
# and config.json entry; each experiment adds its own (and may change a default)
COMMON_OPTIONS: dict[str, Opt] = {
    "steps": Opt(50_000, "SGD steps per run", Check(int, 1)),
    "batch_size": Opt(
        60, "examples per step", Check(int, 2, hint="BatchNorm needs at least 2 examples a batch")
    ),
    "seeds": Opt(1, "repeat with K seeds; mean and min-max band", Check(int, 1)),
    "seed": Opt(0, "first seed", Check(int, 0)),
    "hidden": Opt([100, 100, 100], "hidden widths", Check(int, 1), nargs="+"),
    "init_std": Opt(0.1, "std of the N(0, std^2) weights", Check(float, 0, lo_open=True)),
    "eval_every": Opt(
        None, "evaluate every N steps (default: steps/100)", Check(int, 1, optional=True)
    ),
    "eval_batch_size": Opt(2000, "examples per forward", Check(int, 1)),
    "monitor_unit": Opt(
        0, "unit of the last hidden layer whose sigmoid input is tracked", Check(int, 0)
    ),
    "bn_momentum": Opt(0.1, "BN: " + MOMENTUM_HINT, Check(float, 0, 1, hint=MOMENTUM_HINT)),
    "bn_eps": Opt(1e-5, "BN's epsilon", Check(float, 0, lo_open=True)),
    "train_subset": Opt(
        None, "use the first N train images (default: all)", Check(int, 1, optional=True)
    ),
    "test_subset": Opt(
        None, "use the first N test images (default: all)", Check(int, 1, optional=True)
    ),
    "progress": Opt(True, "no progress bar", negate="--no-progress"),
    "save_checkpoints": Opt(False, "save each net's final model to checkpoints/NAME.npz"),
    "bn_sync": BN_SYNC,
}
COMMON_DEFAULTS: dict[str, Any] = defaults_of(COMMON_OPTIONS)
COMMON_CHECKS: dict[str, Check] = checks_of(COMMON_OPTIONS)
MNIST_TRAIN, MNIST_TEST = 60_000, 10_000


def add_common_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """The ``bnlab run`` options both MNIST experiments accept, with ``defaults``."""
    opts = {k: dataclasses.replace(o, default=defaults[k]) for k, o in COMMON_OPTIONS.items()}
    add_options(p, opts)


def resolve_config(
    config: dict[str, Any], defaults: dict[str, Any], experiment: str
) -> dict[str, Any]:
    """``defaults`` updated by ``config``; unknown keys and bad values raise ValueError.

    Every option of :data:`COMMON_CHECKS` is checked, and so are the ones that depend on
    each other (``monitor_unit`` < the last hidden width, ``batch_size`` <= the training
    images); nothing is written before this returns.
    """
    check_unknown(config, list(defaults), experiment)
    cfg = {**defaults, **config, "experiment": experiment}
    check_config(cfg, COMMON_CHECKS, experiment)
    check_choices(cfg, COMMON_OPTIONS, experiment)
    cfg["hidden"] = [int(w) for w in cfg["hidden"]]
    if cfg["eval_every"] is None:
        cfg["eval_every"] = max(1, int(cfg["steps"]) // 100)
    last = cfg["hidden"][-1]
    if int(cfg["monitor_unit"]) >= last:
        raise ValueError(
            f"{experiment}: --monitor-unit {cfg['monitor_unit']} is not a unit of the last "
            f"hidden layer, which has {last}; pass 0..{last - 1}"
        )
    n_train = check_count(cfg["train_subset"], MNIST_TRAIN, "train_subset", "images", experiment)
    check_count(cfg["test_subset"], MNIST_TEST, "test_subset", "images", experiment)
    if int(cfg["batch_size"]) > n_train:
        raise ValueError(
            f"{experiment}: --batch-size {cfg['batch_size']} is larger than the {n_train} "
            "training images; pass a smaller --batch-size or a larger --train-subset"
        )
    return cfg


def check_size(cfg: dict[str, Any], n_lrs: int, experiment: str) -> None:
    """Refuse a config whose nets (2 per learning rate and seed) would not fit in memory."""
    n_nets = 2 * int(n_lrs) * int(cfg["seeds"])
    fix = "lower --hidden, --seeds or the number of learning rates"
    check_model_bytes(n_nets, mlp_params(784, cfg["hidden"], 10), experiment, fix)


def load_data(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST as float32 rows of 784 pixels scaled to [0, 1] (x / 255), labels int64."""
    from bnlab.data import load_mnist

    (xtr, ytr), (xte, yte) = load_mnist()

    def prep(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
        if n is not None:
            x, y = x[: int(n)], y[: int(n)]
        return x.reshape(len(x), -1).astype(np.float32) / np.float32(255), y.astype(np.int64)

    xtr, ytr = prep(xtr, ytr, cfg["train_subset"])
    xte, yte = prep(xte, yte, cfg["test_subset"])
    return xtr, ytr, xte, yte


def build_net(bn: bool, cfg: dict[str, Any], seed: int, n_in: int = 784, n_out: int = 10) -> Any:
    """784-100-100-100-10 with sigmoid hidden units; weights N(0, init_std^2), biases 0.

    With ``bn`` every hidden layer is Dense(use_bias=False) -> BatchNorm -> Sigmoid (beta
    replaces the bias). The same ``seed`` gives both nets the same weight matrices.
    """
    from bnlab.initializers import normal
    from bnlab.layers import Dense, Sequential, Sigmoid

    if bn:
        from bnlab.layers import BatchNorm
    init = normal(float(cfg["init_std"]))
    layers: list[Any] = []
    fan_in = n_in
    for i, width in enumerate(cfg["hidden"]):
        wseed = int(seed) * 1000 + i
        layers.append(Dense(fan_in, int(width), use_bias=not bn, init=init, seed=wseed))
        if bn:
            layers.append(
                BatchNorm(int(width), momentum=float(cfg["bn_momentum"]), eps=float(cfg["bn_eps"]))
            )
        layers.append(Sigmoid())
        fan_in = int(width)
    layers.append(Dense(fan_in, n_out, init=init, seed=int(seed) * 1000 + 999))
    return Sequential(layers)


def last_sigmoid_index(model: Any) -> int:
    """Index in ``model.layers`` of the last Sigmoid (the last hidden layer's nonlinearity)."""
    from bnlab.layers import Sigmoid

    idx = [i for i, layer in enumerate(model.layers) if isinstance(layer, Sigmoid)]
    if not idx:
        raise ValueError("the model has no Sigmoid layer to monitor")
    return idx[-1]


@dataclass
class Run:
    """One net trained at one learning rate from one seed."""

    net: str
    lr: float
    seed: int
    trainer: Trainer
    diverged_at: int | None = None
    error: str | None = None
    time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.net}-lr{self.lr:g}-seed{self.seed}"

    def to_json(self) -> dict[str, Any]:
        hist = self.trainer.state.history
        return {
            "name": self.name,
            "net": self.net,
            "lr": self.lr,
            "seed": self.seed,
            "diverged_at": self.diverged_at,
            "error": self.error,
            "time_s": round(self.time_s, 3),
            "history": {k: [row.get(k) for row in hist] for k in HISTORY_KEYS},
        }


def make_runs(cfg: dict[str, Any], lrs: Sequence[float], data: tuple[np.ndarray, ...]) -> list[Run]:
    """Every (lr, seed, net) run, each with its own iterator seeded by the run's seed."""
    from bnlab.data import BatchIterator
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD

    xtr, ytr, xte, yte = data
    every, ebs = int(cfg["eval_every"]), int(cfg["eval_batch_size"])
    runs = []
    for lr in lrs:
        for seed in range(int(cfg["seed"]), int(cfg["seed"]) + int(cfg["seeds"])):
            for net in NETS:
                model = build_net(net == "bn", cfg, seed, xtr.shape[1])
                model, dp = for_experiment(model, cfg)  # data-parallel under mpiexec
                callbacks = [
                    EvalCallback(xte, yte, every=every, batch_size=ebs),
                    ActivationMonitor(
                        xte,
                        layer_index=last_sigmoid_index(model),
                        unit=int(cfg["monitor_unit"]),
                        every=every,
                        batch_size=ebs,
                    ),
                ]
                batches = BatchIterator(
                    xtr, ytr, int(cfg["batch_size"]), shuffle=True, drop_last=True, seed=seed
                )
                opt = SGD.from_model(model, lr=float(lr))
                if not is_root():
                    callbacks = []  # rank 0 alone evaluates and records
                trainer = Trainer(
                    model, SoftmaxCrossEntropy(), opt, batches, callbacks=callbacks, parallel=dp
                )
                runs.append(Run(net, float(lr), seed, trainer))
    return runs


def metrics_json(
    cfg: dict[str, Any], runs: Sequence[Run], status: str, step: int, wall: float
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "experiment": cfg["experiment"],
        "status": status,
        "steps_done": step,
        "steps_total": int(cfg["steps"]),
        "wall_time_s": round(wall, 3),
        "runs": [r.to_json() for r in runs],
    }


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` and ``metrics.csv`` (one row per run and evaluation step)."""
    write_json(out_dir / "metrics.json", metrics)
    rows = []
    for r in metrics["runs"]:
        h = r["history"]
        for i in range(len(h["step"])):
            rows.append([r["name"], r["net"], r["lr"], r["seed"], *(h[k][i] for k in HISTORY_KEYS)])
    write_csv(out_dir / "metrics.csv", ["run", "net", "lr", "seed", *HISTORY_KEYS], rows)


def _final_eval(run: Run, step: int) -> None:
    """Evaluate a run at ``step`` unless its last record is there already (or it diverged)."""
    hist = run.trainer.state.history
    if run.diverged_at is None and step > 0 and (not hist or hist[-1]["step"] != step):
        for cb in run.trainer.callbacks:
            if isinstance(cb, PeriodicCallback):
                cb.record(run.trainer.state)


def _postfix(runs: Sequence[Run], max_lrs: int = 3) -> str:
    """The latest test accuracy of the first seed's nets, labelled by learning rate:
    ``test acc (seed 0): lr0.1 plain 0.9012 bn 0.9431 | lr3 plain ... bn ...``."""
    if not runs:
        return ""
    seed = runs[0].seed
    parts: dict[float, list[str]] = {}
    for r in runs:
        if r.seed != seed:
            continue
        acc = r.trainer.state.logs.get("accuracy")
        val = "diverged" if r.diverged_at else ("-" if acc is None else f"{acc:.4f}")
        parts.setdefault(r.lr, []).append(f"{r.net} {val}")
    shown = [f"lr{lr:g} " + " ".join(v) for lr, v in list(parts.items())[:max_lrs]]
    more = " | ..." if len(parts) > max_lrs else ""
    return f"test acc (seed {seed}): " + " | ".join(shown) + more


def _step_all(runs: Sequence[Run], step: int) -> None:
    """One step of every live run; a FloatingPointError marks that run diverged at ``step``."""
    for r in runs:
        if r.diverged_at is not None:
            continue
        t = time.perf_counter()
        try:
            r.trainer.step()
        except FloatingPointError as e:
            r.diverged_at, r.error = step, str(e)
        r.time_s += time.perf_counter() - t


def train_lockstep(
    cfg: dict[str, Any],
    runs: Sequence[Run],
    out_dir: Path,
) -> dict[str, Any]:
    """Advance every run one step at a time; a run whose loss turns NaN/Inf is recorded as
    diverged at that step and dropped. Writes metrics after every evaluation and at the end;
    on KeyboardInterrupt writes them with status "interrupted" and re-raises."""
    steps, every = int(cfg["steps"]), int(cfg["eval_every"])
    from bnlab.experiments.progress import Progress

    bar = Progress(steps, cfg["experiment"], enabled=bool(cfg["progress"]))
    t0, done = time.perf_counter(), 0

    def snapshot(st: str) -> dict[str, Any]:
        m = metrics_json(cfg, runs, st, done, time.perf_counter() - t0)
        if is_root():
            write_metrics(out_dir, m)
        return m

    # (60, 100) tensors: a parallel kernel's fork/join costs more than it saves, and on a busy
    # 2-core machine spinning OpenMP threads made one BN call ~8 ms instead of ~0.05 ms
    threads = numba_threads(1)
    metrics: dict[str, Any] = {}

    def finish(st: str) -> None:
        numba_threads(threads)
        bar.close()
        metrics.update(snapshot(st))

    with run_status(finish):
        for r in runs:
            r.trainer.begin()
        snapshot("running")
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            for step in range(1, steps + 1):
                _step_all(runs, step)
                done = step
                if step % every == 0:
                    snapshot("running")
                    bar.set_postfix_str(_postfix(runs))
                bar.update(1)
                if all(r.diverged_at is not None for r in runs):
                    break
            for r in runs:
                _final_eval(r, done)
    if cfg["save_checkpoints"] and is_root():
        save_checkpoints(runs, out_dir)
    return metrics


def save_checkpoints(runs: Sequence[Run], out_dir: Path) -> None:
    """Each run's final model and optimizer in ``checkpoints/NAME.npz``."""
    from bnlab.deploy.checkpoint import save_checkpoint

    (out_dir / "checkpoints").mkdir(exist_ok=True)
    for r in runs:
        st = r.trainer.state
        save_checkpoint(
            out_dir / "checkpoints" / f"{r.name}.npz",
            st.model,
            st.optimizer,
            extra={"step": st.step, "diverged_at": r.diverged_at},
        )


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, metrics)`` of a run directory (metrics empty if training never started)."""
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json")
    mpath = run_dir / "metrics.json"
    metrics = read_json(mpath) if mpath.is_file() else {"status": "not started", "runs": []}
    return cfg, metrics


def group(metrics: dict[str, Any], lr: float, net: str) -> list[dict[str, Any]]:
    """The runs (one per seed) of ``net`` at learning rate ``lr``."""
    return [r for r in metrics["runs"] if r["net"] == net and np.isclose(r["lr"], lr)]


def lrs_of(metrics: dict[str, Any]) -> list[float]:
    """The learning rates of a metrics dict, in first-seen order."""
    out: list[float] = []
    for r in metrics["runs"]:
        if not any(np.isclose(r["lr"], v) for v in out):
            out.append(float(r["lr"]))
    return out
