"""``population-stats``: moving averages against exact population statistics (Algorithm 2).

The BN MLP of ``mnist-sigmoid`` (784-100-100-100-10, Dense -> BN -> sigmoid) is trained on
MNIST with SGD. In training mode BN uses batch statistics only, so the weights do not depend
on the BN momentum: one net per momentum (0.01, 0.1, 0.5 by default) is trained in lockstep on
the same batches and they stay identical; only their moving averages differ. At every
evaluation the test accuracy is measured in eval mode with each net's moving averages, and
with the population statistics of Algorithm 2 (``bnlab.deploy.recompute_population_stats``
over ``recal_examples`` training images drawn at random, in batches of ``batch_size``).

Run directory: ``config.json``; ``metrics.json`` (``{"experiment", "status", "momenta",
"history": {"step": [...], "moving": {"0.01": [acc, ...], ...}, "population": [...]}}``);
``accuracy.csv``; ``accuracy.png``; ``report.md``/``report.html``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.report import start_run_dir, write_json
from bnlab.train import evaluate

DESCRIPTION = "BN MLP on MNIST: test accuracy with moving averages vs Algorithm 2 statistics"

DEFAULTS: dict[str, Any] = {
    "steps": 3000,
    "batch_size": 60,
    "lr": 0.5,
    "momenta": [0.01, 0.1, 0.5],
    "seed": 0,
    "hidden": [100, 100, 100],
    "init_std": 0.1,
    "bn_eps": 1e-5,
    "eval_every": None,
    "recal_examples": 12000,
    "train_subset": None,
    "test_subset": None,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--steps", type=int, default=d["steps"], help="SGD steps (%(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="(%(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"], help="SGD learning rate (%(default)s)")
    p.add_argument("--momenta", type=float, nargs="+", default=d["momenta"], help="BN momenta")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--eval-every", type=int, default=d["eval_every"], help="default steps/10")
    p.add_argument("--recal-examples", type=int, default=d["recal_examples"])
    p.add_argument("--train-subset", type=int, default=d["train_subset"])
    p.add_argument("--test-subset", type=int, default=d["test_subset"])


def _evaluate(nets: list[Any], cfg: dict[str, Any], data: tuple[np.ndarray, ...]) -> list[float]:
    """Test accuracy with each net's moving averages, then with population statistics."""
    from bnlab.deploy import recompute_population_stats, shuffled_batches

    xtr, _, xte, yte = data
    accs = [evaluate(net, xte, yte, 2000)["accuracy"] for net in nets]  # restores the mode
    pop = copy.deepcopy(nets[0])
    batches = shuffled_batches(
        xtr, cfg["batch_size"], limit=cfg["recal_examples"], seed=cfg["seed"]
    )
    recompute_population_stats(pop, batches)
    accs.append(evaluate(pop, xte, yte, 2000)["accuracy"])
    return accs


def run(config: dict[str, Any], out_dir: str | Path) -> Path:
    """Train, evaluate every ``eval_every`` steps, write metrics and the report."""
    from bnlab.data import BatchIterator
    from bnlab.experiments import mnist_common as mc
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD

    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    cfg["experiment"] = "population-stats"
    data = mc.load_data(cfg)
    nets = [mc.build_net(True, {**cfg, "bn_momentum": mom}, cfg["seed"]) for mom in cfg["momenta"]]
    out = start_run_dir(out_dir, cfg)
    opts = [SGD(net.params, net.grads, lr=float(cfg["lr"])) for net in nets]
    loss_fn = SoftmaxCrossEntropy()
    every = int(cfg["eval_every"] or max(cfg["steps"] // 10, 1))
    keys = [str(m) for m in cfg["momenta"]]
    hist: dict[str, Any] = {"step": [], "moving": {k: [] for k in keys}, "population": []}
    it = BatchIterator(data[0], data[1], int(cfg["batch_size"]), drop_last=True, seed=cfg["seed"])
    step = 0
    while step < cfg["steps"]:
        for xb, yb in it:
            for net, opt in zip(nets, opts, strict=True):
                _, dlogits = loss_fn(net.forward(xb), yb)
                net.backward(dlogits, need_input_grad=False)
                opt.step()
            step += 1
            if step % every == 0 or step == cfg["steps"]:
                accs = _evaluate(nets, cfg, data)
                hist["step"].append(step)
                for k, a in zip(keys, accs[:-1], strict=True):
                    hist["moving"][k].append(a)
                hist["population"].append(accs[-1])
            if step >= cfg["steps"]:
                break
    metrics: dict[str, Any] = {"experiment": "population-stats", "status": "complete"}
    metrics |= {"momenta": keys, "history": hist}
    write_json(out / "metrics.json", metrics)
    render(out)
    return out


def render(run_dir: str | Path) -> Path:
    """Re-render figures and report from the run's files (see population_stats_report)."""
    from bnlab.experiments import population_stats_report

    return population_stats_report.render(run_dir)
