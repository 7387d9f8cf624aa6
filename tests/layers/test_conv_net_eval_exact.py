"""The eval forward of a small BN conv net, and of its folded twin, equal a straightforward
reference path bit for bit: the padded strided patch view, the same matrix products, NumPy's
broadcast bias add, ``np.maximum``, a window max over a reshaped view and the BN inference
kernel. Faster im2col, bias, pooling or reshapes must not change a single bit of inference.
The convolutions here use algorithm="im2col"; Winograd rounds differently by design, and its
net is held to the float32 bound of bnlab.kernels.winograd instead (last test)."""

import numpy as np
import pytest

from bnlab.deploy import fold_batch_norm
from bnlab.kernels import batch_norm_inference
from bnlab.kernels.im2col import im2col_strided
from bnlab.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential


def small_net(algorithm: str = "im2col") -> Sequential:
    rng = np.random.default_rng(5)
    kw = {"algorithm": algorithm}
    layers = [
        Conv2D(3, 8, 3, padding="same", seed=1, **kw), BatchNorm(8), ReLU(),
        Conv2D(8, 16, 3, seed=2, **kw), BatchNorm(16), ReLU(), MaxPool2D(2),
        Dropout(0.25, seed=0),
        Conv2D(16, 32, 3, padding=1, seed=3, **kw), BatchNorm(32), ReLU(), MaxPool2D(2),
        Flatten(), Dense(3 * 3 * 32, 24, seed=4), BatchNorm(24), ReLU(), Dense(24, 10, seed=5),
    ]  # fmt: skip
    for layer in layers:
        if isinstance(layer, BatchNorm):
            c = layer.num_features
            layer.running_mean[...] = rng.normal(0, 0.5, c)
            layer.running_var[...] = rng.uniform(0.3, 2.0, c)
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, c)
            layer.params["beta"][...] = rng.normal(0, 0.3, c)
        elif "b" in layer.params:
            layer.params["b"][...] = rng.normal(0, 0.1, layer.params["b"].shape)
    return Sequential(layers).eval()


def reference_forward(model: Sequential, x: np.ndarray) -> np.ndarray:
    """The same network, one plain NumPy expression per layer."""
    h = x
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            n, height, width, _ = h.shape
            pads = layer.pads(height, width)
            cols = im2col_strided(h, layer.kernel_size, layer.stride, pads)
            W = layer.params["W"]
            y = cols @ W.reshape(-1, W.shape[-1]) + layer.params["b"]
            h = y.reshape(layer.output_shape(h.shape))
        elif isinstance(layer, Dense):
            h = h @ layer.params["W"] + layer.params["b"]
        elif isinstance(layer, BatchNorm):
            h = batch_norm_inference(
                h, layer.running_mean, layer.running_var, layer.params["gamma"],
                layer.params["beta"], eps=layer.eps,
            )  # fmt: skip
        elif isinstance(layer, ReLU):
            h = np.maximum(h, 0)
        elif isinstance(layer, MaxPool2D):
            n, height, width, c = h.shape
            ho, wo = height // 2, width // 2
            h = h[:, : 2 * ho, : 2 * wo].reshape(n, ho, 2, wo, 2, c).max(axis=(2, 4))
        elif isinstance(layer, Flatten):
            h = h.reshape(h.shape[0], -1)
        else:
            assert isinstance(layer, Dropout)  # the identity in eval mode
    return h


@pytest.mark.parametrize("folded", [False, True], ids=["eval", "folded"])
@pytest.mark.parametrize("batch", [1, 7])
def test_eval_forward_is_bit_identical_to_the_reference_path(folded, batch):
    model = small_net()
    if folded:
        model = fold_batch_norm(model)
        assert not any(isinstance(layer, BatchNorm) for layer in model.layers)
    x = np.random.default_rng(batch).standard_normal((batch, 14, 14, 3)).astype(np.float32)
    x[0, 3:6, 3:6, :] = 0.25  # equal inputs: ties inside the pooling windows
    want = reference_forward(model, x)
    got = model.forward(x)
    assert got.dtype == np.float32 and got.shape == (batch, 10)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.forward(x), want)  # again, with the buffers reused
    for layer in model.layers:  # and called one by one, outside the Sequential
        layer.reuse_output = False
        x = layer.forward(x)
    np.testing.assert_array_equal(x, want)


def test_the_reference_path_can_tell_a_difference():
    model = small_net()
    x = np.random.default_rng(0).standard_normal((3, 14, 14, 3)).astype(np.float32)
    want = reference_forward(model, x)
    model.layers[0].params["b"][0] = np.nextafter(model.layers[0].params["b"][0], np.inf)
    assert not np.array_equal(model.forward(x), want)


@pytest.mark.parametrize("folded", [False, True], ids=["eval", "folded"])
def test_winograd_net_is_within_the_float32_bound_and_repeatable(folded):
    model = small_net("winograd")
    if folded:
        model = fold_batch_norm(model)
    convs = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    assert all(layer.winograd for layer in convs)
    x = np.random.default_rng(3).standard_normal((5, 14, 14, 3)).astype(np.float32)
    want = reference_forward(model, x)
    got = model.forward(x)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    assert not np.array_equal(got, want)  # it is another rounding, not the im2col path
    np.testing.assert_array_equal(model.forward(x), got)
