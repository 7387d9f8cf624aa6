"""Residual blocks: finite differences, a PyTorch twin, the container contract (flat views, state,
rollback, Trainer) and He et al.'s option A shortcut."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnlab.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    GlobalAveragePool2D,
    GroupNorm,
    ReLU,
    Residual,
    Sequential,
    ZeroPadShortcut,
    layer_from_config,
)
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import SGD
from bnlab.train import Trainer

RNG = np.random.default_rng(11)


def conv_block(shortcut: str) -> Residual:
    branch = [Conv2D(3, 4, 3, stride=2, padding=1, seed=1), BatchNorm(4), ReLU()]
    branch += [Conv2D(4, 4, 3, padding=1, seed=2), GroupNorm(2, 4)]
    short = (
        ZeroPadShortcut(4, 2)
        if shortcut == "A"
        else [Conv2D(3, 4, 1, stride=2, use_bias=False, seed=3), BatchNorm(4)]
    )
    return Residual(branch, short)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_gradients_by_finite_differences(shortcut, gradcheck):
    gradcheck(conv_block(shortcut), RNG.normal(size=(3, 5, 5, 3)), np.random.default_rng(0), k=12)


def test_identity_shortcut_against_a_torch_twin():
    block = Residual([Dense(5, 5, seed=0), BatchNorm(5), ReLU(), Dense(5, 5, seed=1)]).astype(
        np.float64
    )
    lin1, bn, lin2 = torch.nn.Linear(5, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 5)
    twin = torch.nn.Sequential(lin1, bn, torch.nn.ReLU(), lin2).double()
    with torch.no_grad():
        for lin, i in ((lin1, "0.0"), (lin2, "0.3")):
            lin.weight.copy_(torch.tensor(block.params[f"{i}.W"].T))
            lin.bias.copy_(torch.tensor(block.params[f"{i}.b"]))
    x, dy = RNG.normal(size=(6, 5)), RNG.normal(size=(6, 5))
    xt = torch.tensor(x, requires_grad=True)
    yt = twin(xt) + xt
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(block.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(block.backward(dy), xt.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(block.grads["0.0.W"], lin1.weight.grad.numpy().T, atol=1e-11)
    np.testing.assert_allclose(block.grads["0.1.gamma"], bn.weight.grad.numpy(), atol=1e-11)
    np.testing.assert_allclose(block.buffers["0.1.running_var"], bn.running_var.numpy(), atol=1e-13)


def test_zero_pad_shortcut_is_option_a():
    x = RNG.normal(size=(2, 5, 6, 3)).astype(np.float32)
    sc = ZeroPadShortcut(5, 2)
    y = sc.forward(x)
    assert y.shape == (2, 3, 3, 5)
    assert np.array_equal(y[..., :3], x[:, ::2, ::2]) and not y[..., 3:].any()
    dy = RNG.normal(size=y.shape).astype(np.float32)
    dx = sc.backward(dy)  # the transpose of the linear map above
    assert float((dx * x).sum()) == pytest.approx(float((dy * y).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="C <= 5"):
        sc.forward(np.zeros((1, 4, 4, 6), np.float32))


def test_container_views_state_config_and_zero_init():
    block = conv_block("B")
    assert sorted(block.params) == sorted(block.grads)
    assert "1.1.running_mean" in block.buffers and "0.4.gamma" in block.params
    assert [type(m).__name__ for m in block.modules()][:3] == ["Residual", "Sequential", "Conv2D"]
    block.eval()
    assert not any(m.training for m in block.modules())
    again = layer_from_config("Residual", block.get_config())
    again.load_state_dict(block.state_dict())
    x = RNG.normal(size=(2, 5, 5, 3)).astype(np.float32)
    again.eval()
    assert np.array_equal(again.forward(x), block.forward(x))
    zero = Residual(
        [Dense(3, 3), BatchNorm(3), ReLU(), Dense(3, 3), BatchNorm(3)], zero_init_last_gamma=True
    )
    assert not zero.params["0.4.gamma"].any() and zero.params["0.1.gamma"].all()
    assert np.array_equal(zero.eval().forward(np.eye(3, dtype=np.float32)), np.eye(3))
    with pytest.raises(ValueError, match="branch gives"):
        Sequential([Residual([Dense(3, 4)])]).forward(np.ones((2, 3), np.float32))


def test_a_failed_forward_rolls_back_statistics_inside_blocks():
    model = Sequential([Residual([Dense(3, 3, seed=0), BatchNorm(3)]), Dense(3, 2), BatchNorm(2)])
    x = RNG.normal(size=(4, 3)).astype(np.float32)
    before = {k: v.copy() for k, v in model.buffers.items()}
    model.layers[1].params["W"][0, 0] = np.inf  # the last BN refuses the batch
    with pytest.raises(FloatingPointError):
        model.forward(x)
    assert all(np.array_equal(model.buffers[k], v) for k, v in before.items())


def test_trainer_and_optimizer_update_every_layer_of_a_residual_net():
    first = Residual([Conv2D(3, 3, 3, padding=1, seed=4), BatchNorm(3)])
    head = [GroupNorm(1, 4), ReLU(), GlobalAveragePool2D(), Dense(4, 3, seed=5)]
    net = Sequential([Conv2D(3, 3, 3, padding=1, seed=0), first, conv_block("B"), *head])
    before = {k: v.copy() for k, v in net.params.items()}
    x = RNG.normal(size=(8, 6, 6, 3)).astype(np.float32)
    y = RNG.integers(0, 3, size=8)
    Trainer(net, SoftmaxCrossEntropy(), SGD.from_model(net, lr=0.1), [(x, y)]).fit(1)
    changed = [k for k, v in net.params.items() if not np.array_equal(v, before[k])]
    assert sorted(changed) == sorted(before)  # every parameter, inside blocks too, was trained
