"""Experiment ``scale-invariance``: BN((aW)u) = BN(Wu) along whole SGD trajectories (MNIST).

Options: :class:`bnlab.experiments.scale_invariance.config.ScaleConfig`.

For a kernel W feeding a BN layer, ``x = W u`` and ``BN(a x)`` with eps scaled to ``a^2 eps``
equals ``BN(x)`` exactly: ``(a x - a mu) / sqrt(a^2 var + a^2 eps) = (x - mu) / sqrt(var +
eps)``. Hence ``dL/d(aW) = (1/a) dL/dW``, and one SGD step from ``aW`` with learning rate
``a^2 lr`` gives ``aW - a^2 lr (1/a) g = a (W - lr g)``: the net started from ``aW`` follows the
trajectory of the net from W (same predictions at every step, up to rounding). With eps left
at its default the two differ by terms of order ``eps / (a^2 var)``. A net without BN has no
such symmetry: the same change multiplies its outputs by about ``a^depth`` and its steps by
``a^2``. Without weight decay the gradient of a scale-invariant W is orthogonal to W, so
``||W_{t+1}||^2 = ||W_t||^2 + lr^2 ||g_t||^2``: the norm only grows and the effective learning
rate ``lr / ||W||^2`` falls (van Laarhoven 2017; Hoffer et al. 2018); L2 pulls it back.

The nets (784-H-...-10, He-normal weights, float64 throughout, plain SGD, the same batches),
trained side by side step by step (:func:`net_specs`): ``bn`` (Dense without bias -> BN ->
ReLU, then Dense(10)), ``bn-l2`` (the same with ``l2 * W`` added to every kernel's gradient),
``plain`` (Dense with bias -> ReLU), and for every a in ``scales``: ``bn-a{a}-eps-scaled``,
``bn-a{a}-eps-fixed`` and ``plain-a{a}``, whose hidden kernels start at ``a W`` and step with
``a^2 lr`` (every other parameter unchanged).

After every step each scaled net's softmax outputs on the batch are compared with its
reference's (``bn`` or ``plain``): ``prob_diff`` is ``max |p - p_ref|`` at that step,
``max_prob_diff`` the largest so far. Every ``record_every`` steps: the mean training loss
since the last record, the test accuracy (eval mode, running statistics, ``eval_examples``
images), and per hidden kernel ``||W||_F`` and ``lr_W / ||W||_F^2``; ``norm_decreases`` counts
the steps at which a kernel's norm fell. A net whose loss stops being finite is diverged.

Under ``mpiexec -n P`` every net trains data-parallel (:func:`~bnlab.train.for_experiment`:
SyncBN, a :class:`~bnlab.train.DataParallel` per net): every rank draws the same batches and
runs its shard, the loss, its finiteness and the gradients are the global batch's (summed over
the ranks before any update), ``prob_diff`` is the largest over the ranks' shards, and the
kernels (so their norms and effective learning rates) are the same on every rank: the numbers
are one process's up to rounding. Rank 0 writes the run directory.

Files: ``config.json``, ``metrics.json``, ``metrics.csv``, ``fig_trajectories.png``,
``fig_weight_norms.png``, ``report.md``, ``report.html``::

    {"schema": "bnlab.scale_invariance.metrics/1", "experiment": "scale-invariance",
     "status": ..., "wall_time_s": float, "steps_done": int,
     "nets": [{"name", "kind", "scale", "eps", "l2", "ref", "error": str | null,
               "max_prob_diff": float | null,
               "first_prob_diff": float | null,  # at step 1, before any update
               "norm_decreases": [int per kernel],
               "history": {"step", "train_loss", "test_acc", "prob_diff", "max_prob_diff",
                           "w_norm": [[per kernel]], "eff_lr": [[per kernel]]}}]}
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.comm import world
from bnlab.experiments.progress import Progress, recording, root_only, shared_run_dir
from bnlab.experiments.report import write_run_metrics
from bnlab.experiments.scale_invariance import report
from bnlab.experiments.scale_invariance.config import ScaleConfig, net_specs
from bnlab.layers import BatchNorm, Dense, ReLU, Sequential
from bnlab.losses import SoftmaxCrossEntropy, softmax
from bnlab.runtime import blas_threads
from bnlab.train import OneProcess, backward_global, evaluate, for_experiment, is_root

__all__ = ["Net", "prob_diffs", "run"]


class Net:
    """One net of :func:`net_specs`: its model, per-parameter learning rates and its entry."""

    def __init__(self, spec: dict[str, Any], cfg: ScaleConfig) -> None:
        self.spec, self.l2 = spec, float(spec["l2"])
        layers: list[Any] = []
        fan_in, seed, bn = 784, int(cfg.seed), spec["kind"] == "bn"
        for i, width in enumerate(cfg.hidden):
            layers.append(
                Dense(fan_in, int(width), use_bias=not bn, init="he_normal", seed=seed * 1000 + i)
            )
            if bn:
                layers.append(BatchNorm(int(width), eps=float(spec["eps"])))
            layers.append(ReLU())
            fan_in = int(width)
        layers.append(Dense(fan_in, 10, seed=seed * 1000 + 999))
        for layer in layers:
            layer.astype(np.float64)
        self.model, self.dp = for_experiment(Sequential(layers), cfg.to_dict())
        self.params, self.grads = self.model.params, self.model.grads
        self.kernels = [f"{i}.W" for i, la in enumerate(layers[:-1]) if isinstance(la, Dense)]
        a, lr = float(spec["scale"]), float(cfg.lr)
        for k in self.kernels:
            self.params[k] *= a
        if self.dp is not None:
            self.dp.setup(self.model)
        self.lr = {k: lr * a * a if k in self.kernels else lr for k in self.params}
        self.loss_fn = SoftmaxCrossEntropy()
        self.norms = self.kernel_norms()
        self.entry: dict[str, Any] = {**spec, "error": None, "max_prob_diff": None}
        self.entry["first_prob_diff"] = None
        self.entry["norm_decreases"] = [0] * len(self.kernels)
        self.entry["history"] = {k: [] for k in report.HISTORY_KEYS}
        self.losses: list[float] = []
        self.diff = math.nan

    def kernel_norms(self) -> list[float]:
        """``||W||_F`` of every hidden kernel."""
        return [float(np.linalg.norm(self.params[k])) for k in self.kernels]

    def step(self, xb: np.ndarray, yb: np.ndarray) -> np.ndarray | None:
        """One SGD step on the global batch; the softmax outputs on this rank's shard (before
        the step), None if diverged (on every rank together)."""
        if self.entry["error"]:
            return None
        par = OneProcess() if self.dp is None else self.dp
        xs, ys = par.shard(xb, yb)
        logits = self.model.forward(xs)
        loss, dlogits = self.loss_fn(logits, ys)
        finite = math.isfinite(loss) and bool(np.all(np.isfinite(logits)))
        if self.dp is not None:  # the global batch's loss, and every rank's verdict
            bad, total = self.dp.sum([not finite, loss * len(xs)])
            finite, loss = bad == 0, total / len(xb)
        if not finite:
            self.entry["error"] = f"diverged: the loss is {loss} at step {len(self.losses) + 1}"
            return None
        probs = softmax(logits)
        backward_global(self.model, loss, dlogits, len(xb), par)
        for k, p in self.params.items():
            g = self.grads[k]
            if self.l2 and k.endswith(".W"):
                g = g + self.l2 * p
            p -= self.lr[k] * g
        self.losses.append(loss)
        norms = self.kernel_norms()
        for i, (old, new) in enumerate(zip(self.norms, norms, strict=True)):
            self.entry["norm_decreases"][i] += int(new < old)
        self.norms = norms
        return probs

    def compare(self, diff: float) -> None:
        """``diff = max |p - p_ref|`` at this step (NaN: a net diverged), the largest so far."""
        self.diff = diff
        if math.isnan(diff):
            return
        if self.entry["first_prob_diff"] is None:  # step 1, before any update: eps alone
            self.entry["first_prob_diff"] = self.diff
        best = self.entry["max_prob_diff"]
        self.entry["max_prob_diff"] = self.diff if best is None else max(best, self.diff)

    def record(self, step: int, x_test: np.ndarray, y_test: np.ndarray, window: int) -> None:
        """Append a row to the history (the loss is the mean of the last ``window`` steps)."""
        h, recent = self.entry["history"], self.losses[-window:] if step else []
        acc = None
        if not self.entry["error"]:  # in one batch (with a DataParallel: shared by the ranks)
            run_eval = evaluate if self.dp is None else self.dp.evaluate
            acc = run_eval(self.model, x_test, y_test, len(x_test))["accuracy"]
        row = {
            "step": step,
            "train_loss": float(np.mean(recent)) if recent else None,
            "test_acc": acc,
            "prob_diff": None if math.isnan(self.diff) else self.diff,
            "max_prob_diff": self.entry["max_prob_diff"],
            "w_norm": self.norms,
            "eff_lr": [self.lr[k] / n**2 for k, n in zip(self.kernels, self.norms, strict=True)],
        }
        for k in report.HISTORY_KEYS:
            h[k].append(row[k])


def load_data(cfg: ScaleConfig) -> tuple[np.ndarray, ...]:
    """MNIST (embedded) as (N, 784) float64 in [0, 1]; the first ``eval_examples`` test images."""
    from bnlab.data import load_mnist

    (xtr, ytr), (xte, yte) = load_mnist()
    n = int(cfg.eval_examples)
    flat = [x.reshape(len(x), -1).astype(np.float64) / 255.0 for x in (xtr, xte[:n])]
    return flat[0], ytr, flat[1], yte[:n]


def prob_diffs(nets: list[Net], probs: dict[str, np.ndarray | None]) -> list[float]:
    """``max |p - p_ref|`` of every net with a reference (NaN if one of them diverged): over
    this rank's shard, then the largest over the ranks (one allgather)."""
    diffs = [
        math.nan if p is None or ref is None else float(np.max(np.abs(p - ref)))
        for p, ref in ((probs[n.spec["name"]], probs[n.spec["ref"]]) for n in nets)
    ]
    comm = world()
    if comm.size == 1 or not diffs:
        return diffs
    recv = np.empty((comm.size, len(diffs)))
    comm.allgather(np.array(diffs), recv)
    return [float(v) for v in recv.max(axis=0)]


