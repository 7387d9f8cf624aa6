"""Floor 3: the training step and loop, callbacks, evaluation, and data parallelism. No math.

One step (:func:`train_step`, the only one) on a batch ``(x, y)``::

    logits = model.forward(x)                       # training mode
    loss, dlogits = loss_fn(logits, y)              # mean over the batch
    model.backward(dlogits)                         # writes model.grads (no dL/dx of x)
    loss += optim.penalty_loss(model)               # L1/L2 penalties, if any layer has one
    optim.add_penalty_grads(model)                  # adds the penalties' gradients
    optimizer.step()                                # updates model.params in place

A non-finite loss raises :class:`FloatingPointError` naming the step, before the update, so
that a caller can record a diverged run and go on. Data parallelism is the strategy the step
runs under (:class:`Strategy`): :class:`DataParallel` trains this rank's shard of the global
batch and sums the gradients and the loss over the ranks; :class:`OneProcess` (the default)
is the identity.

:class:`Trainer` runs steps and calls callbacks, which see a :class:`TrainState` after every
step; the ones here evaluate on a fixed set (:class:`EvalCallback`), show a tqdm bar
(:class:`ProgressBar`), save checkpoints (:class:`CheckpointCallback`) and record
percentiles of one unit's input (:class:`ActivationMonitor`, Figure 1 of the paper).

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

Under ``mpiexec``: ``Trainer(..., parallel=DataParallel(world(), config=cfg))``, and
:func:`guard_job` around the program so that one rank's failure ends every rank.
"""

from bnlab.train.callbacks import CheckpointCallback, EvalCallback, PeriodicCallback, ProgressBar
from bnlab.train.consistency import ConfigMismatchError, check_agree
from bnlab.train.data_parallel import (
    BN_SYNC_MODES,
    DataParallel,
    for_experiment,
    is_root,
    prepare_model,
    shard_bounds,
)
from bnlab.train.evaluation import evaluate, forward_eval
from bnlab.train.faults import guard_job, rank_prefix
from bnlab.train.loop import Callback, Trainer, TrainState, count_correct, epoch_metrics, fit
from bnlab.train.monitor import ActivationMonitor, layer_input, percentiles
from bnlab.train.step import (
    LossFn,
    OneProcess,
    StepOutput,
    Strategy,
    backward_global,
    train_step,
)

__all__ = [
    "BN_SYNC_MODES",
    "ActivationMonitor",
    "Callback",
    "CheckpointCallback",
    "ConfigMismatchError",
    "backward_global",
    "check_agree",
    "DataParallel",
    "EvalCallback",
    "LossFn",
    "OneProcess",
    "PeriodicCallback",
    "ProgressBar",
    "StepOutput",
    "Strategy",
    "TrainState",
    "Trainer",
    "count_correct",
    "epoch_metrics",
    "evaluate",
    "fit",
    "for_experiment",
    "forward_eval",
    "guard_job",
    "is_root",
    "layer_input",
    "percentiles",
    "prepare_model",
    "rank_prefix",
    "shard_bounds",
    "train_step",
]
