"""Evaluation in eval mode: :func:`forward_eval` (batched forward) and :func:`evaluate`."""

from __future__ import annotations

import numpy as np

from bnlab.layers.base import Layer
from bnlab.train.step import LossFn

__all__ = ["evaluate", "forward_eval"]


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
