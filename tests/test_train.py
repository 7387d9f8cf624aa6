"""The training loop and its callbacks (bnlab.train)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnlab.data import BatchIterator
from bnlab.layers import BatchNorm, Dense, Sequential, Sigmoid
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import L2, SGD
from bnlab.train import (
    ActivationMonitor,
    Callback,
    CheckpointCallback,
    EvalCallback,
    ProgressBar,
    Trainer,
    evaluate,
    fit,
    layer_input,
    percentiles,
)


def blobs(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs in 5 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centers = rng.normal(0, 3, size=(3, 5))
    x = (centers[y] + rng.normal(0, 0.5, size=(n, 5))).astype(np.float32)
    return x, y.astype(np.int64)


def mlp(bn: bool = False, seed: int = 0, reg: object = None) -> Sequential:
    layers = [Dense(5, 8, use_bias=not bn, seed=seed, kernel_regularizer=reg)]
    if bn:
        layers.append(BatchNorm(8))
    layers += [Sigmoid(), Dense(8, 3, seed=seed + 1)]
    return Sequential(layers)


# -- percentiles ---------------------------------------------------------------------------------


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200),
    st.lists(st.floats(0, 100), min_size=1, max_size=5),
)
def test_percentiles_match_numpy(values: list[float], qs: list[float]) -> None:
    got = percentiles(np.array(values), qs)
    want = np.percentile(np.array(values, dtype=np.float64), qs)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_percentiles_default_15_50_85(rng: np.random.Generator) -> None:
    v = rng.normal(size=10_001)
    np.testing.assert_array_equal(percentiles(v), np.percentile(v, [15, 50, 85]))
    assert percentiles(np.array([3.0]), (0, 50, 100)).tolist() == [3.0, 3.0, 3.0]


def test_percentiles_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentiles(np.array([]))
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentiles(np.arange(5.0), (15, 101))


# -- the loop ------------------------------------------------------------------------------------


def test_fit_is_the_documented_step() -> None:
    """fit() gives the same parameters as forward/loss/backward/step written by hand."""
    x, y = blobs()
    a, b = mlp(seed=3), mlp(seed=3)
    loss_fn = SoftmaxCrossEntropy()
    fit(a, loss_fn, SGD.from_model(a, lr=0.3), BatchIterator(x, y, 32, seed=7), steps=20)
    opt = SGD.from_model(b, lr=0.3)
    it = BatchIterator(x, y, 32, seed=7)
    done = 0
    while done < 20:
        for xb, yb in it:
            _, dz = loss_fn(b.forward(xb), yb)
            b.backward(dz)
            opt.step()
            done += 1
            if done == 20:
                break
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


def test_fit_learns_and_records_history() -> None:
    x, y = blobs()
    model = mlp()
    cb = EvalCallback(x, y, every=50, batch_size=64)
    state = fit(
        model,
        SoftmaxCrossEntropy(),
        SGD.from_model(model, lr=0.5),
        BatchIterator(x, y, 24, seed=0),
        steps=200,
        callbacks=[cb],
    )
    assert state.step == 200
    assert [row["step"] for row in state.history] == [0, 50, 100, 150, 200]
    assert math.isnan(state.history[0]["train_loss"])  # no training before step 0
    assert state.history[-1]["train_loss"] < state.history[1]["train_loss"]
    assert state.history[-1]["accuracy"] > 0.9
    assert state.logs["accuracy"] == state.history[-1]["accuracy"]


def test_trainer_cycles_epochs_and_stops_on_request() -> None:
    x, y = blobs(n=40)

    class StopAt(Callback):
        def on_step_end(self, state):  # type: ignore[no-untyped-def]
            state.stop = state.step == 7

    model = mlp()
    trainer = Trainer(
        model,
        SoftmaxCrossEntropy(),
        SGD.from_model(model, lr=0.1),
        BatchIterator(x, y, 20, drop_last=True, seed=0),
        callbacks=[StopAt()],
    )
    assert trainer.fit(100).step == 7  # 2 batches per epoch: several passes, then the stop


def test_penalty_is_counted_in_the_loss() -> None:
    x, y = blobs(n=32)
    reg = L2(0.1)
    model = mlp(reg=reg)
    w = model.layers[0].params["W"].copy()
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD.from_model(model, lr=1e-9), [(x, y)])
    loss = trainer.step()
    data_loss, _ = SoftmaxCrossEntropy()(mlp(reg=reg).forward(x), y)
    assert loss == pytest.approx(data_loss + reg.loss(w), rel=1e-5)


def test_non_finite_loss_raises_with_the_step() -> None:
    x, y = blobs(n=32)
    calls = []

    def loss_fn(z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
        calls.append(1)
        loss, dz = SoftmaxCrossEntropy()(z, t)
        return (math.nan if len(calls) == 3 else loss), dz

    model = mlp()
    with pytest.raises(FloatingPointError, match="at step 3"):
        fit(model, loss_fn, SGD.from_model(model, lr=0.1), [(x, y)], steps=10)


def test_bad_steps_and_empty_batches() -> None:
    model = mlp()
    opt = SGD.from_model(model, lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        fit(model, SoftmaxCrossEntropy(), opt, [], steps=-1)
    with pytest.raises(ValueError, match="no batch"):
        fit(model, SoftmaxCrossEntropy(), opt, [], steps=1)


# -- evaluation and the activation monitor --------------------------------------------------------


@pytest.mark.parametrize("mode", [True, False])
def test_evaluate_uses_eval_mode_and_restores_it(mode: bool) -> None:
    x, y = blobs(n=100)
    model = mlp(bn=True)
    fit(
        model,
        SoftmaxCrossEntropy(),
        SGD.from_model(model, lr=0.5),
        BatchIterator(x, y, 20, seed=0),
        steps=30,
    )
    model.train(mode)
    running = model.layers[1].running_mean.copy()
    res = evaluate(model, x, y, batch_size=7, loss_fn=SoftmaxCrossEntropy())
    assert model.training is mode and model.layers[1].training is mode
    np.testing.assert_array_equal(model.layers[1].running_mean, running)  # nothing updated
    model.eval()
    logits = model.forward(x)
    assert res["accuracy"] == np.mean(np.argmax(logits, 1) == y)
    assert res["loss"] == pytest.approx(SoftmaxCrossEntropy()(logits, y)[0], rel=1e-5)
    assert evaluate(model, x, y, batch_size=1000)["accuracy"] == res["accuracy"]


def test_evaluate_refuses_mismatched_sets() -> None:
    x, y = blobs(n=10)
    with pytest.raises(ValueError, match="10 examples but y has 9"):
        evaluate(mlp(), x, y[:9])


def test_layer_input_and_monitor_match_numpy() -> None:
    """The monitor records numpy's percentiles of the BN output computed by hand (eval mode)."""
    x, y = blobs()
    model = mlp(bn=True)
    mon = ActivationMonitor(x, layer_index=2, unit=5, every=10, batch_size=33)
    state = fit(
        model,
        SoftmaxCrossEntropy(),
        SGD.from_model(model, lr=0.5),
        BatchIterator(x, y, 24, seed=0),
        steps=10,
        callbacks=[mon],
    )
    assert model.training  # the monitor restored training mode
    bn = model.layers[1]
    h = x.astype(np.float64) @ model.layers[0].params["W"]
    want = (h - bn.running_mean) / np.sqrt(bn.running_var + bn.eps)
    want = want * bn.params["gamma"] + bn.params["beta"]
    np.testing.assert_allclose(layer_input(model, x, 2, batch_size=50), want, rtol=1e-4, atol=1e-5)
    got = [state.history[-1][k] for k in ("p15", "p50", "p85")]
    np.testing.assert_allclose(got, np.percentile(want[:, 5], [15, 50, 85]), rtol=1e-4, atol=1e-5)
    assert [row["step"] for row in state.history] == [0, 10]


