"""``population-stats``: moving averages against exact population statistics (Algorithm 2).

The BN MLP of ``mnist-sigmoid`` (784-100-100-100-10, Dense -> BN -> sigmoid) is trained on
MNIST with SGD. In training mode BN uses batch statistics only, so the weights do not depend
on the BN momentum: one net per momentum (0.01, 0.1, 0.5 by default) is trained in lockstep on
the same batches (one :class:`~bnlab.train.Trainer` each, over equally seeded iterators) and
they stay identical; only their moving averages differ. At every evaluation the test accuracy
is measured in eval mode with each net's moving averages, and with the population statistics
of Algorithm 2 (``bnlab.deploy.recompute_population_stats`` over ``recal_examples`` training
images drawn at random, in batches of ``batch_size``).

Options: :class:`bnlab.experiments.population_stats.config.StatsConfig`. Run directory:
``config.json``; ``metrics.json`` (``{"experiment", "status", "momenta", "steps_done",
"wall_time_s", "history": {"step": [...], "moving": {"0.01": [acc, ...], ...},
"population": [...]}}``, rewritten after every evaluation, status "running" until it is
"complete", "interrupted" or "failed"); ``accuracy.csv``; ``fig_accuracy.png``;
``report.md``/``report.html``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.mnist.nets import build_net, load_data
from bnlab.experiments.population_stats.config import StatsConfig
from bnlab.experiments.population_stats.report import render
from bnlab.experiments.progress import Progress, recording
from bnlab.experiments.rundir import RunDir
from bnlab.layers import Layer
from bnlab.train import Callback, Trainer, TrainState, evaluate

__all__ = ["accuracies", "build_nets", "make_trainers", "run", "train"]

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
OnEval = Callable[[int, list[float]], None]


def accuracies(nets: Sequence[Layer], cfg: StatsConfig, data: Data) -> list[float]:
    """Test accuracy with each net's moving averages, then with Algorithm 2's statistics
    (computed on a copy of the first net, over ``recal_examples`` images drawn by ``seed``)."""
    from bnlab.deploy import recompute_population_stats, shuffled_batches

    xtr, _, xte, yte = data
    accs = [evaluate(net, xte, yte, 2000)["accuracy"] for net in nets]  # restores the mode
    pop = copy.deepcopy(nets[0])
    batches = shuffled_batches(xtr, cfg.batch_size, limit=cfg.recal_examples, seed=cfg.seed)
    recompute_population_stats(pop, batches)
    accs.append(evaluate(pop, xte, yte, 2000)["accuracy"])
    return accs


def build_nets(cfg: StatsConfig) -> list[Layer]:
    """One BN net per momentum (the mnist-sigmoid BN net), all from the same seed: identical
    weights."""
    return [build_net(True, cfg.seed, cfg.hidden, cfg.init_std, m, cfg.bn_eps) for m in cfg.momenta]


class _EveryNet(Callback):
    """On the trainer stepped last: every net has taken step k now. Advances ``bar``; every
    ``every`` steps and at the last, ``on_eval(k, accuracies(...))``."""

    def __init__(self, nets: Sequence[Layer], cfg: StatsConfig, data: Data, on_eval: OnEval,
                 bar: Progress | None) -> None:  # fmt: skip
        self.nets, self.cfg, self.data, self.on_eval, self.bar = nets, cfg, data, on_eval, bar

    def on_step_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.update(1)
        every, steps = int(self.cfg.eval_every or 1), int(self.cfg.steps)
        if state.step % every == 0 or state.step == steps:
            self.on_eval(state.step, accuracies(self.nets, self.cfg, self.data))


def make_trainers(nets: Sequence[Layer], cfg: StatsConfig, data: Data) -> list[Trainer]:
    """A :class:`Trainer` per net: SGD at ``lr``, softmax cross-entropy, and a batch iterator
    seeded by ``seed`` (the same batches for every net)."""
    from bnlab.data import BatchIterator
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD

    xtr, ytr = data[0], data[1]
    out = []
    for net in nets:
        batches = BatchIterator(xtr, ytr, int(cfg.batch_size), drop_last=True, seed=cfg.seed)
        opt = SGD(net.params, net.grads, lr=float(cfg.lr))
        out.append(Trainer(net, SoftmaxCrossEntropy(), opt, batches))
    return out


def train(
    nets: Sequence[Layer],
    cfg: StatsConfig,
    data: Data,
    on_eval: OnEval,
    bar: Progress | None = None,
) -> list[TrainState]:
    """``steps`` SGD steps of every net in lockstep (step k of each net, then step k + 1);
    every ``eval_every`` steps and at the end, ``on_eval(step, accuracies)`` with the
    accuracies of :func:`accuracies`. Returns each net's TrainState."""
    trainers = make_trainers(nets, cfg, data)
    trainers[-1].callbacks.append(_EveryNet(nets, cfg, data, on_eval, bar))
    for t in trainers:
        t.begin()
    try:
        for _ in range(int(cfg.steps)):
            for t in trainers:
                t.step()
    finally:
        for t in trainers:
            t.end()
    return [t.state for t in trainers]


def run(config: dict[str, Any] | StatsConfig, out_dir: str | Path) -> Path:
    """Train, evaluate every ``eval_every`` steps, write metrics and the report.

    ``config`` (a dict: missing keys take the defaults) is checked whole, and the data loaded
    and the nets built, before the run directory is touched.
    """
    cfg = StatsConfig.of(config)
    data = load_data(cfg.train_subset, cfg.test_subset)
    nets = build_nets(cfg)
    keys = [str(m) for m in cfg.momenta]
    hist: dict[str, Any] = {"step": [], "moving": {k: [] for k in keys}, "population": []}
    t0 = time.perf_counter()
    bar = Progress(int(cfg.steps), cfg.NAME, enabled=bool(cfg.progress))

    with RunDir.start(out_dir, cfg.to_dict()) as rd:

        def write(status: str) -> None:
            done = hist["step"][-1] if hist["step"] else 0
            metrics: dict[str, Any] = {"experiment": cfg.NAME, "status": status}
            metrics |= {"momenta": keys}
            metrics |= {"steps_done": done, "wall_time_s": round(time.perf_counter() - t0, 3)}
            rd.write_metrics({**metrics, "history": hist})

        def on_eval(step: int, accs: list[float]) -> None:
            hist["step"].append(step)
            for k, a in zip(keys, accs[:-1], strict=True):
                hist["moving"][k].append(a)
            hist["population"].append(accs[-1])
            write("running")
            bar.set_postfix_str(f"test acc: population {accs[-1]:.4f}")

        with recording(rd, bar, write, render):
            train(nets, cfg, data, on_eval, bar)
    return rd.path
