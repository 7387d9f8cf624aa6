"""Issue 15, data siblings: bad arguments to the scalers, the augmenter and the batch iterator
give a documented error that names the argument, and change no state."""

import numpy as np
import pytest

from bnlab.data import BatchIterator, ImageAugmenter, MinMaxScaler, Standardizer

SCALERS = [Standardizer, MinMaxScaler]


def _scaler_state(s):
    st = s.state_dict()
    return (st["axis"], st["ndim"], st["offset"].tobytes(), st["scale"].tobytes())


# -- scalers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", SCALERS)
@pytest.mark.parametrize("axis", ["x", 1.0, True, (), (1, "a")])
def test_scaler_axis_type(cls, axis):
    with pytest.raises(TypeError, match="axis must be None, an int or a tuple of ints"):
        cls(axis=axis)


@pytest.mark.parametrize("cls", SCALERS)
@pytest.mark.parametrize("shape", [(5, 0), (0, 3), (4, 0, 2)])
def test_scaler_fit_without_values(cls, shape):
    s = cls()
    with pytest.raises(ValueError, match="no values"):
        s.fit(np.zeros(shape))
    assert not s.is_fitted


@pytest.mark.parametrize("cls", SCALERS)
def test_scaler_fit_overflow_is_refused(cls):
    s = cls().fit(np.arange(6.0).reshape(3, 2))
    before = _scaler_state(s)
    with pytest.raises(FloatingPointError, match="overflow float64"):
        s.fit(np.array([[1.7e308, 0.0], [-1.7e308, 1.0]]))
    assert _scaler_state(s) == before


@pytest.mark.parametrize("cls", SCALERS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["transform", "inverse_transform"])
def test_scaler_refuses_non_finite_input(cls, bad, method):
    s = cls().fit(np.arange(6.0).reshape(3, 2))
    x = np.ones((2, 2))
    x[1, 0] = bad
    with pytest.raises(FloatingPointError, match="NaN"):
        getattr(s, method)(x)


def test_standardizer_constant_feature_is_shifted_not_divided():
    s = Standardizer().fit(np.array([[3.0, 1.0], [3.0, 2.0]]))
    out = s.transform(np.array([[3.0, 1.5], [4.0, 1.5]]))
    assert np.isfinite(out).all() and out[:, 0].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("cls", SCALERS)
@pytest.mark.parametrize(
    "change, match",
    [
        ({"scale": np.full((1, 2), np.nan)}, "scale finite and > 0"),
        ({"scale": np.zeros((1, 2))}, "scale finite and > 0"),
        ({"scale": -np.ones((1, 2))}, "scale finite and > 0"),
        ({"offset": np.full((1, 2), np.inf)}, "offset must be finite"),
        ({"ndim": 5}, "do not fit ndim=5"),
        ({"axis": 7}, "axis=7 is invalid"),
        ({"axis": "q"}, "axis must be None"),
        ({"offset": np.ones((1, 3))}, "same shape"),
        ({"offset": np.array([["a", "b"]])}, "numeric arrays"),
    ],
)
def test_scaler_load_state_dict_validates_before_assigning(cls, change, match):
    good = cls().fit(np.arange(8.0).reshape(4, 2)).state_dict()
    s = cls().fit(np.array([[0.0, 5.0], [2.0, 9.0]]))
    before = _scaler_state(s)
    with pytest.raises((ValueError, TypeError), match=match):
        s.load_state_dict({**good, **change})
    assert _scaler_state(s) == before
    with pytest.raises(ValueError, match="lacks"):
        s.load_state_dict({"axis": -1})
    assert _scaler_state(s) == before


# -- augmenter --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"width_shift": float("inf")}, ValueError, "width_shift must be a finite number"),
        ({"height_shift": float("nan")}, ValueError, "height_shift must be a finite number"),
        ({"width_shift": -0.1}, ValueError, "width_shift must be a finite number >= 0"),
        ({"width_shift": "a"}, TypeError, "width_shift must be a real number"),
        ({"width_shift": 1.5}, ValueError, "neither a fraction"),
        ({"cval": float("nan")}, ValueError, "cval must be a finite number"),
        ({"horizontal_flip": "no"}, TypeError, "horizontal_flip must be True or False"),
        ({"seed": "a"}, TypeError, "seed must be None, an int"),
        ({"seed": 1.5}, TypeError, "seed must be None, an int"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"fill_mode": "mirror"}, ValueError, "fill_mode must be one of"),
    ],
)
def test_augmenter_arguments(kw, err, match):
    with pytest.raises(err, match=match):
        ImageAugmenter(**kw)


