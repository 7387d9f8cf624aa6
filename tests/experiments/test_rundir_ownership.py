"""`bnlab run --force` deletes only what bnlab wrote (.bnlab-manifest.json); files it did not
write stay, and under a run's names they make it refuse the directory; the lock file goes at
the end; a resumed run names what changed in its environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnlab.cli import main
from bnlab.experiments.manifest import MANIFEST_NAME
from bnlab.experiments.rundir import LOCK_NAME, release_run_dir, start_run_dir

TINY = ["--steps", "10", "--train-subset", "600", "--test-subset", "200", "--no-progress"]


def _run(out: Path, *args: str) -> int:
    return main(["run", "mnist-sigmoid", *TINY, *args, "--out", str(out)])


def test_force_removes_a_stale_checkpoint_and_keeps_an_unrelated_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--lr", "0.5", "--save-checkpoints") == 0
    stale = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert stale and all("0.5" in name for name in stale)
    (out / "notes.txt").write_text("mine")
    assert _run(out, "--lr", "0.1", "--save-checkpoints", "--force") == 0
    new = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert new and all("0.1" in name for name in new)  # the lr 0.5 checkpoints are gone
    assert (out / "notes.txt").read_text() == "mine"
    assert "notes.txt" in capsys.readouterr().err  # named as left, once
    files = json.loads((out / MANIFEST_NAME).read_text())["files"]
    assert "config.json" in files and f"checkpoints/{new[0]}" in files
    assert "notes.txt" not in files
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("force", [False, True])
def test_results_bnlab_did_not_write_are_never_overwritten(tmp_path, capsys, force):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("someone's report")
    (out / "metrics.csv").write_text("a,b\n")
    assert _run(out, *(["--force"] if force else [])) == 2
    err = capsys.readouterr().err
    assert "did not write" in err and "metrics.csv, report.md" in err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "report.md"]
    assert (out / "report.md").read_text() == "someone's report"


def test_the_manifest_is_the_record_and_the_end_time_is_set(tmp_path):
    out = tmp_path / "run"
    start_run_dir(out, {"steps": 1})
    (out / "metrics.json").write_text("{}")  # written during the run: bnlab's
    release_run_dir(out)
    assert json.loads((out / MANIFEST_NAME).read_text())["files"] == ["config.json", "metrics.json"]
    prov = json.loads((out / "config.json").read_text())["provenance"]
    assert prov["started"] <= prov["ended"]
    assert not (out / LOCK_NAME).exists()


def test_resume_names_what_changed_and_keeps_the_earlier_provenance(tmp_path, capsys):
    out = tmp_path / "run"
    start_run_dir(out, {"steps": 1})
    release_run_dir(out)
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "bn.npz").write_bytes(b"ck")
    old = json.loads((out / "config.json").read_text())
    old["provenance"]["packages"]["numpy"] = "0.0.1"
    old["provenance"]["batch"]["world_size"] = 4
    capsys.readouterr()
    start_run_dir(out, {"steps": 2}, resume=old)
    release_run_dir(out)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "packages.numpy: 0.0.1 -> " in err
    assert "batch.world_size: 4 -> 1" in err
    config = json.loads((out / "config.json").read_text())
    assert (
        config["steps"] == 2 and config["provenance"]["earlier"][0]["packages"]["numpy"] == "0.0.1"
    )
    assert (out / "checkpoints" / "bn.npz").read_bytes() == b"ck"  # a resumed run keeps them
