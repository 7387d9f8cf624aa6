"""Issue 23, high 9: recalibrate's --data files are size-checked before anything is allocated."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from bnlab.data.limits import DataLimitError
from bnlab.deploy.inputs import read_array


def test_tiny_npy_declaring_terabytes_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (10**7, 10**5)}
        )
    assert path.stat().st_size < 256
    with pytest.raises(ValueError, match=r"x\.npy declares shape .* truncated or crafted"):
        read_array(path)


def test_deflated_npz_past_the_limit_is_refused_before_inflating(tmp_path):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (1 << 28,)}
        )
        for _ in range(64):
            f.write(bytes(1 << 24))  # 1 GiB of zeros, about 1 MB on disk
    with pytest.raises(DataLimitError, match=r"x\.npz:x\.npy"):
        read_array(path)


def test_good_files_still_read_exactly(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.savez_compressed(tmp_path / "b.npz", x=x, y=np.arange(5))
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    for name in ("a.npy", "b.npz", "f.npy"):
        got = read_array(tmp_path / name)
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, x)


def test_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([1, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="dtype object"):
        read_array(tmp_path / "o.npy")
