"""The `bnlab` command: listing, --help, smoke runs, --force, report, Ctrl-C."""

from __future__ import annotations

import argparse
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
    # nothing in the directory describes the old run
    (out / "fig_sweep.png").write_bytes(b"left over from a --sweep run")
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
        [sys.executable, "-c", "import sys, time; from bnlab.experiments.report import "
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


def test_misspelt_flag_shows_the_subcommand_usage_and_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli("run", "mnist-sigmoid", "--stpes", "3")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bnlab run mnist-sigmoid")
    assert "unrecognized arguments: --stpes 3 (did you mean --steps?)" in err
    with pytest.raises(SystemExit):
        run_cli("run", "population-stats", "--momentum", "0.1")
    assert "(did you mean --momenta?)" in capsys.readouterr().err


def _help_lines(monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, str]:
    """Option -> its help line, at a width where nothing wraps."""
    monkeypatch.setenv("COLUMNS", "400")
    parser = cli.build_parser()
    sub = parser
    for name in argv:
        sub = next(
            a.choices[name] for a in sub._actions if isinstance(a, argparse._SubParsersAction)
        )
    lines: dict[str, str] = {}
    flag = None
    for line in sub.format_help().splitlines():
        parts = line.split()
        if parts and parts[0].startswith("-") and line.startswith("  -"):
            flag = parts[0].rstrip(",")
            lines[flag] = line
        elif flag is not None and line.startswith("    "):
            lines[flag] += " " + line.strip()  # the help text on the next line
        else:
            flag = None
    return lines


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ("run", "mnist-sigmoid"),
            {"--seeds": "1", "--eval-batch-size": "2000", "--lr": "0.1 3.0"},
        ),
        (("run", "population-stats"), {"--momenta": "0.01 0.1 0.5", "--recal-examples": "12000"}),
        (("run", "renorm-small-batch"), {"--rmax": "3.0", "--dmax": "5.0", "--micro-sizes": "4 2"}),
        (("run", "cifar10-keras"), {"--eval-batch-size": "500", "--models": "baseline,bn"}),
        (("run", "population-stats-epochs"), {"--recal-examples": "10000"}),
        (("recalibrate",), {"--batch-size": "60", "--seed": "0"}),
    ],
)
def test_help_shows_every_default(
    argv: tuple[str, ...], expected: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _help_lines(monkeypatch, *argv)
    for flag, default in expected.items():
        assert f"(default: {default})" in lines[flag], lines[flag]


def test_every_experiment_option_has_help_and_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from bnlab import experiments

    for name in experiments.available():
        parser = cli.build_parser()
        run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        ep = run.choices["run"]
        exp = next(a for a in ep._actions if isinstance(a, argparse._SubParsersAction))
        lines = _help_lines(monkeypatch, "run", name)
        for action in exp.choices[name]._actions:
            if not action.option_strings or action.option_strings[0] == "-h":
                continue
            flag = action.option_strings[0]
            assert action.help, (name, flag)
            flags = (argparse._StoreTrueAction, argparse._StoreFalseAction)
            if action.default is not None and not isinstance(action, flags):
                assert "default:" in lines[flag], (name, lines[flag])


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
    assert "needs matplotlib" in err and "pip install 'bnlab[experiments]'" in err
    assert err.count("\n") == 1 and not out.exists()


def test_export_without_onnx_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnlab.deploy import save_checkpoint
    from bnlab.layers import BatchNorm, Dense, Sequential

    save_checkpoint(tmp_path / "m.npz", Sequential([Dense(4, 3, seed=0), BatchNorm(3)]))
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert run_cli("export", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")) == 1
    assert "pip install 'bnlab[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_output_paths_that_are_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnlab.deploy import save_checkpoint
    from bnlab.layers import BatchNorm, Dense, Sequential

    ck = tmp_path / "m.npz"
    save_checkpoint(ck, Sequential([Dense(4, 3, seed=0), BatchNorm(3)]))
    before = ck.read_bytes()
    (tmp_path / "d").mkdir()
    assert run_cli("export", str(ck), str(tmp_path / "d")) == 2
    assert "is a directory" in capsys.readouterr().err
    np_file = tmp_path / "x.npy"
    import numpy as np

    np.save(np_file, np.ones((8, 4), np.float32))
    argv = ["recalibrate", str(ck), "--data", str(np_file), "--batch-size", "4"]
    assert run_cli(*argv, "--out", str(tmp_path / "d")) == 2
    assert "is a directory" in capsys.readouterr().err
    assert run_cli(*argv) == 2  # neither --out nor --in-place
    assert "--in-place" in capsys.readouterr().err
    assert ck.read_bytes() == before and list((tmp_path / "d").iterdir()) == []


def test_recalibrate_refuses_nan_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from bnlab.deploy import save_checkpoint
    from bnlab.layers import BatchNorm, Dense, Sequential

    ck = tmp_path / "m.npz"
    save_checkpoint(ck, Sequential([Dense(4, 3, seed=0), BatchNorm(3)]))
    before = ck.read_bytes()
    x = np.ones((8, 4), np.float32)
    x[3, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    assert run_cli("recalibrate", str(ck), "--data", str(tmp_path / "x.npy"), "--in-place") == 2
    assert "NaN or Inf in 1 of 8 examples" in capsys.readouterr().err
    assert ck.read_bytes() == before


def test_recalibrate_in_place_from_a_cifar_folder(tmp_path: Path) -> None:
    import pickle

    import numpy as np

    from bnlab.deploy import (
        load_checkpoint,
        recompute_population_stats,
        save_checkpoint,
        shuffled_batches,
    )
    from bnlab.layers import BatchNorm, Conv2D, Sequential

    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    data = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data[name] = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
        batch = {b"data": data[name], b"labels": rng.integers(0, 10, size=6).tolist()}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    model = Sequential([Conv2D(3, 2, 3, seed=0), BatchNorm(2)])
    ck = tmp_path / "m.npz"
    save_checkpoint(ck, model)
    assert run_cli("recalibrate", str(ck), "--data", str(d), "--batch-size", "5", "--in-place") == 0
    from bnlab.data import load_cifar10

    (x, _), _ = load_cifar10(d)
    recompute_population_stats(model, shuffled_batches(x.astype(np.float32) / 255, 5, seed=0))
    new = load_checkpoint(ck)
    np.testing.assert_array_equal(new.model.layers[1].running_var, model.layers[1].running_var)
    assert new.extra["recalibrated"]["examples"] == 30
    assert not list(tmp_path.glob(".m.npz.*.tmp"))  # the atomic write left no temporary


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
    assert [p.name for p in out.iterdir()] == [".bnlab-run.lock"]  # no config, no temporary


def test_a_run_that_appeared_meanwhile_is_not_overwritten_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnlab.experiments import mnist_common as mc

    out = tmp_path / "r"
    load = mc.load_data

    def other_run_starts_while_loading(cfg: dict[str, Any]) -> Any:
        out.mkdir()
        (out / "config.json").write_text('{"experiment": "mnist-sigmoid", "other": 1}')
        return load(cfg)

    monkeypatch.setattr(mc, "load_data", other_run_starts_while_loading)
    assert run_cli("run", "mnist-sigmoid", *TINY, "--out", str(out)) == 2
    assert "another run started in it meanwhile" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".bnlab-run.lock", "config.json"]
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
