"""Issue 21's figure fixes: one-epoch CIFAR train and test told apart, no baseline reference
line in a --models bn run, renorm's final bars in percent on a percent axis, and one naming
scheme (fig_*.png) for population-stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bnlab.cli import main
from bnlab.experiments.cifar10_keras import report as cifar_report
from bnlab.experiments.renorm_small_batch import report as renorm_report
from bnlab.experiments.rundir import RunDir


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the report code saves (kept open for inspection)."""
    saved: list[Any] = []

    def keep(fig: Any, path: str | Path) -> Path:
        saved.append(fig)
        return Path(path)

    monkeypatch.setattr(cifar_report, "save_figure", keep)
    monkeypatch.setattr(renorm_report, "save_figure", keep)
    return saved


def test_cifar_one_epoch_bn_only(tmp_path: Path, figures: list[Any]) -> None:
    h = {"epoch": [1], "train_accuracy": [0.4], "test_accuracy": [0.45]}
    cifar_report._plot(tmp_path, {"models": {"bn": {"history": h}}}, "accuracy", "acc", "t")
    lines = figures[0].axes[0].get_lines()
    labels = [ln.get_label() for ln in lines]
    assert not any("baseline" in lab for lab in labels), labels  # only the net that ran
    train, test = (
        next(ln for ln in lines if ln.get_label() == f"BN {k}") for k in ("train", "test")
    )
    assert train.get_marker() != test.get_marker()  # one epoch: two points told apart


def test_renorm_final_bars_are_percent_on_a_percent_axis(tmp_path: Path, figures: list[Any]):
    fin: dict[str, dict[str, list[float | None]]] = {
        "bn-full": {"acc": [0.9757], "tm": [0.9856], "gap": [0.0099]},
        "renorm-micro2": {"acc": [0.8209], "tm": [0.83], "gap": [0.0091]},
    }
    renorm_report._plot_final(RunDir(tmp_path), fin)
    ax = figures[0].axes[0]
    assert ax.get_ylim()[1] > 100 and "%" in ax.get_ylabel()
    assert sorted(t.get_text() for t in ax.texts) == ["82.1", "83.0", "97.6", "98.6"]
    assert max(p.get_height() for p in ax.patches) == pytest.approx(98.56)
    assert not ax.collections  # one seed: no min-max whiskers


def test_renorm_final_bars_over_seeds_are_means_with_min_max_whiskers(
    tmp_path: Path, figures: list[Any]
) -> None:
    fin: dict[str, dict[str, list[float | None]]] = {
        "bn-noniid": {"acc": [0.5, 0.7], "tm": [0.9, 0.8], "gap": [0.4, 0.1]}
    }
    renorm_report._plot_final(RunDir(tmp_path), fin)
    ax = figures[0].axes[0]
    assert sorted(p.get_height() for p in ax.patches) == pytest.approx([60.0, 85.0])
    segments = [seg for c in ax.collections for seg in c.get_segments()]
    spans = sorted((round(s[0][1], 6), round(s[1][1], 6)) for s in segments)
    assert spans == [(50.0, 70.0), (80.0, 90.0)]


def test_population_stats_figure_is_named_like_the_others(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--steps", "20", "--eval-every", "10", "--train-subset", "600", "--test-subset", "200"]
    args += ["--recal-examples", "120", "--no-progress", "--out", str(out)]
    assert main(["run", "population-stats", *args]) == 0
    assert (out / "fig_accuracy.png").is_file() and not (out / "accuracy.png").exists()
    assert "(fig_accuracy.png)" in (out / "report.md").read_text()
