"""`bnlab recalibrate` and `bnlab export`, run in-process through bnlab.cli.main."""

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
