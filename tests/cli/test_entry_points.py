"""The ways to start the command (`bnlab`, `python -m bnlab`, `python -m bnlab.cli`, `main`)
give the same output and exit status; `import bnlab.cli` stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bnlab import cli

BNLAB = Path(sys.executable).parent / "bnlab"  # the console script of the venv


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=180)


def _launchers() -> list[list[str]]:
    out = [[sys.executable, "-m", "bnlab"], [sys.executable, "-m", "bnlab.cli"]]
    return [*out, [str(BNLAB)]] if BNLAB.is_file() else out


@pytest.mark.parametrize(
    ("argv", "status", "stream", "words"),
    [
        (["experiments"], 0, "stdout", "mnist-sigmoid"),
        (["--version"], 0, "stdout", "bnlab 0.1.0"),
        (["run", "nope"], 2, "stderr", "usage: bnlab run"),
        (["export", "missing.npz", "m.onnx"], 2, "stderr", "bnlab: error: "),
    ],
)
def test_every_launcher_gives_the_same_answer(
    argv: list[str], status: int, stream: str, words: str, tmp_path: Path
) -> None:
    answers = set()
    for launcher in _launchers():
        res = subprocess.run(
            [*launcher, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
            cwd=tmp_path,
        )
        assert res.returncode == status, (launcher, res.stderr)
        text = getattr(res, stream)
        assert words in text, (launcher, text)
        answers.add((res.returncode, res.stdout, res.stderr))
    assert len(answers) == 1  # byte-identical output, whichever way it was started
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_bnlab_help_names_the_command() -> None:
    res = _run(sys.executable, "-m", "bnlab", "--help")
    assert res.returncode == 0 and res.stdout.startswith("usage: bnlab ")
    listed = [name for name, _ in cli.SUBCOMMANDS]
    assert listed == ["experiments", "run", "report", "recalibrate", "export"]
    rows = [line.split()[0] for line in res.stdout.splitlines() if line.startswith("    ")]
    positions = [rows.index(name) for name in listed]
    assert positions == sorted(positions)  # --help lists them in SUBCOMMANDS order


def test_import_is_light() -> None:
    """The BLAS thread default is set before NumPy is imported: bnlab.cli imports no NumPy."""
    code = (
        "import sys, bnlab.cli, bnlab.cli.deploy, bnlab.cli.run; "
        "print(sorted(m for m in ('numpy', 'numba', 'matplotlib', 'bnlab.experiments', "
        "'bnlab.deploy') if m in sys.modules))"
    )
    res = _run(sys.executable, "-c", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_main_is_the_console_script_target() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "bnlab"]
    assert ep.value == "bnlab.cli:main" and ep.load() is cli.main


@pytest.mark.parametrize(
    ("experiment", "resumable"), [("cifar10-keras", True), ("mnist-lr", False)]
)
def test_an_existing_run_needs_force_or_resume(
    experiment: str, resumable: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before anything loads or trains: the old run stays as it was."""
    (tmp_path / "config.json").write_text('{"experiment": "x"}')
    assert cli.main(["run", experiment, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bnlab: error: {tmp_path} already holds a run") and err.count("\n") == 1
    assert "pass --force to overwrite it" in err
    assert ("or --resume to continue it" in err) is resumable
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    assert (tmp_path / "config.json").read_text() == '{"experiment": "x"}'
