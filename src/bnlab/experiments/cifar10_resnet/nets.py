"""The net, optimizer and batches of ``cifar10-resnet`` (shared with ``batch-size``).

He et al. 2016, section 4.2: per-pixel mean subtraction (the mean image of the training
set), 4-pixel zero padding and a random 32x32 crop (a shift of ``U{-4..4}`` pixels per axis
with the uncovered border filled with 0, i.e. the mean after subtraction), horizontal flips
with probability 1/2; SGD with momentum, weight decay as an L2 penalty on the kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "add_weight_decay",
    "build_optimizer",
    "epoch_batches",
    "epoch_seed",
    "pixel_mean",
]


def pixel_mean(x_train: np.ndarray) -> np.ndarray:
    """The per-pixel mean ``mean_n x[n] / 255`` of the training images, (32, 32, 3) float32."""
    return (x_train.mean(axis=0, dtype=np.float64) / 255).astype(np.float32)


def add_weight_decay(model: Any, weight_decay: float) -> Any:
    """Weight decay ``wd`` on every Conv2D/Dense kernel: ``grad += wd * W``, i.e. bnlab's
    ``L2(wd / 2)`` (loss ``wd/2 * sum W^2``); norm gammas/betas and biases are not decayed."""
    from bnlab.layers import Conv2D, Dense
    from bnlab.optim import L2

    if weight_decay > 0:
        for layer in model.modules():
            if isinstance(layer, Conv2D | Dense):
                layer.regularizers["W"] = L2(float(weight_decay) / 2)
    return model


def build_optimizer(model: Any, lr: float, momentum: float, milestones: list[int]) -> Any:
    """SGD with momentum, lr divided by 10 at each of ``milestones`` (steps)."""
    from bnlab.optim import SGD, MultiStepDecay

    schedule = MultiStepDecay(float(lr), [m for m in milestones if m >= 1], 0.1)
    return SGD.from_model(model, lr=schedule, momentum=float(momentum))


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of random ``stream`` (0: batch order, 1: augmentation) in ``epoch``."""
    return int(np.random.SeedSequence([int(seed), epoch, stream]).generate_state(1)[0])


def epoch_batches(
    x: np.ndarray, y: np.ndarray, mean: np.ndarray, batch_size: int, seed: int, epoch: int
) -> Any:
    """One epoch of shuffled float32 batches ``augment(x / 255 - mean)`` (pad 4, crop, flip)."""
    from bnlab.comm import world
    from bnlab.data import BatchIterator, ImageAugmenter

    aug = ImageAugmenter(
        width_shift=4,
        height_shift=4,
        horizontal_flip=True,
        fill_mode="constant",
        cval=0.0,
        seed=epoch_seed(seed, epoch, 1),
    )
    scale = np.float32(1 / 255)

    def transform(xb: np.ndarray) -> np.ndarray:
        return aug(xb.astype(np.float32) * scale - mean)

    bs = int(batch_size)
    # a last batch of one image gives BatchNorm a zero variance (or leaves a rank without one)
    drop_last = 0 < len(x) % bs < max(2, world().size) and len(x) > bs
    return BatchIterator(
        x, y, bs, shuffle=True, drop_last=drop_last, seed=epoch_seed(seed, epoch, 0),
        transform=transform,
    )  # fmt: skip
