import json

import numpy as np
import pytest
import torch

from bnlab.layers import Dense, layer_from_config
from bnlab.optim import L2


def test_gradients_match_finite_differences(rng, gradcheck):
    layer = Dense(7, 5, seed=0)
    layer.params["b"][...] = rng.standard_normal(5)
    gradcheck(layer, rng.standard_normal((4, 7)), rng)


def test_skip_input_grad_still_fills_param_grads(rng):
    layer = Dense(6, 3, seed=1)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    dy = rng.standard_normal((5, 3)).astype(np.float32)
    layer.forward(x)
    assert layer.backward(dy, need_input_grad=False) is None
    np.testing.assert_allclose(layer.grads["W"], x.T @ dy, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_linear(rng, dtype):
    layer = Dense(20, 8, seed=3).astype(dtype)
    layer.params["b"][...] = rng.standard_normal(8)
    x = rng.standard_normal((6, 20)).astype(dtype)
    dy = rng.standard_normal((6, 8)).astype(dtype)
    lin = torch.nn.Linear(20, 8).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(layer.params["W"].T.copy()))
        lin.bias.copy_(torch.from_numpy(layer.params["b"]))
    xt = torch.from_numpy(x).requires_grad_()
    yt = lin(xt)
    yt.backward(torch.from_numpy(dy))
    y = layer.forward(x)
    dx = layer.backward(dy)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(layer.grads["W"], lin.weight.grad.numpy().T, **tol)
    np.testing.assert_allclose(layer.grads["b"], lin.bias.grad.numpy(), **tol)


def test_same_seed_same_weights_and_default_dtype():
    a, b = Dense(30, 10, seed=7), Dense(30, 10, seed=7)
    assert a.params["W"].dtype == np.float32
    np.testing.assert_array_equal(a.params["W"], b.params["W"])
    assert not np.array_equal(a.params["W"], Dense(30, 10, seed=8).params["W"])


def test_bad_input_names_layer():
    layer = Dense(4, 2, seed=0)
    with pytest.raises(ValueError, match=r"Dense\(4->2\).*\(N, 4\).*\(3, 5\)"):
        layer.forward(np.zeros((3, 5), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(np.zeros((3, 4), np.int64))
    with pytest.raises(RuntimeError, match="before forward"):
        Dense(4, 2).backward(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="out_features"):
        Dense(4, 0)


def test_config_round_trip_with_regularizer():
    layer = Dense(
        5,
        3,
        use_bias=False,
        init={"name": "normal", "std": 0.1},
        seed=2,
        kernel_regularizer=L2(1e-3),
        name="fc",
    )
    cfg = json.loads(json.dumps(layer.get_config()))
    clone = layer_from_config("Dense", cfg)
    assert clone.get_config() == cfg
    assert "b" not in clone.params
    assert clone.regularizers["W"] == L2(1e-3)
    np.testing.assert_array_equal(clone.params["W"], layer.params["W"])


def test_float16_input_returns_float16(rng):
    layer = Dense(4, 3, seed=0)
    y = layer.forward(rng.standard_normal((2, 4)).astype(np.float16))
    assert y.dtype == np.float16
