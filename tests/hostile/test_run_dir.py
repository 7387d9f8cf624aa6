"""Issue 23, run directories: a user's files are never overwritten or deleted without --force
(critical 1, the exact case), a dangling symlink --out, SIGTERM ending a run "interrupted",
an initial scale beyond float32 refused before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnlab import cli

TINY = ["--train-subset", "600", "--test-subset", "200", "--no-progress", "--steps", "20"]
BIN = Path(sys.executable).parent


def test_users_files_survive_a_run_without_force(tmp_path: Path, capsys) -> None:
    d = tmp_path / "d"
    d.mkdir()
    names = ["report.md", "metrics.csv", "metrics.json", "accuracy.csv", "fig_vacation.png"]
    for name in [*names, "thesis.txt"]:
        (d / name).write_text(f"mine {name}")
    assert cli.main(["run", "mnist-sigmoid", *TINY, "--out", str(d)]) == 2
    assert "bnlab did not write" in capsys.readouterr().err
    for name in [*names, "thesis.txt"]:
        assert (d / name).read_text() == f"mine {name}"
    assert sorted(p.name for p in d.iterdir()) == sorted([*names, "thesis.txt"])


def test_dangling_symlink_out_is_named(tmp_path: Path, capsys) -> None:
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "missing" / "x")
    assert cli.main(["run", "mnist-sigmoid", *TINY, "--out", str(link)]) == 2
    err = capsys.readouterr().err
    assert "is a symlink to a missing" in err and "Errno" not in err
    assert not (tmp_path / "missing").exists()


def test_init_scale_beyond_float32_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    assert cli.main(["run", "mnist-sigmoid", *TINY, "--init-std", "1e300", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "finite float32" in err and err.count("\n") == 1
    assert not (out / "metrics.json").exists()


def test_sigterm_ends_the_run_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "r"
    cmd = [str(BIN / "bnlab"), "run", "mnist-sigmoid", *TINY[:-2], "--steps", "1000000"]
    cmd += ["--eval-every", "20", "--out", str(out)]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            m = out / "metrics.json"
            if m.is_file() and json.loads(m.read_text() or "{}").get("steps_done", 0) >= 20:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the run wrote no metrics within 90 s")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert json.loads((out / "metrics.json").read_text())["status"] == "interrupted"


def test_covariate_shift_cifar_path_without_the_cifar_dataset(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    argv = ["run", "covariate-shift", "--cifar", str(tmp_path / "none"), "--no-progress"]
    assert cli.main([*argv, "--out", str(out)]) == 2
    assert "--cifar is read only with --dataset cifar10" in capsys.readouterr().err
    assert not out.exists()
