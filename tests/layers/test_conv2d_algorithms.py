"""Conv2D(algorithm=...): each algorithm against PyTorch, finite differences, the choice "auto"
makes, configs and checkpoints, and bit-identical training runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnlab.deploy.checkpoint import load_checkpoint, save_checkpoint
from bnlab.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, layer_from_config
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import SGD

ALGORITHMS = ["im2col", "winograd", "auto"]


def torch_reference(layer: Conv2D, x: np.ndarray, dy: np.ndarray):  # noqa: ANN201
    """y, dx, dW, db from torch in x's dtype, NHWC / HWIO."""
    pt, pb, pl, pr = layer.pads(x.shape[1], x.shape[2])
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    W = torch.from_numpy(layer.params["W"].transpose(3, 2, 0, 1).copy()).requires_grad_()
    b = torch.from_numpy(layer.params["b"].copy()).requires_grad_()
    y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), W, b, stride=layer.stride)
    y.backward(torch.from_numpy(dy.transpose(0, 3, 1, 2).copy()))
    assert xt.grad is not None and W.grad is not None and b.grad is not None
    return (
        y.detach().numpy().transpose(0, 2, 3, 1),
        xt.grad.numpy().transpose(0, 2, 3, 1),
        W.grad.numpy().transpose(2, 3, 1, 0),
        b.grad.numpy(),
    )


CASES = [  # (N, H, W, cin, cout, kernel, stride, padding)
    (4, 32, 32, 3, 8, 3, 1, "same"),  # conv1's shape (fewer images, fewer filters)
    (4, 15, 15, 32, 16, 3, 1, "valid"),  # conv4-like, odd H and W
    (1, 1, 1, 16, 4, 3, 1, "same"),  # batch 1, a 1x1 image
    (2, 6, 9, 1, 1, 3, 1, 2),  # C = 1, int padding
    (3, 8, 8, 16, 5, 3, 2, "same"),  # stride 2: winograd falls back to im2col
    (2, 7, 7, 16, 3, 5, 1, "same"),  # 5x5: likewise
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", CASES)
def test_each_algorithm_matches_torch(rng, case, algorithm, dtype):
    n, h, w, cin, cout, k, s, p = case
    layer = Conv2D(cin, cout, k, stride=s, padding=p, algorithm=algorithm, seed=0).astype(dtype)
    layer.params["b"][...] = rng.standard_normal(cout)
    x = rng.standard_normal((n, h, w, cin)).astype(dtype)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    ours = (y, dx, layer.grads["W"], layer.grads["b"])
    bound = 1e-5 if dtype == np.float32 else 1e-12  # of each array's largest magnitude
    for a, ref in zip(ours, torch_reference(layer, x, dy), strict=True):
        assert a.dtype == dtype and a.shape == ref.shape
        assert np.max(np.abs(a - ref)) <= bound * np.max(np.abs(ref))


@pytest.mark.parametrize("padding", ["same", "valid", 1])
def test_winograd_gradients_match_finite_differences(rng, gradcheck, padding):
    layer = Conv2D(2, 3, 3, padding=padding, algorithm="winograd", seed=1)
    assert layer.winograd
    layer.params["b"][...] = rng.standard_normal(3)
    gradcheck(layer, rng.standard_normal((2, 7, 5, 2)), rng, k=20)


def test_what_auto_picks():
    assert not Conv2D(3, 32, 3).winograd and not Conv2D(4, 8, 3).winograd  # few channels
    assert Conv2D(8, 32, 3).winograd and Conv2D(64, 64, 3, padding="same").winograd
    assert not Conv2D(32, 32, 3, stride=2).winograd
    assert not Conv2D(32, 32, (3, 5)).winograd
    assert Conv2D(3, 32, 3, algorithm="winograd").winograd  # asked for explicitly
    assert not Conv2D(32, 32, 5, algorithm="winograd").winograd  # does not apply: falls back
    assert not Conv2D(32, 32, 3, algorithm="im2col").winograd


def test_fallback_is_im2col_bit_for_bit(rng):
    x = rng.standard_normal((3, 9, 9, 16)).astype(np.float32)
    a = Conv2D(16, 4, 3, stride=2, padding="same", algorithm="winograd", seed=3)
    b = Conv2D(16, 4, 3, stride=2, padding="same", algorithm="im2col", seed=3)
    ya, yb = a.forward(x), b.forward(x)
    dy = rng.standard_normal(ya.shape).astype(np.float32)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(a.backward(dy), b.backward(dy))
    np.testing.assert_array_equal(a.grads["W"], b.grads["W"])


def test_bad_algorithm_is_refused():
    with pytest.raises(ValueError, match=r"algorithm must be one of .*'winograd'.*got 'fast'"):
        Conv2D(3, 8, 3, algorithm="fast")


def test_algorithm_is_in_the_config_and_old_configs_load_as_auto():
    layer = Conv2D(16, 8, 3, padding="same", algorithm="im2col", seed=4)
    cfg = json.loads(json.dumps(layer.get_config()))
    assert cfg["algorithm"] == "im2col"
    clone = layer_from_config("Conv2D", cfg)
    assert clone.algorithm == "im2col" and not clone.winograd
    del cfg["algorithm"]  # a config saved before the argument existed
    assert layer_from_config("Conv2D", cfg).algorithm == "auto"


def _net(algorithm: str) -> Sequential:
    return Sequential(
        [
            Conv2D(3, 16, 3, padding="same", algorithm=algorithm, seed=1),
            ReLU(),
            Conv2D(16, 16, 3, padding="valid", algorithm=algorithm, seed=2),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(3 * 3 * 16, 4, seed=3),
        ]
    )


def _train(algorithm: str, steps: int = 3) -> list[np.ndarray]:
    model = _net(algorithm)
    opt = SGD.from_model(model, lr=0.05, momentum=0.9)
    loss = SoftmaxCrossEntropy()
    g = np.random.default_rng(7)
    for _ in range(steps):
        x = g.standard_normal((5, 8, 8, 3)).astype(np.float32)
        t = g.integers(0, 4, 5)
        _, dz = loss(model.forward(x), t)
        model.backward(dz)
        opt.step()
    return [p.copy() for layer in model.layers for p in layer.params.values()]


def test_training_steps_give_identical_bits_twice_and_winograd_stays_near_im2col():
    first, second = _train("winograd"), _train("winograd")
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, _train("im2col"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_checkpoint_keeps_the_algorithm(tmp_path):
    model = _net("im2col")
    path = save_checkpoint(tmp_path / "ck.npz", model)
    loaded = load_checkpoint(path).model
    convs = [layer for layer in loaded.layers if isinstance(layer, Conv2D)]
    assert [c.algorithm for c in convs] == ["im2col", "im2col"]
