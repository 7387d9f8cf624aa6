"""im2col, col2im and max pooling equal plain NumPy references bit for bit, on both compiled
twins (serial and parallel), whatever loop order the fast kernels use inside."""

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlab.kernels.im2col import PIXEL_COPY_MIN_CHANNELS, col2im, im2col, im2col_strided
from bnlab.kernels.pooling import max_pool_backward, max_pool_forward

K = importlib.import_module("bnlab.kernels.im2col")  # the module (bnlab.kernels.im2col is
P = importlib.import_module("bnlab.kernels.pooling")  # also the name of the function)

geometry = st.tuples(
    st.integers(1, 3),  # N
    st.integers(3, 8),  # H
    st.integers(3, 8),  # W
    st.sampled_from([1, 3, PIXEL_COPY_MIN_CHANNELS - 1, PIXEL_COPY_MIN_CHANNELS, 33]),  # C
    st.integers(1, 3),  # kh
    st.integers(1, 3),  # kw
    st.integers(1, 2),  # sh
    st.integers(1, 2),  # sw
    st.tuples(*[st.integers(0, 4)] * 4),  # pads, some larger than the kernel
)


def _out_size(size: int, k: int, s: int, total: int) -> int:
    return (size + total - k) // s + 1


def col2im_reference(cols, shape, kernel, stride, pads, reverse=False):
    """Scatter-add of every row's (kh, kw, C) patch into a padded zero image, rows in order
    (``reverse``: last row first)."""
    n, h, w, c = shape
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = kernel, stride, pads
    ho, wo = _out_size(h, kh, sh, pt + pb), _out_size(w, kw, sw, pl + pr)
    dxp = np.zeros((n, h + pt + pb, w + pl + pr, c), cols.dtype)
    patches = cols.reshape(n, ho, wo, kh, kw, c)
    rows = [(i, j) for i in range(ho) for j in range(wo)]
    for i, j in rows[::-1] if reverse else rows:
        dxp[:, i * sh : i * sh + kh, j * sw : j * sw + kw] += patches[:, i, j]
    return dxp[:, pt : pt + h, pl : pl + w]


def _fits(g) -> bool:
    _, h, w, _, kh, kw, _, _, (pt, pb, pl, pr) = g
    return h + pt + pb >= kh and w + pl + pr >= kw


@settings(max_examples=60, deadline=None)
@given(geometry)
def test_im2col_both_copy_loops_and_both_twins_equal_the_strided_view(g):
    if not _fits(g):
        return
    n, h, w, c, kh, kw, sh, sw, pads = g
    x = np.random.default_rng(0).standard_normal((n, h, w, c)).astype(np.float32)
    want = im2col_strided(x, (kh, kw), (sh, sw), pads)
    np.testing.assert_array_equal(im2col(x, (kh, kw), (sh, sw), pads), want)
    ho, wo = _out_size(h, kh, sh, pads[0] + pads[1]), _out_size(w, kw, sw, pads[2] + pads[3])
    geo = (kh, kw, sh, sw, pads[0], pads[2], ho, wo)
    for twin in (0, 1):
        out = np.full(want.shape, np.nan, np.float32)
        K._IM2COL_PIXELS[twin](x, *geo, out)
        np.testing.assert_array_equal(out, want)
        out = np.full(want.shape, np.nan, np.float32)
        K._IM2COL_RUNS[twin](x.reshape(n, h, w * c), c, *geo, out)
        np.testing.assert_array_equal(out, want)


@settings(max_examples=60, deadline=None)
@given(geometry, st.sampled_from([np.float32, np.float64]))
def test_col2im_sums_in_the_order_of_the_scatter_add_definition(g, dtype):
    """Overlapping windows (stride < kernel) make the order of the float additions matter."""
    if not _fits(g):
        return
    n, h, w, c, kh, kw, sh, sw, pads = g
    ho, wo = _out_size(h, kh, sh, pads[0] + pads[1]), _out_size(w, kw, sw, pads[2] + pads[3])
    rng = np.random.default_rng(1)
    cols = (rng.standard_normal((n * ho * wo, kh * kw * c)) * 10.0 ** rng.integers(-3, 4)).astype(
        dtype
    )
    want = col2im_reference(cols, (n, h, w, c), (kh, kw), (sh, sw), pads)
    np.testing.assert_array_equal(col2im(cols, (n, h, w, c), (kh, kw), (sh, sw), pads), want)
    geo = (kh, kw, sh, sw, pads[0], pads[2], ho, wo)
    dx = np.full((n, h, w * c), np.nan, dtype)
    K._COL2IM[1](cols, c, *geo, dx)  # the parallel twin
    np.testing.assert_array_equal(dx.reshape(want.shape), want)


