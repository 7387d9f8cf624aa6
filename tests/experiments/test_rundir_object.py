"""RunDir: the run directory as one object (lock, config, metrics, CSV, figures, status)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnlab.experiments.report import Report
from bnlab.experiments.rundir import RunDir, RunDirBusyError


def test_start_writes_config_clears_results_and_locks(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{}")  # a previous run's files (its manifest)
    (tmp_path / "fig_old.png").write_bytes(b"png")
    (tmp_path / ".bnlab-manifest.json").write_text('{"files": ["metrics.json", "fig_old.png"]}')
    (tmp_path / "checkpoints").mkdir()
    with RunDir.start(tmp_path, {"steps": 3}) as rd:
        config = json.loads((tmp_path / "config.json").read_text())
        assert config.pop("provenance")["started"] and config == {"steps": 3}
        assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "fig_old.png").exists()
        assert (tmp_path / "checkpoints").is_dir()  # not bnlab's: left
        with pytest.raises(RunDirBusyError):  # a second process would be refused
            lock_run_dir_elsewhere(tmp_path)
        rd.write_metrics({"acc": 0.5})
        rd.write_csv("history.csv", ["step", "loss"], [[1, 0.5], [2, None]])
        assert rd.read_json("metrics.json") == {"acc": 0.5}
        assert (tmp_path / "history.csv").read_text().splitlines() == ["step,loss", "1,0.5", "2,"]
        assert rd.figure("loss") == tmp_path / "fig_loss.png"
        r = Report("t")
        r.paragraph("*ok*")
        md, page = rd.write_report(r)
        assert "<em>ok</em>" in page.read_text() and md.read_text().strip().endswith("*ok*")
    lock_run_dir_elsewhere(tmp_path)  # released on exit


def lock_run_dir_elsewhere(path: Path) -> None:
    """Take the lock from a child process (flock is per open file, per process)."""
    import subprocess
    import sys

    code = (
        "import sys; from bnlab.experiments.rundir import lock_run_dir, RunDirBusyError\n"
        "try: lock_run_dir(sys.argv[1])\nexcept RunDirBusyError: sys.exit(3)\n"
    )
    rc = subprocess.run([sys.executable, "-c", code, str(path)], timeout=60).returncode
    if rc == 3:
        raise RunDirBusyError(str(path))
    assert rc == 0


def test_status_reports_how_the_body_ended(tmp_path: Path) -> None:
    seen: list[str] = []
    rd = RunDir.start(tmp_path, {})
    try:
        with pytest.raises(RuntimeError), rd.status(seen.append):
            raise RuntimeError("boom")
        with rd.status(seen.append):
            pass
    finally:
        rd.release()
    assert seen == ["failed", "complete"]
