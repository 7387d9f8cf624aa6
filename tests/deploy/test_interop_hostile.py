"""Interop under hostile input (issue 15): torch layouts, BN settings, dtypes, unsupported modules.

Oracles: PyTorch 2.x CPU (from_torch/to_torch) and onnxruntime (export_onnx)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import bnlab.deploy.torch_from as torch_from_mod
from bnlab.deploy import export_onnx, from_torch, to_torch
from bnlab.layers import BatchNorm, Dense, Flatten, ReLU, Sequential


def _torch_out(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _randomize(bn: nn.BatchNorm1d, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if bn.affine:
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        if bn.track_running_stats:
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("shape", [(16, 5, 5), (16, 5, 7), (16, 5)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm1d_keeps_the_torch_layout(rng, shape, mode) -> None:
    """C == L used to run channels-last and be off by up to 0.18."""
    tbn = nn.BatchNorm1d(5)
    _randomize(tbn)
    tbn.train(mode == "train")
    bn = from_torch(tbn)
    assert bn.layers[0].axis == 1
    x = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
    np.testing.assert_allclose(bn.forward(x), _torch_out(tbn, x), atol=1e-5)
    if mode == "train":  # the running statistics follow torch's too
        np.testing.assert_allclose(bn.layers[0].running_var, tbn.running_var.numpy(), rtol=1e-5)


def test_batchnorm1d_after_linear_is_channels_last(rng) -> None:
    tm = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU()).eval()
    _randomize(tm[1])
    model = from_torch(tm)
    assert model.layers[1].axis == -1
    x = rng.normal(size=(6, 4)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x), _torch_out(tm, x), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"momentum": None},
        {"track_running_stats": False},
        {"affine": False},
        {"affine": False, "track_running_stats": False},
        {"eps": 1e-2, "momentum": 0.3},
    ],
)
def test_non_default_batchnorm_settings_match_torch_over_steps(rng, kwargs) -> None:
    tm = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, **kwargs))
    model = from_torch(tm)
    for step in range(3):
        x = rng.normal(size=(8, 3)).astype(np.float32) + step
        np.testing.assert_allclose(model.forward(x), _torch_out(tm, x), atol=1e-5)
    bn, tbn = model.layers[1], tm[1]
    if tbn.track_running_stats:
        np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), atol=1e-6)
        np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-5)
        assert bn.num_batches_tracked == int(tbn.num_batches_tracked) == 3
    tm.eval()
    model.eval()
    x = rng.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x), _torch_out(tm, x), atol=1e-5)


def test_per_module_train_eval_mode_is_kept() -> None:
    tm = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    tm[1].eval()
    model = from_torch(tm)
    assert model.training and not model.layers[1].training and model.layers[2].training


@pytest.mark.parametrize(
    "module, error, words",
    [
        (nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2).double()), TypeError, "mixes dtypes"),
        (nn.Sequential(nn.Linear(3, 4).half()), TypeError, "float16"),
        (nn.Sequential(nn.Linear(3, 4).bfloat16()), TypeError, "bfloat16"),
        (nn.Sequential(nn.Linear(3, 4), nn.Flatten(2)), TypeError, "start_dim=1"),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, return_indices=True)),
            TypeError,
            "return_indices",
        ),
        (nn.Sequential(nn.Linear(3, 4), nn.Dropout(1.0)), ValueError, r"module 1 \(Dropout\)"),
        (nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU()), TypeError, "no bnlab equivalent"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm1d(2)), TypeError, "4-D NCHW"),
    ],
)
def test_modules_that_cannot_be_read_are_named(module, error, words) -> None:
    with pytest.raises(error, match=words):
        from_torch(module)


@pytest.mark.parametrize("where", ["weight", "running_var"])
def test_bad_torch_weights_are_refused(where) -> None:
    tm = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        if where == "weight":
            tm[0].weight[0, 0] = float("nan")
        else:
            tm[1].running_var[2] = -1.0
    index = 0 if where == "weight" else 1
    with pytest.raises(ValueError, match=rf"module {index} .*(non-finite|negative)"):
        from_torch(tm)


def test_torch_from_does_not_import_torch_interop() -> None:
    """The two modules imported each other (issue 12); both now use _torch_modules."""
    tree = ast.parse(Path(torch_from_mod.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "bnlab.deploy.torch_interop" not in imported
    assert "bnlab.deploy._torch_modules" in imported


# -- dtypes of the exported graph and torch model: the whole model's -------------------------
def _f64_no_params_first() -> Sequential:
    model = Sequential([Flatten(), Dense(6, 4, seed=0), BatchNorm(4), ReLU(), Dense(4, 2, seed=1)])
    return model.astype(np.float64).eval()


def test_float64_model_whose_first_layer_has_no_params_exports_float64(tmp_path, rng) -> None:
    model = _f64_no_params_first()
    proto = export_onnx(model, tmp_path / "m.onnx", (2, 3))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    x = rng.normal(size=(5, 2, 3))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x})[0]
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, model.forward(x), atol=1e-12)


def test_to_torch_takes_the_dtype_of_the_whole_model(rng) -> None:
    model = Sequential([ReLU(), Dense(3, 2, seed=0)]).astype(np.float64).eval()
    tm = to_torch(model)
    assert all(p.dtype == torch.float64 for p in tm.parameters())
    x = rng.normal(size=(4, 3))
    np.testing.assert_allclose(_torch_out(tm, x), model.forward(x), atol=1e-12)


@pytest.mark.parametrize("dtype, words", [("mixed", "mixes dtypes"), (np.float16, "float16")])
def test_mixed_or_half_models_are_refused_with_nothing_written(tmp_path, dtype, words) -> None:
    model = _f64_no_params_first()
    if dtype == "mixed":
        model.layers[2].astype(np.float32)
    else:  # astype refuses float16: weights replaced by hand
        for layer in model.modules():
            for store in (layer.params, layer.buffers):
                store.update({k: v.astype(np.float16) for k, v in store.items() if v.dtype == "f8"})
    with pytest.raises(TypeError, match=words):
        export_onnx(model, tmp_path / "m.onnx", (2, 3))
    with pytest.raises(TypeError, match=words):
        to_torch(model)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(0, 3), (-1,), (), (10**5, 10**5)])
def test_export_input_shape_is_checked_before_allocating(tmp_path, shape) -> None:
    with pytest.raises(ValueError, match="input_shape must be one example's shape"):
        export_onnx(_f64_no_params_first(), tmp_path / "m.onnx", shape)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["0.W", "1.running_var"])
def test_fold_and_export_refuse_non_finite_or_negative_state(tmp_path, where) -> None:
    from bnlab.deploy import fold_batch_norm

    model = Sequential([Dense(3, 4, seed=0), BatchNorm(4)]).eval()
    key = where.split(".", 1)[1]
    store = model.layers[int(where[0])].params if key == "W" else model.layers[1].buffers
    store[key].reshape(-1)[0] = np.nan if key == "W" else -1.0
    words = rf"'{where}'.*(non-finite|negative)"
    with pytest.raises(ValueError, match=words):
        export_onnx(model, tmp_path / "m.onnx", (3,))
    with pytest.raises(ValueError, match=words):
        fold_batch_norm(model)
    assert list(tmp_path.iterdir()) == []


def test_keras_negative_moving_variance_is_refused() -> None:
    from bnlab.deploy import load_keras_batch_norm

    bn = BatchNorm(3)
    before = {k: v.tobytes() for k, v in bn.state_dict().items()}
    weights = [np.ones(3), np.zeros(3), np.zeros(3), np.array([1.0, -0.5, 1.0])]
    with pytest.raises(ValueError, match="moving_variance.*negative"):
        load_keras_batch_norm(bn, weights)
    assert {k: v.tobytes() for k, v in bn.state_dict().items()} == before


def test_batchnorm1d_round_trips_through_to_torch_in_ncl_layout(rng) -> None:
    tbn = nn.BatchNorm1d(4)
    _randomize(tbn)
    tbn.eval()
    back = to_torch(from_torch(tbn))  # no input_shape needed: axis=1 is BatchNorm1d
    assert [type(m).__name__ for m in back] == ["BatchNorm1d"]
    x = rng.normal(size=(3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_torch_out(back, x), _torch_out(tbn, x), atol=1e-6)


def test_batchnorm1d_in_ncl_layout_exports_to_onnx(tmp_path, rng) -> None:
    tbn = nn.BatchNorm1d(4)
    _randomize(tbn)
    model = from_torch(tbn.eval())
    export_onnx(model, tmp_path / "m.onnx", (4, 4))
    x = rng.normal(size=(3, 4, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], _torch_out(tbn, x), atol=1e-5)
