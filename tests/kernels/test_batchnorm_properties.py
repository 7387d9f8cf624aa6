"""The mathematical properties the source texts state for batch normalization (Ioffe 2015, 3.3)."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.kernels import batch_norm_backward, batch_norm_forward

EPS = 1e-16  # the invariances are exact as eps -> 0


def bn_dense(u: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, object]:
    return batch_norm_forward(u @ W, None, None, eps=EPS)


def jacobian_wrt_u(u: np.ndarray, W: np.ndarray) -> np.ndarray:
    """d BN(uW) / du as a matrix (rows: outputs, columns: inputs), one backward per output."""
    y, cache = bn_dense(u, W)
    J = np.zeros((y.size, u.size))
    for i in range(y.size):
        e = np.zeros(y.size)
        e[i] = 1.0
        dx, _, _ = batch_norm_backward(e.reshape(y.shape), cache)
        J[i] = (dx @ W.T).ravel()
    return J


@pytest.fixture
def uW():
    rng = np.random.default_rng(11)
    return rng.normal(size=(6, 4)), rng.normal(size=(4, 3))


@pytest.mark.parametrize("a", [0.01, 0.5, 3.0, 1000.0])
def test_scale_invariance_forward(uW, a):
    u, W = uW
    np.testing.assert_allclose(bn_dense(u, a * W)[0], bn_dense(u, W)[0], atol=1e-9)


@pytest.mark.parametrize("a", [0.01, 3.0, 1000.0])
def test_jacobian_wrt_input_unchanged_by_weight_scale(uW, a):
    u, W = uW
    J, J_a = jacobian_wrt_u(u, W), jacobian_wrt_u(u, a * W)
    np.testing.assert_allclose(J_a, J, rtol=1e-8, atol=1e-9)
    assert np.abs(J).max() > 1e-2  # not a vacuous comparison


@pytest.mark.parametrize("a", [0.01, 3.0, 1000.0])
def test_weight_gradient_scales_as_one_over_a(uW, a):
    u, W = uW
    w = np.random.default_rng(12).normal(size=(6, 3))  # loss = sum(w * BN(u W))

    def grad_W(Wm: np.ndarray) -> np.ndarray:
        _, cache = bn_dense(u, Wm)
        dx, _, _ = batch_norm_backward(w, cache)
        return u.T @ dx

    np.testing.assert_allclose(grad_W(a * W), grad_W(W) / a, rtol=1e-7, atol=1e-12)
    assert np.abs(grad_W(W)).max() > 1e-2


@pytest.mark.parametrize(("shape", "axis"), [((50, 4), -1), ((8, 5, 5, 3), -1), ((8, 3, 5, 5), 1)])
def test_identity_recovered(shape, axis):
    rng = np.random.default_rng(13)
    x = rng.normal(2.0, 3.0, size=shape)
    red = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    mean, var = x.mean(axis=red), x.var(axis=red)
    y, _ = batch_norm_forward(x, np.sqrt(var + 1e-5), mean, axis=axis)
    np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("shape", "axis"), [((50, 4), -1), ((8, 5, 5, 3), -1), ((8, 3, 5, 5), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_mean_zero_variance_one(shape, axis, dtype):
    rng = np.random.default_rng(14)
    x = rng.normal(-7.0, 4.0, size=shape).astype(dtype)
    y, _ = batch_norm_forward(x, None, None, axis=axis)
    red = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    y64 = y.astype(np.float64)
    np.testing.assert_allclose(y64.mean(axis=red), 0.0, atol=1e-6)
    np.testing.assert_allclose(y64.var(axis=red), 1.0, atol=1e-5)
