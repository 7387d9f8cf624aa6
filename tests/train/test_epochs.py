"""Trainer's epoch mode: fit_epoch/fit_epochs against a hand-written loop, the callback order,
the metrics' definitions, mid-epoch resume, and the data-parallel path in one process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bnlab.comm import SelfComm
from bnlab.data import BatchIterator
from bnlab.layers import BatchNorm, Dense, Sequential, Tanh
from bnlab.losses import MSE, SoftmaxCrossEntropy
from bnlab.optim import SGD, RMSprop
from bnlab.train import (
    Callback,
    CheckpointCallback,
    DataParallel,
    Trainer,
    TrainState,
    count_correct,
)

N, BATCH = 50, 16  # batches of 16, 16, 16 and 2: the last one weighs less


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, 5)), rng.integers(0, 3, N)


def _model(bn: bool = True) -> Sequential:
    layers: list[Any] = [Dense(5, 8, seed=1)]
    if bn:
        layers.append(BatchNorm(8))
    layers += [Tanh(), Dense(8, 3, seed=2)]
    return Sequential(layers).astype(np.float64)


def _trainer(bn: bool = True, **kw: Any) -> Trainer:
    x, y = _data()
    model = _model(bn)
    opt = RMSprop.from_model(model, lr=0.01)
    return Trainer(model, SoftmaxCrossEntropy(), opt, BatchIterator(x, y, BATCH, seed=3), **kw)


def _by_hand(epochs: int) -> tuple[list[dict[str, float]], dict[str, np.ndarray]]:
    """The documented epoch, written out: sum of loss * batch size, argmax == label."""
    x, y = _data()
    model = _model()
    opt = RMSprop.from_model(model, lr=0.01)
    loss_fn = SoftmaxCrossEntropy()
    it = BatchIterator(x, y, BATCH, seed=3)
    logs = []
    for _ in range(epochs):
        loss_sum, correct, total = 0.0, 0, 0
        for xb, yb in it:
            model.train()
            logits = model.forward(xb)
            loss, dlogits = loss_fn(logits, yb)
            model.backward(dlogits, need_input_grad=False)
            opt.step()
            loss_sum += float(loss) * len(yb)
            correct += int(np.sum(np.argmax(logits, axis=1) == yb))
            total += len(yb)
        logs.append({"train_loss": loss_sum / total, "train_accuracy": correct / total})
    return logs, {k: v.copy() for k, v in model.params.items()}


def test_epoch_metrics_equal_a_hand_written_loop_exactly() -> None:
    trainer = _trainer()
    logs = trainer.fit_epochs(3)
    want, params = _by_hand(3)
    assert [e["epoch"] for e in logs] == [1, 2, 3]
    for got, ref in zip(logs, want, strict=True):
        assert got["train_loss"] == ref["train_loss"]
        assert got["train_accuracy"] == ref["train_accuracy"]
        assert (got["steps"], got["samples"]) == (4, N)
    for k, v in trainer.model.params.items():
        np.testing.assert_array_equal(v, params[k], err_msg=k)
    assert trainer.state.step == 12 and trainer.state.epoch == 3


def test_the_loss_is_weighted_by_batch_size_not_averaged_over_batches() -> None:
    trainer = _trainer()
    seen: list[float] = []

    class Losses(Callback):
        def on_step_end(self, state: TrainState) -> None:
            seen.append(state.loss)

    trainer.callbacks.append(Losses())
    logs = trainer.fit_epoch()
    sizes = [16, 16, 16, 2]
    assert logs["train_loss"] == pytest.approx(np.dot(seen, sizes) / N, rel=1e-12)
    assert logs["train_loss"] != pytest.approx(np.mean(seen), rel=1e-6)


class Recorder(Callback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[str] = []
        self.stop_at = stop_at

    def on_train_begin(self, state: TrainState) -> None:
        self.events.append("train_begin")

    def on_epoch_begin(self, state: TrainState) -> None:
        self.events.append(f"epoch_begin {state.epoch} {sorted(state.epoch_logs)}")

    def on_step_end(self, state: TrainState) -> None:
        self.events.append(f"step {state.step}")
        if state.step == self.stop_at:
            state.stop = True

    def on_epoch_end(self, state: TrainState) -> None:
        self.events.append(f"epoch_end {state.epoch}")
        state.epoch_logs["extra"] = 10.0 * state.epoch  # what an evaluation callback does

    def on_train_end(self, state: TrainState) -> None:
        self.events.append("train_end")


def test_callbacks_run_in_keras_order_and_can_add_epoch_metrics() -> None:
    rec = Recorder()
    logs = _trainer(callbacks=[rec]).fit_epochs(2)
    steps = [f"step {k}" for k in range(1, 9)]
    assert rec.events == [
        "train_begin",
        "epoch_begin 1 ['epoch']",
        *steps[:4],
        "epoch_end 1",
        "epoch_begin 2 ['epoch']",
        *steps[4:],
        "epoch_end 2",
        "train_end",
    ]
    assert [e["extra"] for e in logs] == [10.0, 20.0]


def test_stop_ends_the_epoch_after_that_step_and_the_run() -> None:
    rec = Recorder(stop_at=2)
    logs = _trainer(callbacks=[rec]).fit_epochs(5)
    assert len(logs) == 1 and logs[0]["steps"] == 2 and logs[0]["samples"] == 32
    assert rec.events[-2:] == ["epoch_end 1", "train_end"]


def test_fit_epoch_begins_once_and_leaves_the_end_to_the_caller() -> None:
    rec = Recorder()
    trainer = _trainer(callbacks=[rec])
    trainer.fit_epoch()
    trainer.fit_epoch()
    assert rec.events.count("train_begin") == 1 and "train_end" not in rec.events
    trainer.end()
    assert rec.events[-1] == "train_end"


def test_batches_per_epoch_from_a_function_of_the_epoch() -> None:
    x, y = _data()
    asked: list[int] = []

    def batches(epoch: int) -> BatchIterator:
        asked.append(epoch)
        return BatchIterator(x[: 10 * epoch], y[: 10 * epoch], 10, seed=epoch)

    logs = _trainer().fit_epochs(3, batches)
    assert asked == [1, 2, 3] and [e["samples"] for e in logs] == [10, 20, 30]


def test_accuracy_of_one_hot_labels_and_none_for_regression() -> None:
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0]])
    assert count_correct(logits, np.array([1, 1, 1])) == 2
    assert count_correct(logits, np.eye(2)[[1, 1, 1]]) == 2
    assert count_correct(logits, np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])) == 3
    assert count_correct(logits, np.zeros((3, 1))) is None
    assert count_correct(logits, np.array([[3.0, 1.0], [0.0, 2.0], [1.0, 1.0]])) is None
    x = np.random.default_rng(0).normal(size=(20, 4))
    model = Sequential([Dense(4, 1, seed=0)]).astype(np.float64)
    t = Trainer(model, MSE(), SGD.from_model(model, lr=0.01), BatchIterator(x, x[:, :1], 8))
    logs = t.fit_epoch()
    assert "train_accuracy" not in logs and logs["samples"] == 20


def test_bad_arguments_are_refused() -> None:
    trainer = _trainer()
    with pytest.raises(ValueError, match="epochs must be a non-negative integer"):
        trainer.fit_epochs(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch 1 got no batch"):
        trainer.fit_epoch([])
    model = _model()
    with pytest.raises(ValueError, match="no batches"):
        Trainer(model, SoftmaxCrossEntropy(), SGD.from_model(model, lr=0.1)).fit_epoch()


def test_resume_in_mid_epoch_is_bit_identical(tmp_path: Path) -> None:
    from bnlab.deploy.checkpoint import load_checkpoint, save_checkpoint

    full = _trainer()
    full.fit_epochs(2)
    # run 1: stop after step 6 (epoch 2, step 2 of 4), checkpoint with the iterator's position
    part = _trainer()
    ckpt = CheckpointCallback(
        tmp_path / "c.npz", every=1000, write=save_checkpoint, iterator=part.batches
    )
    part.callbacks = [ckpt, Recorder(stop_at=6)]
    part.fit_epochs(2)
    # run 2, a new process as far as the objects go: restore, finish epoch 2
    resumed = _trainer()
    ck = load_checkpoint(tmp_path / "c.npz")
    resumed.model.load_state_dict(ck.model.state_dict())
    resumed.optimizer.load_state_dict(ck.optimizer_state)
    resumed.batches.load_state_dict(ck.extra["iterator"])  # type: ignore[union-attr]
    logs = resumed.fit_epoch()
    assert logs["steps"] == 2 and logs["samples"] == 18  # the rest of epoch 2: 16 + 2
    for k, v in full.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[k], v, err_msg=k)
    for k, v in full.model.buffers.items():
        np.testing.assert_array_equal(resumed.model.buffers[k], v, err_msg=k)


def test_world_of_one_data_parallel_epochs_are_bitwise_the_plain_ones() -> None:
    plain = _trainer()
    dp = _trainer(parallel=DataParallel(SelfComm(), config={"x": 1}))
    assert plain.fit_epochs(2) == dp.fit_epochs(2)
    for k, v in plain.model.params.items():
        np.testing.assert_array_equal(dp.model.params[k], v, err_msg=k)


def _thread_ranks() -> Any:
    path = Path(__file__).parents[1] / "distributed" / "parallel_threadcomm.py"
    spec = importlib.util.spec_from_file_location("parallel_threadcomm", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("parallel_threadcomm", mod)
    spec.loader.exec_module(mod)
    return mod.run_ranks


def test_two_ranks_report_the_global_batches_metrics() -> None:
    """Without BN two ranks on shards follow one process; the accuracy counts both shards."""
    one = _trainer(bn=False).fit_epochs(2)

    def rank(comm: Any) -> list[dict[str, float]]:
        return _trainer(bn=False, parallel=DataParallel(comm, config={})).fit_epochs(2)

    for logs in _thread_ranks()(2, rank):
        assert not isinstance(logs, BaseException), logs
        for got, ref in zip(logs, one, strict=True):
            assert (got["steps"], got["samples"]) == (4, N)
            assert got["train_accuracy"] == ref["train_accuracy"]
            assert got["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-12)
