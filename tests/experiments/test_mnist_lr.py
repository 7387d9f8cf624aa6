"""Experiment mnist-lr: both nets at multiples of a base learning rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bnlab.experiments import get
from bnlab.experiments.mnist_lr import report as mnist_lr
from bnlab.experiments.mnist_lr.config import MnistLrConfig

TINY: dict[str, Any] = {
    "steps": 10,
    "eval_every": 5,
    "train_subset": 600,
    "test_subset": 300,
    "hidden": [32, 32, 32],
    "base_lr": 0.2,
    "progress": False,
}


def test_registry_finds_the_modules() -> None:
    assert get("mnist-lr").render is mnist_lr.render and get("mnist-lr").config is MnistLrConfig


def test_run_writes_metrics_figure_and_table(tmp_path: Path) -> None:
    out = get("mnist-lr").run(TINY, tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "complete" and m["schema"] == "bnlab.mnist.metrics/1"
    lrs = sorted({r["lr"] for r in m["runs"]})
    assert lrs == pytest.approx([0.2, 1.0, 6.0])
    assert sorted(r["net"] for r in m["runs"]) == ["bn"] * 3 + ["plain"] * 3
    png = out / "fig_lr.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.size[0] > 300
    md = (out / "report.md").read_text()
    assert "| 30x | 6 | with BN |" in md and "| 1x | 0.2 | without BN |" in md
    assert "(fig_lr.png)" in md and 'src="fig_lr.png"' in (out / "report.html").read_text()
    assert json.loads((out / "config.json").read_text())["multipliers"] == [1.0, 5.0, 30.0]


def _run(diverged_at: int | None, accs: list[float]) -> dict[str, Any]:
    return {"diverged_at": diverged_at, "history": {"accuracy": accs}}


def test_outcome_classifies_runs() -> None:
    assert mnist_lr.outcome(_run(17, [0.1, 0.5]), 0.2) == "diverged at step 17"
    assert mnist_lr.outcome(_run(None, [0.1, 0.11]), 0.2) == "stalled"
    assert mnist_lr.outcome(_run(None, []), 0.2) == "stalled"
    assert mnist_lr.outcome(_run(None, [0.1, 0.9]), 0.2) == "trains"


def test_bad_multipliers_are_refused() -> None:
    with pytest.raises(ValueError, match="every --multipliers value must be a finite number > 0"):
        MnistLrConfig.from_dict({"multipliers": [1, 0]})


def test_seeds_two_runs_each_rate_twice_and_reports_the_range(tmp_path: Path) -> None:
    one = get("mnist-lr").run({**TINY, "multipliers": [1.0]}, tmp_path / "one")
    two = get("mnist-lr").run({**TINY, "multipliers": [1.0], "seeds": 2}, tmp_path / "two")
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert [r["name"] for r in m1["runs"]] == ["plain-lr0.2-seed0", "bn-lr0.2-seed0"]
    assert sorted((r["net"], r["seed"]) for r in m2["runs"]) == [
        ("bn", 0), ("bn", 1), ("plain", 0), ("plain", 1),
    ]  # fmt: skip
    # seed 0 of the two-seed run trains exactly as the one-seed run
    for r in m1["runs"]:
        same = next(x for x in m2["runs"] if x["name"] == r["name"])
        assert same["history"] == r["history"]
    bn = [r for r in m2["runs"] if r["net"] == "bn"]
    assert bn[0]["history"]["train_loss"] != bn[1]["history"]["train_loss"]  # other seed
    bn = sorted(r["history"]["accuracy"][-1] for r in bn)
    md = (two / "report.md").read_text()
    assert f"({100 * bn[0]:.2f}%–{100 * bn[1]:.2f}%)" in md
