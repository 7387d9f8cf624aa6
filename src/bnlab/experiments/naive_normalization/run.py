"""Experiment ``naive-normalization``: Ioffe & Szegedy 2015, section 2, on MNIST.

Options: :class:`bnlab.experiments.naive_normalization.config.NaiveConfig`.

The network is 784-H-...-10 with every hidden layer ``Dense (with bias b) -> BatchNormalize ->
sigmoid`` (or ReLU), Glorot-uniform weights, zero biases, inputs x / 255 in float32, plain SGD
on minibatches of ``batch_size``. :class:`~bnlab.experiments.naive_normalization.normalize.
BatchNormalize` centres (``x - E[x]``) or batch-normalizes its input with the batch's
statistics; its backward is the proper gradient (through the statistics) or the naive one
(stop-gradient on them). The runs, all from the same weights and batches:

- ``centre-proper`` / ``centre-naive``: y = u + b - E[u + b], the paper's example;
- ``bn-proper`` / ``bn-naive``: full BN (mean and variance, gamma and beta);
- each once with every parameter trained (``-all``) and once with only the biases ``b`` of
  the Dense layers before the normalization trained (``-bias``: the paper's argument alone,
  the rest frozen at its initial values).

Every ``eval_every`` steps each run records the norm of those biases (all layers together),
the norm of the weights, the training loss (mean since the last record) and the loss and
accuracy on a fixed batch of ``eval_examples`` test images (normalized with that batch's own
statistics). A run whose loss stops being finite is recorded as diverged at that step.

Under ``mpiexec -n P`` the runs train data-parallel (:func:`bnlab.train.train_step` with a
:class:`~bnlab.train.DataParallel`): every rank draws the same batches and trains its shard,
the normalization's statistics are the global batch's (``BatchNormalize(comm=...)``), the
gradients and losses are summed over the ranks, and the evaluation batch is shared the same
way; every number recorded is the global batch's, as in one process up to rounding. Rank 0
writes the run directory.

Files: ``config.json``, ``metrics.json``, ``metrics.csv``, ``fig_bias_loss.png``,
``report.md``, ``report.html``::

    {"schema": "bnlab.naive_normalization.metrics/1", "experiment": "naive-normalization",
     "status": "running" | "complete" | "interrupted" | "failed", "wall_time_s": float,
     "runs": [{"name": "bn-naive-all", "norm": "centre" | "bn", "gradient": "proper" | "naive",
               "train": "all" | "bias", "error": str | null, "time_s": float,
               "history": {"step": [...], "train_loss": [...], "eval_loss": [...],
                           "eval_acc": [...], "bias_norm": [...], "weight_norm": [...]}}]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.comm import world
from bnlab.experiments.naive_normalization import report
from bnlab.experiments.naive_normalization.config import NaiveConfig, run_specs
from bnlab.experiments.naive_normalization.normalize import BatchNormalize
from bnlab.experiments.progress import Progress, run_in_turn
from bnlab.layers import Dense, ReLU, Sequential, Sigmoid
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.runtime import blas_threads
from bnlab.train import DataParallel, for_experiment, train_step

__all__ = ["build_net", "run", "train_run"]


def build_net(spec: dict[str, Any], cfg: NaiveConfig) -> Sequential:
    """Dense(bias) -> BatchNormalize(centre/BN, proper/naive) -> activation, then Dense(10);
    the normalization over the global batch of the process's world."""
    layers: list[Any] = []
    fan_in, seed = 784, int(cfg.seed)
    for i, width in enumerate(cfg.hidden or []):
        layers.append(Dense(fan_in, int(width), seed=seed * 1000 + i))
        layers.append(
            BatchNormalize(
                int(width),
                full=spec["norm"] == "bn",
                stop_gradient=spec["gradient"] == "naive",
                eps=float(cfg.eps),
                comm=world(),
            )
        )
        layers.append(Sigmoid() if cfg.activation == "sigmoid" else ReLU())
        fan_in = int(width)
    layers.append(Dense(fan_in, 10, seed=seed * 1000 + 999))
    return Sequential(layers)


def biases(model: Sequential) -> list[str]:
    """Keys (in ``model.params``) of the biases of the Dense layers before a normalization."""
    return [
        f"{i}.b"
        for i, layer in enumerate(model.layers[:-1])
        if isinstance(layer, Dense) and isinstance(model.layers[i + 1], BatchNormalize)
    ]


