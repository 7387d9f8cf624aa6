"""A model trained with synchronized BN (``convert_sync_batchnorm``) deploys like any other.

The Sync twins compute their local twin's function at inference, so folding, ONNX export,
``to_torch`` and checkpoints must treat them as BatchNorm / BatchRenorm, with equal outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnlab.deploy import export_onnx, fold_batch_norm, load_checkpoint, save_checkpoint, to_torch
from bnlab.layers import (
    BatchNorm,
    Dense,
    Sequential,
    Sigmoid,
    SyncBatchNorm,
    convert_sync_batchnorm,
)


def _trained_pair() -> tuple[Sequential, Sequential]:
    """A local model with non-trivial running statistics and its synchronized copy (eval)."""
    local = Sequential([Dense(4, 8, seed=0), BatchNorm(8), Sigmoid(), Dense(8, 3, seed=1)])
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(16, 4)).astype(np.float32)
    for _ in range(3):
        local.forward(x)
    synced = convert_sync_batchnorm(local)
    assert isinstance(synced.layers[1], SyncBatchNorm)
    return local.eval(), synced.eval()


X = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)


def test_fold_of_a_synced_model_equals_the_local_fold() -> None:
    local, synced = _trained_pair()
    np.testing.assert_array_equal(
        fold_batch_norm(synced).forward(X), fold_batch_norm(local).forward(X)
    )
    assert not any(isinstance(layer, SyncBatchNorm) for layer in fold_batch_norm(synced).layers)


def test_to_torch_of_a_synced_model_matches_its_eval_output() -> None:
    torch = pytest.importorskip("torch")
    local, synced = _trained_pair()
    module = to_torch(synced).eval()
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, synced.forward(X), rtol=1e-5, atol=1e-6)


def test_onnx_export_of_a_synced_model_runs_like_the_model(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    _, synced = _trained_pair()
    path = tmp_path / "synced.onnx"
    export_onnx(synced, path, input_shape=(4,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": X})
    np.testing.assert_allclose(out, synced.forward(X), rtol=1e-5, atol=1e-6)


def test_checkpoint_of_a_synced_model_loads_in_one_process(tmp_path: Path) -> None:
    _, synced = _trained_pair()
    save_checkpoint(tmp_path / "c.npz", synced)
    back = load_checkpoint(tmp_path / "c.npz").model.eval()
    np.testing.assert_array_equal(back.forward(X), synced.forward(X))
