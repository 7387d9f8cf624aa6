"""BatchIterator: coverage, seeding, drop_last, transform, bit-exact resume."""

import numpy as np
import pytest

from bnlab.data import BatchIterator, ImageAugmenter


def _data(n=10):
    return np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.arange(n)


def test_epoch_covers_every_sample_once():
    x, y = _data(10)
    it = BatchIterator(x, y, 3, seed=0)
    batches = list(it)
    assert [len(b) for _, b in batches] == [3, 3, 3, 1] and len(it) == 4
    seen = np.concatenate([b for _, b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)  # x and y stay paired


def test_drop_last_and_no_shuffle():
    x, y = _data(10)
    it = BatchIterator(x, y, 4, shuffle=False, drop_last=True)
    assert len(it) == 2
    assert [b.tolist() for _, b in it] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_same_seed_same_batches_and_new_permutation_each_epoch():
    x, y = _data(20)
    a = [b.tolist() for _, b in BatchIterator(x, y, 5, seed=7)]
    b = [b.tolist() for _, b in BatchIterator(x, y, 5, seed=7)]
    assert a == b
    it = BatchIterator(x, y, 20, seed=7)
    e1, e2 = next(iter(it))[1], next(iter(it))[1]
    assert sorted(e1) == sorted(e2) and e1.tolist() != e2.tolist()
    assert it.epoch == 2


def test_batches_is_endless_and_continues_across_epochs():
    x, y = _data(5)
    gen = BatchIterator(x, y, 2, seed=1, drop_last=True).batches()
    sizes = [len(next(gen)[1]) for _ in range(7)]
    assert sizes == [2] * 7


def test_transform_applied():
    x, y = _data(4)
    it = BatchIterator(x, y, 2, transform=lambda xb: xb * 0 - 1)
    assert all((xb == -1).all() for xb, _ in it)


def test_state_dict_resume_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (13, 6, 6, 1), dtype=np.uint8)
    y = np.arange(13)

    def make():
        return BatchIterator(x, y, 4, seed=3, transform=ImageAugmenter(seed=5))

    straight = make().batches()
    ref = [next(straight) for _ in range(12)]
    first = make()
    gen = first.batches()
    got = [next(gen) for _ in range(5)]  # stops mid-epoch
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    gen = resumed.batches()
    got += [next(gen) for _ in range(7)]
    for (xa, ya), (xb, yb) in zip(ref, got, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_errors():
    x, y = _data(5)
    with pytest.raises(ValueError, match=r"x \(5, 2\) and y \(4,\)"):
        BatchIterator(x, y[:4], 2)
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(x, y, 6, drop_last=True)
    with pytest.raises(TypeError, match="batch_size"):
        BatchIterator(x, y, 2.5)
    it = BatchIterator(x, y, 2)
    with pytest.raises(ValueError, match="5 samples in batches of 3"):
        it.load_state_dict(BatchIterator(x, y, 3).state_dict())
