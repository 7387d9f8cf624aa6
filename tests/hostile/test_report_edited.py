"""Issue 23 high 14: `bnlab report` on a hand-edited metrics file is one clear line naming
the run directory (exit 2), never a traceback; harmless edits (a null accuracy) still render."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bnlab import cli

ARGS = ["--train-subset", "600", "--test-subset", "200", "--no-progress", "--steps", "20"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ms") / "run"
    assert cli.main(["run", "mnist-sigmoid", *ARGS, "--eval-every", "10", "--out", str(out)]) == 0
    return out


BAD = {
    "step 1e308": lambda h: h["step"].__setitem__(1, 1e308),
    "step null": lambda h: h["step"].__setitem__(1, None),
    "short step": lambda h: h.__setitem__("step", [0]),
    "accuracy text": lambda h: h["accuracy"].__setitem__(0, "x"),
}


@pytest.mark.parametrize("edit", list(BAD))
def test_edited_metrics_is_one_line(run_dir: Path, tmp_path: Path, edit: str, capsys) -> None:
    d = tmp_path / "c"
    shutil.copytree(run_dir, d)
    m = json.loads((d / "metrics.json").read_text())
    BAD[edit](m["runs"][0]["history"])
    (d / "metrics.json").write_text(json.dumps(m))
    capsys.readouterr()
    assert cli.main(["report", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot render {d}" in err and "edited" in err, err


def test_null_accuracy_still_renders(run_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(run_dir, d)
    m = json.loads((d / "metrics.json").read_text())
    m["runs"][0]["history"]["accuracy"][1] = None
    (d / "metrics.json").write_text(json.dumps(m))
    assert cli.main(["report", str(d)]) == 0
