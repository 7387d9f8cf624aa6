"""Shared helpers for tests that launch MPI jobs: the venv's mpiexec and ``run_mpi``.

Test files use the fixtures (``--import-mode=importlib`` lets no test import this module)::

    def test_something(run_mpi):
        out = run_mpi(2, Path(__file__).with_name("_my_script.py"), "arg", timeout=120)

Every MPI test starts ``mpiexec -n N python script ...`` as a subprocess with a timeout, so a
hung collective fails the test instead of blocking the suite. The mpiexec is the one next to
``sys.executable`` (the mpich wheel's launcher in the venv): a launcher of another MPI would
start N one-rank jobs (scripts should assert the world size, e.g. ``bnlab.comm.world(n)``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = ["MPIEXEC", "mpi_skip_reason", "mpiexec", "run_mpi"]

MPIEXEC = Path(sys.executable).parent / "mpiexec"


def mpi_skip_reason() -> str | None:
    """Why MPI jobs cannot run here (None when they can)."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'bnlab[mpi]')"
    if not MPIEXEC.exists():
        return f"no mpiexec next to the interpreter ({MPIEXEC}); install the mpich wheel"
    return None


@pytest.fixture
def mpiexec() -> Path:
    """The venv's mpiexec; skips the test with the reason when MPI is unavailable."""
    reason = mpi_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return MPIEXEC


def _run_mpi(n: int, script: str | Path, *args: str, timeout: float = 120.0) -> str:
    """Run ``mpiexec -n n python script *args``; assert exit status 0 and return stdout.

    Skips when MPI is unavailable. ``n`` may exceed the number of cores (mpich oversubscribes).
    Numba and BLAS are limited to one thread per rank so that oversubscribed ranks do not fight.
    """
    reason = mpi_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    env = dict(os.environ)
    env.update({"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    cmd = [str(MPIEXEC), "-n", str(n), sys.executable, str(script), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout}\n"
        f"--- stderr ---\n{proc.stderr}"
    )
    return proc.stdout


@pytest.fixture
def run_mpi() -> Callable[..., str]:
    """``run_mpi(n, script, *args, timeout=120.0) -> stdout``; see :func:`_run_mpi`."""
    return _run_mpi
