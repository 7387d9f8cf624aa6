import numpy as np
import pytest

from bnlab import initializers as I


@pytest.mark.parametrize("name", ["glorot_uniform", "he_normal", "normal", "zeros", "ones"])
def test_shape_dtype_and_seed(name):
    init = I.get_initializer(name)
    a = init((3, 3, 4, 8), np.float64, 0)
    assert a.shape == (3, 3, 4, 8) and a.dtype == np.float64
    np.testing.assert_array_equal(a, init((3, 3, 4, 8), np.float64, 0))
    gen = np.random.default_rng(0)
    np.testing.assert_array_equal(init((3, 3, 4, 8), np.float64, gen), a)


def test_glorot_uniform_limits_and_variance():
    W = I.glorot_uniform((300, 200), seed=1)  # fan_in + fan_out = 500
    limit = np.sqrt(6 / 500)
    assert W.dtype == np.float32 and np.abs(W).max() <= limit
    assert np.abs(W).max() > 0.99 * limit
    assert W.var() == pytest.approx(limit**2 / 3, rel=0.02)
    C = I.glorot_uniform((3, 3, 16, 32), seed=1)  # Keras fans: 9*16, 9*32
    assert np.abs(C).max() <= np.sqrt(6 / (9 * 48))


def test_he_normal_is_truncated_with_keras_variance():
    W = I.he_normal((400, 300), seed=2)
    std = np.sqrt(2 / 400)
    assert W.std() == pytest.approx(std, rel=0.02)
    assert np.abs(W).max() <= 2 * std / 0.87962566103423978 + 1e-7


def test_normal_std_and_config():
    init = I.normal(0.05)
    W = init((500, 400), seed=3)
    assert W.std() == pytest.approx(0.05, rel=0.01) and abs(W.mean()) < 1e-3
    cfg = I.initializer_config(init)
    assert cfg == {"name": "normal", "std": 0.05, "mean": 0.0}
    np.testing.assert_array_equal(I.get_initializer(cfg)((4, 4), seed=1), init((4, 4), seed=1))
    assert I.initializer_config(I.he_normal) == "he_normal"


def test_constant_and_errors():
    assert not I.zeros((2, 3)).any() and (I.ones((2, 3)) == 1).all()
    with pytest.raises(ValueError, match="unknown initializer 'glorot'"):
        I.get_initializer("glorot")
    with pytest.raises(ValueError, match="std must be >= 0"):
        I.normal(-1.0)
    fn = lambda shape, dtype=np.float32, seed=None: np.full(shape, 2.0, dtype)  # noqa: E731
    assert I.get_initializer(fn) is fn
