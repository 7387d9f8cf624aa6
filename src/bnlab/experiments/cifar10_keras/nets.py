"""The two nets of ``cifar10-keras`` (Keras' cifar10_cnn, without and with BN), their
optimizer and the per-epoch batches. See :mod:`bnlab.experiments.cifar10_keras`.

``cfg`` is the run's :class:`~bnlab.experiments.cifar10_keras.config.Cifar10KerasConfig`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.experiments.cifar10_keras.config import Cifar10KerasConfig as Config

__all__ = ["build_model", "build_optimizer", "epoch_batches", "epoch_seed", "reseed_dropout"]


def build_model(kind: str, cfg: Config) -> Any:
    """The baseline or BN net of the package docstring; kernels seeded by ``cfg.seed``.

    The k-th Conv2D/Dense gets the seed ``seed * 100 + k`` in both nets, so their kernels are
    identical; dropout layers get ``seed * 100 + 50 + k`` (re-seeded every epoch by
    :func:`reseed_dropout`).
    """
    from bnlab.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential

    bn, seed = kind == "bn", int(cfg.seed)
    layers: list[Any] = []
    k = 0

    def block(make: Any, width: int, **conv: Any) -> None:
        nonlocal k
        use_bias = not bn or bool(cfg.bn_conv_bias)
        layers.append(make(use_bias=use_bias, seed=seed * 100 + k, **conv))
        k += 1
        if bn:
            layers.append(BatchNorm(width, momentum=float(cfg.bn_momentum), eps=float(cfg.bn_eps)))
        layers.append(ReLU())

    def dropout(rate: float) -> None:
        if not bn:
            layers.append(Dropout(rate, seed=seed * 100 + 50 + len(layers)))

    for cin, cout in ((3, 32), (32, 64)):
        algo = {"algorithm": str(cfg.conv_algorithm)}
        block(
            lambda cin=cin, cout=cout, **kw: Conv2D(cin, cout, 3, padding="same", **kw),
            cout,
            **algo,
        )
        block(lambda cout=cout, **kw: Conv2D(cout, cout, 3, padding="valid", **kw), cout, **algo)
        layers.append(MaxPool2D(2))
        dropout(0.25)
    layers.append(Flatten())
    block(lambda **kw: Dense(6 * 6 * 64, 512, **kw), 512)
    dropout(0.5)
    layers.append(Dense(512, 10, seed=seed * 100 + k))
    return Sequential(layers)


def build_optimizer(kind: str, model: Any, cfg: Config) -> Any:
    """RMSprop as Keras 2: lr 1e-4 (baseline) or 1e-3 (BN), rho 0.9, eps 1e-7, decay 1e-6."""
    from bnlab.optim import RMSprop

    lr = float(cfg.lr_bn if kind == "bn" else cfg.lr_baseline)
    return RMSprop.from_model(
        model, lr=lr, rho=float(cfg.rho), eps=float(cfg.rms_eps), decay=float(cfg.decay)
    )


def epoch_seed(cfg: Config, epoch: int, stream: int) -> int:
    """The seed of random ``stream`` in ``epoch``: ``SeedSequence([seed, epoch, stream])``'s
    first word (stream 0: batch order, 1: augmentation, 100 + i: dropout of layer i)."""
    seed = int(cfg.seed)
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def reseed_dropout(model: Any, cfg: Config, epoch: int) -> None:
    """Give every Dropout layer a generator seeded by ``(seed, epoch, layer index)``."""
    from bnlab.layers import Dropout

    for i, layer in enumerate(model.layers):
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(epoch_seed(cfg, epoch, 100 + i))


def epoch_batches(x: np.ndarray, y: np.ndarray, cfg: Config, epoch: int) -> Any:
    """One epoch of shuffled, augmented float32 batches; the same for every net."""
    from bnlab.comm import world
    from bnlab.data import BatchIterator, ImageAugmenter

    aug = ImageAugmenter(
        width_shift=float(cfg.shift),
        height_shift=float(cfg.shift),
        horizontal_flip=bool(cfg.flip),
        seed=epoch_seed(cfg, epoch, 1),
    )
    scale = np.float32(1 / 255)

    def transform(xb: np.ndarray) -> np.ndarray:
        return aug(xb.astype(np.float32) * scale)

    bs = int(cfg.batch_size)
    # a last batch of one image would give BatchNorm a zero variance: drop it
    # (and under mpiexec one that cannot give every rank an image: bnlab.train.data_parallel)
    drop_last = 0 < len(x) % bs < max(2, world().size) and len(x) > bs
    return BatchIterator(
        x, y, bs, shuffle=True, drop_last=drop_last, seed=epoch_seed(cfg, epoch, 0),
        transform=transform,
    )  # fmt: skip
