"""Issue 15, data cases 3-5 for image folders: cache failures, empty classes, pixel formats."""

import io
import struct
import warnings

import numpy as np
import pytest
from PIL import Image

from bnlab.data import imagefolder as imagefolder_mod
from bnlab.data import load_cifar10, load_image_folder

CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _equal(a, b):
    assert a.classes == b.classes and sorted(a.splits) == sorted(b.splits)
    for s in a.splits:
        np.testing.assert_array_equal(a.splits[s][0], b.splits[s][0])
        np.testing.assert_array_equal(a.splits[s][1], b.splits[s][1])


# -- case 3: the cache ------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["is-a-file", "under-a-file", "disk-full"])
def test_unwritable_cache_warns_and_loads(tmp_path, rng, kit, monkeypatch, how):
    path = kit.write_tar(tmp_path / "images.tar.gz", kit.folder_items(rng))
    expected = load_image_folder(path, use_cache=False)
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"not a directory")
    cache_dir = {"is-a-file": blocker, "under-a-file": blocker / "sub"}.get(how, tmp_path / "c")
    if how == "disk-full":
        cache_dir.mkdir()

        def full(*a, **k):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(imagefolder_mod, "atomic_write", full)
    before = kit.snapshot(tmp_path)
    with pytest.warns(RuntimeWarning, match="cannot write the cache in") as rec:
        got = load_image_folder(path, cache_dir=cache_dir)
    assert str(cache_dir) in str(rec[0].message) and "continuing without a cache" in str(
        rec[0].message
    )
    _equal(got, expected)
    assert kit.snapshot(tmp_path) == before  # nothing written, no temporary left behind


def test_tampered_cache_is_ignored_and_rebuilt(tmp_path, rng, kit, cache):
    path = kit.write_dir(tmp_path / "d", kit.folder_items(rng))
    expected = load_image_folder(path)
    (file,) = cache.glob("*.npz")
    with np.load(file) as z:
        arrays = dict(z)
    arrays["y/train"] = arrays["y/train"] + 5  # labels that no longer match the folders
    np.savez(file, **arrays)
    _equal(load_image_folder(path), expected)


# -- case 4: empty class folders --------------------------------------------------------------
def _cifar_like(tmp_path, rng, kit, empty="dog"):
    items = kit.folder_items(rng, classes=CIFAR, n_train=1, n_test=1, size=4)
    items = {k: v for k, v in items.items() if f"/{empty}/" not in k}
    root = kit.write_dir(tmp_path / "d", items)
    for split in ("train", "test"):
        (root / "cifar10" / split / empty).mkdir()
    return root


def test_empty_class_folder_is_refused_like_torchvision(tmp_path, rng, kit, cache):
    root = _cifar_like(tmp_path, rng, kit)
    before = kit.snapshot(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        load_image_folder(root)
    msg = str(e.value)
    assert "train/dog" in msg and "test/dog" in msg and "allow_empty=True" in msg
    assert "shift the label" in msg
    assert kit.snapshot(tmp_path) == before and not cache.exists()


def test_allow_empty_keeps_the_class_and_every_later_label(tmp_path, rng, kit, cache):
    root = _cifar_like(tmp_path, rng, kit)
    data = load_image_folder(root, allow_empty=True)
    assert data.classes == list(CIFAR)
    y = data.splits["train"][1]
    assert 5 not in y and y[-1] == 9  # truck stays 9
    assert y.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9]


def test_empty_class_folder_inside_a_tar(tmp_path, rng, kit, cache):
    items = kit.folder_items(rng, classes=("a", "c"))
    path = kit.write_tar(tmp_path / "t.tar.gz", items, dirs=["cifar10/train/b", "cifar10/test/b"])
    with pytest.raises(FileNotFoundError, match="test/b, train/b"):
        load_image_folder(path)
    assert load_image_folder(path, allow_empty=True).classes == ["a", "b", "c"]


def test_class_missing_from_one_split(tmp_path, rng, kit, cache):
    items = kit.folder_items(rng)
    items = {k: v for k, v in items.items() if k != "cifar10/test/bird/0.png"}
    items = {k: v for k, v in items.items() if k != "cifar10/test/bird/1.png"}
    root = kit.write_dir(tmp_path / "d", items)
    with pytest.raises(FileNotFoundError, match="test/bird"):
        load_image_folder(root)
    data = load_image_folder(root, allow_empty=True)
    assert data.splits["test"][1].tolist() == [0, 0, 2, 2]  # cat keeps label 2


