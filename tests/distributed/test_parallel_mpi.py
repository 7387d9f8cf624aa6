"""Data-parallel training under mpiexec against one process (helper: parallel_train.py).

Each MPI job is a subprocess with a timeout and asserts its world size. Three small nets
(MLP float64 and float32, conv net float64), 20 steps on a global batch of 13, at 1, 2 and 4
ranks; checkpoints written at one world size are resumed at another. BatchNorm layers are
synchronized (SyncBatchNorm) when bnlab has them; without, the nets are trained without BN
(the data-parallel maths is the same). The 2-rank run forces MPICH onto libfabric's TCP
provider instead of shared memory and checks that the ranks hold TCP connections.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bnlab.layers

SCRIPT = Path(__file__).with_name("parallel_train.py")
NETS = ("mlp64", "conv64", "mlp32")
BN = "sync" if hasattr(bnlab.layers, "convert_sync_batchnorm") else "none"
# MPICH 5 (ch4 with the ucx and ofi netmods): no shared memory between local ranks, the
# libfabric netmod, and libfabric's tcp provider; ucx is the default netmod and keeps using
# shared memory within a node even with NOLOCAL (measured: no TCP sockets then)
TCP_ENV = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}
ENV1 = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def launch(n, out, *args, env=None, timeout=120, mpi=True, world=None):
    """Run the helper at ``n`` ranks (mpiexec) or alone; returns the CompletedProcess."""
    out.mkdir(parents=True, exist_ok=True)
    world = n if world is None else world
    cmd = [sys.executable, str(SCRIPT), str(out), "--world", str(world), "--bn", BN, *args]
    if mpi:
        cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(n), *cmd]
    full_env = {**os.environ, **ENV1, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def ok(proc, n):
    """The ranks' JSON lines, after asserting success and the world size."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    # ranks print concurrently: one line may hold several JSON objects
    infos = [json.loads(m) for m in re.findall(r"\{[^{}]*\{[^{}]*\}\}", proc.stdout)]
    assert sorted(i["rank"] for i in infos) == list(range(n))
    assert all(i["world"] == n for i in infos)
    # parameters, buffers and optimizer state are the same bits on every rank
    assert all(i["state"] == infos[0]["state"] for i in infos), infos
    return infos


def assert_same_params(dir_a, dir_b):
    for net in NETS:
        a, b = np.load(dir_a / f"{net}.npz"), np.load(dir_b / f"{net}.npz")
        assert sorted(a.files) == sorted(b.files)
        tol = 1e-5 if net.endswith("32") else 1e-10
        for k in a.files:
            scale = max(1.0, float(np.max(np.abs(a[k]))))
            diff = float(np.max(np.abs(a[k].astype(np.float64) - b[k])))
            assert diff <= tol * scale, f"{net} {k}: max |diff| {diff:.3g} > {tol} * {scale:.3g}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, 20 steps, with a checkpoint after step 10."""
    out = tmp_path_factory.mktemp("ref")
    ok(launch(1, out, "--save-at", "10", mpi=False), 1)
    return out


@pytest.fixture(scope="module")
def four_ranks(reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("four")
    ok(launch(4, out, "--save-at", "10"), 4)
    return out


def test_four_ranks_match_one_process(mpiexec, reference, four_ranks):
    assert_same_params(reference, four_ranks)


def test_two_ranks_over_tcp_match_one_process(mpiexec, reference, tmp_path):
    infos = ok(launch(2, tmp_path, env=TCP_ENV), 2)
    assert all(i["tcp"] >= 1 for i in infos), f"no TCP connection between the ranks: {infos}"
    assert_same_params(reference, tmp_path)


def test_resume_four_ranks_checkpoint_in_one_process(mpiexec, reference, four_ranks, tmp_path):
    ok(launch(1, tmp_path, "--resume-from", str(four_ranks), mpi=False), 1)
    assert_same_params(reference, tmp_path)


def test_resume_one_process_checkpoint_at_two_ranks(mpiexec, reference, tmp_path):
    ok(launch(2, tmp_path, "--resume-from", str(reference)), 2)
    assert_same_params(reference, tmp_path)


def test_rank_failure_ends_the_job_with_its_message(mpiexec, tmp_path):
    args = ("--fail-rank", "2", "--fail-step", "4", "--nets", "mlp64")
    proc = launch(3, tmp_path, *args, timeout=60)
    assert proc.returncode != 0
    assert "[rank 2/3]" in proc.stderr and "injected failure at step 4" in proc.stderr
    assert not (tmp_path / "mlp64.npz").exists()


def test_mismatched_model_is_reported_before_training(mpiexec, tmp_path):
    proc = launch(2, tmp_path, "--mismatch-rank", "1", "--nets", "mlp64", timeout=60)
    assert proc.returncode != 0
    assert "do not train the same thing" in proc.stderr and "model architecture" in proc.stderr
    assert "Traceback" not in proc.stderr  # a known refusal: one line, no traceback
    assert "on ranks [1]" in proc.stderr


def test_wrong_world_size_is_refused(mpiexec, tmp_path):
    proc = launch(2, tmp_path, "--nets", "mlp64", world=3, timeout=60)
    assert proc.returncode != 0
    assert "error: the MPI world has 2 process(es), expected 3" in proc.stderr
    assert "Traceback" not in proc.stderr


EXACT = Path(__file__).with_name("parallel_exact.py")


def _exact_run(n, *args):
    cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(n), sys.executable, str(EXACT)]
    env = {**os.environ, **ENV1}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=env)


def test_two_ranks_give_one_process_bits_when_the_arithmetic_is_exact(mpiexec):
    """The real communicator: parallel_exact.py's run at 2 ranks, bit for bit one process's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("parallel_exact", EXACT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ref = mod.dyadic_run(None)
    proc = _exact_run(2)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert len(runs) == 2 and all(run == ref for run in runs)


def test_a_rank_that_disagrees_ends_the_job_with_a_readable_message(mpiexec):
    proc = _exact_run(2, "--disagree-rank", "1")
    assert proc.returncode != 0 and "losses" not in proc.stdout  # no rank trained
    assert "[rank " in proc.stderr and "Traceback" not in proc.stderr
    assert "the optimizer type or hyperparameters differs from rank 0's on ranks [1]" in proc.stderr
    assert "Start every rank with the same command line" in proc.stderr
