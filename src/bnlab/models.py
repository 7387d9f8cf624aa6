"""Floor 2: ready-made networks built from :mod:`bnlab.layers` (nothing but layers is imported).

They live here rather than in an experiment package because experiments (floor 4), the CLI,
benchmarks and tests all build them, and a network is a value of floor 2 (layers), not a
protocol of an experiment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.layers import (
    BatchNorm,
    BatchRenorm,
    Conv2D,
    Dense,
    GlobalAveragePool2D,
    GroupNorm,
    Layer,
    ReLU,
    Residual,
    Sequential,
    ZeroPadShortcut,
)

__all__ = ["NORMS", "norm_layer", "resnet20"]

NORMS = ("bn", "gn", "ln", "renorm")


def norm_layer(kind: str, channels: int, gn_groups: int = 32) -> Layer:
    """The normalization ``kind`` of :data:`NORMS` over ``channels`` (see :func:`resnet20`):
    BatchNorm, BatchRenorm, GroupNorm with ``min(gn_groups, channels)`` groups, or "ln",
    GroupNorm with one group."""
    if kind == "bn":
        return BatchNorm(channels)
    if kind == "renorm":
        return BatchRenorm(channels)
    if kind == "gn":
        return GroupNorm(min(gn_groups, channels), channels)
    return GroupNorm(1, channels)  # "ln": Wu & He's LayerNorm of a conv net is GroupNorm(1, C)


def resnet20(
    num_classes: int = 10,
    norm: str = "bn",
    shortcut: str = "A",
    zero_init_residual: bool = False,
    *,
    gn_groups: int = 32,
    seed: int | None = 0,
) -> Sequential:
    """ResNet-20 for 32x32x3 (NHWC) images: He et al. 2016, section 4.2 (CIFAR-10).

    A 3x3 convolution to 16 channels, then 3 stages of 3 basic blocks with 16, 32 and 64
    filters (the first block of stages 2 and 3 has stride 2), global average pooling and a
    ``num_classes``-way Dense layer: 6*3 + 2 = 20 weighted layers. A basic block is
    ``relu(x + norm(conv3x3(relu(norm(conv3x3(x))))))``; the convolutions have no bias (the
    normalization's beta is one), He-normal weights, padding 1 (torch's).

    Args:
        norm: ``"bn"`` BatchNorm, ``"renorm"`` BatchRenorm (its defaults), ``"gn"``
            GroupNorm with ``min(gn_groups, C)`` groups (Wu & He 2018: 32), ``"ln"``
            LayerNorm as Wu & He define it for conv nets: GroupNorm with one group (per-sample
            statistics over H, W, C, a per-channel affine map).
        shortcut: where a block changes shape, ``"A"`` (zero-padded identity with stride-2
            subsampling, no parameters: :class:`~bnlab.layers.ZeroPadShortcut`) or ``"B"``
            (a 1x1 strided convolution + norm); identity elsewhere in both.
        zero_init_residual: gamma of each block's last norm starts at 0 (Goyal et al. 2017).
        seed: the weights' seed (each convolution gets its own, drawn from it).

    Parameters: 269,722 with option A and BN/GN (the paper's "0.27M"), 272,474 with option B.
    """
    if norm not in NORMS:
        raise ValueError(f"resnet20: norm must be one of {NORMS}, got {norm!r}")
    if shortcut not in ("A", "B"):
        raise ValueError(f"resnet20: shortcut must be 'A' or 'B', got {shortcut!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"resnet20: num_classes must be a positive int, got {num_classes!r}")
    seeds = iter(np.random.default_rng(seed).integers(0, 2**31 - 1, size=64).tolist())

    def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> Conv2D:
        opts: dict[str, Any] = {"stride": stride, "padding": k // 2, "use_bias": False}
        return Conv2D(cin, cout, k, init="he_normal", seed=next(seeds), **opts)

    layers: list[Layer] = [conv(3, 16), norm_layer(norm, 16, gn_groups), ReLU()]
    cin = 16
    for filters, first_stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            stride = first_stride if i == 0 else 1
            branch = [conv(cin, filters, 3, stride), norm_layer(norm, filters, gn_groups), ReLU()]
            branch += [conv(filters, filters), norm_layer(norm, filters, gn_groups)]
            short: Any = None
            if stride != 1 or cin != filters:
                short = (
                    ZeroPadShortcut(filters, stride)
                    if shortcut == "A"
                    else [conv(cin, filters, 1, stride), norm_layer(norm, filters, gn_groups)]
                )
            layers += [Residual(branch, short, zero_init_last_gamma=zero_init_residual), ReLU()]
            cin = filters
    layers += [GlobalAveragePool2D(), Dense(64, num_classes, seed=next(seeds))]
    return Sequential(layers, name="resnet20")
