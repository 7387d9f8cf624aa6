"""Losses against torch.nn.CrossEntropyLoss / MSELoss and float64 finite differences."""

import numpy as np
import pytest
import torch

from bnlab.losses import MSE, SoftmaxCrossEntropy, log_softmax


def _fd_grad(f, z: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        g[idx] = (f(zp) - f(zm)) / (2 * h)
    return g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_matches_torch(rng, dtype):
    z = rng.normal(size=(7, 5)).astype(dtype) * 3
    y = rng.integers(0, 5, size=7)
    loss, dz = SoftmaxCrossEntropy()(z, y)
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.CrossEntropyLoss()(zt, torch.tensor(y))
    lt.backward()
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert dz.dtype == dtype and dz.shape == z.shape
    assert loss == pytest.approx(lt.item(), rel=tol, abs=tol)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=tol * 10, atol=tol)


def test_cross_entropy_probability_targets_match_torch(rng):
    z = rng.normal(size=(4, 3))
    t = rng.dirichlet(np.ones(3), size=4)
    loss, dz = SoftmaxCrossEntropy()(z, t)
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.CrossEntropyLoss()(zt, torch.tensor(t))
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_one_hot_equals_int_labels(rng):
    z = rng.normal(size=(6, 4))
    y = rng.integers(0, 4, size=6)
    l1, d1 = SoftmaxCrossEntropy()(z, y)
    l2, d2 = SoftmaxCrossEntropy()(z, np.eye(4)[y])
    assert l1 == pytest.approx(l2, rel=1e-14)
    np.testing.assert_allclose(d1, d2, atol=1e-15)


def test_cross_entropy_finite_differences(rng):
    z = rng.normal(size=(3, 4))
    y = np.array([0, 3, 1])
    loss_fn = SoftmaxCrossEntropy()
    _, dz = loss_fn(z, y)
    np.testing.assert_allclose(dz, _fd_grad(lambda v: loss_fn(v, y)[0], z), atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_stable_for_huge_logits(dtype):
    z = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]], dtype=dtype)
    y = np.array([1, 0])
    loss, dz = SoftmaxCrossEntropy()(z, y)
    assert np.isfinite(loss) and np.isfinite(dz).all()
    # sample 0: log softmax at the true class is -1e4; sample 1: -(1e4 + log 2)
    assert loss == pytest.approx((1e4 + 1e4 + np.log(2)) / 2, rel=1e-6)
    zt = torch.tensor(z, requires_grad=True)
    torch.nn.CrossEntropyLoss()(zt, torch.tensor(y)).backward()
    np.testing.assert_allclose(dz, zt.grad.numpy(), atol=1e-7)


def test_float16_computed_in_float32_and_returned_as_float16(rng):
    z = rng.normal(size=(5, 3)).astype(np.float16)
    y = rng.integers(0, 3, size=5)
    loss, dz = SoftmaxCrossEntropy()(z, y)
    ref, dref = SoftmaxCrossEntropy()(z.astype(np.float32), y)
    assert dz.dtype == np.float16
    assert loss == pytest.approx(ref, rel=1e-6)
    np.testing.assert_allclose(dz, dref.astype(np.float16))


def test_log_softmax_sums_to_one(rng):
    z = rng.normal(size=(4, 6)) * 100
    np.testing.assert_allclose(np.exp(log_softmax(z)).sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    ("z", "y", "exc", "msg"),
    [
        (np.zeros((3, 4)), np.array([0, 1]), ValueError, r"shape \(3,\)"),
        (np.zeros((3, 4)), np.array([0, 1, 4]), ValueError, r"\[0, 3\]"),
        (np.zeros((3, 4)), np.array([0, -1, 2]), ValueError, r"\[-1, 2\]"),
        (np.zeros(4), np.array([0]), ValueError, "logits"),
        (np.zeros((3, 4)), np.zeros((3, 3)), ValueError, r"\(3, 4\)"),
        (np.zeros((3, 4), dtype=int), np.array([0, 1, 2]), TypeError, "floating-point"),
        (np.zeros((3, 4)), np.array(["a", "b", "c"]), TypeError, "class indices"),
    ],
)
def test_cross_entropy_errors(z, y, exc, msg):
    with pytest.raises(exc, match=msg):
        SoftmaxCrossEntropy()(z, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_matches_torch(rng, dtype):
    y = rng.normal(size=(6, 3)).astype(dtype)
    t = rng.normal(size=(6, 3)).astype(dtype)
    loss, dy = MSE()(y, t)
    yt = torch.tensor(y, requires_grad=True)
    lt = torch.nn.MSELoss()(yt, torch.tensor(t))
    lt.backward()
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert dy.dtype == dtype
    assert loss == pytest.approx(lt.item(), rel=tol)
    np.testing.assert_allclose(dy, yt.grad.numpy(), rtol=tol, atol=tol)


def test_mse_finite_differences(rng):
    y, t = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    _, dy = MSE()(y, t)
    np.testing.assert_allclose(dy, _fd_grad(lambda v: MSE()(v, t)[0], y), atol=1e-8)


def test_mse_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"outputs \(4, 1\) and targets \(4,\)"):
        MSE()(np.zeros((4, 1)), np.zeros(4))
