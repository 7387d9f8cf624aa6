"""The claims experiments data-parallel: the maths of what a shard needs from the other ranks
(the naive layer's statistics, the noisy-BN draws) on a world of threads against one batch,
and ``mpiexec -n 2 bnlab run ...`` against one process on the whole batch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bnlab import cli
from bnlab.experiments.covariate_shift.nets import ShiftNoise
from bnlab.experiments.naive_normalization.normalize import BatchNormalize
from bnlab.train import shard_bounds

HERE = Path(__file__).parent


def _load(name: str, path: Path) -> Any:  # pytest runs with --import-mode=importlib
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _load("claims_helpers", HERE / "claims_helpers.py")
threads = _load("parallel_threadcomm", HERE.parent / "distributed" / "parallel_threadcomm.py")

MPIEXEC = Path(sys.executable).parent / "mpiexec"
needs_mpi = pytest.mark.skipif(
    not MPIEXEC.exists() or importlib.util.find_spec("mpi4py") is None,
    reason=f"needs mpi4py and {MPIEXEC}",
)


def _on_two_ranks(fn: Any) -> list[Any]:
    """``fn(comm, (start, stop))`` on each of 2 thread ranks, shards of a batch of 7 (4 + 3)."""
    results = threads.run_ranks(2, lambda comm: fn(comm, shard_bounds(7, comm.rank, 2)))
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return list(results)


# -- the maths, one process -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 5), (7, 3, 3, 4)])
def test_sharded_noise_is_the_rows_of_the_whole_batch_draw(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=shape), rng.normal(size=shape)
    whole = ShiftNoise(seed=3)
    want = []
    for _ in range(2):  # two steps: the generators stay in step with one process's
        whole.resample()
        want.append((whole.forward(x), whole.backward(dy)))

    def rank(comm: Any, rows: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
        layer, (a, b) = ShiftNoise(seed=3, comm=comm), rows
        out = []
        for _ in range(2):
            layer.resample()
            out.append((layer.forward(x[a:b]), layer.backward(dy[a:b])))
        return out

    got = _on_two_ranks(rank)
    for step in range(2):
        for i in range(2):  # the output and dx: the same bits
            joined = np.concatenate([r[step][i] for r in got])
            np.testing.assert_array_equal(joined, want[step][i])
    # the check can fail: rank 1 drawing for its shard alone gets other noise
    alone = ShiftNoise(seed=3)
    a, b = shard_bounds(7, 1, 2)
    assert not np.allclose(alone.forward(x[a:b]), want[0][0][a:b])


def _layer(full: bool, naive: bool, comm: Any = None) -> BatchNormalize:
    layer = BatchNormalize(4, full=full, stop_gradient=naive, eps=1e-3, dtype=np.float64, comm=comm)
    if full:
        layer.params["gamma"][...] = [0.5, 1.0, 2.0, -1.0]
        layer.params["beta"][...] = [0.1, 0.0, -0.3, 1.0]
    return layer


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("naive", [False, True])
def test_naive_layer_on_two_shards_normalizes_with_the_global_batch(
    full: bool, naive: bool
) -> None:
    rng = np.random.default_rng(1)
    x, dy = rng.normal(2.0, 3.0, size=(7, 4)), rng.normal(size=(7, 4))
    one = _layer(full, naive)
    y1, dx1 = one.forward(x), one.backward(dy)

    def rank(comm: Any, rows: tuple[int, int]) -> tuple[Any, Any, dict[str, np.ndarray]]:
        layer, (a, b) = _layer(full, naive, comm), rows
        y = layer.forward(x[a:b])
        dx = layer.backward(dy[a:b])
        return y, dx, {k: g.copy() for k, g in layer.grads.items()}

    got = _on_two_ranks(rank)
    np.testing.assert_allclose(np.concatenate([r[0] for r in got]), y1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([r[1] for r in got]), dx1, rtol=1e-12, atol=1e-12)
    for k, g in one.grads.items():  # each rank's share; the trainer sums them
        np.testing.assert_allclose(got[0][2][k] + got[1][2][k], g, rtol=1e-12, atol=1e-12)
    # the check can fail: a shard normalized with its own statistics differs
    a, b = shard_bounds(7, 0, 2)
    assert not np.allclose(_layer(full, naive).forward(x[a:b]), y1[a:b])


# -- mpiexec -n 2 against one process ---------------------------------------------------------
def _runs(out: Path) -> dict[str, dict[str, Any]]:
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "complete"
    return {r["name"]: r for r in m.get("runs") or m["nets"]}


def _close(a: Any, b: Any, rtol: float, atol: float, what: str) -> None:
    x, y = (np.array(v, dtype=float) for v in (a, b))  # None (no value yet) -> NaN
    np.testing.assert_allclose(y, x, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def _one_and_two(name: str, argv: list[str], tmp: Path) -> tuple[dict[str, Any], ...]:
    """The runs of ``bnlab run NAME ARGV`` in one process and under ``mpiexec -n 2``."""
    argv = [*argv, "--batch-size", "7", "--no-progress"]  # shards of 4 and 3
    assert cli.main(["run", name, *argv, "--out", str(tmp / "one")]) == 0
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "bnlab", "run", name, *argv]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp / "two")], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("bnlab: done") == 1  # rank 0 alone writes and reports
    for d, size in (("one", 1), ("two", 2)):
        config = json.loads((tmp / d / "config.json").read_text())
        assert config["provenance"]["batch"]["world_size"] == size
        assert config["provenance"]["batch"]["shard_sizes"] == ([7] if size == 1 else [4, 3])
    assert (tmp / "two" / "report.html").is_file()
    return _runs(tmp / "one"), _runs(tmp / "two")


@needs_mpi
def test_naive_normalization_on_two_ranks_is_one_process(tmp_path: Path) -> None:
    argv = ["--steps", "20", "--hidden", "8", "8", "--eval-examples", "100", "--eval-every", "5"]
    one, two = _one_and_two("naive-normalization", argv, tmp_path)
    assert one.keys() == two.keys() and len(one) == 8
    for name, r in one.items():
        h, h2 = r["history"], two[name]["history"]
        assert h2["step"] == h["step"] == [0, 5, 10, 15, 20]
        for key in ("train_loss", "eval_loss", "weight_norm"):
            _close(h[key], h2[key], 1e-5, 0, f"{name} {key}")
        _close(h["eval_acc"], h2["eval_acc"], 0, 0.0101, f"{name} eval_acc")  # 1 image of 100
        if r["gradient"] == "naive":  # it grows; the proper one is rounding noise about 0
            _close(h["bias_norm"], h2["bias_norm"], 1e-4, 0, f"{name} bias_norm")
        else:
            _close(h["bias_norm"], h2["bias_norm"], 0, 1e-5, f"{name} bias_norm")


@needs_mpi
def test_scale_invariance_on_two_ranks_is_one_process(tmp_path: Path) -> None:
    argv = ["--steps", "20", "--hidden", "8", "8", "--eval-examples", "100"]
    argv += ["--record-every", "5"]
    one, two = _one_and_two("scale-invariance", argv, tmp_path)
    assert one.keys() == two.keys() and len(one) == 9
    for name, r in one.items():  # float64 nets
        h, h2 = r["history"], two[name]["history"]
        assert (two[name]["error"], two[name]["norm_decreases"]) == (
            r["error"],
            r["norm_decreases"],
        )
        assert h2["step"] == h["step"]
        for key in ("train_loss", "w_norm", "eff_lr"):
            _close(h[key], h2[key], 1e-10, 0, f"{name} {key}")
        for key in ("prob_diff", "max_prob_diff"):  # eps alone: 1e-16 .. 1e-5
            _close(h[key], h2[key], 1e-6, 1e-14, f"{name} {key}")
        _close(h["test_acc"], h2["test_acc"], 0, 0.0101, f"{name} test_acc")


@needs_mpi
def test_covariate_shift_on_two_ranks_is_one_process(tmp_path: Path) -> None:
    argv = ["--steps", "12", "--hidden", "8", "8", "--eval-examples", "100"]
    argv += ["--measure-every", "4"]
    one, two = _one_and_two("covariate-shift", argv, tmp_path)
    assert list(one) == list(two) == ["standard", "bn", "noisy-bn"]
    for name, r in one.items():  # float32 nets: 1e-7 rounding, grown over 12 steps
        h, h2 = r["history"], two[name]["history"]
        assert h2["step"] == h["step"] == [0, 4, 8, 12]
        for key in ("train_loss", "ics_l2", "ics_cos", "losses", "grad_diffs", "loss_range"):
            _close(h[key], h2[key], 1e-4, 1e-6, f"{name} {key}")
        for key in ("beta", "grad_norm", "act_mean", "act_std"):
            _close(h[key], h2[key], 1e-4, 1e-6, f"{name} {key}")
        _close(h["test_acc"], h2["test_acc"], 0, 0.0101, f"{name} test_acc")


@needs_mpi
@pytest.mark.parametrize("name", ["scale-invariance", "covariate-shift"])
def test_ctrl_c_under_mpiexec_leaves_a_renderable_run(name: str, tmp_path: Path) -> None:
    every = "--record-every" if name == "scale-invariance" else "--measure-every"
    argv = [name, "--steps", "100000", "--hidden", "8", "--eval-examples", "100"]
    argv += [every, "10", "--no-progress"]
    launcher = [str(MPIEXEC), "-n", "2"]
    m = helpers.interrupt_and_check(argv, tmp_path / "run", _recorded, launcher)
    assert m["status"] == "interrupted"


def _recorded(m: dict[str, Any]) -> bool:
    """A record after step 0 of the first net is in metrics.json."""
    nets = m.get("nets") or []
    return bool(nets) and len(nets[0]["history"]["step"]) >= 2


@needs_mpi
def test_a_batch_smaller_than_the_world_is_refused_before_the_run_directory(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [str(MPIEXEC), "-n", "3", sys.executable, "-m", "bnlab", "run", "naive-normalization"]
    cmd += ["--steps", "2", "--batch-size", "2", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "--batch-size 2 cannot feed the 3 processes" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
