"""The training loop and its callbacks (bnlab.train)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnlab.data import BatchIterator
from bnlab.layers import LAYER_REGISTRY, BatchNorm, Dense, Sequential, Sigmoid
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import L2, SGD
from bnlab.train import (
    Callback,
    CheckpointCallback,
    EvalCallback,
    ProgressBar,
    Trainer,
    evaluate,
    fit,
)


@pytest.fixture(autouse=True)
def _registry_restored():
    """The classes some tests define register themselves in LAYER_REGISTRY: take them out."""
    saved = dict(LAYER_REGISTRY)
    yield
    LAYER_REGISTRY.clear()
    LAYER_REGISTRY.update(saved)


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


def test_non_finite_loss_raises_with_the_step_before_backward() -> None:
    """In one process the loss is refused before backward: the Trainer's message, not the
    one BatchNorm would give for a NaN dy, and the parameters of step 2 are kept."""
    x, y = blobs(n=32)
    calls = []

    def loss_fn(z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
        calls.append(1)
        loss, dz = SoftmaxCrossEntropy()(z, t)
        return (math.nan, dz * math.nan) if len(calls) == 3 else (loss, dz)

    model = mlp(bn=True)
    opt = SGD.from_model(model, lr=0.1)
    kept = {}

    class Keep(Callback):
        def on_step_end(self, state):  # type: ignore[no-untyped-def]
            kept.update({k: v.copy() for k, v in model.params.items()})

    with pytest.raises(FloatingPointError, match="Trainer: the loss is nan at step 3; the run"):
        fit(model, loss_fn, opt, [(x, y)], steps=10, callbacks=[Keep()])
    assert opt.iterations == 2
    assert all(np.array_equal(v, kept[k]) for k, v in model.params.items())


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
    from bnlab.deploy.checkpoint import load_checkpoint, save_checkpoint

    x, y = blobs(n=60)
    model = mlp()
    path = tmp_path / "ckpt.npz"
    saved: list[int] = []

    def write(*args):  # type: ignore[no-untyped-def]
        saved.append(args[3]["step"])
        return save_checkpoint(*args)

    fit(
        model,
        SoftmaxCrossEntropy(),
        SGD.from_model(model, lr=0.5),
        BatchIterator(x, y, 20),
        steps=25,
        callbacks=[CheckpointCallback(path, every=10, write=write)],
    )
    assert saved == [10, 20, 25]
    ck = load_checkpoint(path)
    assert ck.extra["step"] == 25
    for k, v in model.params.items():
        np.testing.assert_array_equal(ck.model.params[k], v)


def test_checkpoint_callback_refuses_bad_arguments(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="write must be a function"):
        CheckpointCallback(tmp_path / "c.npz", every=1, write="save")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every must be >= 1"):
        CheckpointCallback(tmp_path / "c.npz", every=0, write=print)
    with pytest.raises(TypeError, match="iterator must have a state_dict"):
        CheckpointCallback(tmp_path / "c.npz", every=1, write=print, iterator=[1, 2])


# -- the layer protocol --------------------------------------------------------------------------


def test_trainer_asks_the_model_for_no_input_gradient() -> None:
    """Trainer calls backward(dy, need_input_grad=False); Sequential passes it to the first
    layer with parameters, which then returns no dx (Dense skips dy W^T)."""
    seen: list[bool] = []

    class Recorder(Dense):
        def backward(self, dy, *, need_input_grad=True):  # type: ignore[no-untyped-def]
            seen.append(need_input_grad)
            return super().backward(dy, need_input_grad=need_input_grad)

    x, y = blobs(n=48)
    model = Sequential([Recorder(5, 8, seed=0), Sigmoid(), Recorder(8, 3, seed=1)])
    Trainer(model, SoftmaxCrossEntropy(), SGD.from_model(model, lr=0.1), [(x, y)]).fit(2)
    assert seen == [True, False, True, False]  # last layer first, then the first layer
    assert model.backward(np.ones((48, 3), np.float32)).shape == (48, 5)
    assert seen[-2:] == [True, True]


def test_trainer_refuses_what_is_not_a_layer() -> None:
    class Duck:
        def forward(self, x):  # type: ignore[no-untyped-def]
            return x

        def backward(self, dy, *, need_input_grad=True):  # type: ignore[no-untyped-def]
            return dy

    with pytest.raises(TypeError, match=r"Trainer: model must be a bnlab.layers.Layer.*Duck"):
        Trainer(Duck(), SoftmaxCrossEntropy(), SGD({}, {}, lr=0.1), [])  # type: ignore[arg-type]
