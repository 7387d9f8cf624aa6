"""Issue 23, a full disk while the report is rendered: the run is not "complete" (metrics.json
says "report failed" and why), the command ends in one line naming the file and the fix, the
metrics and checkpoints stay intact, and ``bnlab report RUN_DIR`` finishes the report."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from bnlab import cli
from bnlab.deploy.checkpoint import load_checkpoint
from bnlab.experiments import manifest, report, rundir

TINY = ["--train-subset", "600", "--test-subset", "200", "--no-progress", "--steps", "12"]
TINY += ["--eval-every", "6", "--hidden", "16", "16", "16", "--lr", "0.5", "--save-checkpoints"]


def _fill_disk(monkeypatch: pytest.MonkeyPatch, *, everything: bool) -> None:
    """ENOSPC for every figure and report file; with ``everything``, for every file bnlab
    writes once the report has started (metrics.json, config.json, the manifest too)."""
    started = [False]

    def patched(module: Any) -> None:
        real = module.atomic_write

        def full(path: Any, write: Any, *args: Any, **kw: Any) -> Any:
            name = Path(path).name
            if name.startswith(("fig_", "report.")) and module is report:
                started[0] = True
            if (name.startswith(("fig_", "report.")) and module is report) or (
                everything and started[0]
            ):

                def fail(f: Any) -> None:
                    f.write(b"partial")
                    raise OSError(errno.ENOSPC, "No space left on device")

                return real(path, fail, *args, **kw)
            return real(path, write, *args, **kw)

        monkeypatch.setattr(module, "atomic_write", full)

    for module in (report, rundir, manifest):
        patched(module)


def _status(out: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def _check_intact(out: Path) -> None:
    assert len(_status(out)["runs"]) == 2 and (out / "metrics.csv").stat().st_size > 0
    ckpts = sorted((out / "checkpoints").glob("*.npz"))
    assert len(ckpts) == 2 and all(load_checkpoint(p).extra["step"] == 12 for p in ckpts)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporaries left


def test_a_full_disk_while_rendering_leaves_a_run_that_is_not_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    with monkeypatch.context() as m:
        _fill_disk(m, everything=False)
        assert cli.main(["run", "mnist-sigmoid", *TINY, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("bnlab: error:")
    assert "No space left on device" in err and str(out / "fig_accuracy.png") in err
    assert f"then run `bnlab report {out}`" in err and "intact" in err
    metrics = _status(out)
    assert metrics["status"] == report.REPORT_FAILED and "No space" in metrics["report_error"]
    assert not (out / "report.md").exists()
    _check_intact(out)
    assert cli.main(["report", str(out)]) == 0  # space freed: the report is finished
    metrics = _status(out)
    assert metrics["status"] == "complete" and "report_error" not in metrics
    assert "Status: **complete**" in (out / "report.md").read_text()
    _check_intact(out)


def test_a_disk_full_for_every_file_still_says_what_happened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    with monkeypatch.context() as m:
        _fill_disk(m, everything=True)
        assert cli.main(["run", "mnist-sigmoid", *TINY, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "could not be recorded" in err[0]  # the manifest, a warning
    assert len(err) == 2 and err[1].startswith("bnlab: error:") and "report of" in err[1]
    assert "metrics.json could not record it either (its status is 'complete')" in err[1]
    _check_intact(out)
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.html").is_file() and _status(out)["status"] == "complete"


def test_bnlab_report_on_a_full_disk_records_it_and_a_second_one_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert cli.main(["run", "mnist-sigmoid", *TINY, "--out", str(out)]) == 0
    with monkeypatch.context() as m:
        _fill_disk(m, everything=False)
        assert cli.main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"`bnlab report {out}`" in err
    assert _status(out)["status"] == report.REPORT_FAILED
    _check_intact(out)
    assert cli.main(["report", str(out)]) == 0 and _status(out)["status"] == "complete"


def test_a_failed_run_whose_report_fails_stays_failed(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"status": "failed"}')

    @report.renders
    def render(run_dir: str | Path) -> None:
        raise OSError(errno.EACCES, f"cannot write {run_dir}/fig_x.png: Permission denied")

    with pytest.raises(PermissionError, match="Permission denied.*Fix that, then run"):
        render(tmp_path)
    metrics = _status(tmp_path)
    assert metrics["status"] == "failed" and "Permission denied" in metrics["report_error"]


def test_a_run_failing_before_its_first_evaluation_renders_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that fails after taking --out over but before any evaluation: its report of the
    empty run once raised a TypeError."""
    from bnlab.experiments.mnist import training

    def refuse(self: object) -> None:
        raise ValueError("the data went away before the first evaluation")

    monkeypatch.setattr(training._Lockstep, "loop", refuse)
    out = tmp_path / "r"
    assert cli.main(["run", "mnist-sigmoid", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "before the first evaluation" in err
    assert _status(out)["status"] == "failed"
    assert "# mnist-sigmoid" in (out / "report.md").read_text()


def test_ranks_that_disagree_leave_out_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a rank-dependent option under mpiexec: the ranks' check (Trainer.begin) fails
    before rank 0 takes --out over."""
    from bnlab.train.loop import Trainer

    def refuse(self: Trainer) -> None:
        raise ValueError("DataParallel: the 2 ranks do not train the same thing")

    monkeypatch.setattr(Trainer, "begin", refuse)
    out = tmp_path / "r"
    assert cli.main(["run", "mnist-sigmoid", *TINY, "--out", str(out)]) == 2
    assert "do not train the same thing" in capsys.readouterr().err
    assert not out.exists()


def test_a_content_error_changes_no_file(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"status": "complete", "runs": [{"step": 1e308}]}')
    before = (tmp_path / "metrics.json").read_bytes()

    @report.renders
    def render(run_dir: str | Path) -> None:
        raise TypeError("a value edited by hand")

    with pytest.raises(TypeError, match="edited by hand"):
        render(tmp_path)
    assert (tmp_path / "metrics.json").read_bytes() == before
