import os

import pytest

from bnlab._atomic import atomic_write


def test_new_file_is_written_whole_with_ordinary_permissions(tmp_path) -> None:
    path = atomic_write(tmp_path / "a.bin", lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)

    def fail(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.stat().st_mode & 0o777 == 0o600  # the replaced file's permissions are kept
