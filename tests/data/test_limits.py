"""Issue 15, data case 2: small files that declare huge data are refused before allocating."""

import gzip
import struct
import tarfile
import tracemalloc

import numpy as np
import pytest

from bnlab.data import IDXError, load_image_folder, read_idx, write_idx
from bnlab.data import limits as limits_mod
from bnlab.data.limits import DataLimitError, byte_budget


def _peak(fn):
    """(result or exception, peak traced bytes) of ``fn()``; NumPy reports to tracemalloc."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - returned to the test, which checks it
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _idx_header(code, shape):
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def test_gzip_idx_declaring_2_gib_is_refused_without_allocating(tmp_path):
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header(8, (2048, 1024, 1024)) + bytes(300_000)))
    err, peak = _peak(lambda: read_idx(path))
    assert isinstance(err, DataLimitError)
    msg = str(err)
    assert str(path) in msg and "(2048, 1024, 1024)" in msg and "2147483648 bytes" in msg
    assert "max_bytes" in msg and "BNLAB_MAX_BYTES" in msg
    assert peak < 8 << 20


def test_gzip_bomb_with_a_true_header_is_refused_by_the_expansion_rule(tmp_path, monkeypatch):
    monkeypatch.delenv("BNLAB_MAX_BYTES", raising=False)
    monkeypatch.setattr(limits_mod, "_FLOOR", 1 << 20)  # a 1 MiB floor keeps the test small
    path = tmp_path / "zeros.gz"
    write_idx(path, np.zeros((2000, 1000), np.uint8))  # 2 MB of zeros, about 2 KB on disk
    with pytest.raises(DataLimitError, match=r"100 x the \d+ bytes stored on disk"):
        read_idx(path)
    # raising the limit explicitly (keyword or environment) accepts it
    assert read_idx(path, max_bytes=3_000_000).shape == (2000, 1000)
    monkeypatch.setenv("BNLAB_MAX_BYTES", "3000000")
    assert read_idx(path).shape == (2000, 1000)
    monkeypatch.setenv("BNLAB_MAX_BYTES", "1000")
    with pytest.raises(DataLimitError, match=r"\$BNLAB_MAX_BYTES=1000"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dimensions_whose_product_overflows(tmp_path, gz):
    shape = (2**32 - 1, 2**32 - 1, 2**32 - 1, 16)  # the product overflows int64
    raw = _idx_header(0x0E, shape) + bytes(64)
    path = tmp_path / ("o.gz" if gz else "o")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    err = DataLimitError if gz else IDXError
    with pytest.raises(err, match=r"4294967295, 4294967295, 4294967295, 16"):
        read_idx(path)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10"])
def test_bad_max_bytes(tmp_path, bad):
    write_idx(tmp_path / "x", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="max_bytes must be a positive int"):
        read_idx(tmp_path / "x", max_bytes=bad)


@pytest.mark.parametrize("env", ["lots", "0", "-5"])
def test_bad_environment_limit_is_named(monkeypatch, env):
    monkeypatch.setenv("BNLAB_MAX_BYTES", env)
    with pytest.raises(ValueError, match="BNLAB_MAX_BYTES"):
        byte_budget(None, 10, where="t")


def test_png_declaring_huge_dimensions_is_refused_before_decoding(tmp_path, cache, kit):
    png = kit.raw_png(30000, 30000, 8, 2, b"\0" * 100)  # 2.7 GB of RGB pixels in 100 bytes
    path = kit.write_tar(tmp_path / "tiny.tar.gz", {"r/train/a/0.png": png, "r/test/a/0.png": png})
    assert path.stat().st_size < 3000
    err, peak = _peak(lambda: load_image_folder(path))
    assert isinstance(err, DataLimitError)
    assert "30000x30000 pixels" in str(err) and "max_bytes" in str(err)
    assert peak < 8 << 20 and not cache.exists()


def test_total_decoded_size_is_bounded_and_can_be_raised(tmp_path, rng, cache, kit):
    path = kit.write_dir(tmp_path / "d", kit.folder_items(rng))  # 15 images of 8x8x3
    per_image = 8 * 8 * 3 + 512
    with pytest.raises(DataLimitError, match=r"after \d+ bytes already decoded.*max_bytes=2000"):
        load_image_folder(path, max_bytes=2000)
    assert not cache.exists()
    data = load_image_folder(path, max_bytes=15 * per_image)
    assert data.splits["train"][0].shape == (9, 8, 8, 3)


def test_tar_member_declaring_more_than_the_limit(tmp_path, cache):
    path = tmp_path / "m.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("r/train/a/0.png")
        info.size = 0
        tf.addfile(info)
    data = bytearray(path.read_bytes())  # now forge a 2 GiB size into the header
    header = tarfile.TarInfo("r/train/a/0.png")
    header.size = 2 << 30
    data[:512] = header.tobuf(format=tarfile.GNU_FORMAT)[:512]
    path.write_bytes(bytes(data))
    with pytest.raises(DataLimitError, match=r"member r/train/a/0\.png \(2147483648 bytes\)"):
        load_image_folder(path)
    assert not cache.exists()


def test_tar_member_count_is_bounded(tmp_path, cache, kit):
    files = {f"notes/{i}.txt": b"x" for i in range(40)}
    path = kit.write_tar(tmp_path / "many.tar.gz", files)
    with pytest.raises(DataLimitError, match="member 20 .*bookkeeping"):
        load_image_folder(path, max_bytes=512 * 19)
