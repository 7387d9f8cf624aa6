"""to_torch / from_torch: same outputs in train and eval mode, same buffers; Keras BN loading."""

import numpy as np
import pytest
import torch

from bnlab.deploy import fold_batch_norm, from_torch, load_keras_batch_norm, to_torch
from bnlab.layers import BatchNorm, BatchRenorm, Dense, Layer, Sequential


def _bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, BatchNorm)]


def _assert_buffers_equal(model, tmodel, rtol):
    tbns = [m for m in tmodel if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    bns = _bn_layers(model)
    assert len(bns) == len(tbns)
    for bn, tbn in zip(bns, tbns, strict=True):
        np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=rtol, atol=rtol)
        assert int(bn.num_batches_tracked) == int(tbn.num_batches_tracked)


def _build(nets, kind, dtype):
    """(model, per-example input shape) for kind 'dense', 'conv' or 'conv_gap'."""
    if kind == "dense":
        return nets.dense_net(dtype=dtype), nets.DENSE_INPUT
    return nets.conv_net(dtype=dtype, gap=kind == "conv_gap"), nets.CONV_INPUT


@pytest.mark.parametrize("kind", ["dense", "conv", "conv_gap"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_and_eval_outputs_match(nets, rng, kind, dtype):
    tol = 2e-5 if dtype == np.float32 else 1e-10
    model, shape = _build(nets, kind, dtype)
    nets.randomize_bn(model, rng)
    tmodel = to_torch(model)
    assert tmodel.training
    _assert_buffers_equal(model, tmodel, 0)
    for _ in range(2):  # two training steps: outputs and updated running stats agree
        x = rng.normal(size=(8, *shape)).astype(dtype)
        y = model.forward(x)
        yt = tmodel(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(yt, y, rtol=tol, atol=tol)
    _assert_buffers_equal(model, tmodel, tol)
    model.eval()
    tmodel.eval()
    x = rng.normal(size=(5, *shape)).astype(dtype)
    np.testing.assert_allclose(tmodel(torch.from_numpy(x)).detach().numpy(), model.forward(x),
                               rtol=tol, atol=tol)  # fmt: skip


@pytest.mark.parametrize("kind", ["dense", "conv", "conv_gap"])
def test_round_trip(nets, rng, kind):
    model, shape = _build(nets, kind, np.float64)
    nets.randomize_bn(model, rng)
    model.eval()
    back = from_torch(to_torch(model))
    assert not back.training
    assert [type(layer).__name__ for layer in back.layers] == [
        type(layer).__name__ for layer in model.layers
    ]
    state, back_state = model.state_dict(), back.state_dict()
    assert state.keys() == back_state.keys()
    for k in state:
        np.testing.assert_array_equal(back_state[k], state[k])
        assert back_state[k].dtype == state[k].dtype
    x = rng.normal(size=(4, *shape))
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


def test_plain_torch_nchw_model(rng):
    """A stock NCHW torch net reads into a bnlab net that takes the same data as NHWC."""
    torch.manual_seed(0)
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    ).double()
    x = rng.normal(size=(3, 3, 8, 8))
    tnet(torch.from_numpy(x))  # move the running stats away from 0 / 1
    tnet.eval()
    model = from_torch(tnet)
    expected = tnet(torch.from_numpy(x)).detach().numpy()
    got = model.forward(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    flatten_nchw = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    with pytest.raises(TypeError, match="Flatten"):
        from_torch(flatten_nchw)


def test_folded_model_converts(nets, rng):
    model = Sequential([BatchNorm(6), Dense(6, 3, seed=0)])
    nets.randomize_bn(model, rng)
    folded = fold_batch_norm(model.eval())
    tmodel = to_torch(folded)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(tmodel(torch.from_numpy(x)).detach().numpy(), folded.forward(x),
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    back = from_torch(tmodel)
    np.testing.assert_array_equal(back.forward(x), folded.forward(x))


def test_unsupported_layers():
    class Swish(Layer):
        pass

    with pytest.raises(TypeError, match="sw.*Swish"):
        to_torch(Sequential([Dense(2, 2), Swish(name="sw")]))
    with pytest.raises(TypeError, match="renorm"):
        to_torch(Sequential([Dense(2, 2), BatchRenorm(2)]))
    with pytest.raises(TypeError, match="input rank is unknown"):
        to_torch(Sequential([BatchNorm(2)]))
    assert isinstance(to_torch(Sequential([BatchNorm(2)]), input_shape=(2,))[0],
                      torch.nn.BatchNorm1d)  # fmt: skip
    with pytest.raises(TypeError, match="module 0"):
        from_torch(torch.nn.Sequential(torch.nn.LSTM(2, 2)))


def test_load_keras_batch_norm(rng):
    bn = BatchNorm(4, eps=1e-3)
    weights = [rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(1, 2, 4)]
    load_keras_batch_norm(bn, weights, keras_momentum=0.99)
    np.testing.assert_allclose(bn.params["gamma"], weights[0].astype(np.float32))
    np.testing.assert_allclose(bn.params["beta"], weights[1].astype(np.float32))
    np.testing.assert_allclose(bn.running_mean, weights[2].astype(np.float32))
    np.testing.assert_allclose(bn.running_var, weights[3].astype(np.float32))
    assert bn.momentum == pytest.approx(0.01)
    # Keras inference: gamma * (x - moving_mean) / sqrt(moving_variance + eps) + beta
    x = rng.normal(size=(3, 4)).astype(np.float32)
    keras_y = weights[0] * (x - weights[2]) / np.sqrt(weights[3] + 1e-3) + weights[1]
    np.testing.assert_allclose(bn.eval().forward(x), keras_y, rtol=1e-5, atol=1e-5)


def test_load_keras_batch_norm_errors_change_nothing(rng):
    bn = BatchNorm(4)
    before = {k: v.copy() for k, v in bn.state_dict().items()}
    good = [np.ones(4)] * 4
    with pytest.raises(ValueError, match="expected 4 arrays"):
        load_keras_batch_norm(bn, good[:3])
    with pytest.raises(ValueError, match="moving|running_var.*shape"):
        load_keras_batch_norm(bn, [*good[:3], np.ones(5)])
    with pytest.raises(ValueError, match="keras_momentum"):
        load_keras_batch_norm(bn, good, keras_momentum=1.5)
    with pytest.raises(TypeError, match="BatchNorm"):
        load_keras_batch_norm(Dense(2, 2), good)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert bn.momentum == 0.1
    plain = BatchNorm(2, affine=False)
    load_keras_batch_norm(plain, [np.zeros(2), np.full(2, 4.0)])
    np.testing.assert_array_equal(plain.running_var, [4.0, 4.0])
