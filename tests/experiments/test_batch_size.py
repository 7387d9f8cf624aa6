"""batch-size: a short run on a tiny CIFAR-format folder (files, steps, lr scaling, report),
the verdict sentence, Ctrl-C, and SyncBN under mpiexec -n 2 against one process on the whole
batch."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnlab.experiments.batch_size.config import BatchSizeConfig
from bnlab.experiments.batch_size.report import verdict
from bnlab.experiments.batch_size.run import run
from bnlab.train import Trainer

MPIEXEC = Path(sys.executable).parent / "mpiexec"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10's python layout with 64 training and 32 test random images."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    d.mkdir()
    for name, n in [(f"data_batch_{i}", 64 // 5 + (i <= 64 % 5)) for i in range(1, 6)] + [
        ("test_batch", 32)
    ]:
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(),
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return d


def _cfg(data: Path, **kw: object) -> dict[str, object]:
    return {"data": str(data), "train_subset": 0, "test_subset": 0, "epochs": 1,
            "progress": False, **kw}  # fmt: skip


def test_short_run_writes_every_file(tiny: Path, tmp_path: Path) -> None:
    out = run(_cfg(tiny, batch_sizes=[8, 2], epochs=2), tmp_path / "r")
    for name in ("config.json", "metrics.json", "metrics.csv", "fig_error.png", "report.md",
                 "report.html"):  # fmt: skip
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "complete" and (m["n_train"], m["n_test"]) == (64, 32)
    runs = {(r["norm"], r["batch_size"]): r for r in m["runs"]}
    assert set(runs) == {(n, b) for n in ("bn", "renorm", "gn", "ln") for b in (8, 2)}
    for (_, b), r in runs.items():
        assert r["steps"] == 2 * 64 // b  # the same epochs: small batches take more steps
        assert r["lr"] == pytest.approx(0.05 * b / 32)
        assert 0 <= r["test_error"] <= 1 and r["test_error"] * 32 == round(r["test_error"] * 32)
    report = (out / "report.md").read_text()
    assert "From batch 8 to 2, BatchNorm's test error" in report and "Wu & He" in report


def test_runs_start_alike_and_gn_does_not_depend_on_the_batch(tiny: Path, tmp_path: Path) -> None:
    """Same seed: GN's first batch of 8 equals the sum of its per-example outputs (GN is
    per sample), BN's does not (its statistics come from the batch)."""
    from bnlab.experiments.batch_size.run import build_net

    cfg = BatchSizeConfig.from_dict(_cfg(tiny))
    x = np.random.default_rng(1).standard_normal((8, 32, 32, 3)).astype(np.float32)
    for norm, same in (("gn", True), ("ln", True), ("bn", False)):
        a, b = build_net(cfg, norm), build_net(cfg, norm)
        whole = a.forward(x)
        parts = np.concatenate([b.forward(x[i : i + 2]) for i in range(0, 8, 2)])
        assert np.allclose(whole, parts, atol=1e-5) == same, norm


def test_verdict_says_whether_the_numbers_agree() -> None:
    agree = verdict({"bn": {32: 0.30, 2: 0.45}, "gn": {32: 0.31, 2: 0.32}})
    assert agree is not None and "+15.0 points" in agree and "this agrees" in agree
    disagree = verdict({"bn": {32: 0.30, 2: 0.31}, "gn": {32: 0.31, 2: 0.40}})
    assert disagree is not None and "does not show" in disagree
    assert verdict({"bn": {32: 0.3}, "gn": {32: 0.3}}) is None


def test_full_is_resnet20_on_everything() -> None:
    cfg = BatchSizeConfig.from_dict({"full": True})
    assert (cfg.net, cfg.train_subset, cfg.test_subset, cfg.epochs) == ("resnet20", 0, 0, 30)
    with pytest.raises(ValueError, match="batch-sizes"):
        BatchSizeConfig.from_dict({"batch_sizes": [4, 1]})
    with pytest.raises(ValueError, match="norms"):
        BatchSizeConfig.from_dict({"norms": "bn,batchnorm"})


def test_ctrl_c_leaves_a_rendered_partial_run(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = Trainer.fit_epoch, []

    def interrupt_third(self: Trainer, *args: object, **kw: object) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "fit_epoch", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tiny, batch_sizes=[8, 4]), tmp_path / "r")
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["status"] == "interrupted" and len(m["runs"]) == 2
    assert "interrupted" in (tmp_path / "r" / "report.md").read_text()
    assert (tmp_path / "r" / "fig_error.png").is_file()


@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec at {MPIEXEC}")
def test_syncbn_on_two_ranks_of_2_is_one_process_at_4(tiny: Path, tmp_path: Path) -> None:
    """mpiexec -n 2, per-rank batch 2, --bn-sync global: the statistics (and so the whole
    run) are those of one process at batch 4."""
    pytest.importorskip("mpi4py")
    one = run(_cfg(tiny, norms=["bn"], batch_sizes=[4]), tmp_path / "one")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "bnlab", "run", "batch-size",
           "--data", str(tiny), "--train-subset", "0", "--test-subset", "0", "--epochs", "1",
           "--norms", "bn", "--batch-sizes", "2", "--bn-sync", "global", "--no-progress",
           "--reference", str(one), "--out", str(tmp_path / "two")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (one, tmp_path / "two"))
    assert b["world_size"] == 2
    (ra,), (rb,) = a["runs"], b["runs"]
    assert (rb["batch_size"], rb["global_batch"], rb["bn_sync"]) == (2, 4, "global")
    assert (ra["global_batch"], ra["steps"], ra["lr"]) == (
        rb["global_batch"],
        rb["steps"],
        rb["lr"],
    )
    assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
    assert rb["test_loss"] == pytest.approx(ra["test_loss"], rel=1e-4)
    assert rb["test_error"] == ra["test_error"]
    report = (tmp_path / "two" / "report.md").read_text()
    assert "SyncBatchNorm (2 ranks" in report and "BN over 2 ranks against one-process" in report
    assert f"per-rank 2: {100 * rb['test_error']:.2f}% (one process at 4: " in report
