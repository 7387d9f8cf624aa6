"""The `bnlab` command: listing, --help, smoke runs, --force, report, Ctrl-C."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bnlab import cli
from bnlab.train import Trainer

TINY = [
    "--steps",
    "12",
    "--eval-every",
    "6",
    "--train-subset",
    "600",
    "--test-subset",
    "300",
    "--hidden",
    "32",
    "32",
    "32",
    "--no-progress",
]


def run_cli(*argv: str) -> int:
    return cli.main(list(argv))


def test_experiments_lists_names_and_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("experiments") == 0
    out = capsys.readouterr().out
    assert "mnist-sigmoid" in out and "mnist-lr" in out
    assert "Figure 1" in out  # the one-line description


@pytest.mark.parametrize(
    "argv, expect",
    [
        ([], "experiments"),
        (["run"], "mnist-sigmoid"),
        (["run", "mnist-sigmoid"], "--seeds"),
        (["run", "mnist-lr"], "--multipliers"),
        (["report"], "DIR"),
        (["experiments"], "List"),
    ],
)
def test_help_everywhere(argv: list[str], expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli(*argv, "--help")
    assert exc.value.code == 0
    assert expect in capsys.readouterr().out


def test_unknown_experiment_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli("run", "nope")
    assert exc.value.code == 2
    assert "nope" in capsys.readouterr().err


def test_bad_option_value_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("run", "mnist-sigmoid", "--steps", "0", "--out", str(tmp_path / "r")) == 2
    assert "--steps must be an integer >= 1, got 0" in capsys.readouterr().err


def test_run_report_and_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli("run", "mnist-sigmoid", *TINY, "--lr", "0.5", "--out", str(out)) == 0
    assert "report.html" in capsys.readouterr().out
    for name in (
        "config.json",
        "metrics.json",
        "metrics.csv",
        "fig_accuracy.png",
        "fig_percentiles.png",
        "report.md",
        "report.html",
    ):
        assert (out / name).stat().st_size > 0, name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["steps"] == 12 and cfg["lrs"] == [0.5] and cfg["experiment"] == "mnist-sigmoid"
    assert json.loads((out / "metrics.json").read_text())["status"] == "complete"

    # a second run into the same directory needs --force
    assert run_cli("run", "mnist-sigmoid", *TINY, "--out", str(out)) == 2
    assert "--force" in capsys.readouterr().err

    (out / "report.html").unlink()
    (out / "fig_accuracy.png").unlink()
    assert run_cli("report", str(out)) == 0
    assert (out / "report.html").is_file() and (out / "fig_accuracy.png").is_file()


def test_report_of_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("report", str(tmp_path / "missing")) == 2
    assert "config.json" in capsys.readouterr().err


def test_ctrl_c_leaves_a_partial_run_that_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = {"n": 0}
    step = Trainer.step

    def interrupting_step(self: Trainer) -> float:
        calls["n"] += 1
        if calls["n"] == 2 * 8 + 1:  # two nets: during step 9 of 12
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Trainer, "step", interrupting_step)
    out = tmp_path / "run"
    assert run_cli("run", "mnist-lr", *TINY, "--multipliers", "1", "--out", str(out)) == 130
    assert "interrupted" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert metrics["steps_done"] == 8
    steps = metrics["runs"][0]["history"]["step"]
    assert steps[:2] == [0, 6]  # what was recorded before Ctrl-C is kept

    (out / "report.md").unlink()
    assert run_cli("report", str(out)) == 0
    assert "interrupted" in (out / "report.md").read_text()


def test_module_entry_point_runs_in_a_fresh_process() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "bnlab.cli", "experiments"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "mnist-sigmoid" in res.stdout


def test_force_replaces_the_old_results_and_bad_input_keeps_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run_cli("run", "mnist-sigmoid", *TINY, "--lr", "0.5", "--out", str(out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert "fig_percentiles.png" in before and "metrics.json" in before

    # bad input with --force: an error, and every file of the old run as it was
    args = ("run", "mnist-sigmoid", *TINY, "--steps", "0", "--force", "--out", str(out))
    assert run_cli(*args) == 2
    assert "--steps must be an integer >= 1, got 0" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    # a good run with --force: an old result file the new run does not write is gone, so
    # nothing in the directory describes the old run
    (out / "fig_sweep.png").write_bytes(b"left over from a --sweep run")
    assert run_cli("run", "mnist-sigmoid", *TINY, "--lr", "0.7", "--force", "--out", str(out)) == 0
    assert not (out / "fig_sweep.png").exists()
    assert json.loads((out / "config.json").read_text())["lrs"] == [0.7]
    assert json.loads((out / "metrics.json").read_text())["status"] == "complete"
