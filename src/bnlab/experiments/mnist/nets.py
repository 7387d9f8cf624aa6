"""The data and the two nets of the MNIST experiments (also used by ``population-stats`` and
``renorm-small-batch``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["NETS", "build_net", "last_sigmoid_index", "load_data"]

# the two nets of every (learning rate, seed): without and with batch normalization
NETS = ("plain", "bn")


def load_data(
    train_subset: int | None = None, test_subset: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST as float32 rows of 784 pixels scaled to [0, 1] (x / 255), labels int64:
    ``(x_train, y_train, x_test, y_test)``, the first ``train_subset``/``test_subset`` images
    (all when None)."""
    from bnlab.data import load_mnist

    (xtr, ytr), (xte, yte) = load_mnist()

    def prep(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
        if n is not None:
            x, y = x[: int(n)], y[: int(n)]
        return x.reshape(len(x), -1).astype(np.float32) / np.float32(255), y.astype(np.int64)

    xtr, ytr = prep(xtr, ytr, train_subset)
    xte, yte = prep(xte, yte, test_subset)
    return xtr, ytr, xte, yte


def build_net(
    bn: bool,
    seed: int,
    hidden: Sequence[int],
    init_std: float,
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    n_in: int = 784,
    n_out: int = 10,
) -> Any:
    """784-100-100-100-10 (``hidden``) with sigmoid hidden units; weights N(0, init_std^2),
    biases 0.

    With ``bn`` every hidden layer is Dense(use_bias=False) -> BatchNorm -> Sigmoid (beta
    replaces the bias). The same ``seed`` gives both nets the same weight matrices: layer i
    draws from seed ``1000 * seed + i``, the output layer from ``1000 * seed + 999``.
    """
    from bnlab.initializers import normal
    from bnlab.layers import BatchNorm, Dense, Sequential, Sigmoid

    init = normal(float(init_std))
    layers: list[Any] = []
    fan_in = n_in
    for i, width in enumerate(hidden):
        wseed = int(seed) * 1000 + i
        layers.append(Dense(fan_in, int(width), use_bias=not bn, init=init, seed=wseed))
        if bn:
            layers.append(BatchNorm(int(width), momentum=float(bn_momentum), eps=float(bn_eps)))
        layers.append(Sigmoid())
        fan_in = int(width)
    layers.append(Dense(fan_in, n_out, init=init, seed=int(seed) * 1000 + 999))
    return Sequential(layers)


def last_sigmoid_index(model: Any) -> int:
    """Index in ``model.layers`` of the last Sigmoid (the last hidden layer's nonlinearity)."""
    from bnlab.layers import Sigmoid

    idx = [i for i, layer in enumerate(model.layers) if isinstance(layer, Sigmoid)]
    if not idx:
        raise ValueError("the model has no Sigmoid layer to monitor")
    return idx[-1]
