"""Issue 23, high 6: optimizer and schedule hyperparameters are finite numbers of the right
kind, from a constructor and from a saved state (a checkpoint) alike; nothing changes on refusal."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bnlab.deploy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bnlab.layers import BatchNorm, Dense, Sequential
from bnlab.optim import SGD, Adam, ExponentialDecay, RMSprop, StepDecay

P = {"w": np.ones(3, np.float32)}
G = {"w": np.zeros(3, np.float32)}


@pytest.mark.parametrize(
    "make",
    [
        lambda: SGD(P, G, lr=math.inf),
        lambda: SGD(P, G, lr=math.nan),
        lambda: SGD(P, G, lr=0.1, momentum=math.nan),
        lambda: SGD(P, G, lr=0.1, momentum=0.9, nesterov="yes"),
        lambda: SGD(P, G, lr="0.1"),
        lambda: RMSprop(P, G, eps=math.inf),
        lambda: RMSprop(P, G, decay=-1.0),
        lambda: Adam(P, G, beta1=math.nan),
        lambda: Adam(P, G, eps=-1e-8),
        lambda: StepDecay(math.inf, 10),
        lambda: StepDecay(0.1, 2.5),
        lambda: ExponentialDecay(0.1, math.nan, 10),
        lambda: ExponentialDecay(0.1, 0.5, 10, staircase=1),
    ],
)
def test_bad_hyperparameters_are_refused(make):
    with pytest.raises((TypeError, ValueError), match=r"must be"):
        make()


def _saved(tmp_path, opt_cls, **kw):
    model = Sequential([Dense(4, 5, seed=0), BatchNorm(5)])
    opt = opt_cls.from_model(model, **kw)
    model.forward(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))
    model.backward(np.ones((8, 5), np.float32))
    opt.step()
    return model, opt


@pytest.mark.parametrize(
    "key,value",
    [("momentum", math.nan), ("lr", math.inf), ("nesterov", "yes"), ("lr", -0.1)],
)
def test_state_with_bad_hyperparameters_changes_nothing(tmp_path, key, value):
    model, opt = _saved(tmp_path, SGD, lr=0.1, momentum=0.9)
    state = opt.state_dict()
    state["config"] = {**state["config"], key: value}
    before = (opt.lr, opt.momentum, opt.nesterov, opt.iterations)
    slots = {k: v.copy() for k, v in opt.slots["momentum_buffer"].items()}
    with pytest.raises((TypeError, ValueError), match=key):
        opt.load_state_dict(state)
    assert (opt.lr, opt.momentum, opt.nesterov, opt.iterations) == before
    for k, v in slots.items():
        np.testing.assert_array_equal(opt.slots["momentum_buffer"][k], v)


@pytest.mark.parametrize("key,value", [("momentum", math.nan), ("lr", math.inf)])
def test_checkpoint_with_bad_hyperparameters_is_refused(tmp_path, key, value):
    model, opt = _saved(tmp_path, SGD, lr=0.1, momentum=0.9)
    path = save_checkpoint(tmp_path / "c.npz", model, opt)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta["optimizer"]["config"][key] = value  # a hand-edited file: "momentum": NaN
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(CheckpointError, match=key):
        load_checkpoint(path)
    opt.momentum = math.nan  # and such an optimizer is never written
    with pytest.raises(ValueError, match="could not be loaded back.*momentum"):
        save_checkpoint(tmp_path / "d.npz", model, opt)
    assert not (tmp_path / "d.npz").exists()
