"""Issue 15, data case 1: damaged or truncated archives are refused before anything is cached."""

import gzip
import pickle

import numpy as np
import pytest

from bnlab.data import load_cifar10, load_image_folder
from bnlab.data.archive import CorruptArchiveError, is_tar


@pytest.fixture
def good(tmp_path, rng, kit):
    items = kit.folder_items(rng)
    path = kit.write_tar(tmp_path / "images.tar.gz", items)
    reference = load_image_folder(path, use_cache=False)
    return path, reference


def _same(a, b):
    return a.classes == b.classes and all(
        np.array_equal(a.splits[s][0], b.splits[s][0])
        and np.array_equal(a.splits[s][1], b.splits[s][1])
        for s in b.splits
    )


def _flip(path, pos, bit=0):
    data = bytearray(path.read_bytes())
    data[pos] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_crc_flip_in_gzip_trailer_is_refused(good, cache, kit):
    path, _ = good
    _flip(path, len(path.read_bytes()) - 8)  # the CRC-32: the tar itself still reads cleanly
    before = kit.snapshot(path.parent)
    with pytest.raises(CorruptArchiveError) as e:
        load_image_folder(path)
    msg = str(e.value)
    assert str(path) in msg and "gzip CRC check failed" in msg and "re-download" in msg
    assert kit.snapshot(path.parent) == before and not cache.exists()


def test_length_flip_in_gzip_trailer_is_refused(good, cache):
    path, _ = good
    _flip(path, len(path.read_bytes()) - 2)  # ISIZE
    with pytest.raises(CorruptArchiveError, match="gzip length check failed"):
        load_image_folder(path)
    assert not cache.exists()


def test_single_bit_flips_never_load_changed_pixels(good, cache):
    """Every flip either raises a documented error or loads exactly the original data (a flip
    in the gzip header's mtime, say, is harmless); a refused archive leaves no cache."""
    path, reference = good
    original = path.read_bytes()
    positions = np.linspace(10, len(original) - 1, 60).astype(int)  # skip the magic/method
    refused = 0
    for pos in positions:
        _flip(path, int(pos), bit=int(pos) % 8)
        try:
            got = load_image_folder(path, use_cache=False)
        except (CorruptArchiveError, ValueError, FileNotFoundError):
            refused += 1
        else:
            assert _same(got, reference), f"flip at byte {pos} loaded changed data"
        path.write_bytes(original)
    assert refused >= 50
    assert not cache.exists()


@pytest.mark.parametrize("keep", [0.3, 0.9, -4])
def test_truncated_archive_is_a_clear_error(good, cache, keep):
    path, _ = good
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])
    with pytest.raises(CorruptArchiveError) as e:
        load_image_folder(path)
    assert str(path) in str(e.value) and "truncated archive" in str(e.value)
    assert not isinstance(e.value, EOFError) and not cache.exists()


def test_trailing_garbage_after_the_gzip_stream_is_refused(good, cache):
    path, _ = good
    path.write_bytes(path.read_bytes() + b"garbage!")
    with pytest.raises(CorruptArchiveError, match="corrupt archive"):
        load_image_folder(path)


@pytest.mark.parametrize("mode", ["w:bz2", "w:xz", "w"])
def test_other_compressions_load_and_truncation_is_caught(tmp_path, rng, cache, kit, mode):
    items = kit.folder_items(rng)
    path = kit.write_tar(tmp_path / "images.tar", items, mode=mode)
    reference = load_image_folder(path, use_cache=False)
    assert reference.splits["train"][0].shape == (9, 8, 8, 3)
    data = path.read_bytes()  # a plain tar ends in zero padding: cut into a member
    path.write_bytes(data[: len(data) // 2] if mode == "w" else data[:-700])
    with pytest.raises(CorruptArchiveError, match="images.tar"):
        load_image_folder(path)
    assert not cache.exists()


@pytest.mark.parametrize("cut", ["header", "boundary"])
def test_plain_tar_cut_at_a_member_is_not_read_as_shorter(tmp_path, rng, cache, kit, cut):
    """tarfile alone ends silently at a damaged or missing header after the first member."""
    items = kit.folder_items(rng)
    path = kit.write_tar(tmp_path / "images.tar", items, mode="w")
    data = bytearray(path.read_bytes())
    second = 512 + -(-len(kit.png_bytes(next(iter(items.values())))) // 512) * 512
    if cut == "header":
        data[second + 100 : second + 108] = b"garbage!"  # the header checksum no longer matches
    else:
        data = data[:second]
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match=r"images\.tar: (corrupt|truncated) archive"):
        load_image_folder(path)
    assert not cache.exists()


def test_cifar_image_tar_with_bad_crc(good, cache):
    path, _ = good
    _flip(path, len(path.read_bytes()) - 7)
    with pytest.raises(CorruptArchiveError, match="gzip CRC check failed"):
        load_cifar10(path)
    assert not cache.exists()


def _batch_tar(tmp_path, rng, kit):
    files = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        files[f"cifar-10-batches-py/{name}"] = pickle.dumps(
            {b"data": data, b"labels": [1, 2]}, protocol=2
        )
    return kit.write_tar(tmp_path / "cifar-10-python.tar.gz", files)


def test_cifar_python_batches_tar_with_bad_crc(tmp_path, rng, kit):
    path = _batch_tar(tmp_path, rng, kit)
    load_cifar10(path)  # intact: loads
    _flip(path, len(path.read_bytes()) - 8)
    with pytest.raises(CorruptArchiveError, match=r"cifar-10-python\.tar\.gz.*CRC check failed"):
        load_cifar10(path)


def test_damaged_gzip_header_is_not_taken_for_an_unknown_format(good):
    path, _ = good
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:12]) + b"\xff" * 40 + bytes(data[52:]))
    with pytest.raises(CorruptArchiveError, match="images.tar.gz"):
        load_cifar10(path)


def test_gzipped_non_tar_is_not_a_tar(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + bytes(600)))
    assert not is_tar(tmp_path / "x.gz")
    (tmp_path / "y").write_bytes(b"hello")
    assert not is_tar(tmp_path / "y")