def norm_of(params: dict[str, np.ndarray], keys: list[str]) -> float:
    """``sqrt(sum_k ||params[k]||^2)`` in float64."""
    return math.sqrt(sum(float(np.sum(params[k].astype(np.float64) ** 2)) for k in keys))


def load_data(cfg: NaiveConfig) -> tuple[np.ndarray, ...]:
    """MNIST (embedded) flattened to (N, 784) float32 in [0, 1]; the evaluation batch."""
    from bnlab.data import load_mnist

    (xtr, ytr), (xte, yte) = load_mnist()
    n = int(cfg.eval_examples)
    flat = [x.reshape(len(x), -1).astype(np.float32) / np.float32(255) for x in (xtr, xte[:n])]
    return flat[0], ytr, flat[1], yte[:n]


def _batches(x: np.ndarray, y: np.ndarray, size: int, seed: int) -> Iterator[tuple[Any, Any]]:
    from bnlab.data import BatchIterator

    return BatchIterator(x, y, size, seed=seed, drop_last=True).batches()


def evaluate_batch(
    model: Sequential, x: np.ndarray, y: np.ndarray, dp: DataParallel | None
) -> tuple[float, float]:
    """Loss and accuracy of ``model`` on the batch ``(x, y)`` normalized with its own
    statistics; with ``dp`` each rank takes its shard and the sums are the global batch's."""
    xs, ys = (x, y) if dp is None else dp.shard(x, y)
    logits = model.forward(xs)
    loss, _ = SoftmaxCrossEntropy()(logits, ys)
    hits = float(np.sum(np.argmax(logits, axis=1) == ys))
    if dp is not None:
        total, hits = dp.sum([loss * len(ys), hits])
        loss = total / len(y)
    return loss, hits / len(y)


def train_run(
    spec: dict[str, Any],
    cfg: NaiveConfig,
    data: tuple[np.ndarray, ...],
    history: dict[str, list[Any]],
    bar: Progress | None = None,
    on_record: Callable[[], None] | None = None,
) -> None:
    """Train run ``spec``, appending to ``history`` as it goes (so an interrupted run keeps
    what it recorded); ``on_record()`` after each record. FloatingPointError if the loss
    stops being finite. Data-parallel on the process's world (module docstring)."""
    from bnlab.optim import SGD

    xtr, ytr, xev, yev = data
    model = build_net(spec, cfg)
    _, dp = for_experiment(model, cfg.to_dict())  # (no BN layer to convert)
    bias_keys = biases(model)
    params, grads = model.params, model.grads
    keys = list(params) if spec["train"] == "all" else bias_keys
    weight_keys = [k for k in params if k.endswith(".W")]
    opt = SGD({k: params[k] for k in keys}, {k: grads[k] for k in keys}, lr=float(cfg.lr))
    if dp is not None:
        dp.setup(model, opt)
    loss_fn = SoftmaxCrossEntropy()
    window: list[float] = []

    def record(step: int) -> None:
        ev_loss, ev_acc = evaluate_batch(model, xev, yev, dp)
        row = {
            "step": step,
            "train_loss": float(np.mean(window)) if window else None,
            "eval_loss": ev_loss,
            "eval_acc": ev_acc,
            "bias_norm": norm_of(params, bias_keys),
            "weight_norm": norm_of(params, weight_keys),
        }
        for k in report.HISTORY_KEYS:
            history[k].append(row[k])
        window.clear()
        if on_record is not None:
            on_record()

    record(0)
    batches = _batches(xtr, ytr, int(cfg.batch_size), int(cfg.seed))
    steps, every = int(cfg.steps or 0), int(cfg.eval_every or 1)
    for step in range(1, steps + 1):
        xb, yb = next(batches)
        window.append(train_step(model, loss_fn, opt, xb, yb, dp).loss)
        if step % every == 0 or step == steps:
            record(step)
        if bar is not None:
            bar.update(1)


def run(config: NaiveConfig | dict[str, Any] | None, out_dir: str | Path) -> Path:
    """Train every run of :func:`run_specs` into ``out_dir``; returns it.

    The config is checked and the data loaded before the run directory changes.
    """
    cfg = NaiveConfig.of(config)
    data = load_data(cfg)

    def train(spec: dict[str, Any], history: Any, bar: Progress, on_record: Any) -> None:
        train_run(spec, cfg, data, history, bar, on_record)

    return run_in_turn(
        out_dir, cfg, run_specs(cfg), train, report, column="run", threads=blas_threads(1)
    )
