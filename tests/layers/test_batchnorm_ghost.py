"""Ghost batch normalization: BatchNorm(..., virtual_batch_size=k)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnlab.layers import BatchNorm

# (shape, axis, k): the last chunk may be smaller (12 = 5 + 5 + 2)
CASES = [((12, 3), -1, 4), ((12, 3), -1, 5), ((8, 3, 3, 2), -1, 2), ((6, 2, 3, 3), 1, 3)]


def chunks(a: np.ndarray, k: int) -> list[np.ndarray]:
    return [a[i : i + k] for i in range(0, a.shape[0], k)]


@pytest.mark.parametrize(("shape", "axis", "k"), CASES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_equals_normalizing_each_chunk_by_hand(shape, axis, k, momentum):
    C = shape[axis]
    ghost = BatchNorm(C, axis=axis, momentum=momentum, virtual_batch_size=k).astype(np.float64)
    plain = BatchNorm(C, axis=axis, momentum=momentum).astype(np.float64)
    rng = np.random.default_rng(31)
    for layer in (ghost, plain):
        layer.params["gamma"][...] = np.linspace(0.5, 2.0, C)
        layer.params["beta"][...] = np.linspace(-1.0, 1.0, C)
    for _ in range(2):
        x = rng.normal(size=shape) * 2 + rng.normal(size=shape[0]).reshape(
            -1, *[1] * (len(shape) - 1)
        )
        dy = rng.normal(size=shape)
        y = ghost.forward(x)
        dx = ghost.backward(dy)
        parts = []
        for c, d in zip(chunks(x, k), chunks(dy, k), strict=True):
            yc, dxc = plain.forward(c), plain.backward(d)
            parts.append((yc, dxc, plain.grads["gamma"].copy(), plain.grads["beta"].copy()))
        np.testing.assert_allclose(y, np.concatenate([p[0] for p in parts]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            dx, np.concatenate([p[1] for p in parts]), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(ghost.grads["gamma"], sum(p[2] for p in parts), rtol=1e-10)
        np.testing.assert_allclose(ghost.grads["beta"], sum(p[3] for p in parts), rtol=1e-10)
    # running statistics: updated from every chunk, in order
    np.testing.assert_allclose(ghost.running_mean, plain.running_mean, rtol=1e-12)
    np.testing.assert_allclose(ghost.running_var, plain.running_var, rtol=1e-12)
    n_chunks = -(-shape[0] // k)
    assert ghost.num_batches_tracked == plain.num_batches_tracked == 2 * n_chunks
    # and differs from normalizing the whole batch at once
    whole = BatchNorm(C, axis=axis).astype(np.float64)
    whole.params["gamma"][...] = ghost.params["gamma"]
    whole.params["beta"][...] = ghost.params["beta"]
    assert not np.allclose(whole.forward(x), y)


def test_matches_torch_batch_norm_per_chunk():
    rng = np.random.default_rng(32)
    x = rng.normal(size=(8, 4, 4, 3)).astype(np.float32)  # NHWC
    bn = BatchNorm(3, virtual_batch_size=2)
    y = bn.forward(x)
    xt = torch.tensor(np.moveaxis(x, -1, 1).copy())
    yt = torch.cat([F.batch_norm(c, None, None, training=True) for c in xt.split(2)])
    np.testing.assert_allclose(y, np.moveaxis(yt.numpy(), 1, -1), rtol=1e-4, atol=2e-5)


def test_finite_differences_of_ghost_layer():
    rng = np.random.default_rng(33)
    shape = (6, 2, 3)
    x, w = rng.normal(size=shape), rng.normal(size=shape)
    bn = BatchNorm(3, virtual_batch_size=4, track_running_stats=False).astype(np.float64)
    bn.params["gamma"][...] = [0.7, 1.3, -0.4]
    bn.params["beta"][...] = [0.1, -0.2, 0.3]
    bn.forward(x)
    dx = bn.backward(w)
    dgamma, dbeta = bn.grads["gamma"].copy(), bn.grads["beta"].copy()
    h = 1e-5

    def numeric(arr: np.ndarray) -> np.ndarray:
        out = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = float((w * bn.forward(x)).sum())
            arr[i] = old - h
            down = float((w * bn.forward(x)).sum())
            arr[i] = old
            out[i] = (up - down) / (2 * h)
        return out

    for arr, grad in ((x, dx), (bn.params["gamma"], dgamma), (bn.params["beta"], dbeta)):
        num = numeric(arr)
        assert np.linalg.norm(num - grad) / np.linalg.norm(grad) < 1e-6


def test_eval_uses_running_stats_on_whole_batch():
    rng = np.random.default_rng(34)
    bn = BatchNorm(3, virtual_batch_size=2).astype(np.float64)
    bn.forward(rng.normal(size=(8, 3)) + 5)
    bn.eval()
    x = rng.normal(size=(7, 3))
    expect = (x - bn.running_mean) / np.sqrt(bn.running_var + bn.eps)
    np.testing.assert_allclose(bn.forward(x), expect, rtol=1e-12)


def test_ghost_bad_inputs_change_nothing():
    bn = BatchNorm(3, virtual_batch_size=4, name="g")
    bn.forward(np.random.default_rng(35).normal(size=(8, 3)).astype(np.float32))
    before = bn.state_dict()
    # 9 = 4 + 4 + 1: the last chunk has one value per channel
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        bn.forward(np.random.default_rng(36).normal(size=(9, 3)).astype(np.float32))
    x = np.random.default_rng(37).normal(size=(8, 3)).astype(np.float32)
    x[6, 0] = np.nan  # only the second chunk is poisoned: the first must not update either
    with pytest.raises(FloatingPointError, match="'g'"):
        bn.forward(x)
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    with pytest.raises(ValueError, match="feature axis must not be 0"):
        BatchNorm(3, axis=0, virtual_batch_size=2).forward(np.ones((3, 4), np.float32))
