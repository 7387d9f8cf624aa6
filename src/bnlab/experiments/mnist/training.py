"""Many (net, learning rate, seed) runs trained in lockstep through :class:`~bnlab.train.Trainer`.

All runs advance one step at a time together, so an interrupted run directory holds every
curve up to the same step. ``metrics.json`` (:mod:`bnlab.experiments.mnist.metrics`) is
rewritten atomically after every evaluation with status "running"; at the end it becomes
"complete", or "interrupted" after Ctrl-C, or "failed".
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.mnist.config import MnistConfig
from bnlab.experiments.mnist.metrics import HISTORY_KEYS, SCHEMA, write_metrics
from bnlab.experiments.mnist.nets import NETS, build_net, last_sigmoid_index, load_data
from bnlab.experiments.progress import Progress
from bnlab.experiments.rundir import RunDir
from bnlab.runtime import numba_threads
from bnlab.train import (
    ActivationMonitor,
    EvalCallback,
    PeriodicCallback,
    Trainer,
    for_experiment,
    is_root,
)

__all__ = [
    "Run",
    "make_runs",
    "progress_text",
    "run_experiment",
    "save_checkpoints",
    "train_lockstep",
]


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
        """The run's entry of ``metrics.json``."""
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


def _trainer(
    cfg: MnistConfig, net: str, lr: float, seed: int, data: tuple[np.ndarray, ...]
) -> Trainer:
    """SGD on the run's net with its own batches (seeded by ``seed``) and, on rank 0, the
    evaluation and the activation monitor every ``eval_every`` steps."""
    from bnlab.data import BatchIterator
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD

    xtr, ytr, xte, yte = data
    every, ebs = cfg.eval_every, cfg.eval_batch_size
    model = build_net(
        net == "bn", seed, cfg.hidden, cfg.init_std, cfg.bn_momentum, cfg.bn_eps, xtr.shape[1]
    )
    model, dp = for_experiment(model, cfg.to_dict())  # data-parallel under mpiexec
    callbacks = [
        EvalCallback(xte, yte, every=every, batch_size=ebs),
        ActivationMonitor(
            xte,
            layer_index=last_sigmoid_index(model),
            unit=cfg.monitor_unit,
            every=every,
            batch_size=ebs,
        ),
    ]
    batches = BatchIterator(xtr, ytr, cfg.batch_size, shuffle=True, drop_last=True, seed=seed)
    opt = SGD.from_model(model, lr=float(lr))
    if not is_root():
        callbacks = []  # rank 0 alone evaluates and records
    return Trainer(model, SoftmaxCrossEntropy(), opt, batches, callbacks=callbacks, parallel=dp)


def make_runs(cfg: MnistConfig, lrs: Sequence[float], data: tuple[np.ndarray, ...]) -> list[Run]:
    """Every (lr, seed, net) run, in that order, each with its own iterator seeded by the
    run's seed."""
    return [
        Run(net, float(lr), seed, _trainer(cfg, net, float(lr), seed, data))
        for lr in lrs
        for seed in range(cfg.seed, cfg.seed + cfg.seeds)
        for net in NETS
    ]


def _final_eval(run: Run, step: int) -> None:
    """Evaluate a run at ``step`` unless its last record is there already (or it diverged)."""
    hist = run.trainer.state.history
    if run.diverged_at is None and step > 0 and (not hist or hist[-1]["step"] != step):
        for cb in run.trainer.callbacks:
            if isinstance(cb, PeriodicCallback):
                cb.record(run.trainer.state)


def progress_text(runs: Sequence[Run], max_lrs: int = 3) -> str:
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


@dataclass
class _Lockstep:
    """The state of one lockstep training: how far it got, and writing its metrics."""

    cfg: MnistConfig
    runs: Sequence[Run]
    rd: RunDir
    bar: Any
    t0: float = field(default_factory=time.perf_counter)
    done: int = 0

    def snapshot(self, status: str) -> dict[str, Any]:
        """The ``metrics.json`` dict after ``done`` steps, written by rank 0."""
        m: dict[str, Any] = {"schema": SCHEMA, "experiment": self.cfg.NAME, "status": status}
        m |= {"steps_done": self.done, "steps_total": self.cfg.steps}
        m |= {"wall_time_s": round(time.perf_counter() - self.t0, 3)}
        m["runs"] = [r.to_json() for r in self.runs]
        if is_root():
            write_metrics(self.rd, m)
        return m

    def loop(self) -> None:
        """Step every live run until ``steps`` or until all diverged; evaluate at the end."""
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            for step in range(1, self.cfg.steps + 1):
                _step_all(self.runs, step)
                self.done = step
                if step % self.cfg.eval_every == 0:
                    self.snapshot("running")
                    self.bar.set_postfix_str(progress_text(self.runs))
                self.bar.update(1)
                if all(r.diverged_at is not None for r in self.runs):
                    break
            for r in self.runs:
                _final_eval(r, self.done)


def train_lockstep(cfg: MnistConfig, runs: Sequence[Run], rd: RunDir) -> dict[str, Any]:
    """Advance every run (``trainer.begin()`` called already) one step at a time; a run whose
    loss turns NaN/Inf is recorded as diverged at that step and dropped. Writes metrics (rank
    0) after every evaluation and at the end; on KeyboardInterrupt writes them with status
    "interrupted" and re-raises."""
    ls = _Lockstep(cfg, runs, rd, Progress(cfg.steps, cfg.NAME, enabled=cfg.progress))
    # (60, 100) tensors: a parallel kernel's fork/join costs more than it saves, and on a busy
    # 2-core machine spinning OpenMP threads made one BN call ~8 ms instead of ~0.05 ms
    threads = numba_threads(1)
    metrics: dict[str, Any] = {}

    def finish(status: str) -> None:
        numba_threads(threads)
        ls.bar.close()
        metrics.update(ls.snapshot(status))

    with rd.status(finish):
        ls.snapshot("running")
        ls.loop()
    if cfg.save_checkpoints and is_root():
        save_checkpoints(runs, rd)
    return metrics


def save_checkpoints(runs: Sequence[Run], rd: RunDir) -> None:
    """Each run's final model and optimizer in ``checkpoints/NAME.npz``."""
    from bnlab.deploy.checkpoint import save_checkpoint

    (rd.path / "checkpoints").mkdir(exist_ok=True)
    for r in runs:
        st = r.trainer.state
        save_checkpoint(
            rd.path / "checkpoints" / f"{r.name}.npz",
            st.model,
            st.optimizer,
            extra={"step": st.step, "diverged_at": r.diverged_at},
        )


def run_experiment(cfg: MnistConfig, out_dir: str | Path, render: Callable[[Path], None]) -> Path:
    """Load the data, build every run, take the run directory over (rank 0), train in
    lockstep, then ``render(run_dir)`` (rank 0) however training ended; returns the run
    directory. ``cfg`` is checked already, so a bad config leaves ``out_dir`` untouched."""
    data = load_data(cfg.train_subset, cfg.test_subset)
    runs = make_runs(cfg, cfg.learning_rates(), data)
    for r in runs:  # under mpiexec the ranks agree (or all refuse) before out_dir is touched
        r.trainer.begin()
    rd = RunDir.start(out_dir, cfg.to_dict()) if is_root() else RunDir(out_dir)  # rank 0 writes
    try:
        train_lockstep(cfg if is_root() else dataclasses.replace(cfg, progress=False), runs, rd)
    finally:
        try:
            render(rd.path) if is_root() else None
        finally:
            rd.release()
    return rd.path
