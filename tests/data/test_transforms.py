"""Standardizer and MinMaxScaler: statistics, axis semantics, errors, state round trip."""

import numpy as np
import pytest

from bnlab.data import MinMaxScaler, NotFittedError, Standardizer


def test_standardizer_per_feature_matches_numpy(rng):
    x = rng.normal(3, 5, size=(200, 4))
    s = Standardizer().fit(x)
    np.testing.assert_allclose(s.mean_.ravel(), x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.scale_.ravel(), x.std(axis=0), rtol=1e-12)
    y = s.transform(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=0), 1, rtol=1e-12)
    np.testing.assert_allclose(s.inverse_transform(y), x, rtol=1e-12)


def test_standardizer_per_channel_on_uint8_images(rng):
    x = rng.integers(0, 256, size=(20, 5, 6, 3), dtype=np.uint8)
    s = Standardizer(axis=-1)
    y = s.fit_transform(x)
    assert y.dtype == np.float32 and s.mean_.shape == (1, 1, 1, 3)
    xf = x.astype(np.float64)
    np.testing.assert_allclose(s.mean_.ravel(), xf.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2), dtype=np.float64), 1, rtol=1e-5)
    # a different spatial size is fine per channel
    assert s.transform(x[:, :2, :2]).shape == (20, 2, 2, 3)


def test_standardizer_per_pixel_axis_none(rng):
    x = rng.normal(size=(30, 2, 2, 3))
    s = Standardizer(axis=None).fit(x)
    assert s.mean_.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(s.mean_[0], x.mean(axis=0), rtol=1e-12)


def test_standardizer_chunked_fit_is_accurate(rng, monkeypatch):
    from bnlab.data import transforms

    monkeypatch.setattr(transforms, "_CHUNK_ELEMENTS", 7)  # many small chunks
    x = 1e8 + rng.normal(size=(101, 3))  # large offset: no cancellation allowed
    s = Standardizer().fit(x)
    np.testing.assert_allclose(s.scale_.ravel(), x.std(axis=0), rtol=1e-7)


def test_constant_feature_gets_scale_one():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    np.testing.assert_allclose(Standardizer().fit_transform(x), [[-1, 0], [1, 0]])
    np.testing.assert_allclose(MinMaxScaler().fit_transform(x), [[0, 0], [1, 0]])


def test_minmax_to_unit_interval(rng):
    x = rng.integers(10, 200, size=(50, 3, 3, 2), dtype=np.uint8)
    m = MinMaxScaler(axis=-1).fit(x)
    y = m.transform(x)
    assert y.dtype == np.float32 and y.min() == 0 and y.max() == 1
    np.testing.assert_allclose(m.data_min_.ravel(), x.min(axis=(0, 1, 2)))
    np.testing.assert_allclose(m.data_max_.ravel(), x.max(axis=(0, 1, 2)))
    np.testing.assert_allclose(m.inverse_transform(y), x, atol=1e-4)


@pytest.mark.parametrize("cls", [Standardizer, MinMaxScaler])
def test_transform_before_fit(cls):
    with pytest.raises(NotFittedError, match="call fit"):
        cls().transform(np.zeros((2, 3)))


@pytest.mark.parametrize("cls", [Standardizer, MinMaxScaler])
def test_state_dict_round_trip(rng, cls):
    x = rng.normal(size=(10, 4, 4, 3))
    a = cls(axis=(2, 3)).fit(x)
    b = cls()
    b.load_state_dict(a.state_dict())
    assert b.axis == (2, 3)
    np.testing.assert_array_equal(a.transform(x), b.transform(x))
    c = cls()
    c.load_state_dict(cls().state_dict())
    assert not c.is_fitted


def test_errors(rng):
    s = Standardizer().fit(rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match=r"shape \(5, 4\).*fitted feature shape \(1, 3\)"):
        s.transform(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="axis 0 holds the samples"):
        Standardizer(axis=0).fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="ndim >= 2"):
        Standardizer().fit(np.zeros(3))
    with pytest.raises(FloatingPointError, match="NaN"):
        Standardizer().fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(TypeError, match="numeric"):
        Standardizer().fit(np.array([["a"], ["b"]]))
