"""fold_batch_norm: the folded model's eval outputs equal the original's; errors name the layer."""

import numpy as np
import pytest

from bnlab.deploy import fold_batch_norm
from bnlab.layers import (
    BatchNorm,
    BatchRenorm,
    ChannelAffine,
    Conv2D,
    Dense,
    Dropout,
    Layer,
    ReLU,
    Sequential,
)

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _check_equal_outputs(nets, model, shape, dtype, rng):
    x = rng.normal(size=(16, *shape)).astype(dtype)
    folded = fold_batch_norm(model)
    y_ref, y = model.forward(x), folded.forward(x)
    assert y.dtype == np.dtype(dtype)
    assert nets.max_rel_diff(y, y_ref) < TOL[dtype]
    assert not any(isinstance(layer, BatchNorm) for layer in folded.layers)
    return folded


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_net_folds(nets, rng, dtype):
    model = nets.dense_net(dtype=dtype, dropout=True)
    nets.randomize_bn(model, rng)
    model.eval()
    folded = _check_equal_outputs(nets, model, nets.DENSE_INPUT, dtype, rng)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert kinds == ["Dense", "ReLU", "Dropout", "Dense", "Tanh", "Dense"]
    assert "b" in folded.layers[3].params  # the bias-free Dense gained a bias
    assert not folded.training


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gap", [False, True])
def test_conv_net_folds(nets, rng, dtype, gap):
    model = nets.conv_net(dtype=dtype, gap=gap)
    nets.randomize_bn(model, rng)
    model.eval()
    folded = _check_equal_outputs(nets, model, nets.CONV_INPUT, dtype, rng)
    assert sum(isinstance(layer, Conv2D) for layer in folded.layers) == 2


def test_fold_formula(nets, rng):
    dense = Dense(3, 2, seed=0).astype(np.float64)
    bn = BatchNorm(2, eps=1e-3).astype(np.float64)
    model = Sequential([dense, bn])
    nets.randomize_bn(model, rng)
    model.eval()
    folded = fold_batch_norm(model)
    (layer,) = folded.layers
    s = bn.params["gamma"] / np.sqrt(bn.running_var + 1e-3)
    np.testing.assert_allclose(layer.params["W"], dense.params["W"] * s, rtol=1e-14)
    b = (dense.params["b"] - bn.running_mean) * s + bn.params["beta"]
    np.testing.assert_allclose(layer.params["b"], b, rtol=1e-14)


def test_bn_without_layer_before_becomes_channel_affine(nets, rng):
    model = Sequential([BatchNorm(6), Dense(6, 4, seed=0), ReLU(), BatchNorm(4)])
    nets.randomize_bn(model, rng)
    model.eval()
    folded = _check_equal_outputs(nets, model, nets.DENSE_INPUT, np.float32, rng)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert kinds == ["ChannelAffine", "Dense", "ReLU", "ChannelAffine"]
    assert folded.layers[0].name == model.layers[0].name


def test_non_channel_axis_becomes_channel_affine(nets, rng):
    model = Sequential([Conv2D(2, 3, 1, seed=0), BatchNorm(5, axis=1)]).astype(np.float64)
    nets.randomize_bn(model, rng)
    model.eval()
    folded = fold_batch_norm(model)
    assert isinstance(folded.layers[1], ChannelAffine)
    x = rng.normal(size=(4, 5, 4, 2))
    assert nets.max_rel_diff(folded.forward(x), model.forward(x)) < 1e-12


def test_batch_renorm_folds(nets, rng):
    model = Sequential([Dense(6, 4, seed=0), BatchRenorm(4)]).astype(np.float64)
    model.layers[1].buffers["running_mean"][...] = rng.normal(size=4)
    model.layers[1].buffers["running_var"][...] = rng.uniform(0.5, 2, 4)
    model.eval()
    folded = _check_equal_outputs(nets, model, nets.DENSE_INPUT, np.float64, rng)
    assert [type(layer).__name__ for layer in folded.layers] == ["Dense"]


def test_input_model_unchanged(nets, rng):
    model = nets.conv_net()
    nets.randomize_bn(model, rng)
    model.eval()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    folded = fold_batch_norm(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    folded.layers[0].params["W"][...] = 0
    assert np.abs(model.layers[0].params["W"]).max() > 0
    assert not model.training and isinstance(model.layers[1], BatchNorm)


def test_training_mode_is_an_error(nets, rng):
    model = nets.dense_net()
    with pytest.raises(ValueError, match="training mode"):
        fold_batch_norm(model)
    model.eval()
    model.layers[4].train()
    with pytest.raises(ValueError, match="layer 4 .BatchNorm. .BatchNorm. is in training mode"):
        fold_batch_norm(model)


def test_bn_without_running_stats_is_an_error():
    model = Sequential([Dense(3, 2), BatchNorm(2, track_running_stats=False, name="bn_nostats")])
    model.eval()
    with pytest.raises(ValueError, match="layer 1 'bn_nostats'.*track_running_stats"):
        fold_batch_norm(model)


def test_unsupported_object_is_an_error():
    with pytest.raises(TypeError, match="unsupported layer"):
        fold_batch_norm(object())


def test_custom_layers_pass_through(nets, rng):
    class Double(Layer):
        def forward(self, x):
            return 2 * x

    model = Sequential([Dense(6, 4, seed=0), Double(), BatchNorm(4), Dropout(0.5)])
    nets.randomize_bn(model, rng)
    model.eval()
    folded = _check_equal_outputs(nets, model, nets.DENSE_INPUT, np.float32, rng)
    assert [type(layer).__name__ for layer in folded.layers] == [
        "Dense",
        "Double",
        "ChannelAffine",
        "Dropout",
    ]


def test_only_the_exact_classes_fold(nets, rng):
    """A Dense subclass may compute something else: it is not folded into (the BN becomes a
    ChannelAffine), and a layer merely named Dense is not taken for one."""

    class NoisyDense(Dense):
        registry_name = "_test_NoisyDense"

        def forward(self, x):
            return super().forward(x) + 1.0

    look_alike = type("Dense", (Layer,), {"registry_name": "_test_Dense", "forward": np.tanh})
    model = Sequential([NoisyDense(6, 4, seed=0), BatchNorm(4), look_alike(), BatchNorm(4)])
    nets.randomize_bn(model, rng)
    model.eval()
    folded = _check_equal_outputs(nets, model, nets.DENSE_INPUT, np.float32, rng)
    assert [type(layer).__name__ for layer in folded.layers] == [
        "NoisyDense",
        "ChannelAffine",
        "Dense",
        "ChannelAffine",
    ]
