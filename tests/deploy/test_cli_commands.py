"""`bnlab recalibrate` and `bnlab export`, run in-process through bnlab.cli.main."""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bnlab.cli import main
from bnlab.data import load_mnist
from bnlab.deploy import (
    load_checkpoint,
    recompute_population_stats,
    save_checkpoint,
    shuffled_batches,
)
from bnlab.layers import BatchNorm, Dense, ReLU, Sequential


def _mlp():
    return Sequential([Dense(784, 16, seed=0), BatchNorm(16), ReLU(), Dense(16, 10, seed=1)])


def test_recalibrate_mnist_matches_library(tmp_path, capsys):
    model = _mlp()
    save_checkpoint(tmp_path / "a.npz", model, extra={"step": 3})
    rc = main(["recalibrate", str(tmp_path / "a.npz"), "--data", "mnist", "--limit", "300",
               "--out", str(tmp_path / "b.npz"), "--batch-size", "60"])  # fmt: skip
    assert rc == 0 and "5 batches" in capsys.readouterr().out
    (x, _), _ = load_mnist()
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    recompute_population_stats(model, shuffled_batches(x, 60, limit=300, seed=0))
    new = load_checkpoint(tmp_path / "b.npz")
    np.testing.assert_array_equal(new.model.layers[1].running_mean, model.layers[1].running_mean)
    np.testing.assert_array_equal(new.model.layers[1].running_var, model.layers[1].running_var)
    assert new.extra["step"] == 3 and new.extra["recalibrated"]["batches"] == 5
    old = load_checkpoint(tmp_path / "a.npz")  # the input checkpoint is untouched
    np.testing.assert_array_equal(old.model.layers[1].running_mean, np.zeros(16, np.float32))


def test_recalibrate_npy_drops_last_partial_batch(tmp_path, rng):
    model = Sequential([Dense(5, 3, seed=0), BatchNorm(3)])
    save_checkpoint(tmp_path / "a.npz", model)
    x = rng.normal(size=(25, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ["recalibrate", str(tmp_path / "a.npz"), "--data", str(tmp_path / "x.npy")]
    assert main([*args, "--out", str(tmp_path / "b.npz"), "--batch-size", "10"]) == 0
    batches = list(shuffled_batches(x, 10, seed=0))
    assert [len(b) for b in batches] == [10, 10]
    recompute_population_stats(model, batches)
    got = load_checkpoint(tmp_path / "b.npz").model.layers[1]
    np.testing.assert_array_equal(got.running_var, model.layers[1].running_var)


@pytest.mark.parametrize("fold", [False, True])
def test_export(tmp_path, rng, fold):
    model = _mlp()
    model.forward(rng.random((32, 784), dtype=np.float32))  # move the running statistics
    save_checkpoint(tmp_path / "a.npz", model)
    argv = ["export", str(tmp_path / "a.npz"), str(tmp_path / "m.onnx")] + (
        ["--fold"] if fold else []
    )
    assert main(argv) == 0
    x = rng.random((7, 784), dtype=np.float32)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x})[0]
    assert np.max(np.abs(y - model.eval().forward(x))) < 1e-5


def test_errors_exit_2(tmp_path, capsys):
    from bnlab.layers import Conv2D

    save_checkpoint(tmp_path / "c.npz", Sequential([Conv2D(1, 2, 3), BatchNorm(2)]))
    assert main(["export", str(tmp_path / "c.npz"), str(tmp_path / "c.onnx")]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "c.npz"), str(tmp_path / "c.onnx"),
                 "--input-shape", "6,6,1"]) == 0  # fmt: skip
    argv = ["recalibrate", str(tmp_path / "c.npz"), "--data", "x.csv", "--out", "o.npz"]
    assert main(argv) == 2
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


# -- hostile input (issue 15): one-line errors, nothing written, no temporary left -----------
def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


def test_export_of_a_json_file_says_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"experiment": "mnist-sigmoid"}')
    argv = ["export", str(tmp_path / "config.json"), str(tmp_path / "x.onnx")]
    assert main(argv) == 2
    err = _one_line_error(capsys, "not a bnlab checkpoint (.npz)")
    assert "allow_pickle" not in err and "truncated" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_export_of_a_crafted_checkpoint_is_one_line(tmp_path, capsys):
    import json

    path = save_checkpoint(tmp_path / "c.npz", _mlp())
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta["model_config"]["layers"][0]["config"]["in_features"] = "784"
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)
    assert main(["export", str(path), str(tmp_path / "x.onnx")]) == 2
    _one_line_error(capsys, "in_features must be a positive int")


def _recal(tmp_path, x, out):
    save_checkpoint(tmp_path / "a.npz", Sequential([Dense(5, 3, seed=0), BatchNorm(3)]))
    np.save(tmp_path / "x.npy", x)
    return ["recalibrate", str(tmp_path / "a.npz"), "--data", str(tmp_path / "x.npy"),
            "--out", str(out), "--batch-size", "10"]  # fmt: skip


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_recalibrate_refuses_non_finite_data(tmp_path, rng, capsys, bad):
    x = rng.normal(size=(30, 5)).astype(np.float32)
    x[17, 2] = bad
    assert main(_recal(tmp_path, x, tmp_path / "b.npz")) == 2
    _one_line_error(capsys, "--data", "NaN or Inf", "row 17")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "x.npy"]


