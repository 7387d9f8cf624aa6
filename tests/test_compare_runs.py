"""benchmarks/compare_runs.py: equal metrics up to wall times pass, any other difference fails."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compare_runs():
    spec = importlib.util.spec_from_file_location(
        "compare_runs", ROOT / "benchmarks/compare_runs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(root: Path, name: str, metrics: dict[str, object]) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "metrics.json").write_text(json.dumps(metrics))


METRICS = {"status": "complete", "wall_time_s": 3.5, "runs": [{"acc": 0.1 + 0.2, "time_s": 1.0}]}


def test_wall_times_are_ignored_and_bits_are_not(compare_runs, tmp_path, capsys) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "x", METRICS)
    _write(b, "x", {**METRICS, "wall_time_s": 9.0, "runs": [{"acc": 0.1 + 0.2, "time_s": 7.0}]})
    assert compare_runs.compare(a, b)
    assert "identical except wall times" in capsys.readouterr().out
    _write(b, "x", {**METRICS, "runs": [{"acc": 0.3, "time_s": 1.0}]})  # 0.3 != 0.1 + 0.2
    assert not compare_runs.compare(a, b)
    assert "x: DIFFERENT" in capsys.readouterr().out


def test_a_run_missing_on_one_side_fails(compare_runs, tmp_path, capsys) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "x", METRICS)
    _write(a, "y", METRICS)
    _write(b, "x", METRICS)
    assert not compare_runs.compare(a, b)
    assert "y: MISSING" in capsys.readouterr().out
    assert compare_runs.main(["compare", str(a / "x"), str(tmp_path / "none")]) == 1


def test_only_compares_the_named_runs_and_names_are_registered(
    compare_runs, tmp_path, capsys
) -> None:
    from bnlab import experiments

    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "x", METRICS)
    _write(a, "y", METRICS)
    _write(b, "x", METRICS)
    assert compare_runs.main(["compare", str(a), str(b), "--only", "x"]) == 0
    assert "y:" not in capsys.readouterr().out
    assert compare_runs.main(["compare", str(a), str(b), "--only", "x", "y"]) == 1
    assert set(compare_runs.RUNS) <= set(experiments.available())
    assert compare_runs.CIFAR_RUN[0] in experiments.available()