@pytest.mark.parametrize("cval, dtype", [(300, np.uint8), (-1, np.uint8), (0.5, np.uint8)])
def test_augmenter_cval_that_does_not_fit_the_batch_dtype(cval, dtype):
    aug = ImageAugmenter(width_shift=2, fill_mode="constant", cval=cval, seed=0)
    before = aug.rng.bit_generator.state
    with pytest.raises(ValueError, match=f"cval={cval} cannot be stored in a uint8 batch"):
        aug(np.zeros((2, 4, 4, 3), dtype))
    assert aug.rng.bit_generator.state == before  # nothing was drawn
    out = aug(np.zeros((2, 4, 4, 3), np.float32))  # a float batch takes any finite cval
    assert out.dtype == np.float32


@pytest.mark.parametrize("state", [{}, {"rng": {"bit_generator": "MT19937", "state": 3}}, [1]])
def test_augmenter_load_state_dict_validates(state):
    aug = ImageAugmenter(seed=0)
    before = aug.rng.bit_generator.state
    with pytest.raises((ValueError, TypeError), match="ImageAugmenter.load_state_dict"):
        aug.load_state_dict(state)
    assert aug.rng.bit_generator.state == before


def test_augmenter_accepts_seed_sequences_and_numpy_ints():
    a = ImageAugmenter(seed=np.int64(3))(np.arange(48.0).reshape(1, 4, 4, 3))
    b = ImageAugmenter(seed=3)(np.arange(48.0).reshape(1, 4, 4, 3))
    np.testing.assert_array_equal(a, b)
    ImageAugmenter(seed=np.random.SeedSequence(3))


# -- batch iterator ---------------------------------------------------------------------------
X, Y = np.arange(10.0)[:, None], np.arange(10)


@pytest.mark.parametrize(
    "args, kw, err, match",
    [
        ((np.zeros((0, 2)), None, 2), {}, ValueError, "at least one sample"),
        ((X, Y[:5], 2), {}, ValueError, "same number of samples"),
        ((X, Y, 0), {}, ValueError, "batch_size must be in"),
        ((X, Y, -1), {}, ValueError, "batch_size must be in"),
        ((X, Y, 11), {"drop_last": True}, ValueError, "batch_size must be in"),
        ((X, Y, 2.0), {}, TypeError, "batch_size must be an int"),
        ((X, Y, True), {}, TypeError, "batch_size must be an int"),
        ((X, Y, 2), {"seed": "a"}, TypeError, "seed must be None, an int"),
        ((X, Y, 2), {"seed": 2.5}, TypeError, "seed must be None, an int"),
        ((X, Y, 2), {"seed": -3}, ValueError, "seed must be >= 0"),
        ((X, Y, 2), {"shuffle": "no"}, TypeError, "shuffle must be True or False"),
        ((X, Y, 2), {"drop_last": 1}, TypeError, "drop_last must be True or False"),
        ((X, Y, 2), {"transform": 3}, TypeError, "transform must be callable"),
    ],
)
def test_iterator_arguments(args, kw, err, match):
    with pytest.raises(err, match=match):
        BatchIterator(*args, **kw)


def test_iterator_batch_larger_than_the_data_is_one_batch():
    it = BatchIterator(X, Y, 25, seed=0)
    assert len(it) == 1 and [len(yb) for _, yb in it] == [10]


def _it_state(it):
    st = it.state_dict()
    return (str(st["rng"]), st["epoch"], st["pos"], st["order"].tobytes())


@pytest.mark.parametrize(
    "change, match",
    [
        ({"pos": 50}, "0 <= pos <= 10"),
        ({"pos": -5}, "0 <= pos <= 10"),
        ({"epoch": -1}, "epoch >= 0"),
        ({"epoch": "a"}, "must be integers"),
        ({"order": np.arange(10) + 100}, "not a permutation"),
        ({"order": np.zeros(10, np.int64)}, "not a permutation"),
        ({"order": np.arange(10) + 0.5}, "integer indices"),
        ({"order": np.arange(4)}, "permutation of 10"),
        ({"rng": {"x": 1}}, "'rng' is not a PCG64 state"),
        ({"n": 11}, "the state is for 11 samples"),
    ],
)
def test_iterator_load_state_dict_validates_everything_first(change, match):
    images = np.zeros((10, 4, 4, 3), np.float32)
    src = BatchIterator(images, Y, 3, seed=0, transform=ImageAugmenter(seed=1))
    next(iter(src))
    good = src.state_dict()
    it = BatchIterator(images, Y, 3, seed=5, transform=ImageAugmenter(seed=9))
    before, aug_before = _it_state(it), it.transform.rng.bit_generator.state
    with pytest.raises(ValueError, match=match):
        it.load_state_dict({**good, **change})
    assert _it_state(it) == before
    assert it.transform.rng.bit_generator.state == aug_before  # the transform is untouched too
    with pytest.raises(ValueError, match="lacks"):
        it.load_state_dict({"n": 10, "batch_size": 3})
    assert _it_state(it) == before
