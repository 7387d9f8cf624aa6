"""export_onnx: onnxruntime reproduces bnlab's eval outputs (max abs difference < 1e-5)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bnlab.deploy import export_onnx, fold_batch_norm
from bnlab.layers import BatchNorm, Dense, Layer, ReLU, Sequential, Sigmoid


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _ops(proto):
    return [node.op_type for node in proto.graph.node]


@pytest.mark.parametrize("fold", [False, True])
def test_dense_net(nets, tmp_path, rng, fold):
    model = nets.dense_net(dropout=True)
    nets.randomize_bn(model, rng)
    model.eval()
    if fold:
        model = fold_batch_norm(model)
    proto = export_onnx(model, tmp_path / "m.onnx", nets.DENSE_INPUT)
    assert ("BatchNormalization" in _ops(proto)) is not fold
    assert "Gemm" in _ops(proto) and "Dropout" not in _ops(proto)
    x = rng.normal(size=(9, *nets.DENSE_INPUT)).astype(np.float32)
    y = _run(tmp_path / "m.onnx", x)
    assert y.shape == (9, 3)
    assert np.max(np.abs(y - model.forward(x))) < 1e-5


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("gap", [False, True])
def test_conv_net(nets, tmp_path, rng, fold, gap):
    model = nets.conv_net(gap=gap)
    nets.randomize_bn(model, rng)
    model.eval()
    if fold:
        model = fold_batch_norm(model)
    proto = export_onnx(model, tmp_path / "c.onnx", nets.CONV_INPUT)
    ops = _ops(proto)
    assert "Conv" in ops and "MaxPool" in ops and ops[0] == "Transpose"
    assert ("GlobalAveragePool" in ops) is gap
    for batch in (1, 5):  # the batch axis is dynamic
        x = rng.normal(size=(batch, *nets.CONV_INPUT)).astype(np.float32)
        assert np.max(np.abs(_run(tmp_path / "c.onnx", x) - model.forward(x))) < 1e-5


def test_spatial_output_and_channel_affine(nets, tmp_path, rng):
    """A 4-D output comes back NHWC; a BN first becomes BatchNormalization or, folded, Mul+Add."""
    from bnlab.layers import Conv2D

    model = Sequential([BatchNorm(3), Conv2D(3, 4, 2, stride=2, padding="same"), Sigmoid()])
    nets.randomize_bn(model, rng)
    model.eval()
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    for m in (model, fold_batch_norm(model)):
        export_onnx(m, tmp_path / "s.onnx", (5, 5, 3))
        y = _run(tmp_path / "s.onnx", x)
        assert y.shape == (2, 3, 3, 4)
        assert np.max(np.abs(y - m.forward(x))) < 1e-5
    assert {"Mul", "Add"} <= set(_ops(onnx.load(tmp_path / "s.onnx")))


def test_real_mnist_images(tmp_path):
    from bnlab.data import load_mnist

    (_, _), (x_test, _) = load_mnist()
    x = (x_test[:64].reshape(64, -1).astype(np.float32) / 255.0 - 0.13) / 0.31
    model = Sequential([Dense(784, 32, seed=0), BatchNorm(32), ReLU(), Dense(32, 10, seed=1)])
    model.forward(x)  # one training step's statistics
    model.eval()
    export_onnx(model, tmp_path / "mnist.onnx", (784,))
    assert np.max(np.abs(_run(tmp_path / "mnist.onnx", x) - model.forward(x))) < 1e-5


def test_errors_name_the_layer_and_write_nothing(nets, tmp_path, rng):
    path = tmp_path / "bad.onnx"
    model = nets.dense_net()
    with pytest.raises(ValueError, match="training mode"):
        export_onnx(model, path, nets.DENSE_INPUT)
    nostats = Sequential([Dense(6, 2), BatchNorm(2, track_running_stats=False, name="bnx")])
    with pytest.raises(ValueError, match="bnx"):
        export_onnx(nostats.eval(), path, nets.DENSE_INPUT)

    class Swish(Layer):
        def forward(self, x):
            return x / (1 + np.exp(-x))

    odd = Sequential([Dense(6, 2), Swish(name="swish1")]).eval()
    with pytest.raises(TypeError, match="swish1.*no ONNX mapping"):
        export_onnx(odd, path, nets.DENSE_INPUT)
    look_alike = type("ReLU", (Swish,), {"registry_name": "_test_ReLU"})  # named, not one
    odd = Sequential([Dense(6, 2), look_alike(name="fake_relu")]).eval()
    with pytest.raises(TypeError, match="fake_relu.*no ONNX mapping"):
        export_onnx(odd, path, nets.DENSE_INPUT)
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(nets.dense_net().eval(), path, (7,))
    assert list(tmp_path.iterdir()) == []
