"""Deprecated: ``bnlab.experiments.mnist_common`` moved into the package
:mod:`bnlab.experiments.mnist` (one release; importing it warns).

- options: :mod:`bnlab.experiments.mnist.config` (``MnistConfig``; ``COMMON_CHECKS``,
  ``MOMENTUM_HINT``, ``MNIST_TRAIN``, ``MNIST_TEST``);
- data and nets: :mod:`bnlab.experiments.mnist.nets` (``load_data``, ``build_net``,
  ``last_sigmoid_index``, ``NETS``), which read config attributes;
- ``metrics.json``: :mod:`bnlab.experiments.mnist.metrics` (``SCHEMA``, ``HISTORY_KEYS``,
  ``group``, ``lrs_of``, ``write_metrics``, ``load_run``);
- training: :mod:`bnlab.experiments.mnist.training` (``Run``, ``make_runs``,
  ``train_lockstep``, ``metrics_json``, ``save_checkpoints``).

The functions here keep their old signatures (config dicts, run directory paths).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments.mnist import metrics as _metrics
from bnlab.experiments.mnist import nets as _nets
from bnlab.experiments.mnist import training as _training
from bnlab.experiments.mnist.compat import as_attrs, as_config, warn_moved
from bnlab.experiments.mnist.config import (
    COMMON_CHECKS,
    MNIST_TEST,
    MNIST_TRAIN,
    MOMENTUM_HINT,
    MnistConfig,
)
from bnlab.experiments.mnist.metrics import HISTORY_KEYS, SCHEMA, group, lrs_of
from bnlab.experiments.mnist.nets import NETS, last_sigmoid_index
from bnlab.experiments.mnist.training import Run
from bnlab.experiments.options import add_options, check_unknown
from bnlab.experiments.rundir import RunDir, read_json

__all__ = [
    "COMMON_CHECKS",
    "COMMON_DEFAULTS",
    "COMMON_OPTIONS",
    "HISTORY_KEYS",
    "MNIST_TEST",
    "MNIST_TRAIN",
    "MOMENTUM_HINT",
    "NETS",
    "SCHEMA",
    "Run",
    "add_common_arguments",
    "build_net",
    "check_size",
    "group",
    "last_sigmoid_index",
    "load_data",
    "load_run",
    "lrs_of",
    "make_runs",
    "metrics_json",
    "resolve_config",
    "save_checkpoints",
    "train_lockstep",
    "write_metrics",
]

warn_moved("mnist_common", "mnist (config, nets, metrics, training)")

COMMON_OPTIONS = MnistConfig.options()
COMMON_DEFAULTS: dict[str, Any] = MnistConfig.defaults()


def add_common_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """The shared options with ``defaults`` (now: ``MnistConfig.add_arguments``)."""
    opts = {k: dataclasses.replace(o, default=defaults[k]) for k, o in COMMON_OPTIONS.items()}
    add_options(p, opts)


def resolve_config(
    config: dict[str, Any], defaults: dict[str, Any], experiment: str
) -> dict[str, Any]:
    """``defaults`` updated by ``config``, the shared options checked (now: ``from_dict``)."""
    check_unknown(config, list(defaults), experiment)
    merged = {**defaults, **config}
    shared = MnistConfig.from_dict({k: merged.get(k) for k in COMMON_OPTIONS})
    return {**merged, **shared.to_dict(), "experiment": experiment}


def check_size(cfg: dict[str, Any], n_lrs: int, experiment: str) -> None:
    """Refuse nets that would not fit in memory (now: ``MnistConfig.check_size``)."""
    from bnlab.experiments.options import check_model_bytes, mlp_params

    n_nets = 2 * int(n_lrs) * int(cfg["seeds"])
    fix = "lower --hidden, --seeds or the number of learning rates"
    check_model_bytes(n_nets, mlp_params(784, cfg["hidden"], 10), experiment, fix)


def load_data(cfg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bnlab.experiments.mnist.nets.load_data` of a config dict or object."""
    return _nets.load_data(as_attrs(cfg))


def build_net(bn: bool, cfg: Any, seed: int, n_in: int = 784, n_out: int = 10) -> Any:
    """:func:`bnlab.experiments.mnist.nets.build_net` of a config dict or object."""
    return _nets.build_net(bn, as_attrs(cfg), seed, n_in, n_out)


def make_runs(cfg: Any, lrs: Sequence[float], data: tuple[np.ndarray, ...]) -> list[Run]:
    """:func:`bnlab.experiments.mnist.training.make_runs` of a config dict or object."""
    return _training.make_runs(as_config(cfg), lrs, data)


def metrics_json(
    cfg: Any, runs: Sequence[Run], status: str, step: int, wall: float
) -> dict[str, Any]:
    """:func:`bnlab.experiments.mnist.training.metrics_json` of a config dict or object."""
    return _training.metrics_json(as_config(cfg), runs, status, step, wall)


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` and ``metrics.csv`` into ``out_dir``."""
    _metrics.write_metrics(RunDir(out_dir), metrics)


def train_lockstep(cfg: Any, runs: Sequence[Run], out_dir: Path) -> dict[str, Any]:
    """:func:`bnlab.experiments.mnist.training.train_lockstep` into ``out_dir``."""
    return _training.train_lockstep(as_config(cfg), runs, RunDir(out_dir))


def save_checkpoints(runs: Sequence[Run], out_dir: Path) -> None:
    """Each run's final model in ``out_dir/checkpoints/NAME.npz``."""
    _training.save_checkpoints(runs, RunDir(out_dir))


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config dict, metrics)`` of a run directory (metrics empty if training never
    started); now :func:`bnlab.experiments.mnist.metrics.load_run`, which checks the config."""
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json")
    mpath = run_dir / "metrics.json"
    metrics = read_json(mpath) if mpath.is_file() else {"status": "not started", "runs": []}
    return cfg, metrics
