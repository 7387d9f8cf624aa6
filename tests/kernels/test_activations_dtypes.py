"""Activation backward kernels: float16 computed in float32, non-float input refused."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab import kernels as K

BACKWARD = [K.relu_backward, K.sigmoid_backward, K.tanh_backward]


@pytest.mark.parametrize("fn", BACKWARD)
def test_float16_is_computed_in_float32_and_returned_as_float16(fn) -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(0.1, 0.9, size=(4, 3)).astype(np.float16)
    dy = rng.normal(size=(4, 3)).astype(np.float16)
    dx = fn(dy, y)
    assert dx.dtype == np.float16
    want = fn(dy.astype(np.float32), y.astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(dx, want)
    out = np.empty_like(y)
    assert fn(dy, y, out=out) is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("fn", BACKWARD)
@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.complex128])
def test_non_float_input_is_a_type_error(fn, dtype) -> None:
    y = np.ones((2, 3), dtype)
    with pytest.raises(TypeError, match="floating-point"):
        fn(y, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
@pytest.mark.parametrize("threads", [1, 2])
def test_relu_has_the_bits_of_np_maximum(dtype, threads) -> None:
    """The compiled ReLU gives np.maximum(x, 0) bit for bit: -0.0 -> +0.0, NaN payloads kept,
    subnormals and infinities; in place, into an overlapping buffer and on 1 or 2 threads."""
    from bnlab.runtime import kernel_threads

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(300_000) * 10).astype(dtype)
    if dtype != np.int32:
        special = [-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e-310, -1e-310]
        x[: len(special)] = np.array(special).astype(dtype)
    want = np.maximum(x, 0)
    with kernel_threads(threads):
        assert K.relu(x).tobytes() == want.tobytes()
        out = np.empty_like(x)
        assert K.relu(x, out=out) is out and out.tobytes() == want.tobytes()
        inplace = x.copy()
        assert K.relu(inplace, out=inplace).tobytes() == want.tobytes()
        buf = np.concatenate([x, x[:1]])  # out overlaps x shifted by one element
        K.relu(buf[1:], out=buf[:-1])
        assert buf[:-1].tobytes() == np.maximum(np.concatenate([x, x[:1]])[1:], 0).tobytes()
