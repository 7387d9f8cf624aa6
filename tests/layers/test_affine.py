"""ChannelAffine: y = x * scale + shift along one axis; checked against PyTorch autograd."""

import numpy as np
import pytest
import torch

from bnlab.layers import layer_from_config
from bnlab.layers.affine import ChannelAffine


@pytest.mark.parametrize(("shape", "axis"), [((5, 3), -1), ((2, 4, 4, 3), -1), ((2, 3, 4, 5), 1)])
def test_forward_backward_match_torch(rng, shape, axis):
    c = shape[axis]
    layer = ChannelAffine(c, axis=axis).astype(np.float64)
    layer.params["scale"][...] = rng.normal(size=c)
    layer.params["shift"][...] = rng.normal(size=c)
    x = rng.normal(size=shape)
    dy = rng.normal(size=shape)
    y = layer.forward(x)
    dx = layer.backward(dy)

    bshape = [1] * len(shape)
    bshape[axis] = c
    xt = torch.tensor(x, requires_grad=True)
    st = torch.tensor(layer.params["scale"], requires_grad=True)
    tt = torch.tensor(layer.params["shift"], requires_grad=True)
    yt = xt * st.reshape(bshape) + tt.reshape(bshape)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["scale"], st.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["shift"], tt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_dtypes(rng):
    layer = ChannelAffine(3)
    x32 = rng.normal(size=(4, 3)).astype(np.float32)
    assert layer.forward(x32).dtype == np.float32
    assert layer.forward(x32.astype(np.float16)).dtype == np.float16
    assert layer.astype(np.float64).forward(x32.astype(np.float64)).dtype == np.float64


def test_config_round_trip():
    layer = ChannelAffine(7, axis=1, name="aff")
    again = layer_from_config("ChannelAffine", layer.get_config())
    assert isinstance(again, ChannelAffine)
    assert again.get_config() == {"num_features": 7, "axis": 1, "name": "aff"}


def test_bad_input_names_layer(rng):
    layer = ChannelAffine(3, name="aff")
    with pytest.raises(ValueError, match="aff.*expected 3 features"):
        layer.forward(rng.normal(size=(2, 4)))
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="num_features"):
        ChannelAffine(0)
    with pytest.raises(RuntimeError, match="forward"):
        ChannelAffine(3).eval().backward(np.ones((2, 3)))
