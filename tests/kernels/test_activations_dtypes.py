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
