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

Epoch mode (Keras' ``fit(epochs=...)``): ``trainer.fit_epoch()`` runs one pass over the
batches and returns ``{"epoch", "train_loss", "train_accuracy", "steps", "samples"}`` (the loss
weighted by batch size, the accuracy of the steps' logits); ``fit_epochs(n, batches)`` runs
``n`` of them between ``on_train_begin`` and ``on_train_end``, calling ``on_epoch_begin`` and
``on_epoch_end`` around each (``state.epoch``, ``state.epoch_logs``)::

    logs = trainer.fit_epochs(3)
    logs[-1]["train_accuracy"]
"""

from __future__ import annotations

import warnings
from typing import Any

from bnlab.train.callbacks import CheckpointCallback, EvalCallback, PeriodicCallback, ProgressBar
from bnlab.train.evaluation import evaluate, forward_eval
from bnlab.train.loop import (
    Callback,
    LossFn,
    StepOutput,
    Trainer,
    TrainState,
    count_correct,
    epoch_metrics,
    fit,
)

__all__ = [
    "Callback",
    "CheckpointCallback",
    "EvalCallback",
    "LossFn",
    "PeriodicCallback",
    "ProgressBar",
    "StepOutput",
    "TrainState",
    "Trainer",
    "count_correct",
    "epoch_metrics",
    "evaluate",
    "fit",
    "forward_eval",
]

# old name -> its new home (bnlab.experiments.monitor); see __getattr__ below
_MOVED = {"ActivationMonitor", "layer_input", "percentiles"}


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
