"""One training step of Keras' cifar10_cnn net (batch 32), bnlab vs PyTorch CPU.

Issue 4, section 1: target <= 1.5x PyTorch's step time, with and without batch normalization.
The net: Conv32 3x3 same, ReLU, Conv32 3x3 valid, ReLU, MaxPool 2, Dropout 0.25, Conv64 same,
ReLU, Conv64 valid, ReLU, MaxPool 2, Dropout 0.25, Flatten, Dense 512, ReLU, Dropout 0.5,
Dense 10; the BN variant puts BN after each Conv2D and the Dense 512 (before the ReLU) and
drops the dropout, as the post. A step is forward, softmax cross-entropy, backward and an
RMSprop update (lr 1e-4, or 1e-3 with BN; decay 1e-6). Timing as benchmarks/bench_mlp.py
(benchmarks/harness.py: separate processes, alternating ours/torch).

    python benchmarks/bench_cnn.py [--threads 1] [--reps 20 --rounds 3]

``BENCH_KERNEL_THREADS=none`` (or a number) overrides ``Sequential(kernel_threads="auto")``,
to measure what the cap on Numba's threads inside the step is worth.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mlp import cli  # noqa: E402 (shared alternating-process timing)

BATCH = 32


def ours_model(bn: bool):  # noqa: ANN201
    from bnlab.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential

    layers: list = []

    def block(layer, width: int, drop: float | None = None) -> None:  # noqa: ANN001
        layers.append(layer)
        layers.extend([BatchNorm(width)] if bn else [])
        layers.append(ReLU())

    block(Conv2D(3, 32, 3, padding="same", seed=1), 32)
    block(Conv2D(32, 32, 3, seed=2), 32)
    layers += [MaxPool2D(2)] + ([] if bn else [Dropout(0.25, seed=0)])
    block(Conv2D(32, 64, 3, padding="same", seed=3), 64)
    block(Conv2D(64, 64, 3, seed=4), 64)
    layers += [MaxPool2D(2)] + ([] if bn else [Dropout(0.25, seed=1)])
    layers += [Flatten()]
    block(Dense(2304, 512, seed=5), 512)
    layers += ([] if bn else [Dropout(0.5, seed=2)]) + [Dense(512, 10, seed=6)]
    setting = os.environ.get("BENCH_KERNEL_THREADS", "auto")
    threads = None if setting == "none" else setting if setting == "auto" else int(setting)
    return Sequential(layers, kernel_threads=threads)


def ours_step(bn: bool) -> Callable[[], None]:
    import numpy as np

    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import RMSprop

    model = ours_model(bn)
    opt = RMSprop(model.params, model.grads, lr=1e-3 if bn else 1e-4, decay=1e-6)
    loss_fn = SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)

    def step() -> None:
        _, dlogits = loss_fn(model.forward(x), y)
        model.backward(dlogits, need_input_grad=False)
        opt.step()

    return step


def torch_step(bn: bool) -> Callable[[], None]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    mods: list[nn.Module] = []

    def block(layer: nn.Module, width: int, norm: type[nn.Module]) -> None:
        mods.append(layer)
        mods.extend([norm(width)] if bn else [])
        mods.append(nn.ReLU())

    block(nn.Conv2d(3, 32, 3, padding=1), 32, nn.BatchNorm2d)
    block(nn.Conv2d(32, 32, 3), 32, nn.BatchNorm2d)
    mods += [nn.MaxPool2d(2)] + ([] if bn else [nn.Dropout(0.25)])
    block(nn.Conv2d(32, 64, 3, padding=1), 64, nn.BatchNorm2d)
    block(nn.Conv2d(64, 64, 3), 64, nn.BatchNorm2d)
    mods += [nn.MaxPool2d(2)] + ([] if bn else [nn.Dropout(0.25)]) + [nn.Flatten()]
    block(nn.Linear(2304, 512), 512, nn.BatchNorm1d)
    mods += ([] if bn else [nn.Dropout(0.5)]) + [nn.Linear(512, 10)]
    model = nn.Sequential(*mods)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3 if bn else 1e-4, alpha=0.9, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(BATCH, 3, 32, 32)
    y = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


if __name__ == "__main__":
    cli("bench_cnn", f"Training step: Keras cifar10_cnn, batch {BATCH}", 1.5, 20)
