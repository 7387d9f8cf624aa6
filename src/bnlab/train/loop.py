"""The training loop: :class:`TrainState`, :class:`Callback`, :class:`Trainer` and :func:`fit`
(see :mod:`bnlab.train` for what one step does)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bnlab.layers.base import Layer, check_protocol

if TYPE_CHECKING:
    from bnlab.optim import Optimizer

__all__ = ["Callback", "LossFn", "TrainState", "Trainer", "fit"]

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


@dataclass
class TrainState:
    """What callbacks see: the step just finished (1-based), its loss, and the history so far.

    ``history`` is a list of rows ``{"step": k, metric: value, ...}``; callbacks that record on
    the same step share one row (see :meth:`record`). ``logs`` holds the latest value of every
    metric, ``loss_sum``/``loss_count`` the training losses since the last recorded row.
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
    """Hooks called by :class:`Trainer`; override the ones you need."""

    def on_train_begin(self, state: TrainState) -> None:
        """Called once before the first step of :meth:`Trainer.fit`."""

    def on_step_end(self, state: TrainState) -> None:
        """Called after every optimizer step."""

    def on_train_end(self, state: TrainState) -> None:
        """Called once when :meth:`Trainer.fit` ends (also after an exception)."""


def _penalties() -> tuple[Callable[[Layer], float], Callable[[Layer], None]]:
    from bnlab import optim

    return optim.penalty_loss, optim.add_penalty_grads


class Trainer:
    """A step-based training loop over an endlessly re-iterated batch source.

    ``batches`` is any iterable of ``(x, y)`` pairs, e.g. a ``bnlab.data.BatchIterator``;
    when one pass ends a new pass starts (a shuffling iterator reshuffles). ``step()`` runs
    one step and the callbacks' ``on_step_end``; ``fit(steps)`` runs ``steps`` of them.

    ``parallel`` (a :class:`bnlab.parallel.DataParallel`) trains data-parallel under mpiexec:
    ``begin`` checks the ranks agree and broadcasts rank 0's state, each batch is the global
    batch of which this rank trains its shard, and the gradients are summed over the ranks.

    ``model`` must be a :class:`bnlab.layers.Layer` whose layers all declare
    ``backward(dy, *, need_input_grad=True)``; anything else is a TypeError here.
    """

    def __init__(
        self,
        model: Layer,
        loss_fn: LossFn,
        optimizer: Optimizer,
        batches: Iterable[tuple[np.ndarray, Any]],
        *,
        callbacks: Sequence[Callback] = (),
        parallel: Any = None,
    ) -> None:
        self.model = check_protocol(model, "Trainer")
        # a bnlab.parallel.DataParallel: shard each global batch, sum the gradients over ranks
        self.parallel = parallel
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.batches = batches
        self.callbacks = list(callbacks)
        self.state = TrainState(model=model, optimizer=optimizer)
        self._it: Iterator[tuple[np.ndarray, Any]] | None = None
        self._penalty_loss, self._add_penalty_grads = _penalties()
        # a training step needs no dL/dx of the input (declared by every Layer)
        self._backward_kwargs = {"need_input_grad": False}

    def _next_batch(self) -> tuple[np.ndarray, Any]:
        for _ in range(2):
            if self._it is None:
                self._it = iter(self.batches)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        raise ValueError("Trainer: batches yielded no batch in a whole pass; is it empty?")

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One optimizer step on ``(x, y)``; returns the loss (data term plus penalties)."""
        if self.parallel is not None:
            return float(self.parallel.trainer_step(self, x, y))
        self.model.train()
        logits = self.model.forward(x)
        loss, dlogits = self.loss_fn(logits, y)
        loss = float(loss) + float(self._penalty_loss(self.model))
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"Trainer: the loss is {loss} at step {self.state.step + 1}; the run diverged "
                "(learning rate too high?)"
            )
        self.model.backward(dlogits, need_input_grad=False)
        self._add_penalty_grads(self.model)
        self.optimizer.step()
        return loss

    def step(self) -> float:
        """Fetch a batch, train on it, update the state and call ``on_step_end``."""
        x, y = self._next_batch()
        loss = self.train_step(x, y)
        st = self.state
        st.step += 1
        st.loss = loss
        st.loss_sum += loss
        st.loss_count += 1
        for cb in self.callbacks:
            cb.on_step_end(st)
        return loss

    def begin(self) -> None:
        """Call every callback's ``on_train_begin`` (``fit`` does this for you)."""
        if self.parallel is not None:  # check the ranks agree; broadcast rank 0's state
            self.parallel.setup(self.model, self.optimizer)
        for cb in self.callbacks:
            cb.on_train_begin(self.state)

    def end(self) -> None:
        """Call every callback's ``on_train_end`` (``fit`` does this for you)."""
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
