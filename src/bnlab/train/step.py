"""The training step, the only one: :func:`train_step`, and the :class:`Strategy` it runs under.

A step on the global batch ``(x, y)`` of ``n`` samples, of which the strategy gives this
process the shard ``(x_r, y_r)`` of ``m`` samples (in one process: all of them, ``m = n``)::

    logits = model.forward(x_r)                      # training mode
    loss_r, dlogits = loss_fn(logits, y_r)           # mean over the m samples
    model.backward(dlogits * m / n)                  # no dL/dx of the input; unscaled if m = n
    loss = reduce(model.grads, loss_r)               # sum over processes; sum_r loss_r m_r / n
    loss += penalty_loss(model)                      # L1/L2 penalties, counted once
    if not isfinite(loss): raise FloatingPointError  # on every process, before any update
                                                     # (one process: before backward already)
    add_penalty_grads(model)                         # after the sum: added once
    optimizer.step()                                 # the same update on every process

Summed over the processes, the scaled gradients are the gradient of the global batch's mean
loss, so P processes follow the one-process run up to the order of floating-point sums (with
synchronized BatchNorm, or none). :class:`OneProcess` is the identity strategy;
:class:`bnlab.train.DataParallel` shards over the ranks of an MPI world.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bnlab.layers.base import Layer
from bnlab.optim import Optimizer, add_penalty_grads, declared_penalties, penalty_loss

__all__ = ["LossFn", "OneProcess", "StepOutput", "Strategy", "backward_global", "train_step"]

LossFn = Callable[[np.ndarray, Any], tuple[float, np.ndarray]]


class Strategy(Protocol):
    """Where the samples of a step are trained: this process's shard, and the sums over the
    processes that make the shards one batch (see :func:`train_step`)."""

    def setup(self, model: Layer, optimizer: Optimizer | None) -> None:
        """Before the first step: check every process trains the same thing, same state."""

    def shard(self, x: Any, y: Any) -> tuple[Any, Any]:
        """This process's samples of the global batch ``(x, y)``."""

    def reduce(self, model: Layer, loss: float, m: int, n: int) -> float:
        """Sum ``model.grads`` over the processes in place; return ``sum_r loss_r m_r / n``,
        the mean loss of the global batch of ``n`` from this process's ``loss`` over ``m``."""

    def sum(self, values: Sequence[float]) -> list[float]:
        """The elementwise sum over the processes of a few numbers (e.g. counts)."""


class OneProcess:
    """The whole batch in this process: the shard is the batch and every sum the identity."""

    def setup(self, model: Layer, optimizer: Optimizer | None) -> None:
        """Nothing to agree on with other processes."""

    def shard(self, x: Any, y: Any) -> tuple[Any, Any]:
        return x, y

    def reduce(self, model: Layer, loss: float, m: int, n: int) -> float:
        return loss

    def sum(self, values: Sequence[float]) -> list[float]:
        return [float(v) for v in values]


@dataclass(frozen=True)
class StepOutput:
    """What one training step gives: the loss (data term plus penalties; under data parallel
    the global batch's), and the logits with the labels they were computed for (this
    process's shard)."""

    loss: float
    logits: np.ndarray
    y: Any


def train_step(
    model: Layer,
    loss_fn: LossFn,
    optimizer: Optimizer,
    x: np.ndarray,
    y: Any,
    parallel: Strategy | None = None,
) -> StepOutput:
    """One optimizer step on the global batch ``(x, y)`` (see the module docstring).

    ``parallel`` is the strategy (default :class:`OneProcess`); a strategy other than one
    process must have been set up (``parallel.setup(model, optimizer)``; ``Trainer`` does).
    A non-finite loss raises FloatingPointError naming the step, before the parameters change.

    >>> from bnlab.layers import Dense
    >>> from bnlab.losses import MSE
    >>> from bnlab.optim import SGD
    >>> model = Dense(2, 1, use_bias=False, seed=0).astype(np.float64)
    >>> model.params["W"][...] = [[1.0], [2.0]]
    >>> out = train_step(model, MSE(), SGD.from_model(model, lr=0.25), np.ones((4, 2)),
    ...                  np.zeros((4, 1)))
    >>> out.loss, model.params["W"].ravel().tolist()  # 3^2, W - 0.25 * 2 * 3
    (9.0, [-0.5, 0.5])
    """
    parallel = OneProcess() if parallel is None else parallel
    n = len(x)
    xs, ys = parallel.shard(x, y)
    m = len(xs)
    model.train()
    logits = model.forward(xs)
    loss, dlogits = loss_fn(logits, ys)
    penalties = declared_penalties(model)  # one walk for the loss and the gradients
    penalty = penalty_loss(model, penalties)
    if m == n:  # the whole batch is here: refuse a non-finite loss before backward sees it
        _refuse_nonfinite(float(loss) + penalty, "loss", optimizer)
    total = backward_global(model, loss, dlogits, n, parallel) + penalty
    _refuse_nonfinite(total, "global loss", optimizer)
    add_penalty_grads(model, penalties)
    optimizer.step()
    return StepOutput(total, logits, ys)


def backward_global(
    model: Layer, loss: float, dlogits: np.ndarray, n: int, parallel: Strategy
) -> float:
    """The backward of a global batch of ``n`` samples from this process's shard of ``m =
    len(dlogits)``: ``model.backward(dlogits * m / n)`` (unscaled if ``m = n``), then
    ``parallel.reduce``: ``model.grads`` become the gradients of the global batch's mean loss
    on every process; returns that loss, ``sum_r loss_r m_r / n``.

    The part of :func:`train_step` that the measurements of a gradient without an update use
    too (its forward on the shard, ``parallel.shard``, comes first)."""
    m = len(dlogits)
    if m != n:  # this shard's share of the global mean
        dlogits = dlogits * dlogits.dtype.type(m / n)
    model.backward(dlogits, need_input_grad=False)
    return parallel.reduce(model, float(loss), m, n)


def _refuse_nonfinite(loss: float, what: str, optimizer: Optimizer) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"Trainer: the {what} is {loss} at step {optimizer.iterations + 1}; the run "
            "diverged (learning rate too high?)"
        )
