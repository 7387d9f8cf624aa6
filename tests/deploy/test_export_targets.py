"""Issue 23, high 8: `bnlab export` never replaces the checkpoint or a file it did not write."""

import os

import pytest

from bnlab.cli import main
from bnlab.deploy import save_checkpoint
from bnlab.layers import BatchNorm, Dense, Sequential


@pytest.fixture
def ckpt(tmp_path):
    return save_checkpoint(tmp_path / "victim.npz", Sequential([Dense(4, 3, seed=0), BatchNorm(3)]))


@pytest.mark.parametrize("how", ["same", "hardlink", "symlink", "other-file"])
def test_export_refuses_to_overwrite(tmp_path, ckpt, capsys, how):
    target = {"same": ckpt, "other-file": tmp_path / "notes.txt"}.get(how, tmp_path / "x.npz")
    if how == "hardlink":
        os.link(ckpt, target)
    elif how == "symlink":
        os.symlink(ckpt, target)
    elif how == "other-file":
        target.write_text("mine")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert main(["export", str(ckpt), str(target)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert ("checkpoint itself" if how != "other-file" else "not an .onnx file") in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_export_replaces_an_existing_onnx_file(tmp_path, ckpt):
    (tmp_path / "m.onnx").write_bytes(b"old")
    assert main(["export", str(ckpt), str(tmp_path / "m.onnx"), "--input-shape", "4"]) == 0
    assert (tmp_path / "m.onnx").read_bytes() != b"old"
