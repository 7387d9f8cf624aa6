"""MPI refusals end every rank with one line per failing rank and never hang (issue 23
critical 3 and high 15): ranks that see different run directories on --resume, a
rank-dependent option, an argparse error or an early `--help` on one rank, launcher variables
without MPI, a missing mpi4py. Every job runs under a timeout: a hang fails the test."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
MNIST = ["--train-subset", "600", "--test-subset", "200", "--no-progress"]


def sh(script: str, *, mpi: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """``mpiexec -n 2 sh -c script`` (or ``sh -c script``); each rank sees $PMI_RANK."""
    cmd = ["sh", "-c", script]
    if mpi:
        cmd = [str(BIN / "mpiexec"), "-n", "2", *cmd]
    env = {**ENV, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)


def one_line_per_rank(proc: subprocess.CompletedProcess, text: str, ranks: list[int]) -> None:
    """No traceback; one line from a failing rank (the first to abort ends the others, so
    the other failing ranks may not get to print theirs), at most one per rank."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    failing = [r for r in ranks if any(f"[rank {r}/2] error:" in ln for ln in lines)]
    assert failing and len(lines) == len(failing), proc.stderr
    assert all(text in ln for ln in lines), proc.stderr


def _tiny_cifar(root: Path) -> Path:
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", 8) for i in range(1, 6)] + [("test_batch", 16)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}  # fmt: skip
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return d


def test_resume_with_different_run_dirs_ends_every_rank(mpiexec, tmp_path):
    data = _tiny_cifar(tmp_path / "data")
    run = f"bnlab run cifar10-keras --data {data} --models bn --no-progress --batch-size 8"
    assert sh(f"{run} --epochs 1 --out {tmp_path}/r1", mpi=False).returncode == 0
    assert sh(f"cp -r {tmp_path}/r1 {tmp_path}/r0", mpi=False).returncode == 0
    assert sh(f"{run} --epochs 2 --resume --out {tmp_path}/r0", mpi=False).returncode == 0
    before = (tmp_path / "r1" / "metrics.json").read_bytes()
    proc = sh(f"{run} --epochs 3 --resume --out '{tmp_path}/r$PMI_RANK'")  # node-local --out
    one_line_per_rank(proc, "do not see the same run", [0, 1])
    assert "epochs: rank 0 {'bn': 2}, rank 1 {'bn': 1}" in proc.stderr  # the position
    assert (tmp_path / "r1" / "metrics.json").read_bytes() == before


def test_rank_dependent_lr_is_one_line(mpiexec, tmp_path):
    proc = sh(f"bnlab run mnist-sigmoid {' '.join(MNIST)} --steps 20 --lr 0.1$PMI_RANK "
              f"--out {tmp_path}/r")  # fmt: skip
    one_line_per_rank(proc, "do not train the same thing", [0, 1])
    assert not (tmp_path / "r").exists()  # the ranks disagreed before rank 0 took --out over


def test_argparse_error_on_one_rank(mpiexec):
    proc = sh('bnlab experiments $([ "$PMI_RANK" = 1 ] && echo --bogus)')
    one_line_per_rank(proc, "unrecognized arguments: --bogus", [1])
    assert proc.returncode == 2


def test_early_exit_zero_on_one_rank_ends_the_job(mpiexec, tmp_path):
    proc = sh(f"bnlab run mnist-sigmoid {' '.join(MNIST)} --steps 1000000 --out {tmp_path}/r "
              '$([ "$PMI_RANK" = 1 ] && echo --help)')  # fmt: skip
    one_line_per_rank(proc, "ended early (status 0)", [1])


def test_help_on_every_rank_exits_zero(mpiexec):
    proc = sh("bnlab --version")
    assert proc.returncode == 0 and proc.stdout.count("bnlab") == 2, proc.stderr


def test_launcher_variables_without_mpi(tmp_path):
    for size in ("2", "abc"):
        proc = sh("bnlab experiments", mpi=False, env={"PMI_SIZE": size, "PMI_RANK": "0"})
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and "bnlab: error:" in proc.stderr, proc.stderr


def test_missing_mpi4py_is_one_line(tmp_path):
    fake = tmp_path / "mpi4py"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named mpi4py')\n")
    path = f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"
    proc = sh("bnlab experiments", mpi=False, env={"PMI_SIZE": "2", "PYTHONPATH": path})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "mpi4py is not installed" in proc.stderr
