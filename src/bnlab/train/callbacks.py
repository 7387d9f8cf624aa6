"""The callbacks :class:`Trainer` ships with: periodic evaluation, a progress bar, checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.layers.base import Layer
from bnlab.optim import Optimizer
from bnlab.train.evaluation import evaluate
from bnlab.train.loop import Callback, TrainState

__all__ = ["CheckpointCallback", "EvalCallback", "PeriodicCallback", "ProgressBar"]

#: ``write(path, model, optimizer, extra)``, e.g. :func:`bnlab.deploy.save_checkpoint`
CheckpointWriter = Callable[[Path, Layer, Optimizer, dict[str, Any]], object]


class PeriodicCallback(Callback):
    """Calls :meth:`record` every ``every`` steps, and at step 0 when ``at_start``."""

    def __init__(self, *, every: int, at_start: bool = True) -> None:
        if int(every) != every or every < 1:
            raise ValueError(f"{type(self).__name__}: every must be an integer >= 1, got {every}")
        self.every, self.at_start = int(every), at_start

    def record(self, state: TrainState) -> None:
        raise NotImplementedError

    def on_train_begin(self, state: TrainState) -> None:
        if self.at_start and state.step == 0:
            self.record(state)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self.record(state)


class EvalCallback(PeriodicCallback):
    """Every ``every`` steps (and at step 0 if ``at_start``), record the accuracy on (x, y)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        every: int,
        batch_size: int = 1000,
        prefix: str = "",
        at_start: bool = True,
    ) -> None:
        super().__init__(every=every, at_start=at_start)
        self.x, self.y, self.batch_size, self.prefix = x, y, batch_size, prefix

    def record(self, state: TrainState) -> None:
        """Evaluate now and record ``accuracy`` in the current history row."""
        acc = evaluate(state.model, self.x, self.y, self.batch_size)["accuracy"]
        state.record(**{f"{self.prefix}accuracy": acc})


class ProgressBar(Callback):
    """A tqdm bar over ``total`` steps showing steps/s and the latest ``show`` metric."""

    def __init__(self, total: int, *, show: str = "accuracy", desc: str | None = None) -> None:
        self.total, self.show, self.desc = total, show, desc
        self.bar: Any = None

    def on_train_begin(self, state: TrainState) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, unit="step", dynamic_ncols=True)

    def on_step_end(self, state: TrainState) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if self.show in state.logs and state.history and state.history[-1]["step"] == state.step:
            self.bar.set_postfix({self.show: f"{state.logs[self.show]:.4f}"}, refresh=False)

    def on_train_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CheckpointCallback(Callback):
    """Save model and optimizer to ``path`` every ``every`` steps and at the end, through
    ``write(path, model, optimizer, extra)``: :func:`bnlab.deploy.save_checkpoint` (atomic;
    the training loop knows no file format)::

        CheckpointCallback("run/ckpt.npz", every=500, write=save_checkpoint, iterator=batches)

    ``extra`` holds ``"step"``, ``"history"`` and, given ``iterator`` (the Trainer's
    ``BatchIterator``), ``"iterator"``: its ``state_dict()``, the position in the epoch. To
    resume bit for bit: ``it.load_state_dict(ckpt.extra["iterator"])`` (Dropout's generators
    are restored with the model).
    """

    def __init__(
        self, path: str | Path, *, every: int, write: CheckpointWriter, iterator: Any = None
    ) -> None:
        if every < 1:
            raise ValueError(f"CheckpointCallback: every must be >= 1, got {every}")
        if not callable(write):
            raise TypeError(
                "CheckpointCallback: write must be a function (bnlab.deploy.save_checkpoint), "
                f"got {type(write).__name__}"
            )
        if iterator is not None and not callable(getattr(iterator, "state_dict", None)):
            raise TypeError(
                "CheckpointCallback: iterator must have a state_dict() (a BatchIterator), got "
                f"{type(iterator).__name__}"
            )
        self.path, self.every, self.write, self.iterator = Path(path), every, write, iterator

    def save(self, state: TrainState) -> None:
        extra: dict[str, Any] = {"step": state.step, "history": state.history}
        if self.iterator is not None:
            extra["iterator"] = self.iterator.state_dict()
        self.write(self.path, state.model, state.optimizer, extra)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self.save(state)

    def on_train_end(self, state: TrainState) -> None:
        if state.step > 0 and state.step % self.every != 0:
            self.save(state)
