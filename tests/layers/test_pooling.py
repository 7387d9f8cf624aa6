import numpy as np
import pytest
import torch

from bnlab.layers import GlobalAveragePool2D, MaxPool2D, layer_from_config


@pytest.mark.parametrize(
    "shape,pool,stride",
    [
        ((2, 8, 8, 3), 2, None),
        ((2, 7, 9, 4), 2, None),
        ((1, 7, 7, 2), 3, 2),
        ((2, 6, 5, 2), (2, 3), 1),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_matches_torch(rng, shape, pool, stride, dtype):
    layer = MaxPool2D(pool, stride)
    x = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    yt = torch.nn.functional.max_pool2d(xt, pool, stride)
    yt.backward(torch.from_numpy(dy.transpose(0, 3, 1, 2).copy()))
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(y, yt.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def test_max_pool_ties_go_to_first_maximum():
    x = np.zeros((1, 2, 2, 1), np.float32)  # every value ties
    layer = MaxPool2D(2)
    layer.forward(x)
    dx = layer.backward(np.ones((1, 1, 1, 1), np.float32))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 0], [0, 0]])


def test_max_pool_finite_differences(rng, gradcheck):
    gradcheck(MaxPool2D(3, 2), rng.standard_normal((2, 7, 6, 2)), rng)


def test_global_average_pool(rng, gradcheck):
    x = rng.standard_normal((3, 4, 5, 6))
    layer = GlobalAveragePool2D()
    np.testing.assert_allclose(layer.forward(x), x.mean(axis=(1, 2)))
    gradcheck(GlobalAveragePool2D(), x, rng)


def test_bad_input_and_config():
    with pytest.raises(ValueError, match=r"MaxPool2D\(2x2\).*\(1, 1, 4, 3\)"):
        MaxPool2D(2).forward(np.zeros((1, 1, 4, 3), np.float32))
    with pytest.raises(ValueError, match="GlobalAveragePool2D.*rank 4"):
        GlobalAveragePool2D().forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="pool_size"):
        MaxPool2D(0)
    layer = MaxPool2D((2, 3), 1, name="p")
    assert layer_from_config("MaxPool2D", layer.get_config()).get_config() == layer.get_config()
