"""`bnlab recalibrate`: --out that is CHECKPOINT itself is refused without --in-place (same
file, symlink, hard link), accuracy before and after, a net without BN; `~` and `$VAR`
expanded in every path option."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import numpy as np
import pytest

from bnlab.cli import main
from bnlab.cli.entry import expand_paths
from bnlab.deploy import load_checkpoint, save_checkpoint
from bnlab.layers import BatchNorm, Dense, ReLU, Sequential

SMALL = ["--data", "mnist", "--limit", "300", "--test-subset", "500"]


def _bn_checkpoint(path: Path) -> Path:
    model = Sequential([Dense(784, 16, seed=0), BatchNorm(16), ReLU(), Dense(16, 10, seed=1)])
    save_checkpoint(path, model)
    return path


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_out_equal_to_the_input_is_refused_without_in_place(tmp_path, capsys, link):
    ck = _bn_checkpoint(tmp_path / "a.npz")
    out = tmp_path / "b.npz"
    if link == "same":
        out = tmp_path / "." / "a.npz"
    elif link == "symlink":
        out.symlink_to(ck)
    else:
        os.link(ck, out)
    before = ck.read_bytes()
    assert main(["recalibrate", str(ck), *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is CHECKPOINT itself" in err and "--in-place" in err and err.count("\n") == 1
    assert ck.read_bytes() == before


def test_in_place_is_allowed_and_prints_accuracy_before_and_after(tmp_path, capsys):
    ck = _bn_checkpoint(tmp_path / "a.npz")
    before = ck.read_bytes()
    assert main(["recalibrate", str(ck), *SMALL, "--in-place"]) == 0
    out = capsys.readouterr().out
    assert ck.read_bytes() != before
    bn = load_checkpoint(ck).model.layers[1]
    assert not np.array_equal(bn.running_mean, np.zeros(16, np.float32))
    m = re.search(r"test accuracy \(mnist test split, 500 examples\): ([\d.]+)% before, "
                  r"([\d.]+)% after", out)  # fmt: skip
    assert m is not None, out
    assert all(0 <= float(v) <= 100 for v in m.groups())


def test_a_net_without_bn_is_said_in_words_and_nothing_is_written(tmp_path, capsys):
    ck = tmp_path / "a.npz"
    save_checkpoint(ck, Sequential([Dense(784, 10, seed=0)]))
    assert main(["recalibrate", str(ck), *SMALL, "--out", str(tmp_path / "b.npz")]) == 0
    out = capsys.readouterr().out
    assert "has no BatchNorm layer" in out and "no file written" in out
    assert not (tmp_path / "b.npz").exists()


def test_tilde_and_variables_are_expanded_in_path_options(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BNLAB_TEST_OUT", str(tmp_path / "outs"))
    (tmp_path / "outs").mkdir()
    _bn_checkpoint(tmp_path / "a.npz")
    rc = main(["recalibrate", "~/a.npz", *SMALL, "--out", "${BNLAB_TEST_OUT}/b.npz"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "outs" / "b.npz").is_file()


def test_expand_paths_leaves_other_values_alone(monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.delenv("BNLAB_UNSET_VAR", raising=False)
    ns = argparse.Namespace(out="~/r", globs=["~/a/*.npz", "b"], lr=0.5, name="$BNLAB_UNSET_VAR")
    got = vars(expand_paths(ns))
    assert got == {"out": "/home/u/r", "globs": ["/home/u/a/*.npz", "b"], "lr": 0.5,
                   "name": "$BNLAB_UNSET_VAR"}  # fmt: skip
