"""Deployment walks into residual blocks and knows GroupNorm/LayerNorm: checkpoints (bit-exact
round trip), ONNX (onnxruntime against our forward), to_torch/from_torch, folding, SyncBN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bnlab
from bnlab.deploy import (
    export_onnx,
    fold_batch_norm,
    from_torch,
    load_checkpoint,
    save_checkpoint,
    to_torch,
)
from bnlab.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    GlobalAveragePool2D,
    GroupNorm,
    LayerNorm,
    ReLU,
    Residual,
    Sequential,
    SyncBatchNorm,
    ZeroPadShortcut,
    convert_sync_batchnorm,
)

RNG = np.random.default_rng(8)


def small_net(dtype=np.float32) -> Sequential:
    """conv -> identity block -> option A block -> option B block (BN shortcut) -> GN, LN head."""

    def block(cin, cout, stride, short):
        branch = [Conv2D(cin, cout, 3, stride=stride, padding=1, use_bias=False), BatchNorm(cout)]
        branch += [ReLU(), Conv2D(cout, cout, 3, padding=1, use_bias=False), BatchNorm(cout)]
        return Residual(branch, short)

    proj = [Conv2D(4, 6, 1, stride=2, use_bias=False), BatchNorm(6)]
    model = Sequential(
        [Conv2D(3, 4, 3, padding=1), BatchNorm(4), ReLU(), block(4, 4, 1, None), ReLU(),
         block(4, 4, 2, ZeroPadShortcut(4, 2)), block(4, 6, 2, proj), GroupNorm(3, 6), ReLU(),
         GlobalAveragePool2D(), LayerNorm(6), Dense(6, 3)]
    )  # fmt: skip
    model.astype(dtype)
    for key, v in model.params.items():
        if key.endswith(("gamma", "beta")):
            v[...] = RNG.normal(1.0 if key.endswith("gamma") else 0.0, 0.3, v.shape)
    model.forward(RNG.normal(size=(8, 8, 8, 3)).astype(dtype))  # running statistics move
    return model.eval()


X = RNG.normal(size=(5, 8, 8, 3))


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    model = small_net()
    save_checkpoint(tmp_path / "c.npz", model)
    back = load_checkpoint(tmp_path / "c.npz").model
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)
    x = X.astype(np.float32)
    assert back.eval().forward(x).tobytes() == model.forward(x).tobytes()
    bnlab.save(model, tmp_path / "m.npz")
    again = bnlab.load(tmp_path / "m.npz")
    assert again.get_config() == model.get_config()
    assert again.eval().forward(x).tobytes() == model.forward(x).tobytes()


def test_checkpoint_refuses_a_residual_config_that_disagrees_with_its_arrays(tmp_path):
    model = small_net()
    save_checkpoint(tmp_path / "c.npz", model)
    with np.load(tmp_path / "c.npz") as f:
        arrays = dict(f)
    arrays["model/6.1.0.W"] = np.zeros((1, 1, 4, 5), np.float32)  # the projection's kernel
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(bnlab.deploy.CheckpointError, match="6.1.0.W"):
        load_checkpoint(tmp_path / "bad.npz")


def test_onnx_export_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = small_net()
    proto = export_onnx(model, tmp_path / "m.onnx", (8, 8, 3))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Add") >= 3 and "Pad" in ops and ops.count("LayerNormalization") == 2
    x = X.astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-4, atol=1e-4)


def test_onnx_float64_dense_residual_with_norms(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = (
        Sequential(
            [
                Dense(5, 8),
                LayerNorm(8, bias=False),
                Residual([Dense(8, 8), GroupNorm(4, 8)]),
                Dense(8, 2),
            ]
        )
        .astype(np.float64)
        .eval()
    )
    export_onnx(model, tmp_path / "d.onnx", (5,))
    x = RNG.normal(size=(4, 5))
    got = ort.InferenceSession(str(tmp_path / "d.onnx")).run(None, {"input": x})[0]
    # onnxruntime's float64 LayerNormalization loses digits on groups of two values (1e-9)
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_to_torch_and_back(mode):
    model = small_net(np.float64)
    getattr(model, mode)()
    twin = to_torch(model)
    assert sum(type(m).__name__ == "Residual" for m in twin.modules()) == 3
    x = X.copy()
    want = twin(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(model.forward(x), want, rtol=1e-10, atol=1e-12)
    back = from_torch(twin)
    assert back.get_config()["layers"][3]["type"] == "Residual"
    np.testing.assert_allclose(back.forward(x), want, rtol=1e-10, atol=1e-12)


def test_fold_batch_norm_inside_branches_and_shortcuts():
    model = small_net(np.float64)
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, BatchNorm) for m in folded.modules())
    assert sum(isinstance(m, GroupNorm) for m in folded.modules()) == 1  # kept: BN-only folding
    assert (
        type(folded.layers[5]).__name__ == "Residual" and folded.layers[5].shortcut is not None
    )  # 1st BN folded
    x = X.copy()
    np.testing.assert_allclose(folded.forward(x), model.forward(x), rtol=1e-10, atol=1e-12)


def test_convert_sync_batchnorm_converts_inside_blocks():
    model = small_net()
    n = sum(isinstance(m, BatchNorm) for m in model.modules())
    convert_sync_batchnorm(model)
    assert sum(isinstance(m, SyncBatchNorm) for m in model.modules()) == n == 8
    x = X.astype(np.float32)
    assert model.layers[6].shortcut.layers[1].__class__ is SyncBatchNorm
    assert model.forward(x).shape == (5, 3)


def test_avg_pool_in_onnx_and_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from bnlab.layers import AvgPool2D

    model = Sequential([Conv2D(3, 4, 3), AvgPool2D(3, 2, "same"), AvgPool2D(2), ReLU()]).eval()
    export_onnx(model, tmp_path / "p.onnx", (9, 8, 3))
    x = X.astype(np.float32)[:, :, :, :].repeat(2, axis=1)[:, :9]
    got = ort.InferenceSession(str(tmp_path / "p.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-5, atol=1e-6)
    valid = Sequential([Conv2D(3, 4, 3), AvgPool2D(2, 1)]).astype(np.float64)
    back = from_torch(to_torch(valid))
    assert type(back.layers[1]).__name__ == "AvgPool2D"
    np.testing.assert_allclose(back.forward(X), valid.forward(X), rtol=1e-12, atol=1e-13)
