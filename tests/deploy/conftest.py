"""Small BN networks shared by the deploy tests, given to them by the ``nets`` fixture.

A fixture because pytest imports test modules without putting their folder on sys.path.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bnlab.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePool2D,
    MaxPool2D,
    ReLU,
    Sequential,
    Softmax,
    Tanh,
)

DENSE_INPUT = (6,)
CONV_INPUT = (8, 8, 3)


def dense_net(seed: int = 0, dtype=np.float32, dropout: bool = False) -> Sequential:
    """Dense -> BN -> ReLU -> [Dropout] -> Dense(no bias) -> BN -> Tanh -> Dense."""
    layers = [Dense(6, 8, seed=seed), BatchNorm(8), ReLU()]
    if dropout:
        layers.append(Dropout(0.3, seed=seed))
    layers += [Dense(8, 5, use_bias=False, seed=seed + 1), BatchNorm(5), Tanh()]
    layers.append(Dense(5, 3, seed=seed + 2))
    return Sequential(layers).astype(dtype)


def conv_net(seed: int = 0, dtype=np.float32, gap: bool = False) -> Sequential:
    """Conv(same) -> BN -> ReLU -> MaxPool -> Conv(valid, no bias) -> BN -> ReLU -> head."""
    layers = [
        Conv2D(3, 4, 3, padding="same", seed=seed),
        BatchNorm(4),
        ReLU(),
        MaxPool2D(2),
        Conv2D(4, 6, 3, use_bias=False, seed=seed + 1),
        BatchNorm(6),
        ReLU(),
    ]
    if gap:
        layers += [GlobalAveragePool2D(), Dense(6, 5, seed=seed + 2)]
    else:
        layers += [Flatten(), Dense(24, 5, seed=seed + 2)]
    layers += [BatchNorm(5), Softmax()]
    return Sequential(layers).astype(dtype)


def randomize_bn(model, rng: np.random.Generator) -> None:
    """Random gamma, beta, running statistics (variance in [0.5, 2]) and biases."""
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            n = layer.num_features
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, n)
            layer.params["beta"][...] = rng.normal(size=n)
            layer.buffers["running_mean"][...] = rng.normal(size=n)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, n)
            layer.buffers["num_batches_tracked"][...] = 7
        elif "b" in layer.params:
            layer.params["b"][...] = rng.normal(size=layer.params["b"].shape)


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a64 - b64)) / np.max(np.abs(b64)))


@pytest.fixture
def nets() -> SimpleNamespace:
    """The builders above: ``nets.dense_net(...)``, ``nets.conv_net(...)``, ..."""
    return SimpleNamespace(
        DENSE_INPUT=DENSE_INPUT,
        CONV_INPUT=CONV_INPUT,
        dense_net=dense_net,
        conv_net=conv_net,
        randomize_bn=randomize_bn,
        max_rel_diff=max_rel_diff,
    )
