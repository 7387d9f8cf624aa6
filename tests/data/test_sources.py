"""bnlab.data.sources: what kind of CIFAR-10 copy a path holds (moved from the experiments)."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from bnlab.data import describe_source
from bnlab.experiments import cifar as ck


def test_experiments_use_the_data_floor_function():
    assert ck.describe_source is describe_source


@pytest.mark.parametrize("quality", [40, 90])
def test_jpeg_folder_quality_and_python_batches(tmp_path, kit, quality):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG", quality=quality)
    tar = kit.write_tar(tmp_path / "j.tar.gz", {"c/train/cat/1.jpg": buf.getvalue()})
    info = describe_source(tar)
    assert info["format"] == "image-folder" and info["jpeg_quality"] == quality
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "data_batch_1").write_bytes(pickle.dumps({b"data": 1}))
    assert describe_source(tmp_path)["format"] == "python-batches"


def test_damaged_archive_is_unknown_not_a_traceback(tmp_path, kit):
    tar = kit.write_tar(tmp_path / "j.tar.gz", {"c/train/cat/1.png": b"x" * 100})
    tar.write_bytes(tar.read_bytes()[:30])
    assert describe_source(tar)["format"] == "unknown"
    (tmp_path / "t.txt").write_text("hello")
    assert describe_source(tmp_path / "t.txt")["format"] == "unknown"
