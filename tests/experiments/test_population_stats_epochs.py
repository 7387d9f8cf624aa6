"""population-stats-epochs on checkpoints of a small MNIST BN MLP written by the test."""

import copy
import json

import numpy as np
import pytest

from bnlab.cli import main
from bnlab.data import BatchIterator, load_mnist
from bnlab.deploy import recompute_population_stats, save_checkpoint
from bnlab.layers import BatchNorm, Dense, Sequential, Sigmoid
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import SGD

MOMENTUM = 0.001  # slow enough for the moving averages to lag visibly


def _checkpoints(tmp_path):
    (x, y), _ = load_mnist()
    x = x[:3000].reshape(-1, 784).astype(np.float32) / 255
    model = Sequential(
        [Dense(784, 32, use_bias=False, seed=0), BatchNorm(32, momentum=MOMENTUM), Sigmoid()]
        + [Dense(32, 10, seed=1)]
    )
    opt, loss_fn = SGD.from_model(model, lr=0.5), SoftmaxCrossEntropy()
    batches = BatchIterator(x, y[:3000], 32, seed=0).batches()
    snapshots = []
    for epoch in (1, 2):
        for _ in range(50):
            xb, yb = next(batches)
            model.backward(loss_fn(model.forward(xb), yb)[1])
            opt.step()
        save_checkpoint(tmp_path / f"net_epoch_{epoch:03d}.npz", model, extra={"epoch": epoch})
        snapshots.append(copy.deepcopy(model))
    return snapshots


def test_moving_and_population_accuracies_match_a_direct_computation(tmp_path) -> None:
    snapshots = _checkpoints(tmp_path)
    out = tmp_path / "run"
    main(["run", "population-stats-epochs", "--checkpoints", str(tmp_path / "net_epoch_*.npz"),
          "--recal-examples", "640", "--out", str(out)])  # fmt: skip
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert [r["epoch"] for r in rows] == [1, 2]
    (xtr, _), (xte, yte) = load_mnist()
    drawn = np.random.default_rng(0).permutation(len(xtr))[:640]  # --seed 0: a random 640
    xtr = xtr[drawn].reshape(-1, 784).astype(np.float32) / 255
    xte = xte.reshape(-1, 784).astype(np.float32) / 255
    for row, model in zip(rows, snapshots, strict=True):
        assert row["moving_acc"] == pytest.approx(np.mean(model.eval()(xte).argmax(1) == yte))
        recompute_population_stats(model, (xtr[i : i + 32] for i in range(0, 640, 32)))
        assert row["population_acc"] == pytest.approx(np.mean(model.eval()(xte).argmax(1) == yte))
    # a slow moving average (momentum 0.001: ~10% of the way after 100 steps) lags the weights;
    # measured 0.8185 moving vs 0.8576 population at the second checkpoint
    assert rows[1]["population_acc"] > rows[1]["moving_acc"] + 0.01
    assert (out / "report.md").is_file() and (out / "metrics.csv").is_file()


def test_no_matching_checkpoint_is_a_clear_error(tmp_path, capsys) -> None:
    rc = main(["run", "population-stats-epochs", "--checkpoints", str(tmp_path / "*.npz"),
               "--out", str(tmp_path / "run")])  # fmt: skip
    assert rc != 0
    assert "no checkpoint matches" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _old_run(root):
    out = root / "old"
    out.mkdir()
    names = ("config.json", "metrics.json", "report.md")
    for name in names:
        (out / name).write_bytes(f"old {name}".encode())
    (out / ".bnlab-manifest.json").write_text(json.dumps({"files": names}))  # a run's files
    return out


def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_a_bad_checkpoint_stops_the_run_before_its_directory_is_touched(tmp_path, capsys):
    """Every checkpoint is read, and its model checked against the data, first: a damaged
    file or a model for other images is a one-line error, and --force leaves the old run."""
    good = Sequential([Dense(784, 4, use_bias=False, seed=0), BatchNorm(4), Dense(4, 10, seed=1)])
    save_checkpoint(tmp_path / "a_epoch_001.npz", good, extra={"epoch": 1})
    (tmp_path / "a_epoch_002.npz").write_bytes(b"not a checkpoint")
    other = Sequential([Dense(3072, 4, use_bias=False, seed=0), BatchNorm(4), Dense(4, 10)])
    save_checkpoint(tmp_path / "b_epoch_001.npz", other, extra={"epoch": 1})
    old = _old_run(tmp_path)
    before = _snapshot(old)
    for pattern, words in [("a_*.npz", "a_epoch_002.npz"), ("b_*.npz", "--data mnist")]:
        argv = ["run", "population-stats-epochs", "--checkpoints", str(tmp_path / pattern)]
        assert main([*argv, "--no-progress", "--out", str(old), "--force"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bnlab: error: ") and words in err and err.count("\n") == 1, err
        assert _snapshot(old) == before
