"""Issue 23: max pooling's public kernels refuse what would read or write out of bounds."""

import numpy as np
import pytest

from bnlab.kernels import max_pool_backward, max_pool_forward


@pytest.fixture
def pooled():
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
    y, arg = max_pool_forward(x, (2, 2), (2, 2))
    return x, y, arg


@pytest.mark.parametrize("bad", [16, -1, 1 << 30])
def test_argmax_out_of_range_is_refused_before_writing(pooled, bad):
    x, y, arg = pooled
    arg = arg.copy()
    arg[1, 1, 0, 2] = bad
    out = np.full(x.shape, 7.0, np.float32)
    with pytest.raises(ValueError, match=r"argmax holds indices outside \[0, H\*W\)"):
        max_pool_backward(np.ones_like(y), arg, x.shape, out=out)
    assert (out == 7.0).all()  # nothing written


def test_backward_shape_and_dtype_checks(pooled):
    x, y, arg = pooled
    with pytest.raises(TypeError, match="argmax must be the int array"):
        max_pool_backward(np.ones_like(y), arg.astype(np.float32), x.shape)
    with pytest.raises(ValueError, match="does not match input_shape"):
        max_pool_backward(np.ones_like(y), arg, (2, 4, 4, 5))
    with pytest.raises(ValueError, match="input_shape must be 4 positive ints"):
        max_pool_backward(np.ones_like(y), arg, (2, 4, 4))
    with pytest.raises(ValueError, match="out must have shape"):
        max_pool_backward(np.ones_like(y), arg, x.shape, out=np.empty((2, 4, 4, 3)))


def test_backward_routes_to_the_maximum(pooled):
    x, y, arg = pooled
    dx = max_pool_backward(np.ones_like(y), arg, x.shape)
    assert dx.sum() == y.size
    np.testing.assert_array_equal(dx * x, np.where(dx > 0, x, 0))
    assert set(np.unique(dx)) <= {0.0, 1.0}


@pytest.mark.parametrize("pool,stride", [((0, 0), (1, 1)), ((2, 2), (0, 1)), ((2,), (2, 2))])
def test_zero_or_malformed_window_is_refused(pool, stride):
    x = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="must be two ints >= 1"):
        max_pool_forward(x, pool, stride)
