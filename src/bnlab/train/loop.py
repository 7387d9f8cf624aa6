"""The training loop: :class:`TrainState`, :class:`Callback`, :class:`Trainer` and :func:`fit`
(see :mod:`bnlab.train` for what one step does).

Two ways to drive a :class:`Trainer`, as in Keras (``steps_per_epoch`` vs ``epochs``):

- step mode, ``fit(steps)``: ``steps`` steps over an endlessly re-iterated batch source;
- epoch mode, ``fit_epoch(batches)`` / ``fit_epochs(epochs, batches)``: one pass per epoch,
  with ``on_epoch_begin``/``on_epoch_end`` callbacks and the epoch's training metrics
  (:func:`epoch_metrics`), like the numbers Keras prints after every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnlab.layers.base import Layer, check_protocol
from bnlab.optim import Optimizer
from bnlab.train.step import LossFn, OneProcess, StepOutput, Strategy, train_step

__all__ = ["Callback", "TrainState", "Trainer", "count_correct", "epoch_metrics", "fit"]


@dataclass
class TrainState:
    """What callbacks see: the step just finished (1-based), its loss, and the history so far.

    ``history`` is a list of rows ``{"step": k, metric: value, ...}``; callbacks that record on
    the same step share one row (see :meth:`record`). ``logs`` holds the latest value of every
    metric, ``loss_sum``/``loss_count`` the training losses since the last recorded row.

    In epoch mode, ``epoch`` is the epoch running (1-based; during ``on_epoch_end`` the one
    just finished) and ``epoch_logs`` its metrics: ``{"epoch"}`` from ``on_epoch_begin``,
    the training metrics of :func:`epoch_metrics` at ``on_epoch_end``, where callbacks may add
    their own (an evaluation, say); :meth:`Trainer.fit_epoch` returns them.
    """

    model: Layer
    optimizer: Optimizer
    step: int = 0
    loss: float = math.nan
    history: list[dict[str, float]] = field(default_factory=list)
    logs: dict[str, float] = field(default_factory=dict)
    loss_sum: float = 0.0
    loss_count: int = 0
    stop: bool = False
    epoch: int = 0
    epoch_logs: dict[str, float] = field(default_factory=dict)

    def record(self, **metrics: float) -> None:
        """Add ``metrics`` to the history row of the current step (created on first use).

        The first record of a step also stores ``train_loss``: the mean training loss over
        the steps since the previous row.
        """
        if not self.history or self.history[-1]["step"] != self.step:
            mean = self.loss_sum / self.loss_count if self.loss_count else math.nan
            self.history.append({"step": self.step, "train_loss": mean})
            self.loss_sum, self.loss_count = 0.0, 0
        self.history[-1].update(metrics)
        self.logs.update(metrics)


class Callback:
    """Hooks called by :class:`Trainer`; override the ones you need.

    The order (as Keras')::

        on_train_begin
          on_epoch_begin                    # epoch mode only; state.epoch is the new epoch
            on_step_end  (once per step)
          on_epoch_end                      # state.epoch_logs holds the epoch's metrics
        on_train_end                        # also after an exception
    """

    def on_train_begin(self, state: TrainState) -> None:
        """Called once before the first step (:meth:`Trainer.begin`)."""

    def on_epoch_begin(self, state: TrainState) -> None:
        """Called before the first step of an epoch (epoch mode)."""

    def on_step_end(self, state: TrainState) -> None:
        """Called after every optimizer step."""

    def on_epoch_end(self, state: TrainState) -> None:
        """Called after the last step of an epoch, with ``state.epoch_logs`` filled in."""

    def on_train_end(self, state: TrainState) -> None:
        """Called once when training ends (:meth:`Trainer.end`; also after an exception)."""


def count_correct(logits: np.ndarray, y: Any) -> int | None:
    """``#{i : argmax_j logits[i, j] == y_i}`` for class indices ``y`` (for one-hot or
    probability rows: their argmax); None when ``y`` holds no classes (regression targets,
    None), and then the epoch logs have no ``train_accuracy``."""
    if y is None or np.ndim(logits) != 2:
        return None
    y = np.asarray(y)
    if y.ndim == 1 and y.dtype.kind in "iu":
        return int(np.count_nonzero(np.argmax(logits, axis=1) == y))
    if y.shape == np.shape(logits) and y.shape[1] >= 2 and _distributions(y):
        return int(np.count_nonzero(np.argmax(logits, axis=1) == np.argmax(y, axis=1)))
    return None


def _distributions(y: np.ndarray) -> bool:
    """Rows of non-negative numbers summing to 1 (one-hot or soft labels), not targets."""
    return bool(np.all(y >= 0) and np.allclose(y.sum(axis=1), 1.0))


def epoch_metrics(losses: Sequence[float], sizes: Sequence[int], correct: int | None) -> dict:
    """The training metrics of an epoch of batches with mean losses ``losses`` and ``sizes``
    examples (global batches under data parallel), ``correct`` of them classified right::

        train_loss     = sum_b loss_b n_b / sum_b n_b      (the mean over the examples)
        train_accuracy = correct / sum_b n_b              (only if correct is not None)

    plus ``steps`` and ``samples``. The sum runs in batch order (the same bits every time).
    """
    total, loss_sum = 0, 0.0
    for loss, n in zip(losses, sizes, strict=True):
        total += int(n)
        loss_sum += float(loss) * int(n)
    out: dict[str, float] = {"train_loss": loss_sum / total}
    if correct is not None:
        out["train_accuracy"] = correct / total
    out.update(steps=len(losses), samples=total)
    return out


class Trainer:
    """A training loop in steps (:meth:`fit`) or in epochs (:meth:`fit_epoch`, :meth:`fit_epochs`).

    ``batches`` is any iterable of ``(x, y)`` pairs, e.g. a ``bnlab.data.BatchIterator``.
    Step mode re-iterates it endlessly (when one pass ends a new pass starts; a shuffling
    iterator reshuffles): ``step()`` runs one step and the callbacks' ``on_step_end``,
    ``fit(steps)`` runs ``steps`` of them. Epoch mode runs one pass per epoch over ``batches``
    or over the iterable given for that epoch (e.g. one re-seeded per epoch).

    Every step is :func:`bnlab.train.train_step` under the strategy ``parallel`` (default
    one process). With a :class:`bnlab.train.DataParallel` under mpiexec, ``begin`` checks the
    ranks agree and broadcasts rank 0's state, each batch is the global batch of which this
    rank trains its shard, the gradients are summed over the ranks, and the epoch metrics are
    those of the global batches on every rank.

    ``model`` must be a :class:`bnlab.layers.Layer` whose layers all declare
    ``backward(dy, *, need_input_grad=True)``; anything else is a TypeError here.

    Example (epoch mode, as Keras' ``model.fit(x, y, epochs=3)``)::

        trainer = Trainer(model, SoftmaxCrossEntropy(), SGD.from_model(model, lr=0.1),
                          BatchIterator(x, y, 32, seed=0))
        logs = trainer.fit_epochs(3)      # [{"epoch": 1, "train_loss": ..., ...}, ...]
    """

    def __init__(
        self,
        model: Layer,
        loss_fn: LossFn,
        optimizer: Optimizer,
        batches: Iterable[tuple[np.ndarray, Any]] | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        parallel: Strategy | None = None,
    ) -> None:
        self.model = check_protocol(model, "Trainer")
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.batches = batches
        self.callbacks = list(callbacks)
        self.parallel: Strategy = OneProcess() if parallel is None else parallel
        self.state = TrainState(model=model, optimizer=optimizer)
        self._it: Iterator[tuple[np.ndarray, Any]] | None = None
        self._begun = False
        self._set_up = False  # parallel.setup has run (begin does it; a lone step too)

    def _next_batch(self) -> tuple[np.ndarray, Any]:
        if self.batches is None:
            raise ValueError("Trainer.fit: no batches; pass batches to Trainer(...)")
        for _ in range(2):
            if self._it is None:
                self._it = iter(self.batches)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        raise ValueError("Trainer: batches yielded no batch in a whole pass; is it empty?")

    def train_batch(self, x: np.ndarray, y: Any) -> StepOutput:
        """One optimizer step on ``(x, y)`` (:func:`bnlab.train.train_step`; no callbacks, no
        state update)."""
        if not self._set_up:
            self._setup()
        return train_step(self.model, self.loss_fn, self.optimizer, x, y, self.parallel)

    def train_step(self, x: np.ndarray, y: Any) -> float:
        """One optimizer step on ``(x, y)``; returns the loss (data term plus penalties)."""
        return self.train_batch(x, y).loss

    def _after_step(self, loss: float) -> None:
        st = self.state
        st.step += 1
        st.loss = loss
        st.loss_sum += loss
        st.loss_count += 1
        for cb in self.callbacks:
            cb.on_step_end(st)

    def step(self) -> float:
        """Fetch a batch, train on it (:meth:`train_step`), update the state and call
        ``on_step_end``."""
        x, y = self._next_batch()
        loss = self.train_step(x, y)
        self._after_step(loss)
        return loss

    def begin(self) -> None:
        """Set up the strategy (under data parallel: check the ranks agree, broadcast rank
        0's state) and call every callback's ``on_train_begin`` (``fit`` does this for you)."""
        self._setup()
        self._begun = True
        for cb in self.callbacks:
            cb.on_train_begin(self.state)

    def _setup(self) -> None:
        self.parallel.setup(self.model, self.optimizer)
        self._set_up = True

    def end(self) -> None:
        """Call every callback's ``on_train_end`` (``fit`` does this for you)."""
        self._begun = False
        for cb in self.callbacks:
            cb.on_train_end(self.state)

    def fit(self, steps: int) -> TrainState:
        """Run ``steps`` more steps (fewer if a callback sets ``state.stop``)."""
        if int(steps) != steps or steps < 0:
            raise ValueError(f"Trainer.fit: steps must be a non-negative integer, got {steps!r}")
        self.begin()
        try:
            for _ in range(int(steps)):
                self.step()
                if self.state.stop:
                    break
        finally:
            self.end()
        return self.state

    def fit_epoch(self, batches: Iterable[tuple[np.ndarray, Any]] | None = None) -> dict:
        """One epoch: a pass over ``batches`` (default: the Trainer's), its metrics returned.

        Calls :meth:`begin` first if training has not begun (then :meth:`end` is yours to
        call, or use :meth:`fit_epochs`), ``on_epoch_begin``, a step per batch (with
        ``on_step_end``), then ``on_epoch_end`` with ``state.epoch_logs``: ``epoch`` and
        :func:`epoch_metrics` (``train_loss``, ``train_accuracy`` from the steps' logits when
        the labels are classes, ``steps``, ``samples``), plus what callbacks add. A callback
        setting ``state.stop`` ends the epoch after that step (under data parallel, set it on
        every rank). A pass of a ``BatchIterator`` in mid-epoch (restored from a checkpoint)
        runs to the end of that epoch.
        """
        source = self.batches if batches is None else batches
        if source is None:
            raise ValueError("Trainer.fit_epoch: no batches; pass them here or to Trainer(...)")
        if not self._begun:
            self.begin()
        st = self.state
        st.epoch += 1
        st.epoch_logs = {"epoch": st.epoch}
        for cb in self.callbacks:
            cb.on_epoch_begin(st)
        losses: list[float] = []
        sizes: list[int] = []
        correct: int | None = 0
        for x, y in source:
            out = self.train_batch(x, y)
            self._after_step(out.loss)
            losses.append(out.loss)
            sizes.append(len(x))
            hits = count_correct(out.logits, out.y)
            correct = None if hits is None or correct is None else correct + hits
            if st.stop:
                break
        if not losses:
            raise ValueError(f"Trainer.fit_epoch: epoch {st.epoch} got no batch; is it empty?")
        if correct is not None:  # over the global batches
            correct = int(self.parallel.sum([correct])[0])
        st.epoch_logs = {"epoch": st.epoch, **epoch_metrics(losses, sizes, correct)}
        for cb in self.callbacks:
            cb.on_epoch_end(st)
        return dict(st.epoch_logs)

    def fit_epochs(
        self,
        epochs: int,
        batches: Iterable[tuple[np.ndarray, Any]]
        | Callable[[int], Iterable[tuple[np.ndarray, Any]]]
        | None = None,
    ) -> list[dict]:
        """Run ``epochs`` more epochs between :meth:`begin` and :meth:`end` (fewer if a
        callback sets ``state.stop``); returns each epoch's logs (see :meth:`fit_epoch`).

        ``batches`` is the iterable of every epoch (default: the Trainer's), or a function
        ``epoch -> iterable`` (1-based epoch number) for a pass built per epoch.
        """
        if int(epochs) != epochs or epochs < 0:
            raise ValueError(
                f"Trainer.fit_epochs: epochs must be a non-negative integer, got {epochs!r}"
            )
        logs: list[dict] = []
        self.begin()
        try:
            for _ in range(int(epochs)):
                source = batches(self.state.epoch + 1) if callable(batches) else batches
                logs.append(self.fit_epoch(source))
                if self.state.stop:
                    break
        finally:
            self.end()
        return logs


def fit(
    model: Layer,
    loss_fn: LossFn,
    optimizer: Optimizer,
    batches: Iterable[tuple[np.ndarray, Any]],
    steps: int,
    *,
    callbacks: Sequence[Callback] = (),
) -> TrainState:
    """Train ``model`` for ``steps`` steps; see :class:`Trainer` for what one step does."""
    return Trainer(model, loss_fn, optimizer, batches, callbacks=callbacks).fit(steps)
