"""Weight initializers: ``init(shape, dtype=np.float32, seed=None) -> array``.

Fan-in and fan-out follow Keras: for a dense kernel of shape ``(in, out)`` they are ``in`` and
``out``; for a convolution kernel ``(kh, kw, cin, cout)`` they are ``kh*kw*cin`` and
``kh*kw*cout``.

>>> from bnlab.initializers import get_initializer
>>> W = get_initializer("glorot_uniform")((784, 100), seed=0)
>>> W.shape, W.dtype
((784, 100), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import numpy as np

from bnlab._checks import as_generator

__all__ = [
    "Initializer",
    "Normal",
    "get_initializer",
    "glorot_uniform",
    "he_normal",
    "initializer_config",
    "normal",
    "ones",
    "zeros",
]

Seed = Union[int, np.random.Generator, None]  # noqa: UP007 (runtime alias, py3.10)
Initializer = Callable[..., np.ndarray]
InitSpec = Union[str, dict[str, Any], Initializer]  # noqa: UP007


def _rng(seed: Seed) -> np.random.Generator:
    return as_generator(seed, "weight initializer")  # a str or float seed named, not numpy's


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras' fan computation: receptive field size times input/output channels."""
    if len(shape) < 1:
        raise ValueError(f"initializer: shape must have at least one dimension, got {shape}")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(
    shape: tuple[int, ...], dtype: Any = np.float32, seed: Seed = None
) -> np.ndarray:
    """Glorot/Xavier uniform (Keras' default): U(-l, l) with l = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(tuple(shape))
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return _rng(seed).uniform(-limit, limit, size=shape).astype(dtype)


def he_normal(shape: tuple[int, ...], dtype: Any = np.float32, seed: Seed = None) -> np.ndarray:
    """He normal as Keras: N(0, s^2) truncated at 2 s, s = sqrt(2 / fan_in) / 0.8796.

    The factor 0.87962566 is the standard deviation of a unit normal truncated at +-2, so the
    truncated samples have standard deviation sqrt(2 / fan_in).
    """
    fan_in, _ = _fans(tuple(shape))
    std = np.sqrt(2.0 / fan_in) / 0.87962566103423978
    rng = _rng(seed)
    z = rng.standard_normal(size=shape)
    bad = np.abs(z) > 2.0
    while bad.any():  # resample outside +-2 sigma
        z[bad] = rng.standard_normal(size=int(bad.sum()))
        bad = np.abs(z) > 2.0
    return (z * std).astype(dtype)


class Normal:
    """N(mean, std^2), the "small Gaussian" of Ioffe & Szegedy's MNIST experiment."""

    def __init__(self, std: float = 0.01, mean: float = 0.0) -> None:
        if not std >= 0:
            raise ValueError(f"normal: std must be >= 0, got {std}")
        self.std = float(std)
        self.mean = float(mean)

    def __call__(
        self, shape: tuple[int, ...], dtype: Any = np.float32, seed: Seed = None
    ) -> np.ndarray:
        return _rng(seed).normal(self.mean, self.std, size=shape).astype(dtype)

    def get_config(self) -> dict[str, Any]:
        return {"name": "normal", "std": self.std, "mean": self.mean}

    def __repr__(self) -> str:
        return f"normal(std={self.std}, mean={self.mean})"


def normal(std: float = 0.01, mean: float = 0.0) -> Normal:
    """Return an initializer drawing from N(mean, std^2)."""
    return Normal(std, mean)


def zeros(shape: tuple[int, ...], dtype: Any = np.float32, seed: Seed = None) -> np.ndarray:
    """All zeros (``seed`` is accepted and ignored)."""
    return np.zeros(shape, dtype=dtype)


def ones(shape: tuple[int, ...], dtype: Any = np.float32, seed: Seed = None) -> np.ndarray:
    """All ones (``seed`` is accepted and ignored)."""
    return np.ones(shape, dtype=dtype)


_NAMED: dict[str, Initializer] = {
    "glorot_uniform": glorot_uniform,
    "xavier_uniform": glorot_uniform,
    "he_normal": he_normal,
    "normal": Normal(),
    "zeros": zeros,
    "ones": ones,
}


def get_initializer(spec: InitSpec) -> Initializer:
    """Look up an initializer by name (``"glorot_uniform"``, ``"he_normal"``, ``"normal"``,
    ``"zeros"``, ``"ones"``), by config dict (``{"name": "normal", "std": 0.1}``), or pass a
    callable ``(shape, dtype, seed) -> array`` through."""
    if callable(spec):
        return spec
    if isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        if name == "normal":
            return Normal(**kwargs)
        if name in _NAMED and not kwargs:
            return _NAMED[name]
        raise ValueError(f"get_initializer: cannot build an initializer from config {spec!r}")
    if isinstance(spec, str) and spec in _NAMED:
        return _NAMED[spec]
    raise ValueError(
        f"get_initializer: unknown initializer {spec!r}; expected one of {sorted(_NAMED)}, "
        "a config dict or a callable (shape, dtype, seed) -> array"
    )


def initializer_config(spec: InitSpec) -> str | dict[str, Any]:
    """A JSON-serializable description of ``spec`` that :func:`get_initializer` accepts."""
    if isinstance(spec, (str, dict)):
        return spec
    get_config = getattr(spec, "get_config", None)
    if callable(get_config):
        return dict(get_config())
    for name, fn in _NAMED.items():
        if fn is spec:
            return name
    return getattr(spec, "__name__", repr(spec))
