"""Optimizers (SGD, RMSprop, Adam), learning-rate schedules and L1/L2 penalties.

An optimizer holds the ``params`` and ``grads`` dicts of a model and updates the parameter
arrays IN PLACE on :meth:`Optimizer.step`::

    opt = Adam.from_model(model, lr=1e-3)
    loss, dy = loss_fn(model.forward(x), y)
    model.backward(dy)
    add_penalty_grads(model)          # L1/L2 penalties declared on the layers
    opt.step()

``t`` below is the number of steps already taken (0 for the first step), the optimizer's
``iterations``. ``lr`` may be a float or a schedule (any callable ``t -> lr``, e.g.
:class:`StepDecay`). ``state_dict()`` / ``load_state_dict()`` save and restore the slot arrays,
``iterations`` and the hyperparameters, so a resumed run continues bit for bit.
"""

from bnlab.optim.optimizers import LR, OPTIMIZERS, SGD, Adam, Optimizer, RMSprop
from bnlab.optim.penalties import add_penalty_grads, declared_penalties, penalty_loss
from bnlab.optim.schedules import (
    ExponentialDecay,
    MultiStepDecay,
    Schedule,
    StepDecay,
    schedule_from_config,
)
from bnlab.regularizers import L1, L2, Penalty, penalty_from_config

__all__ = [
    "Optimizer",
    "SGD",
    "RMSprop",
    "Adam",
    "OPTIMIZERS",
    "LR",
    "Schedule",
    "StepDecay",
    "MultiStepDecay",
    "ExponentialDecay",
    "schedule_from_config",
    "Penalty",
    "L1",
    "L2",
    "penalty_from_config",
    "penalty_loss",
    "add_penalty_grads",
    "declared_penalties",
]