def train(cfg: ScaleConfig, nets: list[Net], data: tuple[np.ndarray, ...], on_record: Any) -> None:
    """Step every net on the same batches; ``on_record(step)`` after each record."""
    from bnlab.data import BatchIterator

    xtr, ytr, xte, yte = data
    every, steps = int(cfg.record_every or 1), int(cfg.steps or 0)
    batches = BatchIterator(xtr, ytr, int(cfg.batch_size), seed=int(cfg.seed), drop_last=True)
    stream = batches.batches()
    for net in nets:
        net.record(0, xte, yte, every)
    on_record(0)
    for step in range(1, steps + 1):
        xb, yb = next(stream)
        probs = {net.spec["name"]: net.step(xb, np.asarray(yb)) for net in nets}
        scaled = [net for net in nets if net.spec["ref"]]
        for net, diff in zip(scaled, prob_diffs(scaled, probs), strict=True):
            net.compare(diff)
        if step % every == 0 or step == steps:
            for net in nets:
                net.record(step, xte, yte, every)
            on_record(step)


def run(config: ScaleConfig | dict[str, Any] | None, out_dir: str | Path) -> Path:
    """Train the nets of :func:`net_specs` side by side into ``out_dir``; returns it."""
    cfg = ScaleConfig.of(config)
    data = load_data(cfg)
    nets = [Net(spec, cfg) for spec in net_specs(cfg)]
    settings = cfg.to_dict()
    t0 = time.perf_counter()
    bar = Progress(int(cfg.steps or 0), cfg.NAME, enabled=bool(cfg.progress) and is_root())
    done = {"steps": 0}

    with shared_run_dir(out_dir, settings, cfg.NAME) as rd:

        @root_only
        def write(status: str) -> None:
            entries = [net.entry for net in nets]
            wall = time.perf_counter() - t0
            keys, steps = report.HISTORY_KEYS, done["steps"]
            write_run_metrics(
                rd, settings, report.SCHEMA, status, wall, entries, keys, steps_done=steps
            )

        def on_record(step: int) -> None:
            bar.update(step - done["steps"])
            done["steps"] = step
            write("running")
            diffs = [n.entry["max_prob_diff"] for n in nets if n.spec["ref"] == "bn"]
            bar.set_postfix_str(f"max BN prob diff {max((d or 0.0) for d in diffs):.2e}")

        with recording(rd, bar, write, report.render), blas_threads(1), np.errstate(all="ignore"):
            train(cfg, nets, data, on_record)
    return rd.path
