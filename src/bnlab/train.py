"""Floor 3: the training loop and its callbacks. It owns no math.

One step of :class:`Trainer` is::

    logits = model.forward(x)                       # training mode
    loss, dlogits = loss_fn(logits, y)              # mean over the batch
    loss += optim.penalty_loss(model)               # L1/L2 penalties, if any layer has one
    model.backward(dlogits)                         # writes model.grads
    optim.add_penalty_grads(model)                  # adds the penalties' gradients
    optimizer.step()                                # updates model.params in place

A non-finite loss raises :class:`FloatingPointError` naming the step, so that a caller can
record a diverged run and go on. Callbacks see a :class:`TrainState` after every step; the
ones here evaluate on a fixed set (:class:`EvalCallback`), show a tqdm bar
(:class:`ProgressBar`) and save checkpoints (:class:`CheckpointCallback`).

The model is a :class:`bnlab.layers.Layer` (e.g. a Sequential): :class:`Trainer` checks at
construction that every layer declares ``backward(dy, *, need_input_grad=True)`` and calls it
with ``need_input_grad=False`` (a training step needs no dL/dx of the input).

``ActivationMonitor``, ``layer_input`` and ``percentiles`` (Figure 1 specifics) moved to
:mod:`bnlab.experiments.monitor`; importing them from here still works for one release, with a
DeprecationWarning.

Example (``model``, ``x``, ``y``, ``x_test``, ``y_test`` as in the README's tour)::

    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD.from_model(model, lr=0.5),
                      BatchIterator(x, y, 60, seed=0),
                      callbacks=[EvalCallback(x_test, y_test, every=500)])
    state = trainer.fit(5000)
    state.history[-1]["accuracy"]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bnlab.layers.base import Layer, check_protocol

if TYPE_CHECKING:
    from bnlab.optim import Optimizer

__all__ = [
    "Callback",
    "CheckpointCallback",
    "EvalCallback",
    "PeriodicCallback",
    "ProgressBar",
    "TrainState",
    "Trainer",
    "evaluate",
    "fit",
    "forward_eval",
]

# old name -> its new home (bnlab.experiments.monitor); see __getattr__ below
_MOVED = {"ActivationMonitor", "layer_input", "percentiles"}

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


# -- evaluation ----------------------------------------------------------------------------------


def forward_eval(
    model: Layer, x: np.ndarray, batch_size: int = 1000, *, stop: int | None = None
) -> np.ndarray:
    """Eval-mode forward of ``x`` in batches of ``batch_size``, as one array.

    Through the whole model, or with ``stop`` through ``model.sublayers()[:stop]`` only (the
    input of layer ``stop``). The model's train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    layers = model.sublayers()[:stop] if stop is not None else None
    outs = []
    was_training = bool(model.training)
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            h = x[i : i + batch_size]
            if layers is None:
                h = model.forward(h)
            else:
                for layer in layers:
                    h = layer.forward(h)
            outs.append(np.array(h, copy=True))
    finally:
        model.train(was_training)
    return np.concatenate(outs, axis=0)


def evaluate(
    model: Layer,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 1000,
    *,
    loss_fn: LossFn | None = None,
) -> dict[str, float]:
    """Accuracy (fraction of argmax(logits) == y) of ``model`` on ``(x, y)`` in eval mode.

    Runs in batches of ``batch_size``, so BatchNorm uses its running (population) statistics;
    the model's previous train/eval mode is restored afterwards. With ``loss_fn`` the mean
    loss over the set is returned too (batch losses weighted by batch size).
    """
    if len(x) != len(y):
        raise ValueError(f"evaluate: x has {len(x)} examples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("evaluate: x is empty")
    logits = forward_eval(model, x, batch_size)
    out = {"accuracy": float(np.mean(np.argmax(logits, axis=1) == np.asarray(y)))}
    if loss_fn is not None:
        total = 0.0
        for i in range(0, len(x), batch_size):
            loss, _ = loss_fn(logits[i : i + batch_size], y[i : i + batch_size])
            total += float(loss) * len(logits[i : i + batch_size])
        out["loss"] = total / len(x)
    return out


# -- callbacks -----------------------------------------------------------------------------------


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
    """Save model and optimizer to ``path`` every ``every`` steps and at the end (atomic).

    ``extra`` holds ``"step"``, ``"history"`` and, given ``iterator`` (the Trainer's
    ``BatchIterator``), ``"iterator"``: its ``state_dict()``, the position in the epoch. To
    resume bit for bit: ``it.load_state_dict(ckpt.extra["iterator"])`` (Dropout's generators
    are restored with the model).
    """

    def __init__(self, path: str | Path, *, every: int, iterator: Any = None) -> None:
        if every < 1:
            raise ValueError(f"CheckpointCallback: every must be >= 1, got {every}")
        if iterator is not None and not callable(getattr(iterator, "state_dict", None)):
            raise TypeError(
                "CheckpointCallback: iterator must have a state_dict() (a BatchIterator), got "
                f"{type(iterator).__name__}"
            )
        self.path, self.every, self.iterator = Path(path), every, iterator

    def save(self, state: TrainState) -> None:
        from bnlab.deploy.checkpoint import save_checkpoint

        extra: dict[str, Any] = {"step": state.step, "history": state.history}
        if self.iterator is not None:
            extra["iterator"] = self.iterator.state_dict()
        save_checkpoint(self.path, state.model, state.optimizer, extra=extra)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self.save(state)

    def on_train_end(self, state: TrainState) -> None:
        if state.step > 0 and state.step % self.every != 0:
            self.save(state)


def __getattr__(name: str) -> Any:
    """The names that moved to :mod:`bnlab.experiments.monitor`, with a DeprecationWarning."""
    if name in _MOVED:
        warnings.warn(
            f"bnlab.train.{name} moved to bnlab.experiments.monitor.{name}; import it from "
            "there (the old name goes away in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        from bnlab.experiments import monitor  # floor 4, imported only for the old names

        return getattr(monitor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
