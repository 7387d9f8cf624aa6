"""Shared by the test_claims_* files: run an experiment briefly, and interrupt one with SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bnlab import cli


def metrics(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def interrupt_and_check(
    argv: list[str], out: Path, ready: Any, launcher: list[str] | None = None
) -> dict[str, Any]:
    """``bnlab run ARGV --out OUT`` in a subprocess (started by ``launcher``, e.g. ``[mpiexec,
    "-n", "2"]``), SIGINT once ``ready(metrics)``; checks the exit status 130, status
    "interrupted" and that ``bnlab report`` renders the partial run."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    cmd = [*(launcher or []), sys.executable, "-m", "bnlab.cli", "run", *argv, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            m = metrics(out)
            if m is not None and m.get("status") == "running" and ready(m):
                break
            assert proc.poll() is None, (
                f"the run ended before it was interrupted: {proc.communicate()}"
            )
            assert time.monotonic() < deadline, "the run did not start within 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    m = metrics(out)
    assert m is not None and m["status"] == "interrupted"
    (out / "report.md").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert "interrupted" in (out / "report.md").read_text().lower()
    return m


def run_and_render(name: str, argv: list[str], out: Path, figures: list[str]) -> dict[str, Any]:
    """``bnlab run NAME ARGV``, then the files, and ``bnlab report`` again."""
    assert cli.main(["run", name, *argv, "--no-progress", "--out", str(out)]) == 0
    for f in ["config.json", "metrics.json", "metrics.csv", "report.md", "report.html", *figures]:
        assert (out / f).is_file(), f
    m = metrics(out)
    assert m is not None and m["status"] == "complete"
    (out / "report.html").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 0
    return m
