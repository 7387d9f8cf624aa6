"""The measurements of Santurkar et al. 2018 at one training step, on one batch.

With ``theta_t`` the parameters at step t, ``G = grad L(theta_t; x, y)`` on the step's batch
and SGD's update ``theta_{t+1} = theta_t - lr G``:

- **ICS of weight layer i** (their Definition 2.1): ``G_i`` is the gradient of the layer's
  kernel ``W_i`` at ``theta_t``; ``G'_i`` the gradient of the same kernel after the layers
  before it (every parameter of every layer with a smaller index) took their step,
  ``theta' = (theta_{t+1} before i, theta_t from i on)``, on the same batch. Reported:
  ``||G_i - G'_i||_2`` and ``cos(G_i, G'_i)``. The first weight layer has no layers before
  it and is left out.
- **Loss landscape along the gradient**: for every step size eta,
  ``L(theta_t - eta G)``; the variation is ``max - min`` over eta (and eta = 0).
- **Gradient predictiveness**: ``||G - grad L(theta_t - eta G)||_2`` for every eta.
- **Effective beta-smoothness**: ``max_eta ||G - grad L(theta_t - eta G)|| / ||eta G||``.

The gradients here are of all parameters together (flattened) except for ICS (the kernel of
one layer). BN layers are in training mode (batch statistics) throughout; :func:`kept_state`
puts parameters, running statistics and gradients back afterwards.

With ``parallel`` (a :class:`~bnlab.train.DataParallel`, set up for the model) every gradient
is the global batch's: each rank runs its shard of ``(x, y)`` and the gradients and the loss
are summed over the ranks (:func:`~bnlab.train.backward_global`), so every measurement is the
same number on every rank and, up to rounding, the one of one process on the whole batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from bnlab.layers import Sequential
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.train import DataParallel, OneProcess, backward_global

__all__ = ["gradients", "ics", "kept_state", "landscape"]

_LOSS = SoftmaxCrossEntropy()


def gradients(
    model: Sequential, x: np.ndarray, y: np.ndarray, parallel: DataParallel | None = None
) -> tuple[float, dict[str, np.ndarray]]:
    """``(L(theta; x, y), {key: dL/dparam})`` at the model's parameters (float64 copies), of
    the global batch ``(x, y)`` under ``parallel``."""
    par = OneProcess() if parallel is None else parallel
    xs, ys = par.shard(x, y)
    loss, dlogits = _LOSS(model.forward(xs), ys)
    loss = backward_global(model, loss, dlogits, len(x), par)
    return loss, {k: np.array(g, dtype=np.float64) for k, g in model.grads.items()}


@contextlib.contextmanager
def kept_state(model: Sequential) -> Iterator[None]:
    """Parameters, buffers and gradients of ``model`` as they were, after the block."""
    saved = [
        {k: np.array(v, copy=True) for k, v in d.items()}
        for d in (model.params, model.buffers, model.grads)
    ]
    try:
        yield
    finally:
        for d, s in zip((model.params, model.buffers, model.grads), saved, strict=True):
            for k, v in s.items():
                d[k][...] = v


def _layer_of(key: str) -> int:
    return int(key.split(".", 1)[0])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a.ravel(), b.ravel())) / (na * nb) if na and nb else math.nan


def ics(
    model: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    grads: dict[str, np.ndarray],
    lr: float,
    layers: list[int],
    parallel: DataParallel | None = None,
) -> list[tuple[float, float]]:
    """``(||G_i - G'_i||, cos(G_i, G'_i))`` for every weight layer in ``layers[1:]`` (module
    docstring); ``grads`` are the gradients at the model's parameters ``theta_t``."""
    params = model.params
    theta = {k: np.array(v, copy=True) for k, v in params.items()}
    out = []
    with kept_state(model):
        for i in layers[1:]:
            for k, p in params.items():
                p[...] = theta[k] - lr * grads[k] if _layer_of(k) < i else theta[k]
            _, after = gradients(model, x, y, parallel)
            g, g2 = grads[f"{i}.W"], after[f"{i}.W"]
            out.append((float(np.linalg.norm(g - g2)), _cos(g, g2)))
    return out


def landscape(
    model: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    loss0: float,
    grads: dict[str, np.ndarray],
    step_sizes: list[float],
    parallel: DataParallel | None = None,
) -> dict[str, Any]:
    """Losses and gradient changes at ``theta_t - eta G`` for every eta; the variation of the
    loss, and the effective beta-smoothness (module docstring)."""
    params = model.params
    theta = {k: np.array(v, copy=True) for k, v in params.items()}
    g_all = np.concatenate([grads[k].ravel() for k in params])
    gnorm = float(np.linalg.norm(g_all))
    losses, diffs = [], []
    with kept_state(model):
        for eta in step_sizes:
            for k, p in params.items():
                p[...] = theta[k] - eta * grads[k]
            loss, after = gradients(model, x, y, parallel)
            losses.append(loss)
            diffs.append(
                float(np.linalg.norm(g_all - np.concatenate([after[k].ravel() for k in params])))
            )
    finite = [v for v in [loss0, *losses] if math.isfinite(v)]
    beta = [d / (eta * gnorm) for d, eta in zip(diffs, step_sizes, strict=True) if gnorm]
    return {
        "losses": losses,
        "grad_diffs": diffs,
        "loss_range": max(finite) - min(finite) if finite else None,
        "beta": max(beta) if beta else None,
        "grad_norm": gnorm,
    }
