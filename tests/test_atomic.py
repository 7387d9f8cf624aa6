import os
import time

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


# -- issue 15: read-back check, stale temporaries of killed saves, unwritable targets --------
def test_a_failing_verify_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    seen = []

    def verify(tmp) -> None:
        seen.append(tmp.read_bytes())
        raise OSError("read-back mismatch")

    with pytest.raises(OSError, match="read-back mismatch"):
        atomic_write(path, lambda f: f.write(b"new"), verify)
    assert seen == [b"new"]  # verify saw the finished temporary file
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_temporaries_of_a_killed_save_are_removed_by_the_next_save(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    code = (
        "import sys, time\n"
        "from bnlab._atomic import atomic_write\n"
        "def slow(f):\n"
        "    f.write(b'x' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        f"atomic_write({str(path)!r}, slow)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".a.bin.")
    other = tmp_path / ".b.bin.abcdefgh.tmp"  # another target's temporary stays
    other.write_bytes(b"b")
    time.sleep(0.02)
    atomic_write(path, lambda f: f.write(b"new"))
    assert sorted(os.listdir(tmp_path)) == [".b.bin.abcdefgh.tmp", "a.bin"]
    assert path.read_bytes() == b"new"


@pytest.mark.parametrize("errno_name", ["EROFS", "ENOSPC"])
def test_os_errors_at_the_rename_leave_no_temporary(tmp_path, monkeypatch, errno_name) -> None:
    import errno

    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def fail(src, dst):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write(path, lambda f: f.write(b"new"))
    assert os.listdir(tmp_path) == ["a.bin"] and path.read_bytes() == b"old"


def test_writing_over_a_directory_fails_cleanly(tmp_path) -> None:
    from bnlab._atomic import check_target

    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        check_target(tmp_path / "d", "save")
    with pytest.raises(OSError):
        atomic_write(tmp_path / "d", lambda f: f.write(b"new"))
    assert os.listdir(tmp_path) == ["d"] and os.listdir(tmp_path / "d") == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_target(tmp_path / "nope" / "a.bin", "save")


def test_a_user_file_that_looks_temporary_is_kept(tmp_path) -> None:
    path = tmp_path / "a.bin"
    users = tmp_path / ".a.bin.abcdefgh.tmp"  # the unmarked pattern of an older bnlab
    users.write_bytes(b"mine")
    os.utime(users, (time.time() - 60, time.time() - 60))
    atomic_write(path, lambda f: f.write(b"new"))
    assert users.read_bytes() == b"mine"


def test_a_symlink_target_is_written_through(tmp_path) -> None:
    real = tmp_path / "store" / "model.npz"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "model.npz"
    link.symlink_to(real)
    atomic_write(link, lambda f: f.write(b"new"))
    assert link.is_symlink() and real.read_bytes() == b"new"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_an_os_error_names_the_target_not_the_temporary(tmp_path, monkeypatch) -> None:
    import errno

    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"cannot write .*a\.bin: No space left") as info:
        atomic_write(path, full)
    assert info.value.errno == errno.ENOSPC and ".tmp" not in str(info.value)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]
