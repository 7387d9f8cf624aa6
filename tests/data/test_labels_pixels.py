"""Issue 15, data case 5: labels and pixels out of range are refused, never cast silently."""

import pickle

import numpy as np
import pytest

from bnlab.data import load_cifar10, load_mnist, write_idx

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _batch_dir(tmp_path, rng, bad_name=None, data=None, labels=None):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in BATCHES:
        x = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        y = [3, 9]
        if name == bad_name:
            x = x if data is None else data
            y = y if labels is None else labels
        (d / name).write_bytes(pickle.dumps({b"data": x, b"labels": y}, protocol=2))
    return d


@pytest.mark.parametrize("label, shown", [(99, "99"), (-1, "-1"), (10, "10")])
def test_cifar_label_out_of_range(tmp_path, rng, kit, label, shown):
    d = _batch_dir(tmp_path, rng, "data_batch_3", labels=[0, label])
    before = kit.snapshot(tmp_path)
    with pytest.raises(ValueError) as e:
        load_cifar10(d)
    msg = str(e.value)
    assert "data_batch_3" in msg and f"got {shown} at flat index 1" in msg and "0..9" in msg
    assert kit.snapshot(tmp_path) == before


@pytest.mark.parametrize("labels", [[0, 1.5], [True, False], [0, None]])
def test_cifar_non_integer_labels(tmp_path, rng, labels):
    d = _batch_dir(tmp_path, rng, "test_batch", labels=labels)
    with pytest.raises(
        ValueError, match=r"test_batch: labels must be integers in 0\.\.9, got dtype"
    ):
        load_cifar10(d)


def test_cifar_int64_pixels_of_300_are_refused(tmp_path, rng):
    data = np.full((2, 3072), 7, np.int64)
    data[1, 5] = 300  # uint8 would wrap it to 44
    d = _batch_dir(tmp_path, rng, "data_batch_1", data=data)
    with pytest.raises(ValueError, match=r"data_batch_1: pixel values .*0\.\.255, got 300"):
        load_cifar10(d)


@pytest.mark.parametrize("fill", [np.nan, 3.0, 0.5])
def test_cifar_float_pixels_are_refused(tmp_path, rng, fill):
    data = np.full((2, 3072), fill)  # NaN would become 0
    d = _batch_dir(tmp_path, rng, "data_batch_2", data=data)
    with pytest.raises(ValueError, match="data_batch_2: pixel values must be integers.*float64"):
        load_cifar10(d)


def test_cifar_in_range_integer_pixels_convert_exactly(tmp_path, rng):
    data = rng.integers(0, 256, (2, 3072)).astype(np.int64)
    d = _batch_dir(tmp_path, rng, "test_batch", data=data)
    (_, _), (xte, yte) = load_cifar10(d)
    assert xte.dtype == np.uint8 and yte.tolist() == [3, 9]
    np.testing.assert_array_equal(xte, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _mnist_dir(tmp_path, labels):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 4), ("t10k", 2)):
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 3, 3), np.uint8))
        lab = labels if stem == "train" else np.arange(n, dtype=np.uint8)
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", lab)
    return tmp_path


def test_mnist_label_200_is_refused(tmp_path, kit):
    d = _mnist_dir(tmp_path, np.array([1, 2, 200, 3], np.uint8))
    before = kit.snapshot(tmp_path)
    with pytest.raises(ValueError) as e:
        load_mnist(d)
    msg = str(e.value)
    assert "train-labels-idx1-ubyte" in msg and "label 200 at index 2" in msg and "0..9" in msg
    assert kit.snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "labels", [np.array([1, 2, 1.5, 3], np.float32), np.array([1, -1, 2, 3], np.int8)]
)
def test_mnist_float_or_negative_labels(tmp_path, labels):
    d = _mnist_dir(tmp_path, labels)
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        load_mnist(d)


def test_mnist_images_of_zero_width(tmp_path):
    d = _mnist_dir(tmp_path, np.arange(4, dtype=np.uint8))
    write_idx(d / "train-images-idx3-ubyte", np.zeros((4, 3, 0), np.uint8))
    with pytest.raises(ValueError, match=r"H, W >= 1, got uint8 \(4, 3, 0\)"):
        load_mnist(d)
