"""Experiment ``renorm-small-batch``: Ioffe 2017 (arXiv 1702.03275), sections 4.3 and 4.4.

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
     "runs": [{"name": "renorm-micro4", "norm": "bn" | "renorm", "group": int,
               "batches": "iid" | "noniid", "error": str | null, "time_s": float,
               "compile_s": float,  # of time_s: Numba compiling kernels (0 from the cache)
               "history": {"step": [...], "train_loss": [...], "test_acc": [...],
                           "train_mode_acc": [...]}}]}
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.options import (
    Check,
    Opt,
    add_options,
    check_config,
    check_count,
    check_model_bytes,
    check_unknown,
    checks_of,
    defaults_of,
    mlp_params,
)
from bnlab.experiments.progress import Progress
from bnlab.experiments.renorm_small_batch_report import HISTORY_KEYS
from bnlab.experiments.report import release_run_dir, run_status, start_run_dir
from bnlab.experiments.timing import numba_compile_time
from bnlab.runtime import blas_threads
from bnlab.train import Callback, TrainState

DESCRIPTION = "Ioffe 2017: batch renorm vs batch norm on microbatches of 2/4 and non-i.i.d. MNIST"

_MOMENTUM_HINT = "the weight of the new batch (PyTorch's convention: Keras' 0.99 is 0.01 here)"
_FRAC = Check(float, 0, 1)
# every option once: its flag, default (shown by --help), check and config.json entry
OPTIONS: dict[str, Opt] = {
    "steps": Opt(5000, "SGD steps per run", Check(int, 1)),
    "batch_size": Opt(32, "minibatch size", Check(int, 4)),
    "micro_sizes": Opt(
        [4, 2], "microbatch sizes for the normalization statistics", Check(int, 2), nargs="*"
    ),
    "noniid": Opt(True, "skip 2-class runs", negate="--no-noniid"),
    "lr": Opt(0.02, "SGD learning rate", Check(float, 0, lo_open=True)),
    "activation": Opt("relu", "hidden units", choices=("relu", "sigmoid")),
    "hidden": Opt([100, 100, 100], "hidden widths", Check(int, 1), nargs="+"),
    "momentum": Opt(0.01, "BN/renorm momentum", Check(float, 0, 1, hint=_MOMENTUM_HINT)),
    "eps": Opt(1e-3, "BN/renorm eps", Check(float, 0, lo_open=True)),
    "rmax": Opt(3.0, "batch renorm's final r_max", Check(float, 1, hint="1 = plain BN")),
    "dmax": Opt(5.0, "batch renorm's final d_max", Check(float, 0, hint="0 = plain BN")),
    "warmup_frac": Opt(0.1, "fraction of the steps trained as plain BN (r=1, d=0)", _FRAC),
    "dmax_frac": Opt(0.5, "fraction of the steps at which d_max reaches --dmax", _FRAC),
    "rmax_frac": Opt(0.8, "fraction of the steps at which r_max reaches --rmax", _FRAC),
    "eval_every": Opt(None, "evaluate every N steps (steps/20)", Check(int, 1, optional=True)),
    "seed": Opt(0, "weights and batches", Check(int, 0)),
    "train_subset": Opt(None, "first N train images (all)", Check(int, 1, optional=True)),
    "test_subset": Opt(None, "first N test images (all)", Check(int, 1, optional=True)),
    "progress": Opt(True, "no progress bar", negate="--no-progress"),
}
DEFAULTS: dict[str, Any] = defaults_of(OPTIONS)
CHECKS: dict[str, Check] = checks_of(OPTIONS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bnlab run renorm-small-batch`` (from :data:`OPTIONS`)."""
    add_options(p, OPTIONS)


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS updated by ``config``; unknown keys and bad values raise ValueError."""
    where = "renorm-small-batch"
    check_unknown(config, list(DEFAULTS), where)
    cfg = {**DEFAULTS, **config, "experiment": where}
    if cfg["activation"] not in ("relu", "sigmoid"):
        raise ValueError(f"{where}: --activation must be relu or sigmoid: {cfg['activation']!r}")
    check_config(cfg, CHECKS, where)
    cfg["micro_sizes"] = [int(k) for k in cfg["micro_sizes"]]
    cfg["hidden"] = [int(w) for w in cfg["hidden"]]
    bs = int(cfg["batch_size"])
    if bs < 4 or bs % 2:
        raise ValueError(f"{where}: --batch-size must be even and >= 4 (2-class batches), got {bs}")
    for k in cfg["micro_sizes"]:
        if k < 2 or bs % k:
            raise ValueError(f"{where}: micro size {k} must be >= 2 and divide --batch-size {bs}")
    if cfg["eval_every"] is None:
        cfg["eval_every"] = max(1, int(cfg["steps"]) // 20)
    if int(cfg["eval_every"]) < 1:
        raise ValueError(f"{where}: eval_every must be >= 1, got {cfg['eval_every']}")
    if not 0 <= cfg["warmup_frac"] <= cfg["dmax_frac"] <= 1 or cfg["rmax_frac"] > 1:
        raise ValueError(f"{where}: expected 0 <= warmup_frac <= dmax_frac, rmax_frac <= 1")
    n_train = check_count(cfg["train_subset"], 60_000, "train_subset", "images", where)
    n_test = check_count(cfg["test_subset"], 10_000, "test_subset", "images", where)
    if bs > min(n_train, n_test):
        raise ValueError(
            f"{where}: --batch-size {bs} is larger than the {n_train} training or {n_test} test "
            "images (the training-mode accuracy needs one whole batch of test images)"
        )
    n_nets = len(run_specs(cfg))
    fix = "lower --hidden"
    check_model_bytes(n_nets, mlp_params(784, cfg["hidden"], 10), where, fix)
    return cfg


def run_specs(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs: name, norm ("bn"/"renorm"), group (examples per statistic), batches."""
    full = int(cfg["batch_size"])
    specs = [{"name": "bn-full", "norm": "bn", "group": full, "batches": "iid"}]
    for k in cfg["micro_sizes"]:
        for norm in ("bn", "renorm"):
            specs.append({"name": f"{norm}-micro{k}", "norm": norm, "group": k, "batches": "iid"})
    if cfg["noniid"]:
        for norm in ("bn", "renorm"):
            specs.append(
                {"name": f"{norm}-noniid", "norm": norm, "group": full, "batches": "noniid"}
            )
    return specs