def test_monitor_refuses_a_unit_out_of_range() -> None:
    x, _ = blobs(n=10)
    from bnlab.train import TrainState

    mon = ActivationMonitor(x, layer_index=2, unit=8, every=1)
    with pytest.raises(ValueError, match="unit 8 out of range"):
        mon.record(TrainState(model=mlp(), optimizer=None))


# -- progress and checkpoints --------------------------------------------------------------------


def test_progress_bar_shows_the_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = blobs(n=60)
    model = mlp()
    bar = ProgressBar(40)
    fit(
        model,
        SoftmaxCrossEntropy(),
        SGD.from_model(model, lr=0.5),
        BatchIterator(x, y, 20),
        steps=40,
        callbacks=[EvalCallback(x, y, every=20), bar],
    )
    err = capsys.readouterr().err
    assert "40/40" in err and "accuracy=" in err
    assert bar.bar is None  # closed


def test_checkpoint_callback_saves_the_final_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bnlab.deploy.checkpoint import load_checkpoint

    x, y = blobs(n=60)
    model = mlp()
    path = tmp_path / "ckpt.npz"
    fit(
        model,
        SoftmaxCrossEntropy(),
        SGD.from_model(model, lr=0.5),
        BatchIterator(x, y, 20),
        steps=25,
        callbacks=[CheckpointCallback(path, every=10)],
    )
    ck = load_checkpoint(path)
    assert ck.extra["step"] == 25
    for k, v in model.params.items():
        np.testing.assert_array_equal(ck.model.params[k], v)
