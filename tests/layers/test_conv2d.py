import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnlab.kernels.im2col import same_padding
from bnlab.layers import Conv2D, layer_from_config
from bnlab.layers import conv2d as conv2d_module


def torch_conv(layer: Conv2D, x: np.ndarray, dy: np.ndarray):
    """Reference output and gradients through torch (NCHW), returned in NHWC."""
    W = torch.from_numpy(layer.params["W"].transpose(3, 2, 0, 1).copy()).requires_grad_()
    b = torch.from_numpy(layer.params["b"].copy()).requires_grad_()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    if layer.padding == "same":
        pt, pb, pl, pr = layer.pads(x.shape[1], x.shape[2])
        xin = F.pad(xt, (pl, pr, pt, pb))
        pad = 0
    else:
        xin, pad = xt, 0 if layer.padding == "valid" else layer.padding
    y = F.conv2d(xin, W, b, stride=layer.stride, padding=pad)
    y.backward(torch.from_numpy(dy.transpose(0, 3, 1, 2).copy()))
    return (
        y.detach().numpy().transpose(0, 2, 3, 1),
        xt.grad.numpy().transpose(0, 2, 3, 1),
        W.grad.numpy().transpose(2, 3, 1, 0),
        b.grad.numpy(),
    )


CASES = [
    # (H, W, cin, cout, kernel, stride, padding)
    (7, 7, 3, 4, 3, 1, "same"),
    (7, 7, 3, 4, 3, 1, "valid"),
    (8, 8, 2, 3, 3, 2, "same"),  # asymmetric: one extra row/column at the bottom/right
    (7, 9, 2, 3, 3, 2, "same"),
    (8, 8, 2, 3, 4, 1, "same"),  # even kernel
    (9, 9, 3, 2, 3, 2, "valid"),
    (6, 6, 2, 2, (3, 2), (2, 1), 1),
    (5, 5, 17, 5, 3, 1, "valid"),  # odd channel count
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_matches_torch(rng, case, dtype):
    h, w, cin, cout, k, s, p = case
    layer = Conv2D(cin, cout, k, stride=s, padding=p, seed=0).astype(dtype)
    layer.params["b"][...] = rng.standard_normal(cout)
    x = rng.standard_normal((3, h, w, cin)).astype(dtype)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    ref = torch_conv(layer, x, dy)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for ours, theirs in zip((y, dx, layer.grads["W"], layer.grads["b"]), ref, strict=True):
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours, theirs, **tol)


def test_same_output_size_is_ceil():
    layer = Conv2D(1, 1, 3, stride=2, padding="same")
    assert layer.output_shape((2, 7, 8, 1)) == (2, 4, 4, 1)
    assert same_padding(8, 3, 2) == (0, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(8, 4, 1) == (1, 2)


@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "valid"), (2, "same")])
def test_gradients_match_finite_differences(rng, gradcheck, stride, padding):
    layer = Conv2D(2, 3, 3, stride=stride, padding=padding, seed=1)
    layer.params["b"][...] = rng.standard_normal(3)
    gradcheck(layer, rng.standard_normal((2, 6, 5, 2)), rng, k=20)


def test_chunked_large_batch_equals_whole(rng, monkeypatch):
    layer = Conv2D(3, 4, 3, padding="same", seed=2)
    x = rng.standard_normal((5, 6, 6, 3)).astype(np.float32)
    dy = rng.standard_normal((5, 6, 6, 4)).astype(np.float32)
    y_whole, dx_whole = layer.forward(x).copy(), layer.backward(dy).copy()
    gW_whole = layer.grads["W"].copy()
    monkeypatch.setattr(conv2d_module, "MAX_COLS_BYTES", 2 * 36 * 27 * 4)  # two images per chunk
    y, dx = layer.forward(x), layer.backward(dy)
    np.testing.assert_allclose(y, y_whole, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, dx_whole, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.grads["W"], gW_whole, rtol=1e-5, atol=1e-5)


def test_outputs_are_fresh_arrays_outside_sequential(rng):
    layer = Conv2D(1, 2, 3, padding="same", seed=0)
    y1 = layer.forward(rng.standard_normal((1, 4, 4, 1)).astype(np.float32))
    keep = y1.copy()
    layer.forward(rng.standard_normal((1, 4, 4, 1)).astype(np.float32))
    np.testing.assert_array_equal(y1, keep)


def test_bad_input_names_layer_and_changes_nothing():
    layer = Conv2D(3, 8, 3, seed=0)
    W = layer.params["W"].copy()
    with pytest.raises(ValueError, match=r"Conv2D\(3->8, 3x3\).*\(N, H, W, 3\).*\(2, 5, 5, 4\)"):
        layer.forward(np.zeros((2, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match="rank 4"):
        layer.forward(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"H, W >= kernel"):
        layer.forward(np.zeros((2, 2, 2, 3), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(np.zeros((2, 5, 5, 3), np.uint8))
    np.testing.assert_array_equal(layer.params["W"], W)
    with pytest.raises(ValueError, match="padding"):
        Conv2D(3, 8, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2D(3, 8, (3, 0))


def test_config_round_trip():
    layer = Conv2D(3, 8, (3, 5), stride=(2, 1), padding="same", init="he_normal", seed=4)
    cfg = json.loads(json.dumps(layer.get_config()))
    clone = layer_from_config("Conv2D", cfg)
    assert clone.get_config() == cfg
    np.testing.assert_array_equal(clone.params["W"], layer.params["W"])
    assert clone.params["W"].shape == (3, 5, 3, 8)
