"""Fixtures for the layer tests: float64 central finite differences of layer gradients.

Shared through a fixture because pytest 9 imports test modules without putting their folder
on sys.path (a sibling helper module cannot be imported).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def numeric_grad(
    f: Callable[[], float], arr: np.ndarray, idx: list[tuple[int, ...]], eps: float = 1e-6
) -> np.ndarray:
    """d f / d arr[i] for each i in idx by (f(a + eps) - f(a - eps)) / (2 eps), arr in place."""
    out = []
    for i in idx:
        old = arr[i]
        arr[i] = old + eps
        fp = f()
        arr[i] = old - eps
        fm = f()
        arr[i] = old
        out.append((fp - fm) / (2 * eps))
    return np.array(out)


def sample_indices(
    shape: tuple[int, ...], k: int, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """Up to k distinct multi-indices into an array of ``shape``."""
    size = int(np.prod(shape))
    flat = rng.choice(size, size=min(k, size), replace=False)
    return [tuple(int(v) for v in np.unravel_index(i, shape)) for i in flat]


def check_layer_gradients(layer, x: np.ndarray, rng: np.random.Generator, k: int = 25) -> None:  # noqa: ANN001
    """Compare backward's dx and every grads[key] with finite differences of L = sum(y * R)."""
    layer.astype(np.float64)
    x = x.astype(np.float64)
    y = layer.forward(x)
    R = rng.standard_normal(y.shape)

    def loss() -> float:
        return float(np.sum(layer.forward(x) * R))

    layer.forward(x)
    dx = np.array(layer.backward(R), copy=True)
    grads = {key: g.copy() for key, g in layer.grads.items()}
    idx = sample_indices(x.shape, k, rng)
    num = numeric_grad(loss, x, idx)
    np.testing.assert_allclose([dx[i] for i in idx], num, rtol=1e-5, atol=1e-7)
    for key, p in layer.params.items():
        idx = sample_indices(p.shape, k, rng)
        num = numeric_grad(loss, p, idx)
        np.testing.assert_allclose([grads[key][i] for i in idx], num, rtol=1e-5, atol=1e-7)


@pytest.fixture
def gradcheck() -> Callable[..., None]:
    """``gradcheck(layer, x, rng, k=25)``: see :func:`check_layer_gradients`."""
    return check_layer_gradients
