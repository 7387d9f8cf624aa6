"""cifar10-keras --resume from any kill point, and refusals that touch nothing (issue 23 high
12 and 13): the checkpoint carries its position and history, so a SIGKILL between the
checkpoint and metrics.json loses nothing; a missing config.json, another net's or a crafted
checkpoint are refused in one line."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from bnlab import cli
from bnlab.experiments.cifar10_keras.run import run

KW = {"models": ["bn"], "train_subset": 32, "test_subset": 8, "progress": False}


def write_tiny_cifar(root: Path, n_train: int = 40, n_test: int = 16) -> Path:
    """The official python layout: cifar-10-batches-py/{data_batch_1..5,test_batch}."""
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, [n_train // 5] * 5 + [n_test], strict=True):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}  # fmt: skip
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cifar(tmp_path_factory.mktemp("cifar"))


def _history(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["models"]["bn"]["history"]


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_kill_between_checkpoint_and_metrics_resumes(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    run({"data": str(tiny), "epochs": 1, **KW}, out)
    metrics_at_1 = (out / "metrics.json").read_bytes()
    run({"data": str(tiny), "epochs": 2, "resume": True, **KW}, out)
    two = _history(out)
    (out / "metrics.json").write_bytes(metrics_at_1)  # the kill: bn.npz at 2, metrics at 1
    run({"data": str(tiny), "epochs": 3, "resume": True, **KW}, out)
    three = _history(out)
    assert three["epoch"] == [1, 2, 3]
    for key, values in two.items():
        assert three[key][:2] == values, key


def test_missing_metrics_resumes_from_the_checkpoint(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    run({"data": str(tiny), "epochs": 1, **KW}, out)
    (out / "metrics.json").unlink()
    run({"data": str(tiny), "epochs": 2, "resume": True, **KW}, out)
    assert _history(out)["epoch"] == [1, 2]  # not restarted from scratch


def test_missing_config_is_refused_and_nothing_touched(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    run({"data": str(tiny), "epochs": 1, **KW}, out)
    (out / "config.json").unlink()
    before = _files(out)
    argv = ["run", "cifar10-keras", "--data", str(tiny), "--no-progress", "--models", "bn"]
    assert cli.main([*argv, "--epochs", "2", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds no run to resume (no config.json)" in err and "Traceback" not in err
    assert _files(out) == before


@pytest.mark.parametrize("bad", ["other_net", "crafted_extra", "no_optimizer"])
def test_foreign_checkpoint_is_refused_in_one_line(tiny: Path, tmp_path: Path, bad: str) -> None:
    from bnlab.deploy.checkpoint import load_checkpoint, save_checkpoint

    out = tmp_path / "r"
    run({"data": str(tiny), "epochs": 1, **{**KW, "models": ["baseline", "bn"]}}, out)
    ck = out / "checkpoints" / "bn.npz"
    if bad == "other_net":
        shutil.copyfile(out / "checkpoints" / "baseline.npz", ck)
    else:
        c = load_checkpoint(ck)
        extra = {"epoch": "1"} if bad == "crafted_extra" else c.extra
        save_checkpoint(ck, c.model, None, extra=extra)
    before = _files(out)
    with pytest.raises(ValueError, match="is not a checkpoint of this run's 'bn' net"):
        run(
            {
                "data": str(tiny),
                "epochs": 2,
                "resume": True,
                **{**KW, "models": ["baseline", "bn"]},
            },
            out,
        )
    assert _files(out) == before
