"""Ctrl-C on every experiment: SIGINT to a `bnlab run` process once training has started.

Each must exit with status 130 and no traceback, leave metrics.json with status
"interrupted", and a run directory that `bnlab report` renders. A Ctrl-C that lands inside
a Numba kernel (a SystemError whose context is the KeyboardInterrupt) counts as an interrupt.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bnlab import cli
from bnlab.experiments.mnist import nets as mc
from bnlab.experiments.mnist import training
from bnlab.experiments.rundir import run_status

MNIST = ["--train-subset", "600", "--test-subset", "200", "--hidden", "16", "16"]


def _metrics(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _interrupt_when(
    argv: list[str], out: Path, started: Callable[[dict[str, Any]], bool]
) -> tuple[int, str]:
    """Start ``bnlab run ARGV --out OUT``, send SIGINT once ``started(metrics)``; (rc, stderr)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bnlab.cli", "run", *argv, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            m = _metrics(out)
            if m is not None and m.get("status") == "running" and started(m):
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it was interrupted: {proc.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("the run did not start training within 300 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _check_interrupted_and_renders(rc: int, err: str, out: Path) -> dict[str, Any]:
    assert rc == 130, err
    assert "Traceback" not in err and "SystemError" not in err, err
    assert f"interrupted; the partial run is in {out}" in err
    m = _metrics(out)
    assert m is not None and m["status"] == "interrupted"
    (out / "report.md").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert "interrupted" in (out / "report.md").read_text().lower()
    assert (out / "report.html").stat().st_size > 0
    return m


def test_mnist_sigmoid(tmp_path: Path) -> None:
    argv = ["mnist-sigmoid", *MNIST, "--steps", "200000", "--eval-every", "20"]
    out = tmp_path / "run"
    rc, err = _interrupt_when(argv, out, lambda m: m["steps_done"] >= 20)
    m = _check_interrupted_and_renders(rc, err, out)
    assert 20 <= m["steps_done"] < 200000
    assert all(r["history"]["step"][:2] == [0, 20] for r in m["runs"])


def test_mnist_lr(tmp_path: Path) -> None:
    argv = ["mnist-lr", *MNIST, "--steps", "200000", "--eval-every", "20", "--multipliers", "1"]
    out = tmp_path / "run"
    rc, err = _interrupt_when(argv, out, lambda m: m["steps_done"] >= 20)
    m = _check_interrupted_and_renders(rc, err, out)
    assert 20 <= m["steps_done"] < 200000


def test_renorm_small_batch(tmp_path: Path) -> None:
    argv = ["renorm-small-batch", *MNIST, "--steps", "300", "--micro-sizes", "4", "--no-progress"]
    out = tmp_path / "run"
    rc, err = _interrupt_when(argv, out, lambda m: len(m["runs"]) >= 1)
    m = _check_interrupted_and_renders(rc, err, out)
    assert 1 <= len(m["runs"]) < 5 and m["runs"][0]["name"] == "bn-full"


def test_population_stats(tmp_path: Path) -> None:
    argv = ["population-stats", *MNIST, "--steps", "200000", "--eval-every", "10"]
    argv += ["--recal-examples", "120"]
    out = tmp_path / "run"
    rc, err = _interrupt_when(argv, out, lambda m: len(m["history"]["step"]) >= 1)
    m = _check_interrupted_and_renders(rc, err, out)
    assert m["history"]["step"][0] == 10 and len(m["history"]["population"]) >= 1


def test_population_stats_epochs(tmp_path: Path) -> None:
    from bnlab.deploy.checkpoint import save_checkpoint

    net = mc.build_net(True, 0, hidden=[8], init_std=0.1)
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    for i in range(400):
        save_checkpoint(ckdir / f"bn_epoch_{i:03d}.npz", net, extra={"epoch": i})
    argv = ["population-stats-epochs", "--checkpoints", str(ckdir / "*.npz")]
    argv += ["--recal-examples", "64", "--eval-batch-size", "2000"]
    out = tmp_path / "run"
    rc, err = _interrupt_when(argv, out, lambda m: len(m["rows"]) >= 1)
    m = _check_interrupted_and_renders(rc, err, out)
    assert 1 <= len(m["rows"]) < 400


def test_cifar10_keras(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name, n in [*((f"data_batch_{i}", 8) for i in range(1, 6)), ("test_batch", 16)]:
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(),
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    argv = ["cifar10-keras", "--data", str(d), "--epochs", "10000", "--batch-size", "20"]
    out = tmp_path / "run"
    rc, err = _interrupt_when(argv, out, lambda m: m["models"]["baseline"]["epochs_done"] >= 1)
    m = _check_interrupted_and_renders(rc, err, out)
    assert 1 <= m["models"]["baseline"]["epochs_done"] < 10000


def test_ctrl_c_before_the_run_starts_names_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted_load(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "load_data", interrupted_load)
    out = tmp_path / "never"
    assert cli.main(["run", "mnist-sigmoid", *MNIST, "--steps", "3", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the run started" in err and "partial run" not in err
    assert not out.exists()


def _numba_style_interrupt() -> None:
    """What a Ctrl-C inside a jitted function looks like from Python."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        # implicit context, as from Numba's dispatcher (not `from`): B904 does not apply
        raise SystemError("CPUDispatcher(<function k>) returned a result with an exception set")  # noqa: B904


def test_system_error_from_an_interrupted_kernel_is_an_interrupt() -> None:
    seen: list[str] = []
    with pytest.raises(KeyboardInterrupt) as exc, run_status(seen.append):
        _numba_style_interrupt()
    assert seen == ["interrupted"]
    assert isinstance(exc.value.__cause__, SystemError)


def test_other_errors_still_fail() -> None:
    seen: list[str] = []
    with pytest.raises(SystemError), run_status(seen.append):
        raise SystemError("a real bug")
    assert seen == ["failed"]


def test_cli_turns_a_kernel_interrupt_into_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnlab.train import Trainer

    calls = {"n": 0}
    step = Trainer.step

    def step_then_interrupt(self: Trainer) -> float:
        calls["n"] += 1
        if calls["n"] == 7:
            _numba_style_interrupt()
        return step(self)

    monkeypatch.setattr(Trainer, "step", step_then_interrupt)
    out = tmp_path / "run"
    argv = ["run", "mnist-sigmoid", *MNIST, "--steps", "20", "--lr", "0.5", "--no-progress"]
    assert cli.main([*argv, "--out", str(out)]) == 130
    assert "partial run is in" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["status"] == "interrupted"


def test_a_swallowed_ctrl_c_still_ends_the_run_as_interrupted() -> None:
    """A KeyboardInterrupt raised in a weakref callback is only printed by Python ("Exception
    ignored in ..."); the flag set by the handler must still end the run as interrupted."""
    from bnlab.experiments import rundir
    from bnlab.experiments.progress import Progress

    restore = rundir.install_sigint_handler()
    statuses: list[str] = []
    try:
        rundir._SIGINT_SEEN.set()  # what the handler does before its raise is swallowed
        bar = Progress(10, "test", enabled=False)
        with pytest.raises(KeyboardInterrupt):
            bar.update(1)  # the experiments' per-step call stops the run
        with pytest.raises(KeyboardInterrupt), run_status(statuses.append):
            pass  # a body that ran to its end after the swallowed interrupt
    finally:
        restore()
        rundir._SIGINT_SEEN.clear()
    assert statuses == ["interrupted"]


def test_a_ctrl_c_swallowed_in_a_del_prints_no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C landing in a ``__del__`` (llvmlite's, while Numba compiles) is swallowed by
    Python, whose hook prints "Exception ignored in ... Traceback"; under the handler the hook
    does not see it (the flag ends the run), and any other such exception still goes to it."""
    import gc

    from bnlab.experiments import rundir

    seen: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))

    class Raises:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def __del__(self) -> None:
            raise self.exc

    restore = rundir.install_sigint_handler()
    try:
        rundir._SIGINT_SEEN.set()
        Raises(KeyboardInterrupt())
        Raises(ValueError("kept"))
        gc.collect()
    finally:
        restore()
        rundir._SIGINT_SEEN.clear()
    assert seen == [ValueError]
    Raises(KeyboardInterrupt())  # the previous hook is back
    gc.collect()
    assert seen == [ValueError, KeyboardInterrupt]
