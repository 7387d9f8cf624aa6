"""Experiment ``renorm-small-batch``: Ioffe 2017 (arXiv 1702.03275), sections 4.3 and 4.4.

Options: :class:`bnlab.experiments.renorm_small_batch.config.RenormConfig`.

Batch normalization over very small or non-i.i.d. minibatches, with and without batch
renormalization, on MNIST. The network is 784-100-100-100-10 with every hidden layer
Dense(use_bias=False) -> BatchNorm or BatchRenorm -> ReLU (He-normal weights; ``activation``
may be "sigmoid", then Glorot-uniform), inputs x / 255, trained by SGD with momentum 0.9 on
minibatches of 32 for ``steps`` steps. The runs (all from the same seed and weights):

- ``bn-full``: BN over the whole minibatch of 32, i.i.d. batches: the reference;
- ``bn-microK`` / ``renorm-microK`` for K in ``micro_sizes`` (default 4 and 2): the statistics
  come from microbatches of K examples (``virtual_batch_size=K``: ghost batches), the
  gradient from the whole minibatch of 32, as the paper's microbatch setup;
- ``bn-noniid`` / ``renorm-noniid``: statistics over the whole 32, but every minibatch holds
  16 examples of each of 2 random classes.

With ``seeds`` N > 1 every run is repeated from seeds ``seed``..``seed``+N-1 (the weights,
the batch order and the training-mode grouping all follow the seed; seed 0 trains exactly as
a one-seed run) and each ``runs`` entry of ``metrics.json`` carries its ``"seed"``; with N = 1
the entries have no ``"seed"`` key, as before the option existed.

Both normalizations use momentum 0.01 (the moving statistics move 1% towards each batch's)
and eps 1e-3. The renorm schedule is the paper's (warm-up 5k steps as plain BN, dmax 0 -> 5 at
25k, rmax 1 -> 3 at 40k) scaled to the run: warm-up ``warmup_frac`` (10%) of the steps, dmax
at max at ``dmax_frac`` (50%), rmax at ``rmax_frac`` (80%), so the ratios 1 : 5 : 8 are kept.

Every ``eval_every`` steps each run records its test accuracy in inference mode (moving
statistics, the full 10,000 test images) and in training mode: the test images pass through
the net in training mode in the same groups as at training time (microbatches of K, 32-example
batches, or 2-class batches for the non-i.i.d. runs; 9,984 images in i.i.d. groups, a fixed
random order), with the network's state restored afterwards. Their difference is the
train/inference gap that batch renorm is meant to close.

Files: ``config.json``, ``metrics.json`` (schema below), ``metrics.csv``, ``fig_accuracy.png``,
``fig_final.png``, ``report.md``, ``report.html``::

    {"schema": "bnlab.renorm.metrics/1", "experiment": "renorm-small-batch",
     "status": "running" | "complete" | "interrupted" | "failed", "wall_time_s": float,
     "schedule": {"warmup_steps": int, "dmax_steps": int, "rmax_steps": int},
     "runs": [{"name": "renorm-micro4", "seed": int (only when seeds > 1),
               "norm": "bn" | "renorm", "group": int,
               "batches": "iid" | "noniid", "error": str | null, "time_s": float,
               "compile_s": float,  # of time_s: Numba compiling kernels (0 from the cache)
               "history": {"step": [...], "train_loss": [...], "test_acc": [...],
                           "train_mode_acc": [...]}}]}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.data.noniid import NonIIDBatches
from bnlab.experiments.mnist.nets import load_data
from bnlab.experiments.progress import BarCallback, Progress
from bnlab.experiments.renorm_small_batch.config import RenormConfig, renorm_schedule, run_specs
from bnlab.experiments.renorm_small_batch.report import HISTORY_KEYS, render, write_metrics
from bnlab.experiments.rundir import RunDir
from bnlab.experiments.timing import numba_compile_time
from bnlab.layers import Layer
from bnlab.runtime import blas_threads
from bnlab.train import Callback, TrainState

__all__ = [
    "RecordCallback",
    "build_net",
    "norm_layers",
    "run",
    "train_mode_accuracy",
    "train_mode_order",
    "train_one",
]


def build_net(spec: dict[str, Any], cfg: RenormConfig) -> Layer:
    """Dense(no bias) -> BN/BatchRenorm -> ReLU/Sigmoid per hidden layer, then Dense(10)."""
    from bnlab.layers import BatchNorm, BatchRenorm, Dense, ReLU, Sequential, Sigmoid

    relu = cfg.activation == "relu"
    init = "he_normal" if relu else "glorot_uniform"
    # every net gets virtual_batch_size = its group (32 for the full-batch runs: the same as
    # None on a batch of 32), so a training-mode pass over many test images keeps the groups
    vbs = int(spec["group"])
    mom, eps = float(cfg.momentum), float(cfg.eps)
    sched = renorm_schedule(cfg)
    layers: list[Any] = []
    fan_in, seed = 784, int(cfg.seed)
    for i, width in enumerate(cfg.hidden):
        w = int(width)
        layers.append(Dense(fan_in, w, use_bias=False, init=init, seed=seed * 1000 + i))
        if spec["norm"] == "bn":
            layers.append(BatchNorm(w, momentum=mom, eps=eps, virtual_batch_size=vbs))
        else:
            layers.append(
                BatchRenorm(
                    w,
                    momentum=mom,
                    eps=eps,
                    rmax=float(cfg.rmax),
                    dmax=float(cfg.dmax),
                    warmup_steps=sched["warmup_steps"],
                    rmax_steps=sched["rmax_steps"],
                    dmax_steps=sched["dmax_steps"],
                    virtual_batch_size=vbs,
                )  # fmt: skip
            )
        layers.append(ReLU() if relu else Sigmoid())
        fan_in = int(width)
    layers.append(Dense(fan_in, 10, init="glorot_uniform", seed=seed * 1000 + 999))
    return Sequential(layers)


def train_mode_order(spec: dict[str, Any], y: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """Test indices in the groups the net sees in training: a fixed random order cut to whole
    batches (i.i.d.), or as many 2-class batches as the test set has whole batches."""
    rng = np.random.default_rng(seed + 7919)
    n_batches = len(y) // batch_size
    if spec["batches"] == "noniid":
        sampler = NonIIDBatches(y[:, None], y, batch_size, seed + 7919)
        return np.concatenate([sampler.indices() for _ in range(n_batches)])
    return rng.permutation(len(y))[: n_batches * batch_size]


def norm_layers(model: Any) -> list[Any]:
    """The layers of ``model`` with running statistics (BatchNorm, BatchRenorm)."""
    return [layer for layer in model.layers if "running_mean" in layer.buffers]


def train_mode_accuracy(
    model: Any, x: np.ndarray, y: np.ndarray, order: np.ndarray, chunk: int
) -> float:
    """Accuracy of training-mode forwards over ``x[order]``, ``chunk`` examples a call (a
    multiple of every layer's virtual batch size, so the groups are those of training); every
    BN/renorm buffer is restored after each call, so all groups see the same state."""
    saved = [
        {k: np.array(v, copy=True) for k, v in la.buffers.items()} for la in norm_layers(model)
    ]
    correct = 0
    model.train()
    try:
        for i in range(0, len(order), chunk):
            idx = order[i : i + chunk]
            correct += int(np.sum(np.argmax(model.forward(x[idx]), axis=1) == y[idx]))
            for la, buf in zip(norm_layers(model), saved, strict=True):
                for k, v in buf.items():
                    la.buffers[k][...] = v
    finally:
        model.train()
    return correct / len(order)


class RecordCallback(Callback):
    """Every ``every`` steps (and at step 0 and the end): inference and training-mode accuracy."""

    def __init__(self, x: np.ndarray, y: np.ndarray, order: np.ndarray, every: int, chunk: int):
        self.x, self.y, self.order, self.every, self.chunk = x, y, order, every, chunk

    def record(self, state: TrainState) -> None:
        from bnlab.train import evaluate

        test_acc = evaluate(state.model, self.x, self.y, batch_size=2000)["accuracy"]
        tm = train_mode_accuracy(state.model, self.x, self.y, self.order, self.chunk)
        state.record(test_acc=test_acc, train_mode_acc=tm)

    def on_train_begin(self, state: TrainState) -> None:
        self.record(state)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self.record(state)

    def on_train_end(self, state: TrainState) -> None:
        if state.history and state.history[-1]["step"] != state.step:
            self.record(state)


def train_one(
    spec: dict[str, Any],
    cfg: RenormConfig,
    data: tuple[np.ndarray, ...],
    bar: Progress | None = None,
) -> TrainState:
    """Train one run; returns its TrainState."""
    from bnlab.data import BatchIterator
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD
    from bnlab.train import Trainer

    xtr, ytr, xte, yte = data
    bs, seed = int(cfg.batch_size), int(cfg.seed)
    model = build_net(spec, cfg)
    if spec["batches"] == "noniid":
        batches: Any = NonIIDBatches(xtr, ytr, bs, seed)
    else:
        batches = BatchIterator(xtr, ytr, bs, shuffle=True, drop_last=True, seed=seed)
    order = train_mode_order(spec, yte, bs, seed)
    cb = RecordCallback(xte, yte, order, int(cfg.eval_every or 1), bs * max(1, 1024 // bs))
    opt = SGD.from_model(model, lr=float(cfg.lr), momentum=0.9)
    callbacks = [cb, BarCallback(bar)]
    trainer = Trainer(model, SoftmaxCrossEntropy(), opt, batches, callbacks=callbacks)
    return trainer.fit(int(cfg.steps))


def run(config: dict[str, Any] | RenormConfig, out_dir: str | Path) -> Path:
    """Train every run of :func:`run_specs` in turn, for each seed (seed-major); write
    metrics, figures and the report.

    ``config`` (a dict: missing keys take the defaults) is checked whole before the run
    directory is touched; a bad value is a ValueError and changes nothing on disk.
    """
    cfg = RenormConfig.of(config)
    data = load_data(cfg.train_subset, cfg.test_subset)
    specs, sched = run_specs(cfg), renorm_schedule(cfg)
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    seeds = range(int(cfg.seed), int(cfg.seed) + int(cfg.seeds))
    total = int(cfg.steps) * len(specs) * len(seeds)
    bar = Progress(total, cfg.NAME, enabled=bool(cfg.progress))
    settings = cfg.to_dict()

    with RunDir.start(out_dir, settings) as rd:

        def finish(status: str) -> None:
            bar.close()
            write_metrics(rd, settings, sched, results, status, time.perf_counter() - t0)
            render(rd.path)

        with rd.status(finish):
            write_metrics(rd, settings, sched, results, "running", 0.0)
            for seed in seeds:
                # seed k trains as a one-seed run with --seed k; its entries say their seed
                tag = {"seed": seed} if len(seeds) > 1 else {}
                for spec in specs:
                    results.append(_train_entry({**spec, **tag}, cfg.replace(seed=seed), data, bar))
                    wall = time.perf_counter() - t0
                    write_metrics(rd, settings, sched, results, "running", wall)
                    name = spec["name"] + (f" seed {seed}" if tag else "")
                    bar.set_postfix_str(f"test acc {name}: {_final(results[-1])}")
    return rd.path


def _train_entry(
    spec: dict[str, Any], cfg: RenormConfig, data: tuple[np.ndarray, ...], bar: Progress
) -> dict[str, Any]:
    """Train run ``spec``; its metrics.json entry (a diverged run: its error, no history)."""
    t = time.perf_counter()
    keys = HISTORY_KEYS
    entry: dict[str, Any] = {**spec, "error": None, "history": {k: [] for k in keys}}
    done_before = bar.n
    try:
        with blas_threads(1), numba_compile_time() as compiling:
            state = train_one(spec, cfg, data, bar)
        entry["compile_s"] = round(compiling.seconds, 3)
        entry["history"] = {k: [row.get(k) for row in state.history] for k in keys}
    except FloatingPointError as e:
        entry["error"] = str(e)
    entry["time_s"] = round(time.perf_counter() - t, 3)
    bar.update(done_before + int(cfg.steps) - bar.n)  # a diverged run stops early
    return entry


def _final(entry: dict[str, Any]) -> str:
    acc = entry["history"]["test_acc"]
    return "diverged" if entry["error"] else (f"{acc[-1]:.4f}" if acc else "-")
