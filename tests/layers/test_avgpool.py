"""AvgPool2D against torch (valid), finite differences (valid and same), config, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnlab.layers import AvgPool2D, layer_from_config

RNG = np.random.default_rng(2)


@pytest.mark.parametrize("pool, strides", [(2, None), (3, 2), ((2, 3), (1, 2))])
def test_valid_matches_torch_float64(pool, strides):
    layer = AvgPool2D(pool, strides)
    x = RNG.normal(size=(2, 7, 8, 3))
    y = layer.forward(x)
    dy = RNG.normal(size=y.shape)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, layer.pool_size, layer.strides)
    yt.backward(torch.tensor(dy.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), atol=1e-14)
    np.testing.assert_allclose(
        layer.backward(dy), xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-14
    )


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_gradients_by_finite_differences(padding, gradcheck):
    gradcheck(AvgPool2D(3, 2, padding), RNG.normal(size=(2, 6, 5, 2)), np.random.default_rng(0))


def test_same_averages_the_real_pixels_only():
    x = np.ones((1, 5, 5, 1), np.float32)
    y = AvgPool2D(2, 2, "same").forward(x)
    assert y.shape == (1, 3, 3, 1) and np.array_equal(y, np.ones_like(y))  # no zeros counted
    again = layer_from_config("AvgPool2D", AvgPool2D(3, 1, "same").get_config())
    assert again.get_config()["padding"] == "same"
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same'"):
        AvgPool2D(2, padding="full")
    with pytest.raises(ValueError, match=r"expected input \(N, H>=3, W>=3, C\)"):
        AvgPool2D(3).forward(np.ones((1, 2, 5, 1), np.float32))
