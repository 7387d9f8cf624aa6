"""``population-stats``: moving averages against exact population statistics (Algorithm 2).

The BN MLP of ``mnist-sigmoid`` (784-100-100-100-10, Dense -> BN -> sigmoid) is trained on
MNIST with SGD. In training mode BN uses batch statistics only, so the weights do not depend
on the BN momentum: one net per momentum (0.01, 0.1, 0.5 by default) is trained in lockstep on
the same batches and they stay identical; only their moving averages differ. At every
evaluation the test accuracy is measured in eval mode with each net's moving averages, and
with the population statistics of Algorithm 2 (``bnlab.deploy.recompute_population_stats``
over ``recal_examples`` training images drawn at random, in batches of ``batch_size``).

Run directory: ``config.json``; ``metrics.json`` (``{"experiment", "status", "momenta",
"steps_done", "wall_time_s", "history": {"step": [...], "moving": {"0.01": [acc, ...], ...},
"population": [...]}}``, rewritten after every evaluation, status "running" until it is
"complete", "interrupted" or "failed"); ``accuracy.csv``; ``accuracy.png``;
``report.md``/``report.html``.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments import mnist_common as mc
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
from bnlab.experiments.report import (
    release_run_dir,
    run_status,
    start_run_dir,
    write_json,
)
from bnlab.train import evaluate

DESCRIPTION = "BN MLP on MNIST: test accuracy with moving averages vs Algorithm 2 statistics"

_C = mc.COMMON_CHECKS
# every option once: its flag, default (shown by --help), check and config.json entry
OPTIONS: dict[str, Opt] = {
    "steps": Opt(3000, "SGD steps", _C["steps"]),
    "batch_size": Opt(60, "examples per step", _C["batch_size"]),
    "lr": Opt(0.5, "SGD learning rate", Check(float, 0, lo_open=True)),
    "momenta": Opt(
        [0.01, 0.1, 0.5],
        "BN momenta, one net each (the weight of the new batch)",
        Check(float, 0, 1, hint=mc.MOMENTUM_HINT),
        nargs="+",
    ),
    "seed": Opt(0, "weights, batches and the draw", _C["seed"]),
    "hidden": Opt([100, 100, 100], "hidden widths", _C["hidden"], nargs="+"),
    "init_std": Opt(0.1, "std of the N(0, std^2) weights", _C["init_std"]),
    "bn_eps": Opt(1e-5, "BN's epsilon", _C["bn_eps"]),
    "eval_every": Opt(None, "evaluate every N steps (steps/10)", _C["eval_every"]),
    "recal_examples": Opt(12000, "training images drawn for Algorithm 2", Check(int, 2)),
    "train_subset": Opt(None, "first N train images (all)", _C["train_subset"]),
    "test_subset": Opt(None, "first N test images (all)", _C["test_subset"]),
    "progress": Opt(True, "no progress bar", negate="--no-progress"),
}
DEFAULTS: dict[str, Any] = defaults_of(OPTIONS)
CHECKS: dict[str, Check] = checks_of(OPTIONS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bnlab run population-stats`` (from :data:`OPTIONS`)."""
    add_options(p, OPTIONS)


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS updated by ``config`` (None means the default), every value checked."""
    where = "population-stats"
    check_unknown(config, list(DEFAULTS), where)
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    cfg["experiment"] = where
    check_config(cfg, CHECKS, where)
    n_train = check_count(cfg["train_subset"], mc.MNIST_TRAIN, "train_subset", "images", where)
    check_count(cfg["test_subset"], mc.MNIST_TEST, "test_subset", "images", where)
    bs = int(cfg["batch_size"])
    if bs > n_train or int(cfg["recal_examples"]) < bs:
        raise ValueError(
            f"{where}: need --batch-size {bs} <= the {n_train} training images and "
            f"--recal-examples {cfg['recal_examples']} >= --batch-size"
        )
    fix = "lower --hidden or the number of --momenta"
    check_model_bytes(len(cfg["momenta"]) + 1, mlp_params(784, cfg["hidden"], 10), where, fix)
    cfg["eval_every"] = int(cfg["eval_every"] or max(int(cfg["steps"]) // 10, 1))
    return cfg


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


def build_nets(cfg: dict[str, Any]) -> list[Any]:
    """One BN net per momentum, all from the same seed (identical weights)."""
    return [mc.build_net(True, {**cfg, "bn_momentum": m}, cfg["seed"]) for m in cfg["momenta"]]


def train(
    nets: list[Any],
    cfg: dict[str, Any],
    data: tuple[np.ndarray, ...],
    on_eval: Callable[[int, list[float]], None],
    bar: Progress | None = None,
) -> None:
    """SGD on the same batches for every net; every ``eval_every`` steps and at the end,
    ``on_eval(step, accuracies)`` with the accuracies of :func:`_evaluate`."""
    from bnlab.data import BatchIterator
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD

    opts = [SGD(net.params, net.grads, lr=float(cfg["lr"])) for net in nets]
    loss_fn = SoftmaxCrossEntropy()
    steps, every = int(cfg["steps"]), int(cfg["eval_every"])
    it = BatchIterator(data[0], data[1], int(cfg["batch_size"]), drop_last=True, seed=cfg["seed"])
    step = 0
    while step < steps:
        for xb, yb in it:
            for net, opt in zip(nets, opts, strict=True):
                _, dlogits = loss_fn(net.forward(xb), yb)
                net.backward(dlogits, need_input_grad=False)
                opt.step()
            step += 1
            if bar is not None:
                bar.update(1)
            if step % every == 0 or step == steps:
                on_eval(step, _evaluate(nets, cfg, data))
            if step >= steps:
                break


def run(config: dict[str, Any], out_dir: str | Path) -> Path:
    """Train, evaluate every ``eval_every`` steps, write metrics and the report."""
    cfg = resolve(config)
    data = mc.load_data(cfg)
    nets = build_nets(cfg)
    out = start_run_dir(out_dir, cfg)
    keys = [str(m) for m in cfg["momenta"]]
    hist: dict[str, Any] = {"step": [], "moving": {k: [] for k in keys}, "population": []}
    t0 = time.perf_counter()
    bar = Progress(int(cfg["steps"]), cfg["experiment"], enabled=bool(cfg["progress"]))

    def write(status: str) -> None:
        done = hist["step"][-1] if hist["step"] else 0
        metrics = {"experiment": cfg["experiment"], "status": status, "momenta": keys}
        metrics |= {"steps_done": done, "wall_time_s": round(time.perf_counter() - t0, 3)}
        write_json(out / "metrics.json", {**metrics, "history": hist})

    def on_eval(step: int, accs: list[float]) -> None:
        hist["step"].append(step)
        for k, a in zip(keys, accs[:-1], strict=True):
            hist["moving"][k].append(a)
        hist["population"].append(accs[-1])
        write("running")
        bar.set_postfix_str(f"test acc: population {accs[-1]:.4f}")

    def finish(status: str) -> None:
        bar.close()
        write(status)
        try:
            render(out)
        finally:
            release_run_dir(out)

    with run_status(finish):
        write("running")
        train(nets, cfg, data, on_eval, bar)
    return out


def render(run_dir: str | Path) -> Path:
    """Re-render figures and report from the run's files (see population_stats_report)."""
    from bnlab.experiments import population_stats_report

    return population_stats_report.render(run_dir)
