"""CIFAR-10 loaders on small files written in each format: python batches, image folders."""

import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from bnlab.data import imagefolder as imagefolder_mod
from bnlab.data import load_cifar10, load_image_folder

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _make_batches(rng, n=3):
    """name -> (pickled bytes, images NHWC, labels)."""
    out = {}
    for name in BATCHES:
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, n).tolist()
        flat = x.transpose(0, 3, 1, 2).reshape(n, -1)  # the official CHW row layout
        d = {b"batch_label": name.encode(), b"labels": y, b"data": flat, b"filenames": []}
        out[name] = (pickle.dumps(d, protocol=2), x, np.array(y))
    return out


def _expected(batches):
    xtr = np.concatenate([batches[n][1] for n in BATCHES[:5]])
    ytr = np.concatenate([batches[n][2] for n in BATCHES[:5]])
    return (xtr, ytr), (batches["test_batch"][1], batches["test_batch"][2])


def _assert_equal(got, expected):
    for (gx, gy), (ex, ey) in zip(got, expected, strict=True):
        assert gx.dtype == np.uint8 and gy.dtype == np.int64
        np.testing.assert_array_equal(gx, ex)
        np.testing.assert_array_equal(gy, ey)


def _write_batch_dir(root, batches):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, (raw, _, _) in batches.items():
        (d / name).write_bytes(raw)
    return d


def _add_bytes(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_python_batches_dir_and_parent(tmp_path, rng):
    batches = _make_batches(rng)
    d = _write_batch_dir(tmp_path, batches)
    _assert_equal(load_cifar10(d), _expected(batches))
    _assert_equal(load_cifar10(tmp_path), _expected(batches))


def test_python_batches_tar_gz(tmp_path, rng):
    batches = _make_batches(rng)
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, (raw, _, _) in batches.items():
            _add_bytes(tf, f"cifar-10-batches-py/{name}", raw)
    _assert_equal(load_cifar10(path), _expected(batches))
    assert not (tmp_path / "cifar-10-batches-py").exists()  # nothing extracted


def test_missing_batch_is_named(tmp_path, rng):
    d = _write_batch_dir(tmp_path, _make_batches(rng))
    (d / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        load_cifar10(d)


def test_malicious_pickle_is_refused(tmp_path, rng):
    batches = _make_batches(rng)
    d = _write_batch_dir(tmp_path, batches)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (d / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match="test_batch.*not a valid CIFAR-10 python batch"):
        load_cifar10(d)


def test_truncated_tar_gz(tmp_path, rng):
    path = tmp_path / "c.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, (raw, _, _) in _make_batches(rng).items():
            _add_bytes(tf, f"cifar-10-batches-py/{name}", raw)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"c\.tar\.gz"):
        load_cifar10(path)


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _image_items(rng):
    """[(relative path, image)] for 2 splits x 3 classes, files named out of natural order."""
    items = []
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "airplane", "bird"):
            for i in (10, 2, 1)[:n]:
                items.append(
                    (
                        f"cifar10/{split}/{cls}/{i}.png",
                        rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                    )
                )
    return items


def _expected_folder(items, split):
    classes = ["airplane", "automobile", "bird", "cat"]  # CIFAR-10's label order
    chosen = [(p, a) for p, a in items if p.split("/")[1] == split]
    chosen.sort(key=lambda it: (it[0].split("/")[2], int(it[0].split("/")[3][:-4])))
    return np.stack([a for _, a in chosen]), np.array(
        [classes.index(p.split("/")[2]) for p, _ in chosen]
    )


@pytest.mark.parametrize("kind", ["dir", "tar.gz"])
def test_image_folder(tmp_path, rng, kind, monkeypatch):
    monkeypatch.setenv("BNLAB_CACHE", str(tmp_path / "cache"))
    items = _image_items(rng)
    if kind == "dir":
        for rel, arr in items:
            (tmp_path / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "data" / rel).write_bytes(_png(arr))
        path = tmp_path / "data"
    else:
        path = tmp_path / "images.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            for rel, arr in items:
                _add_bytes(tf, rel, _png(arr))
    expected = (_expected_folder(items, "train"), _expected_folder(items, "test"))
    _assert_equal(load_cifar10(path), expected)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    # the second load comes from the cache: decoding would fail now
    monkeypatch.setattr(imagefolder_mod, "decode_image", lambda *a: 1 / 0)
    _assert_equal(load_cifar10(path), expected)
    data = load_image_folder(path)
    assert data.classes == ["airplane", "bird", "cat"]


def test_image_folder_cache_invalidated_by_change(tmp_path, rng):
    root = tmp_path / "data"
    for rel, arr in _image_items(rng):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_png(arr))
    cache = tmp_path / "cache"
    first = load_image_folder(root, cache_dir=cache)
    new = np.zeros((32, 32, 3), np.uint8)
    (root / "cifar10/train/cat/10.png").write_bytes(_png(new))
    second = load_image_folder(root, cache_dir=cache)
    x1, x2 = first.splits["train"][0], second.splits["train"][0]
    assert (x1 != x2).any() and not x2[-1].any()  # cat/10.png is the last train image


def test_image_folder_size_mismatch(tmp_path):
    root = tmp_path / "d"
    for name, size in (("a.png", 8), ("b.png", 9)):
        (root / "train" / "c").mkdir(parents=True, exist_ok=True)
        (root / "train" / "c" / name).write_bytes(_png(np.zeros((size, size, 3), np.uint8)))
    with pytest.raises(ValueError, match=r"train/c/b\.png is 9x9 pixels, expected 8x8"):
        load_image_folder(root, use_cache=False)


def test_image_folder_missing_test_split(tmp_path):
    root = tmp_path / "d"
    (root / "train" / "c").mkdir(parents=True)
    (root / "train" / "c" / "a.png").write_bytes(_png(np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(ValueError, match="missing \\['test'\\]"):
        load_cifar10(root, cache_dir=tmp_path / "cache")


def test_image_folder_with_foreign_class_names(tmp_path):
    root = tmp_path / "d"
    for split in ("train", "test"):
        for cls in ("cat", "kangaroo"):
            (root / split / cls).mkdir(parents=True)
            (root / split / cls / "a.png").write_bytes(_png(np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(ValueError, match=r"class folders \['kangaroo'\] that are not CIFAR-10"):
        load_cifar10(root, cache_dir=tmp_path / "cache")


def test_unrecognized_format_lists_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="accepted: the cifar-10-batches-py directory"):
        load_cifar10(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="accepted"):
        load_cifar10(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nope")