def renorm_schedule(cfg: dict[str, Any]) -> dict[str, int]:
    """The paper's 5k/25k/40k schedule scaled to ``steps`` by the three fractions."""
    steps = int(cfg["steps"])
    return {
        "warmup_steps": int(round(cfg["warmup_frac"] * steps)),
        "dmax_steps": int(round(cfg["dmax_frac"] * steps)),
        "rmax_steps": int(round(cfg["rmax_frac"] * steps)),
    }


def build_net(spec: dict[str, Any], cfg: dict[str, Any]) -> Any:
    """Dense(no bias) -> BN/BatchRenorm -> ReLU/Sigmoid per hidden layer, then Dense(10)."""
    from bnlab.layers import BatchNorm, BatchRenorm, Dense, ReLU, Sequential, Sigmoid

    relu = cfg["activation"] == "relu"
    init = "he_normal" if relu else "glorot_uniform"
    # every net gets virtual_batch_size = its group (32 for the full-batch runs: the same as
    # None on a batch of 32), so a training-mode pass over many test images keeps the groups
    vbs = int(spec["group"])
    mom, eps = float(cfg["momentum"]), float(cfg["eps"])
    sched = renorm_schedule(cfg)
    layers: list[Any] = []
    fan_in, seed = 784, int(cfg["seed"])
    for i, width in enumerate(cfg["hidden"]):
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
                    rmax=float(cfg["rmax"]),
                    dmax=float(cfg["dmax"]),
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


