"""The two nets of ``cifar10-keras`` (Keras' cifar10_cnn, without and with BN), their
optimizer, the per-epoch batches and one training epoch. See :mod:`bnlab.experiments.cifar10_keras`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["build_model", "build_optimizer", "epoch_batches", "reseed_dropout", "train_epoch"]


def build_model(kind: str, cfg: dict[str, Any]) -> Any:
    """The baseline or BN net of the module docstring; kernels seeded by ``cfg["seed"]``.

    The k-th Conv2D/Dense gets the seed ``seed * 100 + k`` in both nets, so their kernels are
    identical; dropout layers get ``seed * 100 + 50 + k`` (re-seeded every epoch by
    :func:`reseed_dropout`).
    """
    from bnlab.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential

    bn, seed = kind == "bn", int(cfg["seed"])
    if bn:
        from bnlab.layers import BatchNorm
    layers: list[Any] = []
    k = 0

    def block(make: Any, width: int) -> None:
        nonlocal k
        use_bias = not bn or bool(cfg["bn_conv_bias"])
        layers.append(make(use_bias=use_bias, seed=seed * 100 + k))
        k += 1
        if bn:
            layers.append(
                BatchNorm(width, momentum=float(cfg["bn_momentum"]), eps=float(cfg["bn_eps"]))
            )
        layers.append(ReLU())

    def dropout(rate: float) -> None:
        if not bn:
            layers.append(Dropout(rate, seed=seed * 100 + 50 + len(layers)))

    for cin, cout in ((3, 32), (32, 64)):
        block(lambda cin=cin, cout=cout, **kw: Conv2D(cin, cout, 3, padding="same", **kw), cout)
        block(lambda cout=cout, **kw: Conv2D(cout, cout, 3, padding="valid", **kw), cout)
        layers.append(MaxPool2D(2))
        dropout(0.25)
    layers.append(Flatten())
    block(lambda **kw: Dense(6 * 6 * 64, 512, **kw), 512)
    dropout(0.5)
    layers.append(Dense(512, 10, seed=seed * 100 + k))
    return Sequential(layers)


def build_optimizer(kind: str, model: Any, cfg: dict[str, Any]) -> Any:
    """RMSprop as Keras 2: lr 1e-4 (baseline) or 1e-3 (BN), rho 0.9, eps 1e-7, decay 1e-6."""
    from bnlab.optim import RMSprop

    lr = float(cfg["lr_bn"] if kind == "bn" else cfg["lr_baseline"])
    return RMSprop.from_model(
        model, lr=lr, rho=float(cfg["rho"]), eps=float(cfg["rms_eps"]), decay=float(cfg["decay"])
    )


def _epoch_seed(cfg: dict[str, Any], epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(cfg["seed"]), epoch, stream]).generate_state(1)[0])


def reseed_dropout(model: Any, cfg: dict[str, Any], epoch: int) -> None:
    """Give every Dropout layer a generator seeded by ``(seed, epoch, layer index)``."""
    for i, layer in enumerate(model.layers):
        if hasattr(layer, "rate") and hasattr(layer, "rng"):
            layer.rng = np.random.default_rng(_epoch_seed(cfg, epoch, 100 + i))


def epoch_batches(x: np.ndarray, y: np.ndarray, cfg: dict[str, Any], epoch: int) -> Any:
    """One epoch of shuffled, augmented float32 batches; the same for every net."""
    from bnlab.comm import world
    from bnlab.data import BatchIterator, ImageAugmenter

    aug = ImageAugmenter(
        width_shift=float(cfg["shift"]),
        height_shift=float(cfg["shift"]),
        horizontal_flip=bool(cfg["flip"]),
        seed=_epoch_seed(cfg, epoch, 1),
    )
    scale = np.float32(1 / 255)

    def transform(xb: np.ndarray) -> np.ndarray:
        return aug(xb.astype(np.float32) * scale)

    bs = int(cfg["batch_size"])
    # a last batch of one image would give BatchNorm a zero variance: drop it
    # (and under mpiexec one that cannot give every rank an image: bnlab.parallel)
    drop_last = 0 < len(x) % bs < max(2, world().size) and len(x) > bs
    return BatchIterator(
        x, y, bs, shuffle=True, drop_last=drop_last, seed=_epoch_seed(cfg, epoch, 0),
        transform=transform,
    )  # fmt: skip


def train_epoch(
    model: Any, opt: Any, loss_fn: Any, batches: Any, bar: Any = None, dp: Any = None
) -> dict:
    """One pass over ``batches``: mean loss and accuracy weighted by batch size.

    With ``dp`` (a :class:`bnlab.parallel.DataParallel`) every batch is the global batch:
    this rank trains on its shard, and loss and accuracy are over the global batches.
    """
    model.train()
    total, loss_sum, correct = 0, 0.0, 0
    for xb, yb in batches:
        if dp is not None:
            kw = {"need_input_grad": False}
            loss, logits, y_local = dp.step(model, loss_fn, opt, xb, yb, backward_kwargs=kw)
            correct += int(np.count_nonzero(np.argmax(logits, axis=1) == y_local))
        else:
            logits = model.forward(xb)
            loss, dlogits = loss_fn(logits, yb)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"cifar10-keras: the training loss is {loss} at step {opt.iterations + 1}"
                )
            correct += int(np.count_nonzero(np.argmax(logits, axis=1) == yb))
            model.backward(dlogits, need_input_grad=False)  # no dL/dimages: skip the col2im
            opt.step()
        total += len(yb)
        loss_sum += float(loss) * len(yb)
        if bar is not None:
            bar.update(1)
    if dp is not None:
        correct = int(dp.sum([correct])[0])
    return {"train_loss": loss_sum / total, "train_accuracy": correct / total}