def test_recalibrate_refuses_unreadable_data(tmp_path, rng, capsys):
    argv = _recal(tmp_path, rng.normal(size=(30, 5)).astype(np.float32), tmp_path / "b.npz")
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
    assert main(argv) == 2
    _one_line_error(capsys, "--data", "cannot be read")


def test_recalibrate_to_a_directory_is_one_line_and_writes_nothing(tmp_path, rng, capsys):
    (tmp_path / "out").mkdir()
    argv = _recal(tmp_path, rng.normal(size=(30, 5)).astype(np.float32), tmp_path / "out")
    assert main(argv) == 2
    _one_line_error(capsys, "is a directory")
    assert list((tmp_path / "out").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "out", "x.npy"]


@pytest.mark.parametrize("where", ["write", "replace"])
def test_recalibrate_on_a_full_or_read_only_disk_leaves_no_temporary(
    tmp_path, rng, capsys, monkeypatch, where
):
    import errno
    import os

    from bnlab.deploy import checkpoint as ckpt_mod

    out = tmp_path / "b.npz"
    out.write_bytes(b"PK\x03\x04previous")  # an earlier checkpoint (a zip), replaceable
    argv = _recal(tmp_path, rng.normal(size=(30, 5)).astype(np.float32), out)
    if where == "write":

        def full(f, arrays):
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ckpt_mod, "_write_npz", full)
    else:

        def read_only(src, dst):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(os, "replace", read_only)
    assert main(argv) == 1
    _one_line_error(capsys, "No space left" if where == "write" else "Read-only")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz", "x.npy"]
    assert out.read_bytes() == b"PK\x03\x04previous"


def test_recalibrate_limit_below_batch_size(tmp_path, rng, capsys):
    argv = _recal(tmp_path, rng.normal(size=(30, 5)).astype(np.float32), tmp_path / "b.npz")
    assert main([*argv, "--limit", "-5"]) == 2
    _one_line_error(capsys, "-5", "fewer than one batch")


# -- moved from tests/test_cli.py: missing extra, directory outputs, NaN data, CIFAR folder ---
def _cli(*argv: str) -> int:
    return main(list(argv))


def test_export_without_onnx_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnlab.deploy import save_checkpoint
    from bnlab.layers import BatchNorm, Dense, Sequential

    save_checkpoint(tmp_path / "m.npz", Sequential([Dense(4, 3, seed=0), BatchNorm(3)]))
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert _cli("export", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")) == 1
    err = capsys.readouterr().err
    assert "pip install onnx onnxruntime" in err and "pip install -e '.[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()


def test_output_paths_that_are_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnlab.deploy import save_checkpoint
    from bnlab.layers import BatchNorm, Dense, Sequential

    ck = tmp_path / "m.npz"
    save_checkpoint(ck, Sequential([Dense(4, 3, seed=0), BatchNorm(3)]))
    before = ck.read_bytes()
    (tmp_path / "d").mkdir()
    assert _cli("export", str(ck), str(tmp_path / "d")) == 2
    assert "is a directory" in capsys.readouterr().err
    np_file = tmp_path / "x.npy"
    import numpy as np

    np.save(np_file, np.ones((8, 4), np.float32))
    argv = ["recalibrate", str(ck), "--data", str(np_file), "--batch-size", "4"]
    assert _cli(*argv, "--out", str(tmp_path / "d")) == 2
    assert "is a directory" in capsys.readouterr().err
    assert _cli(*argv) == 2  # neither --out nor --in-place
    assert "--in-place" in capsys.readouterr().err
    assert ck.read_bytes() == before and list((tmp_path / "d").iterdir()) == []


def test_recalibrate_refuses_nan_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from bnlab.deploy import save_checkpoint
    from bnlab.layers import BatchNorm, Dense, Sequential

    ck = tmp_path / "m.npz"
    save_checkpoint(ck, Sequential([Dense(4, 3, seed=0), BatchNorm(3)]))
    before = ck.read_bytes()
    x = np.ones((8, 4), np.float32)
    x[3, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    assert _cli("recalibrate", str(ck), "--data", str(tmp_path / "x.npy"), "--in-place") == 2
    assert "NaN or Inf in 1 of 8 examples" in capsys.readouterr().err
    assert ck.read_bytes() == before


def test_recalibrate_in_place_from_a_cifar_folder(tmp_path: Path) -> None:
    import pickle

    import numpy as np

    from bnlab.deploy import (
        load_checkpoint,
        recompute_population_stats,
        save_checkpoint,
        shuffled_batches,
    )
    from bnlab.layers import BatchNorm, Conv2D, Sequential

    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    data = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data[name] = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
        batch = {b"data": data[name], b"labels": rng.integers(0, 10, size=6).tolist()}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    model = Sequential([Conv2D(3, 2, 3, seed=0), BatchNorm(2)])
    ck = tmp_path / "m.npz"
    save_checkpoint(ck, model)
    assert _cli("recalibrate", str(ck), "--data", str(d), "--batch-size", "5", "--in-place") == 0
    from bnlab.data import load_cifar10

    (x, _), _ = load_cifar10(d)
    recompute_population_stats(model, shuffled_batches(x.astype(np.float32) / 255, 5, seed=0))
    new = load_checkpoint(ck)
    np.testing.assert_array_equal(new.model.layers[1].running_var, model.layers[1].running_var)
    assert new.extra["recalibrated"]["examples"] == 30
    assert not list(tmp_path.glob(".m.npz.*.tmp"))  # the atomic write left no temporary
