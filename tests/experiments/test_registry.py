"""The registry: one kind of record per experiment, one package shape, imports one way."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from bnlab import experiments
from bnlab.experiments.config import ExperimentConfig

SRC = Path(experiments.__file__).resolve().parent.parent


@pytest.mark.parametrize("name", experiments.available())
def test_every_experiment_is_a_package_of_config_run_report(name: str) -> None:
    e = experiments.get(name)
    assert isinstance(e, experiments.Experiment) and e.description
    assert issubclass(e.config, ExperimentConfig) and e.config.NAME == name
    assert list(inspect.signature(e.run).parameters) == ["config", "out_dir"]
    assert list(inspect.signature(e.render).parameters) == ["run_dir"]
    assert e.module("run").__name__ == f"bnlab.experiments.{name.replace('-', '_')}.run"


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown experiment 'nope'; known experiments: batch-size, cifar"
    ):
        experiments.get("nope")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, also inside functions (relative imports resolved)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_nothing_below_the_command_imports_it_and_nothing_warns_deprecation() -> None:
    for floor in ("experiments", "deploy", "data", "optim"):
        for path in sorted((SRC / floor).rglob("*.py")):
            up = {m for m in _imports(path) if m == "bnlab.cli" or m.startswith("bnlab.cli.")}
            assert not up, (path, up)
    for floor in ("experiments", "deploy", "cli", "data", "optim"):
        for path in sorted((SRC / floor).rglob("*.py")):
            if path.name == "monitor.py":  # moves to bnlab.train (its own change)
                continue
            assert "DeprecationWarning" not in path.read_text(), path


# config.json of the short runs of benchmarks/compare_runs.py as the code before the one-shape
# change wrote them (cifar10-keras without its data path and data_source)
OLD_CONFIGS = {
    "cifar10-keras": {
        "data": "cifar.tar.gz",
        "epochs": 1,
        "models": ["baseline", "bn"],
        "seed": 7,
        "batch_size": 32,
        "eval_batch_size": 500,
        "train_subset": 1024,
        "test_subset": None,
        "lr_baseline": 0.0001,
        "lr_bn": 0.001,
        "rho": 0.9,
        "rms_eps": 1e-07,
        "decay": 1e-06,
        "shift": 0.1,
        "flip": True,
        "bn_momentum": 0.01,
        "bn_eps": 0.001,
        "bn_conv_bias": False,
        "resume": False,
        "keep_checkpoints": False,
        "progress": False,
        "bn_sync": "global",
        "experiment": "cifar10-keras",
    },
    "mnist-lr": {
        "steps": 300,
        "batch_size": 60,
        "seeds": 1,
        "seed": 0,
        "hidden": [100, 100, 100],
        "init_std": 0.1,
        "eval_every": 3,
        "eval_batch_size": 2000,
        "monitor_unit": 0,
        "bn_momentum": 0.1,
        "bn_eps": 1e-05,
        "train_subset": None,
        "test_subset": None,
        "progress": False,
        "save_checkpoints": False,
        "bn_sync": "global",
        "base_lr": 3.0,
        "multipliers": [1.0, 5.0],
        "stall_threshold": 0.2,
        "experiment": "mnist-lr",
    },
    "mnist-sigmoid": {
        "steps": 600,
        "batch_size": 60,
        "seeds": 1,
        "seed": 0,
        "hidden": [100, 100, 100],
        "init_std": 0.1,
        "eval_every": 6,
        "eval_batch_size": 2000,
        "monitor_unit": 0,
        "bn_momentum": 0.1,
        "bn_eps": 1e-05,
        "train_subset": None,
        "test_subset": None,
        "progress": False,
        "save_checkpoints": False,
        "bn_sync": "global",
        "lrs": [0.1, 3.0],
        "sweep": False,
        "sweep_lrs": [0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
        "sweep_steps": 5000,
        "experiment": "mnist-sigmoid",
    },
    "population-stats": {
        "steps": 300,
        "batch_size": 60,
        "lr": 0.5,
        "momenta": [0.01, 0.1, 0.5],
        "seed": 0,
        "hidden": [100, 100, 100],
        "init_std": 0.1,
        "bn_eps": 1e-05,
        "eval_every": 30,
        "recal_examples": 3000,
        "train_subset": None,
        "test_subset": 2000,
        "progress": False,
        "experiment": "population-stats",
    },
    "renorm-small-batch": {
        "steps": 300,
        "batch_size": 32,
        "micro_sizes": [4, 2],
        "noniid": True,
        "lr": 0.02,
        "activation": "relu",
        "hidden": [100, 100, 100],
        "momentum": 0.01,
        "eps": 0.001,
        "rmax": 3.0,
        "dmax": 5.0,
        "warmup_frac": 0.1,
        "dmax_frac": 0.5,
        "rmax_frac": 0.8,
        "eval_every": 15,
        "seed": 0,
        "train_subset": 6000,
        "test_subset": 2000,
        "progress": False,
        "experiment": "renorm-small-batch",
    },
}


# options added since (issue 25: the convolution engine), with the value an old config gets
NEW_OPTIONS = {"cifar10-keras": {"conv_algorithm": "auto"}}


@pytest.mark.parametrize("name", sorted(OLD_CONFIGS))
def test_config_json_keeps_its_keys_order_and_values(name: str) -> None:
    old = OLD_CONFIGS[name]
    options = {k: v for k, v in old.items() if k != "experiment"}
    expected = options | NEW_OPTIONS.get(name, {}) | {"experiment": old["experiment"]}
    got = experiments.get(name).config.from_dict(old).to_dict()
    assert got == expected
    assert list(got) == list(expected)
