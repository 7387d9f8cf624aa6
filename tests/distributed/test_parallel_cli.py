"""`mpiexec -n 2 bnlab run mnist-sigmoid|cifar10-keras ...`: the data-parallel runs against one
process, and Ctrl-C (SIGINT to mpiexec, which Hydra forwards to every rank) leaving a valid
partial run."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bnlab.layers

BIN = Path(sys.executable).parent
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
SYNC = hasattr(bnlab.layers, "convert_sync_batchnorm")
ARGS = ["--train-subset", "600", "--test-subset", "200", "--lr", "0.5", "--no-progress"]


def bnlab_run(out: Path, *args: str, n: int | None = None) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "bnlab"), "run", "mnist-sigmoid", *ARGS, *args, "--out", str(out)]
    if n is not None:
        cmd = [str(BIN / "mpiexec"), "-n", str(n), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=ENV)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def runs(out: Path) -> dict[str, dict]:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    return {r["net"]: r["history"] for r in metrics["runs"]}


def test_two_ranks_run_mnist_sigmoid_like_one_process(mpiexec, tmp_path):
    sync = "global" if SYNC else "local"
    steps = ["--steps", "40", "--eval-every", "20", "--bn-sync", sync]
    bnlab_run(tmp_path / "one", *steps)
    one = runs(tmp_path / "one")
    proc = bnlab_run(tmp_path / "two", *steps, n=2)
    two = runs(tmp_path / "two")
    assert proc.stdout.count("bnlab: done") == 1  # rank 0 alone reports
    assert json.loads((tmp_path / "two" / "config.json").read_text())["bn_sync"] == sync
    compared = ["plain", "bn"] if SYNC else ["plain"]  # local BN differs by design
    for net in compared:
        assert two[net]["step"] == one[net]["step"] == [0, 20, 40]
        for key in ("train_loss", "p15", "p50", "p85"):
            a, b = (np.array(h[key][1:], dtype=float) for h in (one[net], two[net]))
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=f"{net} {key}")


def test_ctrl_c_leaves_a_valid_partial_run(mpiexec, tmp_path):
    out = tmp_path / "run"
    cmd = [str(BIN / "mpiexec"), "-n", "2", str(BIN / "bnlab"), "run", "mnist-sigmoid", *ARGS]
    cmd += ["--steps", "1000000", "--eval-every", "20", "--bn-sync", "local", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            m = out / "metrics.json"
            if m.is_file() and json.loads(m.read_text() or "{}").get("steps_done", 0) >= 20:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the run wrote no metrics within 90 s")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and 20 <= metrics["steps_done"] < 1000000
    assert (out / "report.md").is_file() and (out / "fig_accuracy.png").is_file()


def _tiny_cifar(root: Path, n_train: int = 48, n_test: int = 20) -> Path:
    """CIFAR-10's python layout with random images (as tests/experiments/test_cifar10_keras)."""
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    sizes = [len(a) for a in np.array_split(np.arange(n_train), 5)]
    names = [f"data_batch_{i + 1}" for i in range(5)] + ["test_batch"]
    for name, n in zip(names, [*sizes, n_test], strict=True):
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(),
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return d


def test_two_ranks_run_cifar10_keras_like_one_process(mpiexec, tmp_path):
    """The BN net (no dropout), augmentation on, 3 steps of 16 (shards [8, 8])."""
    data = _tiny_cifar(tmp_path / "data")
    hist = {}
    for n in (None, 2):
        out = tmp_path / f"run{n}"
        cmd = [str(BIN / "bnlab"), "run", "cifar10-keras", "--data", str(data), "--epochs", "1"]
        cmd += ["--models", "bn", "--batch-size", "16", "--no-progress", "--out", str(out)]
        cmd += ["--bn-sync", "global" if SYNC else "local"]
        if n is not None:
            cmd = [str(BIN / "mpiexec"), "-n", str(n), *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=ENV)
        assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stderr}"
        assert proc.stdout.count("epoch   1") == 1  # rank 0 alone prints
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["status"] == "complete"
        hist[n] = metrics["models"]["bn"]["history"]
        assert (out / "checkpoints" / "bn.npz").is_file()
    if not SYNC:
        pytest.skip("no SyncBatchNorm: local BN differs from one process by design")
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        np.testing.assert_allclose(hist[2][key], hist[None][key], rtol=1e-4, err_msg=key)


def test_experiment_without_data_parallel_is_refused_under_mpiexec(mpiexec, tmp_path):
    cmd = [str(BIN / "mpiexec"), "-n", "2", str(BIN / "bnlab"), "run", "population-stats"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "ps")], capture_output=True, text=True, timeout=60, env=ENV
    )
    assert proc.returncode == 2
    assert "population-stats does not train data-parallel" in proc.stderr
    assert not (tmp_path / "ps" / "config.json").exists()
