"""Dense's compiled bias add and bias gradient give NumPy's bits; the checks still hold."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.kernels.dense import column_sums
from bnlab.layers import Dense


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(1, 2), (2, 3), (9, 2), (60, 100), (60, 10), (257, 7), (3000, 64)]
)
def test_column_sums_bit_identical_to_numpy(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    a = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, size=shape)).astype(dtype)
    a[0, 0] = -0.0  # NumPy starts from +0.0: a lone -0.0 sums to +0.0
    want = np.empty(shape[1], dtype)
    np.sum(a, axis=0, out=want)
    got = np.full(shape[1], np.nan, dtype)
    assert column_sums(a, got) is got
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize(
    "a",
    [
        np.arange(17, dtype=np.float32).reshape(17, 1) * 0.1,  # one column: NumPy sums pairwise
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(4, 3) * 0.3),
        np.zeros((0, 4), np.float32),  # no rows: zeros
        np.arange(8, dtype=np.float16).reshape(4, 2),
    ],
)
def test_column_sums_falls_back_to_numpy_exactly(a):
    want = np.sum(a, axis=0)
    got = column_sums(a, np.empty(a.shape[1], a.dtype))
    assert got.tobytes() == want.tobytes()


def test_dense_step_bits_equal_the_numpy_formulas():
    rng = np.random.default_rng(0)
    layer = Dense(30, 20, seed=1)
    layer.params["b"][...] = rng.standard_normal(20).astype(np.float32)
    x = rng.standard_normal((60, 30)).astype(np.float32)
    dy = rng.standard_normal((60, 20)).astype(np.float32)
    W, b = layer.params["W"], layer.params["b"]
    want_y = np.matmul(x, W)
    want_y += b
    assert layer.forward(x).tobytes() == want_y.tobytes()
    dx = layer.backward(dy)
    assert layer.grads["b"].tobytes() == np.sum(dy, axis=0).tobytes()
    assert layer.grads["W"].tobytes() == np.matmul(x.T, dy).tobytes()
    assert dx.tobytes() == np.matmul(dy, W.T).tobytes()


def test_dense_hot_path_still_refuses_bad_input_and_changes_nothing():
    layer = Dense(4, 3, seed=0)
    before = {k: v.copy() for k, v in {**layer.params, **layer.grads}.items()}
    with pytest.raises(ValueError, match=r"Dense\(4->3\) expected input \(N, 4\)"):
        layer.forward(np.ones((2, 5), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(np.ones((2, 4), np.int64))
    with pytest.raises(ValueError, match="rank 2"):
        layer.forward(np.ones((2, 4, 1), np.float32))
    layer.forward(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 3\)"):
        layer.backward(np.ones((2, 4), np.float32))
    for k, v in {**layer.params, **layer.grads}.items():
        assert v.tobytes() == before[k].tobytes(), k


def test_float64_input_to_a_float32_layer_is_cast_as_before():
    layer = Dense(4, 3, seed=0)
    x = np.random.default_rng(1).standard_normal((5, 4))
    y = layer.forward(x)
    assert y.dtype == np.float32
    want = np.matmul(x.astype(np.float32), layer.params["W"])
    want += layer.params["b"]
    assert y.tobytes() == want.tobytes()
