"""bnlab.provenance: what produced a run, in config.json, in one process and under mpiexec."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from bnlab import __version__, provenance
from bnlab.cli import main

BIN = Path(sys.executable).parent
TINY = ["--steps", "10", "--train-subset", "600", "--test-subset", "200", "--no-progress"]
KEYS = {"bnlab", "python", "packages", "blas", "numba", "cpu", "os", "hostname", "mpi", "batch",
        "thread_env", "started", "ended"}  # fmt: skip


def _check_environment(p: dict) -> None:
    assert set(p) == KEYS
    assert p["bnlab"]["version"] == __version__
    assert p["python"] == platform.python_version()
    for dist in ("numpy", "numba", "llvmlite"):
        assert p["packages"][dist] == importlib.metadata.version(dist)
    assert p["numba"]["threading_layer"] in ("omp", "tbb", "workqueue")
    assert isinstance(p["numba"]["threads"], int) and p["numba"]["threads"] >= 1
    assert p["blas"]["name"] and p["blas"]["version"]
    assert isinstance(p["cpu"]["vector_extensions"], list)
    if Path("/proc/cpuinfo").is_file() and platform.machine() == "x86_64":
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
        assert ("avx2" in p["cpu"]["vector_extensions"]) == ("avx2" in flags)
    assert p["started"] <= p["ended"]


def test_shard_sizes_tile_the_batch():
    assert provenance.shard_sizes(10, 4) == [3, 3, 2, 2]
    assert provenance.shard_sizes(60, 2) == [30, 30]
    assert sum(provenance.shard_sizes(61, 7)) == 61


def test_differences_name_what_changed_and_ignore_times():
    a = provenance.collect(batch_size=60, world_size=1)
    b = json.loads(json.dumps(a))
    b["started"], b["hostname"] = "later", "elsewhere"
    assert provenance.differences(a, b) == []
    b["packages"]["numpy"] = "9.9"
    b["batch"] = {"world_size": 2, "batch_size": 60, "shard_sizes": [30, 30]}
    assert provenance.differences(a, b) == [
        "batch.shard_sizes: [60] -> [30, 30]",
        "batch.world_size: 1 -> 2",
        f"packages.numpy: {a['packages']['numpy']} -> 9.9",
    ]
    assert provenance.differences(None, b) == ["provenance: not recorded"]


def test_without_git_the_commit_is_none_and_nothing_fails(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable
    p = provenance.collect()
    assert p["bnlab"]["commit"] is None and p["bnlab"]["dirty"] is None


def test_a_checkout_records_its_commit():
    root = Path(provenance.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        pytest.skip("bnlab is not imported from a git checkout")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()  # fmt: skip
    assert provenance.collect()["bnlab"]["commit"] == head


def test_one_process_run_records_its_provenance(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "mnist-sigmoid", *TINY, "--batch-size", "60", "--out", str(out)]) == 0
    p = json.loads((out / "config.json").read_text())["provenance"]
    _check_environment(p)
    assert p["batch"] == {"world_size": 1, "batch_size": 60, "shard_sizes": [60]}
    assert p["mpi"] is None
    assert "*Run with* bnlab" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert f"NumPy {p['packages']['numpy']}" in capsys.readouterr().out


@pytest.mark.slow
def test_two_rank_run_records_world_size_and_shards(tmp_path):
    mpiexec = BIN / "mpiexec"
    if not mpiexec.exists() or importlib.util.find_spec("mpi4py") is None:
        pytest.skip("needs mpi4py and the mpich wheel's mpiexec (pip install mpi4py mpich)")
    out = tmp_path / "run"
    cmd = [str(mpiexec), "-n", "2", str(BIN / "bnlab"), "run", "mnist-sigmoid", *TINY]
    cmd += ["--batch-size", "61", "--bn-sync", "local", "--out", str(out)]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    p = json.loads((out / "config.json").read_text())["provenance"]
    _check_environment(p)
    assert p["batch"] == {"world_size": 2, "batch_size": 61, "shard_sizes": [31, 30]}
    assert isinstance(p["mpi"], str) and "MPI" in p["mpi"]  # the library's version line
    assert p["numba"]["threads"] == 1 and p["thread_env"]["NUMBA_NUM_THREADS"] == "1"
