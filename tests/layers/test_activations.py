import numpy as np
import pytest
import torch

from bnlab.kernels import activations as K
from bnlab.layers import ReLU, Sigmoid, Softmax, Tanh, layer_from_config

TORCH = {
    ReLU: torch.relu,
    Sigmoid: torch.sigmoid,
    Tanh: torch.tanh,
    Softmax: lambda t: torch.softmax(t, dim=-1),
}


@pytest.mark.parametrize("cls", list(TORCH))
@pytest.mark.parametrize("shape", [(6, 11), (2, 4, 4, 3), (4, 300, 128)])  # last: parallel path
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(rng, cls, shape, dtype):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    layer = cls()
    y = layer.forward(x)
    dx = layer.backward(dy)
    xt = torch.from_numpy(x).requires_grad_()
    yt = TORCH[cls](xt)
    yt.backward(torch.from_numpy(dy))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)


@pytest.mark.parametrize("cls", list(TORCH))
def test_finite_differences(rng, gradcheck, cls):
    gradcheck(cls(), rng.standard_normal((4, 7)), rng)


def test_sigmoid_and_softmax_are_stable_for_huge_inputs():
    x = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = K.sigmoid(x)
        s = K.softmax(x)
    np.testing.assert_allclose(y, [[0.0, 0.0, 0.5, 1.0, 1.0]], rtol=0, atol=1e-38)
    np.testing.assert_array_equal(s, [[0, 0, 0, 0, 1]])


def test_kernels_work_in_place(rng):
    x = rng.standard_normal((5, 5)).astype(np.float32)
    expected = 1 / (1 + np.exp(-x))
    out = K.sigmoid(x, out=x)
    assert out is x
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="out must be"):
        K.relu(x, out=np.empty((5, 4), np.float32))


def test_float16_and_bad_input():
    y = Sigmoid().forward(np.zeros((2, 2), np.float16))
    assert y.dtype == np.float16
    with pytest.raises(TypeError, match="ReLU.*floating-point"):
        ReLU().forward(np.zeros((2, 2), np.int32))
    with pytest.raises(RuntimeError, match="Tanh.backward called before forward"):
        Tanh().backward(np.zeros(2))
    assert isinstance(layer_from_config("Softmax", Softmax(name="s").get_config()), Softmax)
