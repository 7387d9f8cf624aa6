"""Issue 23: links and special files in image folders and their archives; odd digits in names.

A folder and the GNU ``tar czf`` of it must load the same images with the same labels (hard
links and symlinks included); anything that is not a regular file is refused by name, without
blocking (FIFO) or reading forever (``/dev/zero``).
"""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bnlab.data import load_image_folder
from bnlab.data.limits import DataLimitError


def _equal(a, b):
    assert a.classes == b.classes and sorted(a.splits) == sorted(b.splits)
    for s in a.splits:
        np.testing.assert_array_equal(a.splits[s][0], b.splits[s][0])
        np.testing.assert_array_equal(a.splits[s][1], b.splits[s][1])


def _folder(tmp_path, rng, kit):
    root = kit.write_dir(tmp_path / "src", kit.folder_items(rng, n_train=2, n_test=1))
    return root, root / "cifar10" / "train"


def _gnu_tar(root, out):
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    subprocess.run(["tar", "czf", str(out), "-C", str(root), "cifar10"], check=True)
    return out


@pytest.mark.parametrize("link", ["hard", "sym", "sym-up"])
def test_links_load_like_the_folder(tmp_path, rng, kit, cache, link):
    root, train = _folder(tmp_path, rng, kit)
    new = train / "cat" / "7.png"
    if link == "hard":
        os.link(train / "cat" / "0.png", new)
    elif link == "sym":
        os.symlink("0.png", new)
    else:
        os.symlink("../bird/1.png", new)
    folder = load_image_folder(root, use_cache=False)
    assert len(folder.splits["train"][1]) == 3 * 2 + 1
    archive = load_image_folder(_gnu_tar(root, tmp_path / "a.tar.gz"), use_cache=False)
    _equal(folder, archive)


def test_symlink_member_leaving_the_archive_is_refused(tmp_path, rng, kit, cache):
    root, train = _folder(tmp_path, rng, kit)
    os.symlink("/etc/hostname", train / "cat" / "7.png")
    with pytest.raises(ValueError, match=r"7\.png.*points outside the archive"):
        load_image_folder(_gnu_tar(root, tmp_path / "a.tar.gz"), use_cache=False)


def test_dangling_link_member_is_refused(tmp_path, rng, kit, cache):
    root, train = _folder(tmp_path, rng, kit)
    os.symlink("missing.png", train / "cat" / "7.png")
    archive = _gnu_tar(root, tmp_path / "a.tar.gz")
    with pytest.raises(ValueError, match=r"7\.png.*missing\.png.*not a regular file"):
        load_image_folder(archive, use_cache=False)


def _load_in_child(root, timeout=60):
    """Load in a subprocess, so that a loader that blocks fails the test instead of hanging it."""
    code = textwrap.dedent(
        f"""
        from bnlab.data import load_image_folder
        try:
            load_image_folder({str(root)!r}, use_cache=False, progress=False)
        except Exception as e:
            print(type(e).__name__ + ": " + str(e))
        else:
            print("LOADED")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    return done.stdout.strip()


def test_fifo_is_refused_without_blocking(tmp_path, rng, kit):
    root, train = _folder(tmp_path, rng, kit)
    os.mkfifo(train / "cat" / "9.png")
    out = _load_in_child(root)
    assert out.startswith("ValueError") and "9.png" in out and "not a regular file" in out


def test_link_to_a_device_is_refused(tmp_path, rng, kit):
    root, train = _folder(tmp_path, rng, kit)
    os.symlink("/dev/zero", train / "cat" / "9.png")
    out = _load_in_child(root)
    assert out.startswith("ValueError") and "9.png" in out and "not a regular file" in out


def test_huge_sparse_file_is_refused_before_it_is_read(tmp_path, rng, kit, cache):
    root, train = _folder(tmp_path, rng, kit)
    with open(train / "cat" / "9.png", "wb") as f:
        f.truncate(4 << 30)  # 4 GiB of holes: no disk used
    with pytest.raises(DataLimitError, match=r"9\.png"):
        load_image_folder(root, use_cache=False, progress=False)


def test_non_ascii_digits_in_names_sort_and_load(tmp_path, rng, kit, cache):
    items = kit.folder_items(rng, n_train=2, n_test=1)
    odd = items.pop("cifar10/train/cat/1.png")
    items["cifar10/train/cat/1\u00b21.png"] = odd  # "²": isdigit() but not int()
    items["cifar10/train/cat/10.png"] = items.pop("cifar10/train/cat/0.png")
    items["cifar10/train/cat/2.png"] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    root = kit.write_dir(tmp_path / "src", items)
    data = load_image_folder(root, use_cache=False)
    x, y = data.splits["train"]
    cat = data.classes.index("cat")
    got = x[y == cat]
    # natural order: "1²1" (1, "²", 1) < "2" < "10"
    np.testing.assert_array_equal(got[0], odd)
    np.testing.assert_array_equal(got[1], items["cifar10/train/cat/2.png"])
    np.testing.assert_array_equal(got[2], items["cifar10/train/cat/10.png"])


@pytest.mark.parametrize("kind", ["dir", "tar"])
@pytest.mark.parametrize("shape", [(4, 4, 3), (8, 8, 1), (8, 4, 3), (8, 8, 4)])
def test_cache_of_another_image_shape_is_rebuilt(tmp_path, rng, kit, cache, kind, shape):
    items = kit.folder_items(rng, n_train=2, n_test=1)
    if kind == "dir":
        path = kit.write_dir(tmp_path / "d", items)
    else:
        path = kit.write_tar(tmp_path / "a.tar.gz", items)
    expected = load_image_folder(path)
    (file,) = cache.glob("*.npz")
    with np.load(file) as z:
        arrays = dict(z)
    for key in [k for k in arrays if k.startswith("x/")]:
        arrays[key] = np.zeros((len(arrays[key]), *shape), np.uint8)  # same count, wrong image
    np.savez(file, **arrays)
    _equal(load_image_folder(path), expected)