def test_the_order_of_the_additions_shows_in_the_bits():
    """The exactness tests above can fail: the same sums taken rows-last-first differ."""
    rng = np.random.default_rng(4)
    scale = 10.0 ** rng.integers(-3, 4, (2 * 6 * 6, 9 * 4))
    cols = (rng.standard_normal(scale.shape) * scale).astype(np.float32)
    shape, kernel, stride, pads = (2, 8, 8, 4), (3, 3), (1, 1), (0, 0, 0, 0)
    got = col2im(cols, shape, kernel, stride, pads)
    np.testing.assert_array_equal(got, col2im_reference(cols, shape, kernel, stride, pads))
    backwards = col2im_reference(cols, shape, kernel, stride, pads, reverse=True)
    np.testing.assert_allclose(backwards, got, rtol=1e-5, atol=1e-3)
    assert not np.array_equal(backwards, got)


def test_col2im_and_pool_backward_fill_a_non_contiguous_out():
    rng = np.random.default_rng(2)
    cols = rng.standard_normal((2 * 4 * 4, 9 * 5)).astype(np.float32)
    big = np.full((2, 6, 6, 10), 7.0, np.float32)
    out = big[..., ::2]  # (2, 6, 6, 5), not contiguous
    assert col2im(cols, (2, 6, 6, 5), (3, 3), out=out) is out
    np.testing.assert_array_equal(
        out, col2im_reference(cols, (2, 6, 6, 5), (3, 3), (1, 1), (0,) * 4)
    )
    assert np.all(big[..., 1::2] == 7.0)  # the entries between are untouched
    x = rng.standard_normal((2, 6, 6, 5)).astype(np.float32)
    y, arg = max_pool_forward(x, (2, 2), (2, 2))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    big[...] = 7.0
    assert max_pool_backward(dy, arg, x.shape, out=out) is out
    np.testing.assert_array_equal(out, max_pool_backward(dy, arg, x.shape))
    assert np.all(big[..., 1::2] == 7.0)


def max_pool_backward_reference(dy, arg, shape):
    """np.add.at of dy at each maximum's (y, x), in the row-major order of dy."""
    n, h, w, c = shape
    dx = np.zeros(shape, dy.dtype)
    b, _, _, ch = np.indices(dy.shape)
    np.add.at(dx, (b, arg // w, arg % w, ch), dy)
    return dx


@pytest.mark.parametrize("pool, stride", [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((3, 2), (2, 1))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_backward_equals_add_at_reference(pool, stride, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 9, 8, 17)).astype(dtype)
    x[0, :3, :3, 0] = 1.0  # ties: the first maximum takes the gradient
    x[1, 2, 2, :2] = np.nan
    y, arg = max_pool_forward(x, pool, stride)
    dy = (rng.standard_normal(y.shape) * 10.0 ** rng.integers(-3, 4, y.shape)).astype(dtype)
    want = max_pool_backward_reference(dy, arg, x.shape)
    np.testing.assert_array_equal(max_pool_backward(dy, arg, x.shape), want)
    dx = np.full((3, 9 * 8, 17), np.nan, dtype)
    P._BWD[1](dy, arg, dx)  # the parallel twin
    np.testing.assert_array_equal(dx.reshape(x.shape), want)


@pytest.mark.parametrize("stride", [(2, 2), (1, 1), (1, 2), (3, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unrolled_2x2_max_pool_equals_the_general_loop(stride, dtype):
    """Values, argmax (first maximum on ties, NaN wins and the last NaN stays) on both twins."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 9, 8, 19)).astype(dtype)
    x[0, :4, :4, 0] = 1.0  # ties
    x[1, 2, 2, :3] = np.nan
    x[1, 3, 3, 1:4] = np.nan
    x[2, 0, :, 2] = -np.inf
    y, arg = max_pool_forward(x, (2, 2), stride)
    n, h, w, c = x.shape
    shape = (n, (h - 2) // stride[0] + 1, (w - 2) // stride[1] + 1, c)
    for twin in (0, 1):
        y2, a2 = np.empty(shape, dtype), np.empty(shape, np.int32)
        P._FWD[twin](x, 2, 2, *stride, y2, a2)  # the general loop
        np.testing.assert_array_equal(y, y2)  # NaN in the same places
        np.testing.assert_array_equal(arg, a2)
        y3, a3 = np.empty(shape, dtype), np.empty(shape, np.int32)
        P._FWD_2X2[twin](x, *stride, y3, a3)
        np.testing.assert_array_equal(y3, y2)
        np.testing.assert_array_equal(a3, a2)
    assert np.isnan(y).any() and len(np.unique(arg)) > 10
