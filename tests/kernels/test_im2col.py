import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnlab.kernels import col2im, im2col
from bnlab.kernels.im2col import add_bias, im2col_strided

geometry = st.tuples(
    st.integers(1, 3),  # N
    st.integers(3, 9),  # H
    st.integers(3, 9),  # W
    st.sampled_from([1, 2, 3, 16, 20]),  # C
    st.integers(1, 3),  # kh
    st.integers(1, 3),  # kw
    st.integers(1, 2),  # sh
    st.integers(1, 2),  # sw
    st.tuples(*[st.integers(0, 2)] * 4),  # pads
)


@given(geometry)
def test_im2col_matches_padded_strided_view(g):
    """The Numba loop equals np.pad + a copy of the strided patch view, the specification."""
    n, h, w, c, kh, kw, sh, sw, pads = g
    x = np.random.default_rng(0).standard_normal((n, h, w, c)).astype(np.float32)
    np.testing.assert_array_equal(
        im2col(x, (kh, kw), (sh, sw), pads), im2col_strided(x, (kh, kw), (sh, sw), pads)
    )


@given(geometry)
def test_col2im_is_the_adjoint_of_im2col(g):
    """<im2col(x), c> == <x, col2im(c)> for all x, c: col2im is the exact transpose."""
    n, h, w, c, kh, kw, sh, sw, pads = g
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, h, w, c))
    cols = im2col(x, (kh, kw), (sh, sw), pads)
    r = rng.standard_normal(cols.shape)
    lhs = float(np.sum(cols * r))
    rhs = float(np.sum(x * col2im(r, x.shape, (kh, kw), (sh, sw), pads)))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


def test_reuses_buffers_and_checks_them(rng):
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    out = np.empty((2 * 9, 27), np.float32)
    assert im2col(x, (3, 3), out=out) is out
    with pytest.raises(
        ValueError, match=r"out must be a C-contiguous float32 array of shape \(18, 27\)"
    ):
        im2col(x, (3, 3), out=np.empty((18, 27), np.float64))
    with pytest.raises(ValueError, match="does not fit"):
        im2col(x, (6, 6))
    dx = np.full(x.shape, 7.0, np.float32)
    assert col2im(out, x.shape, (3, 3), out=dx) is dx
    assert dx[0, 0, 0, 0] == out[0, 0]  # overwritten, not accumulated onto the old contents
    with pytest.raises(ValueError, match="cols must have shape"):
        col2im(out[:-1], x.shape, (3, 3))


@pytest.mark.parametrize("rows", [7, 40_000])  # serial and (above PARALLEL_MIN) policy threads
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_bias_is_bit_identical_to_numpy_broadcast_add(rows: int, dtype: type) -> None:
    rng = np.random.default_rng(5)
    y = rng.standard_normal((rows, 32)).astype(dtype)
    b = rng.standard_normal(32).astype(dtype)
    expected = y + b
    out = add_bias(y, b)
    assert out is y
    assert np.array_equal(y, expected)


def test_add_bias_rejects_mismatched_shapes_and_changes_nothing() -> None:
    y = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"b of shape \(C,\)"):
        add_bias(y, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        add_bias(np.ones((3, 4), np.float32).T, np.ones(3, np.float32))
    assert np.array_equal(y, np.ones((4, 3), np.float32))
