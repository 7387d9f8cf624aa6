"""The `bnlab` command: listing, --help, smoke runs, --force, report, Ctrl-C."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    # nothing in the directory describes the old run (bnlab wrote it: in its manifest)
    (out / "fig_sweep.png").write_bytes(b"left over from a --sweep run")
    manifest = json.loads((out / ".bnlab-manifest.json").read_text())
    manifest["files"].append("fig_sweep.png")
    (out / ".bnlab-manifest.json").write_text(json.dumps(manifest))
    assert run_cli("run", "mnist-sigmoid", *TINY, "--lr", "0.7", "--force", "--out", str(out)) == 0
    assert not (out / "fig_sweep.png").exists()
    assert json.loads((out / "config.json").read_text())["lrs"] == [0.7]
    assert json.loads((out / "metrics.json").read_text())["status"] == "complete"


# -- issue 15/16: one-line errors, the run-directory lock, help, missing packages -------------


def test_a_second_run_on_a_locked_directory_fails_at_once_naming_the_pid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run_cli("run", "mnist-sigmoid", *TINY, "--lr", "0.5", "--out", str(out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bnlab.experiments.rundir import "
         "lock_run_dir; lock_run_dir(sys.argv[1]); print('locked', flush=True); time.sleep(120)",
         str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert run_cli("run", "mnist-sigmoid", *TINY, "--force", "--out", str(out)) == 1
        err = capsys.readouterr().err
        assert f"in use by another bnlab run (pid {holder.pid})" in err and err.count("\n") == 1
        after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        assert {k: v for k, v in after.items() if k != ".bnlab-run.lock"} == {
            k: v for k, v in before.items() if k != ".bnlab-run.lock"
        }
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its holder: the directory can be used again
    assert run_cli("run", "mnist-sigmoid", *TINY, "--force", "--out", str(out)) == 0


@pytest.mark.parametrize("under", [False, True])
def test_out_that_is_a_file_or_under_one(
    under: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "afile"
    f.write_bytes(b"not a directory")
    out = f / "sub" if under else f
    assert run_cli("run", "mnist-sigmoid", *TINY, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnlab: error: --out") and "file" in err and err.count("\n") == 1
    assert f.read_bytes() == b"not a directory"


@pytest.mark.parametrize(
    ("config", "metrics", "words"),
    [
        ("[]", None, "holds a JSON list"),
        ("{not json", None, "is not valid JSON"),
        ('{"experiment": "mnist-sigmoid"}', "{}", "is not a bnlab metrics file"),
        ('{"experiment": "mnist-sigmoid"}', "[1, 2]", "is not a bnlab metrics file"),
        ('{"experiment": "mnist-sigmoid"}', '{"status": "complete"}', "cannot render"),
        ('{"experiment": "mnist-sigmoidd"}', None, "names experiment 'mnist-sigmoidd', which"),
    ],
)
def test_report_of_bad_run_files_is_one_line(
    config: str,
    metrics: str | None,
    words: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "config.json").write_text(config)
    if metrics is not None:
        (tmp_path / "metrics.json").write_text(metrics)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_cli("report", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnlab: error: ") and words in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_run_works_without_tqdm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    argv = [a for a in TINY if a != "--no-progress"]
    assert run_cli("run", "mnist-sigmoid", *argv, "--lr", "0.5", "--out", str(tmp_path / "r")) == 0
    err = capsys.readouterr().err
    assert "mnist-sigmoid: 12/12" in err and "\r" not in err  # plain lines, not a tty


def test_missing_matplotlib_names_the_extra_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "r"
    assert run_cli("run", "mnist-sigmoid", *TINY, "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert (
        "needs matplotlib" in err
        and "pip install matplotlib" in err
        and "pip install -e '.[experiments]'" in err
    )
    assert err.count("\n") == 1 and not out.exists()


def test_a_full_disk_is_one_line_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from bnlab.experiments import rundir as report

    real = report.atomic_write

    def full_disk(path: Any, write: Any, *args: Any, **kw: Any) -> Any:
        def write_then_fail(f: Any) -> None:
            write(f)
            raise OSError(errno.ENOSPC, "No space left on device")

        return real(path, write_then_fail, *args, **kw)

    monkeypatch.setattr(report, "atomic_write", full_disk)
    out = tmp_path / "r"
    assert run_cli("run", "mnist-sigmoid", *TINY, "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert err.startswith("bnlab: error: ") and "No space left on device" in err
    assert err.count("\n") == 1
    assert [p.name for p in out.iterdir()] == []  # no config, no temporary, no lock file


def test_a_run_that_appeared_meanwhile_is_not_overwritten_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bnlab.data

    out = tmp_path / "r"
    load = bnlab.data.load_mnist  # the experiment imports it when it loads its data

    def other_run_starts_while_loading(*args: Any, **kw: Any) -> Any:
        out.mkdir(exist_ok=True)
        (out / "config.json").write_text('{"experiment": "mnist-sigmoid", "other": 1}')
        return load(*args, **kw)

    monkeypatch.setattr(bnlab.data, "load_mnist", other_run_starts_while_loading)
    assert run_cli("run", "mnist-sigmoid", *TINY, "--out", str(out)) == 2
    assert "another run started in it meanwhile" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]  # the other run's
    assert '"other": 1' in (out / "config.json").read_text()


def test_a_diverging_run_is_one_line_and_leaves_a_failed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    argv = ["run", "population-stats", "--steps", "3", "--train-subset", "200", "--test-subset"]
    argv += ["50", "--hidden", "8", "--recal-examples", "120", "--no-progress"]
    assert run_cli(*argv, "--init-std", "1e20", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert err.startswith("bnlab: error: ") and "non-finite" in err and err.count("\n") == 1
    assert json.loads((out / "metrics.json").read_text())["status"] == "failed"
    assert run_cli("report", str(out)) == 0
