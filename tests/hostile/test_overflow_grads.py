"""Issue 23 high 5: a finite dy whose float32 sums overflow must not give dbeta = inf."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.kernels import batch_norm_backward, batch_norm_forward
from bnlab.layers import BatchNorm, BatchRenorm


def _x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)


def test_kernel_refuses_dbeta_beyond_float32() -> None:
    _, cache = batch_norm_forward(_x(), np.ones(3), np.zeros(3))
    dy = np.full((64, 3), 3e37, np.float32)  # finite; the sum 1.9e39 is not a float32
    with pytest.raises(FloatingPointError, match="batch_norm_backward: dbeta overflows float32"):
        batch_norm_backward(dy, cache)


@pytest.mark.parametrize("cls", [BatchNorm, BatchRenorm])
def test_layer_names_itself_and_keeps_its_grads(cls: type) -> None:
    layer = cls(3)
    layer.forward(_x())
    layer.backward(np.ones((64, 3), np.float32))
    before = {k: v.copy() for k, v in layer.grads.items()}
    with pytest.raises(FloatingPointError, match=f"{layer._where}.*overflows float32"):
        layer.backward(np.full((64, 3), 3e37, np.float32))
    for k, v in layer.grads.items():
        np.testing.assert_array_equal(v, before[k])


def test_float64_input_has_the_range() -> None:
    _, cache = batch_norm_forward(_x().astype(np.float64), np.ones(3), np.zeros(3))
    _, dg, db = batch_norm_backward(np.full((64, 3), 3e37), cache)
    assert np.isfinite(db).all() and db.dtype == np.float64
