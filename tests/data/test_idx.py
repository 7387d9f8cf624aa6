"""IDX reader/writer: round trips, gzip, and errors that say what was expected."""

import gzip

import numpy as np
import pytest

from bnlab.data import IDXError, read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, rng, dtype, suffix):
    arr = (rng.normal(size=(3, 4, 2)) * 50).astype(dtype)
    path = tmp_path / f"a-idx3-ubyte{suffix}"
    write_idx(path, arr)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_known_bytes(tmp_path):
    # header 00 00 08 01 | size 3 | data
    (tmp_path / "l").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 5, 0, 4]))
    np.testing.assert_array_equal(read_idx(tmp_path / "l"), [5, 0, 4])
    # gzip is detected from the content, whatever the name
    (tmp_path / "g").write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 1, 7])))
    np.testing.assert_array_equal(read_idx(tmp_path / "g"), [7])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_idx(tmp_path / "nothere.gz")


def test_truncated_data(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.zeros((10, 5), np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(IDXError, match=r"truncated.*\(10, 5\).*50 data bytes.*43"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.zeros(4, np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IDXError, match="trailing"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.arange(1000, dtype=np.int32))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(IDXError, match=r"x\.gz.*gzip stream is truncated"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04abcd", bytes([0, 0, 0x42, 1, 0, 0, 0, 0])])
def test_bad_magic(tmp_path, content):
    (tmp_path / "bad").write_bytes(content)
    with pytest.raises(IDXError, match="magic"):
        read_idx(tmp_path / "bad")


def test_truncated_header(tmp_path):
    (tmp_path / "h").write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 1]))
    with pytest.raises(IDXError, match="header: expected 16 bytes"):
        read_idx(tmp_path / "h")


def test_write_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))


@pytest.mark.parametrize("bad", [np.zeros(3, bool), np.zeros(3, object), np.zeros(3, np.int64)])
def test_write_refuses_before_touching_the_file(tmp_path, bad):
    path = tmp_path / "keep-idx1-ubyte.gz"
    write_idx(path, np.arange(3, dtype=np.uint8))
    before = path.read_bytes()
    with pytest.raises(TypeError, match="no IDX type code"):
        write_idx(path, bad)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_gzip_crc_flip_is_caught(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.arange(100, dtype=np.uint8))
    data = bytearray(path.read_bytes())
    data[-8] ^= 1  # the CRC-32 of the uncompressed data
    path.write_bytes(bytes(data))
    with pytest.raises(IDXError, match=r"x\.gz.*corrupt.*CRC check failed"):
        read_idx(path)