def test_hidden_folders_are_ignored(tmp_path, rng, kit, cache):
    items = kit.folder_items(rng)
    root = kit.write_dir(tmp_path / "d", items)
    reference = load_image_folder(root, use_cache=False)
    junk = kit.png_bytes(np.zeros((8, 8, 3), np.uint8))
    (root / "cifar10/train/cat/.ipynb_checkpoints").mkdir()
    (root / "cifar10/train/cat/.ipynb_checkpoints/0.png").write_bytes(junk)
    (root / "cifar10/train/.trash").mkdir()
    _equal(load_image_folder(root, use_cache=False), reference)


def test_duplicate_member_in_a_tar_is_refused(tmp_path, rng, kit, cache):
    import tarfile

    path = tmp_path / "dup.tar"
    png = kit.png_bytes(np.zeros((4, 4, 3), np.uint8))
    with tarfile.open(path, "w") as tf:
        for _ in range(2):
            kit.add_bytes(tf, "r/train/a/0.png", png)
    with pytest.raises(ValueError, match=r"r/train/a/0\.png twice"):
        load_image_folder(path)


# -- case 5: pixel formats that would be changed silently -------------------------------------
def _png16_rgb():
    rows = b"".join(b"\0" + struct.pack(">HHH", 1000, 300, 65535) * 4 for _ in range(4))
    return rows


@pytest.mark.parametrize("kind", ["gray16", "rgb16"])
def test_16_bit_png_is_refused(tmp_path, rng, kit, cache, kind):
    items = kit.folder_items(rng, size=4)
    if kind == "gray16":
        buf = io.BytesIO()
        Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(buf, format="PNG")
        bad = buf.getvalue()
    else:
        bad = kit.raw_png(4, 4, 16, 2, _png16_rgb())
    items["cifar10/train/bird/9.png"] = bad
    root = kit.write_dir(tmp_path / "d", items)
    with pytest.raises(ValueError, match=r"bird/9\.png is a 16-bit PNG.*8 bits per channel"):
        load_image_folder(root)
    assert not cache.exists()


def test_one_bit_png_becomes_0_and_255(tmp_path, kit, cache):
    img = Image.fromarray(np.array([[0, 1], [1, 0]], bool))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    root = kit.write_dir(tmp_path / "d", {"r/train/a/0.png": buf.getvalue()})
    x = load_image_folder(root).splits["train"][0]
    assert x[0, :, :, 0].tolist() == [[0, 255], [255, 0]]


@pytest.mark.parametrize("damage", ["truncated", "bit-flip", "no-iend", "not-an-image"])
def test_damaged_image_is_named_and_nothing_cached(tmp_path, rng, kit, cache, damage):
    items = kit.folder_items(rng)
    png = bytearray(kit.png_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))
    if damage == "bit-flip":
        png[60] ^= 4  # inside the pixel data: Pillow alone decodes other pixels
    bad = {
        "truncated": bytes(png[: len(png) // 2]),
        "no-iend": bytes(png[:-12]),
        "not-an-image": b"hello",
    }.get(damage, bytes(png))
    items["cifar10/test/cat/7.png"] = bad
    root = kit.write_dir(tmp_path / "d", items)
    expected = r"(corrupt|truncated) PNG" if damage != "not-an-image" else "cannot decode image"
    with pytest.raises(
        ValueError, match=expected + r".*test/cat/7\.png|test/cat/7\.png.*" + expected
    ):
        load_cifar10(root)
    assert not cache.exists()


@pytest.mark.parametrize("kw", [{"allow_empty": 1}, {"use_cache": "no"}, {"progress": "yes"}])
def test_flag_types(tmp_path, kw):
    with warnings.catch_warnings():
        with pytest.raises(TypeError, match=next(iter(kw))):
            load_image_folder(tmp_path, **kw)


def test_a_file_that_is_not_a_tar(tmp_path, cache):
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04" + bytes(600))
    with pytest.raises(ValueError, match=r"x\.zip is neither a directory nor a tar archive"):
        load_image_folder(tmp_path / "x.zip")
    assert not cache.exists()
