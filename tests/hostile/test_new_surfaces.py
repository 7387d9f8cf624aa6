"""Issue 23, the fresh attack on the surfaces added since: GroupNorm/LayerNorm arguments, the
(height, width) pairs of Conv2D and the pools, AvgPool2D's sums, Residual's flag, lazy
builds, bnlab.save on hostile paths, and the batch-size options checked before the data."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import bnlab
from bnlab import cli
from bnlab import layers as L
from bnlab._atomic import atomic_write

X = np.random.default_rng(0).normal(size=(2, 4, 4, 4)).astype(np.float32)


@pytest.mark.parametrize(
    "build",
    [
        lambda: L.GroupNorm(2, 4, affine="no"),
        lambda: L.LayerNorm(4, elementwise_affine="x"),
        lambda: L.LayerNorm(4, bias=1),
        lambda: L.Residual([L.Dense(4, 4)], zero_init_last_gamma="yes"),
    ],
)
def test_flags_must_be_bools(build) -> None:
    with pytest.raises(TypeError, match="must be True or False"):
        build()


@pytest.mark.parametrize("shape", ["12", "4", (4.7,), [4, 2.0], (True,), 1.5, ()])
def test_layernorm_shape_is_ints_not_a_string_read_char_by_char(shape) -> None:
    with pytest.raises(ValueError, match="normalized_shape must be a positive int"):
        L.LayerNorm(shape)


@pytest.mark.parametrize("channels", [4.5, "4", True])
def test_groupnorm_channels_must_be_an_int(channels) -> None:
    with pytest.raises(ValueError, match="num_channels must be a positive int"):
        L.GroupNorm(2, channels)


def test_lazy_groupnorm_on_a_0d_input_names_the_shape() -> None:
    with pytest.raises(ValueError, match=r"GroupNorm\(2, None\): built from input shape \(\)"):
        L.GroupNorm(2).forward(np.float32(1))


@pytest.mark.parametrize("value", [True, "2", 2.5, (2, True), np.array([2, 2])])
def test_sizes_are_ints_not_bools_strings_or_floats(value) -> None:
    for build in (lambda: L.AvgPool2D(value), lambda: L.MaxPool2D(value),
                  lambda: L.Conv2D(3, 4, value)):  # fmt: skip
        with pytest.raises(ValueError, match="must be a positive int or a pair of them"):
            build()


def test_avgpool_mean_of_huge_finite_values_is_finite() -> None:
    x = np.full((1, 2, 2, 1), 3e38, np.float32)
    pool = L.AvgPool2D(2)
    y = pool.forward(x)  # torch 2.13's float32 avg_pool2d gives inf here (float32 sums)
    assert y.dtype == np.float32 and y.item() == np.float32(3e38)
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype(np.float32)
    ref = torch.nn.functional.avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), 2)
    np.testing.assert_allclose(L.AvgPool2D(2).forward(x), ref.permute(0, 2, 3, 1), rtol=1e-6)
    dx = pool.backward(np.ones((1, 1, 1, 1), np.float32))
    assert dx.dtype == np.float32 and (dx == 0.25).all()  # dy's dtype (was float64)


@pytest.mark.parametrize("shape", [(16, 0), (16, -5), (16, 2.5), "ab"])
def test_a_lazy_build_from_a_bad_shape_names_it(shape) -> None:
    for layer in (L.Dense(4), L.Conv2D(4, 3)):
        with pytest.raises(ValueError, match="whose last axis .* must be a positive int"):
            layer.build(shape)
        assert not layer.params


def test_a_save_never_replaces_a_device_or_fifo_through_a_link(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # stands for /dev/zero: a save once renamed a regular file over it
    (tmp_path / "link.npz").symlink_to(fifo)
    net = L.Sequential([L.Dense(3, 2, seed=0)])
    for target in (fifo, tmp_path / "link.npz"):
        with pytest.raises(FileExistsError, match="not a regular file") as info:
            bnlab.save(net, target)
        assert info.value.errno == errno.EEXIST
        with pytest.raises(FileExistsError, match="not a regular file"):
            atomic_write(target, lambda f: f.write(b"x"))
    assert fifo.is_fifo() and (tmp_path / "link.npz").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.npz"]


def test_a_save_does_not_replace_a_users_file_of_another_kind(tmp_path: Path) -> None:
    mine = tmp_path / "thesis.npz"
    mine.write_bytes(b"my thesis")
    (tmp_path / "link.npz").symlink_to(mine)
    net = L.Sequential([L.Dense(3, 2, seed=0)])
    for target in (mine, tmp_path / "link.npz"):
        with pytest.raises(FileExistsError, match=r"not a file of this kind .*b'my t'"):
            bnlab.save(net, target)
    assert mine.read_bytes() == b"my thesis"
    bnlab.save(net, tmp_path / "m.npz")
    bnlab.save(net, tmp_path / "m.npz")  # its own kind: replaced
    (tmp_path / "empty.npz").write_bytes(b"")
    bnlab.save(net, tmp_path / "empty.npz")  # an empty file holds nothing to lose
    assert bnlab.load(tmp_path / "empty.npz").get_config() == net.get_config()


@pytest.mark.parametrize("groups", ["3", "24", "48"])
def test_batch_size_refuses_gn_groups_that_do_not_divide_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], groups: str
) -> None:
    out = tmp_path / "r"
    argv = ["run", "batch-size", "--gn-groups", groups, "--data", str(tmp_path / "none")]
    assert cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--gn-groups {groups} does not divide" in err and err.count("\n") == 1
    assert not out.exists()


def test_batch_size_checks_the_reference_before_loading_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    argv = ["run", "batch-size", "--reference", str(tmp_path / "no-run")]
    assert cli.main([*argv, "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "--reference" in capsys.readouterr().err and not out.exists()