class NonIIDBatches:
    """Endless minibatches of ``batch_size``: half from each of 2 random distinct classes."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> None:
        self.x, self.y, self.half = x, y, batch_size // 2
        self.by_class = [np.flatnonzero(y == c) for c in range(int(y.max()) + 1)]
        self.by_class = [idx for idx in self.by_class if len(idx)]
        self.rng = np.random.default_rng(seed)

    def indices(self) -> np.ndarray:
        """One batch's indices (a class smaller than half a batch is sampled with replacement)."""
        a, b = self.rng.choice(len(self.by_class), size=2, replace=False)
        parts = []
        for c in (a, b):
            pool = self.by_class[c]
            parts.append(self.rng.choice(pool, size=self.half, replace=len(pool) < self.half))
        return self.rng.permutation(np.concatenate(parts))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            idx = self.indices()
            yield self.x[idx], self.y[idx]


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


class _BarCallback(Callback):
    """Advances a :class:`Progress` by one after every step."""

    def __init__(self, bar: Progress | None) -> None:
        self.bar = bar

    def on_step_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.update(1)


def train_one(
    spec: dict[str, Any],
    cfg: dict[str, Any],
    data: tuple[np.ndarray, ...],
    bar: Progress | None = None,
) -> Any:
    """Train one run; returns its TrainState."""
    from bnlab.data import BatchIterator
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD
    from bnlab.train import Trainer

    xtr, ytr, xte, yte = data
    bs, seed = int(cfg["batch_size"]), int(cfg["seed"])
    model = build_net(spec, cfg)
    if spec["batches"] == "noniid":
        batches: Any = NonIIDBatches(xtr, ytr, bs, seed)
    else:
        batches = BatchIterator(xtr, ytr, bs, shuffle=True, drop_last=True, seed=seed)
    order = train_mode_order(spec, yte, bs, seed)
    cb = RecordCallback(xte, yte, order, int(cfg["eval_every"]), bs * max(1, 1024 // bs))
    opt = SGD.from_model(model, lr=float(cfg["lr"]), momentum=0.9)
    callbacks = [cb, _BarCallback(bar)]
    trainer = Trainer(model, SoftmaxCrossEntropy(), opt, batches, callbacks=callbacks)
    return trainer.fit(int(cfg["steps"]))


def run(config: dict[str, Any], out_dir: str | Path) -> Path:
    """Train every run of :func:`run_specs` in turn; write metrics, figures and the report."""
    from bnlab.experiments import mnist_common as mc
    from bnlab.experiments import renorm_small_batch_report as rep

    cfg = resolve_config(config)
    data = mc.load_data(cfg)
    specs, sched = run_specs(cfg), renorm_schedule(cfg)
    out = start_run_dir(out_dir, cfg)
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    total = int(cfg["steps"]) * len(specs)
    bar = Progress(total, cfg["experiment"], enabled=bool(cfg["progress"]))

    def finish(st: str) -> None:
        bar.close()
        try:
            rep.write_metrics(out, cfg, sched, results, st, time.perf_counter() - t0)
            rep.render(out)
        finally:
            release_run_dir(out)

    with run_status(finish):
        rep.write_metrics(out, cfg, sched, results, "running", 0.0)
        for spec in specs:
            t = time.perf_counter()
            entry = {**spec, "error": None, "history": {k: [] for k in HISTORY_KEYS}}
            done_before = bar.n
            try:
                with blas_threads(1), numba_compile_time() as compiling:
                    state = train_one(spec, cfg, data, bar)
                entry["compile_s"] = round(compiling.seconds, 3)
                entry["history"] = {k: [row.get(k) for row in state.history] for k in HISTORY_KEYS}
            except FloatingPointError as e:
                entry["error"] = str(e)
            entry["time_s"] = round(time.perf_counter() - t, 3)
            results.append(entry)
            rep.write_metrics(out, cfg, sched, results, "running", time.perf_counter() - t0)
            bar.update(done_before + int(cfg["steps"]) - bar.n)  # a diverged run stops early
            bar.set_postfix_str(f"test acc {spec['name']}: {_final(entry)}")
    return out


def _final(entry: dict[str, Any]) -> str:
    acc = entry["history"]["test_acc"]
    return "diverged" if entry["error"] else (f"{acc[-1]:.4f}" if acc else "-")


def render(run_dir: str | Path) -> Path:
    """Re-render figures and report from ``config.json`` and ``metrics.json``."""
    from bnlab.experiments import renorm_small_batch_report as rep

    return rep.render(run_dir)
