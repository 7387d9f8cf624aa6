"""The nets of ``covariate-shift`` and the noise of "noisy BN" (Santurkar et al. 2018, sec. 2.1).

:class:`ShiftNoise` follows a BN layer. At every training step (:meth:`ShiftNoise.resample`)
it draws, for every activation j (feature axis), a mean and a scale of the noise::

    mu_j ~ U(-noise_mean, noise_mean),   sigma_j ~ U(1, noise_scale)

and then, for every sample i and activation j (each element of the batch)::

    y'_ij = s_ij * y_ij + m_ij,   s_ij ~ N(sigma_j, spread^2),   m_ij ~ N(mu_j, spread^2)

so the distribution of every activation gets a non-zero mean and a non-unit variance that
change at every step ("severe covariate shift", as in the paper; the exact distributions of
the paper's appendix are not reproduced, these are our reading of its description). The
backward is ``dy = s * dy'``. In eval mode the layer applies the expected transform,
``y' = E[s] y + E[m] = (1 + noise_scale) / 2 * y`` (as dropout scales at inference). The
draw stays fixed between two ``resample`` calls, so the measurements at one step see the same noise.

With ``comm`` of P > 1 ranks (data-parallel training: rank r holds rows ``[o_r, o_r + m_r)``
of the global batch of ``M``) every rank draws the noise of the whole global batch, ``(M, ...)``,
from its generator (seeded alike on every rank, so the same draws as one process) and keeps
its rows: the ranks together apply exactly the noise one process applies to the whole batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.comm import Communicator, world
from bnlab.layers import BatchNorm, Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU, Sequential
from bnlab.layers.sync_batchnorm import CommReduction

__all__ = ["ShiftNoise", "build_net", "weight_layers"]


class ShiftNoise(Layer):
    """Multiplicative and additive noise with a random, time-varying mean and scale per
    activation (module docstring); its expectation in eval mode. ``comm`` (None: this
    process alone): the ranks whose shards make the batch."""

    # an experiment's own layer: registered under a private name, which checkpoints refuse
    registry_name = "_ShiftNoise"

    def __init__(
        self,
        mean: float = 1.0,
        scale: float = 2.0,
        spread: float = 0.1,
        seed: int = 0,
        *,
        name: str | None = None,
        comm: Communicator | None = None,
    ) -> None:
        super().__init__(name=name)
        self._sync = None if comm is None or comm.size == 1 else CommReduction(comm)
        if mean < 0 or scale < 1 or spread < 0:
            raise ValueError(
                f"ShiftNoise: expected mean >= 0, scale >= 1, spread >= 0, got {mean}, {scale}, "
                f"{spread}"
            )
        self.mean, self.scale, self.spread = float(mean), float(scale), float(spread)
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self._draw: tuple[np.ndarray, np.ndarray] | None = None
        self._new = True

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "scale": self.scale, "spread": self.spread,
                "seed": self.seed, "name": self.name}  # fmt: skip

    def generators(self) -> dict[str, np.random.Generator]:
        return {"noise": self.rng}

    def resample(self) -> None:
        """A new step: the next training forward draws new noise."""
        self._new = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``s * x + m`` in training mode, ``E[s] x`` in eval mode."""
        if not self.training:
            return x * x.dtype.type(0.5 * (1.0 + self.scale))
        if self._new or self._draw is None or self._draw[0].shape != x.shape:
            self._draw, self._new = self._drawn(x), False
        s, m = self._draw
        return s * x + m

    def _drawn(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A new draw ``(s, m)`` for the batch ``x``: this rank's rows of the global batch's."""
        n, c = len(x), x.shape[-1]
        offset, total = (0, n) if self._sync is None else self._sync.rows(n)
        size = (total, *x.shape[1:])
        mu = self.rng.uniform(-self.mean, self.mean, size=c)
        sigma = self.rng.uniform(1.0, self.scale, size=c)
        s = self.rng.normal(sigma, self.spread, size=size)[offset : offset + n].astype(x.dtype)
        m = self.rng.normal(mu, self.spread, size=size)[offset : offset + n].astype(x.dtype)
        return s, m

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """``dx = s * dy`` (``E[s] dy`` in eval mode)."""
        if not self.training:
            return dy * dy.dtype.type(0.5 * (1.0 + self.scale))
        if self._draw is None:
            raise RuntimeError("ShiftNoise.backward called before forward")
        return self._draw[0] * dy


def _block(kind: str, width: int, cfg: Any, i: int) -> list[Layer]:
    """What follows a weight layer: [BN [noise]] ReLU."""
    out: list[Layer] = []
    if kind != "standard":
        out.append(BatchNorm(width))
    if kind == "noisy-bn":
        seed = int(cfg.seed) * 1000 + 500 + i
        noise = (cfg.noise_mean, cfg.noise_scale, cfg.noise_spread)
        out.append(ShiftNoise(*noise, seed=seed, comm=world()))
    out.append(ReLU())
    return out


def build_net(kind: str, cfg: Any) -> Sequential:
    """``kind`` in ("standard", "bn", "noisy-bn"). MNIST: 784-H-...-10 MLP; CIFAR-10: the
    Keras example's convnet (conv 32, 32, pool, conv 64, 64, pool, dense 512, dense 10) without
    dropout (a random mask would change the gradient between two measurements of one step).
    Weight layers before BN have no bias; He-normal weights."""
    seed, bias = int(cfg.seed) * 1000, kind == "standard"
    layers: list[Layer] = []
    if cfg.dataset == "mnist":
        fan_in = 784
        for i, width in enumerate(cfg.hidden):
            layers.append(Dense(fan_in, int(width), use_bias=bias, init="he_normal", seed=seed + i))
            layers += _block(kind, int(width), cfg, i)
            fan_in = int(width)
    else:
        # the Keras example's stack: (in, out, padding) of each 3x3 convolution, None a pool
        chans = [(3, 32, "same"), (32, 32, "valid"), None, (32, 64, "same"), (64, 64, "valid")]
        for i, c in enumerate([*chans, None]):
            if c is None:
                layers.append(MaxPool2D(2))
                continue
            layers.append(
                Conv2D(c[0], c[1], 3, padding=c[2], use_bias=bias, init="he_normal", seed=seed + i)
            )
            layers += _block(kind, c[1], cfg, i)
        layers.append(Flatten())
        layers.append(Dense(6 * 6 * 64, 512, use_bias=bias, init="he_normal", seed=seed + 10))
        layers += _block(kind, 512, cfg, 10)
        fan_in = 512
    layers.append(Dense(fan_in, 10, seed=seed + 999))
    return Sequential(layers)


def weight_layers(model: Sequential) -> list[int]:
    """Indices (in ``model.layers``) of the layers with a kernel ``W``, in forward order."""
    return [i for i, layer in enumerate(model.layers) if "W" in layer.params]


def noise_layers(model: Sequential) -> list[ShiftNoise]:
    """The noise layers of ``model``."""
    return [layer for layer in model.layers if isinstance(layer, ShiftNoise)]
