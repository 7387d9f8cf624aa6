"""Batch renorm kernels against PyTorch autograd (r, d detached) and float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnlab.kernels import (
    batch_renorm_backward,
    batch_renorm_forward,
    batch_renorm_inference,
)
from bnlab.kernels import batchrenorm_ref as ref
from bnlab.kernels.batchrenorm_ref import batch_renorm_r_d

EPS = 1e-3


def torch_renorm(x, gamma, beta, mu, sigma, *, axis, eps, rmax, dmax, vbs=None):
    """Algorithm 1 of Ioffe 2017 in torch, r and d detached; returns y (autograd-enabled)."""
    xt = torch.movedim(x, axis, -1)
    shape = xt.shape
    groups = 1 if vbs is None else shape[0] // vbs
    xg = xt.reshape(groups, -1, shape[-1])
    mu_b = xg.mean(dim=1, keepdim=True)
    sigma_b = torch.sqrt(xg.var(dim=1, unbiased=False, keepdim=True) + eps)
    r = torch.clamp(sigma_b / sigma, 1.0 / rmax, rmax).detach()
    d = torch.clamp((mu_b - mu) / sigma, -dmax, dmax).detach()
    y = gamma * ((xg - mu_b) / sigma_b * r + d) + beta
    return torch.movedim(y.reshape(shape), -1, axis)


def make(rng, shape, axis, dtype=np.float64):
    c = shape[axis]
    x = rng.normal(2.0, 3.0, size=shape).astype(dtype)
    gamma = rng.normal(1.0, 0.5, size=c)
    beta = rng.normal(0.0, 0.5, size=c)
    mu = rng.normal(2.0, 1.0, size=c)
    sigma = rng.uniform(1.0, 6.0, size=c)
    return x, gamma, beta, mu, sigma


CASES = [((16, 5), -1, None), ((4, 3, 3, 6), -1, None), ((4, 6, 3, 3), 1, None),
         ((6, 4), 0, None), ((12, 5), -1, 4), ((8, 2, 2, 3), -1, 2), ((12, 5), -1, 2)]  # fmt: skip


@pytest.mark.parametrize("shape,axis,vbs", CASES)
@pytest.mark.parametrize("rmax,dmax", [(1.0, 0.0), (1.5, 0.5), (3.0, 5.0)])
def test_forward_backward_match_torch_autograd(rng, shape, axis, vbs, rmax, dmax):
    x, gamma, beta, mu, sigma = make(rng, shape, axis)
    dy = rng.normal(size=shape)
    y, cache = batch_renorm_forward(
        x, gamma, beta, mu, sigma, axis=axis, eps=EPS, rmax=rmax, dmax=dmax,
        groups=None if vbs is None else shape[0] // vbs,
    )  # fmt: skip
    dx, dgamma, dbeta = batch_renorm_backward(dy, cache)

    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    yt = torch_renorm(
        xt, gt, bt, torch.tensor(mu), torch.tensor(sigma), axis=axis, eps=EPS, rmax=rmax,
        dmax=dmax, vbs=vbs,
    )  # fmt: skip
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert y.dtype == np.float64 and dx.dtype == np.float64


def fixed_rd_forward(x, gamma, beta, r, d, eps):
    """y(x) for (N, C) input with r and d frozen (the function whose gradient backprop gives)."""
    mu_b = x.mean(axis=0)
    sigma_b = np.sqrt(((x - mu_b) ** 2).mean(axis=0) + eps)
    return gamma * ((x - mu_b) / sigma_b * r + d) + beta


def test_backward_is_gradient_with_r_d_fixed_finite_differences(rng):
    x, gamma, beta, mu, sigma = make(rng, (7, 4), -1)
    w = rng.normal(size=x.shape)
    _, cache = batch_renorm_forward(x, gamma, beta, mu, sigma, eps=EPS, rmax=3.0, dmax=5.0)
    r, d = cache.r[0], cache.d[0]
    assert np.all((r > 1 / 3) & (r < 3)) and np.all(np.abs(d) < 5)  # not clipped: r, d vary
    dx, dgamma, dbeta = batch_renorm_backward(w, cache)

    def loss(xx=x, gg=gamma, bb=beta):
        return float(np.sum(w * fixed_rd_forward(xx, gg, bb, r, d, EPS)))

    h = 1e-6
    for arr, grad in ((x, dx), (gamma, dgamma), (beta, dbeta)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            orig = arr[idx]
            arr[idx] = orig + h
            up = loss()
            arr[idx] = orig - h
            down = loss()
            arr[idx] = orig
            num[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_saturated_r_d_backward_equals_full_finite_differences(rng):
    """With r and d clipped, they are locally constant: backprop is the true gradient."""
    x = rng.normal(0.0, 1.0, size=(6, 3))
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    mu, sigma = np.full(3, 10.0), np.full(3, 0.05)  # far away: r = rmax, d = -dmax
    w = rng.normal(size=x.shape)
    kw = {"eps": EPS, "rmax": 2.0, "dmax": 1.5}
    _, cache = batch_renorm_forward(x, gamma, beta, mu, sigma, **kw)
    np.testing.assert_array_equal(cache.r, 2.0)
    np.testing.assert_array_equal(cache.d, -1.5)
    dx, _, _ = batch_renorm_backward(w, cache)
    h = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        up = np.sum(w * batch_renorm_forward(xp, gamma, beta, mu, sigma, **kw)[0])
        down = np.sum(w * batch_renorm_forward(xm, gamma, beta, mu, sigma, **kw)[0])
        num[idx] = (up - down) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


def test_rmax1_dmax0_is_batch_norm_torch(rng):
    x, gamma, beta, mu, sigma = make(rng, (10, 2, 2, 4), -1)
    dy = rng.normal(size=x.shape)
    y, cache = batch_renorm_forward(x, gamma, beta, mu, sigma, eps=EPS, rmax=1.0, dmax=0.0)
    dx, dgamma, dbeta = batch_renorm_backward(dy, cache)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    yt = torch.nn.functional.batch_norm(xt, None, None, gt, bt, training=True, eps=EPS)
    yt.backward(torch.tensor(dy.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-11)
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), atol=1e-11)
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), atol=1e-11)


def test_rmax1_dmax0_is_bnlab_batch_norm(rng):
    from bnlab import kernels

    x, gamma, beta, mu, sigma = make(rng, (9, 5), -1)
    dy = rng.normal(size=x.shape)
    y, cache = batch_renorm_forward(x, gamma, beta, mu, sigma, eps=EPS, rmax=1.0, dmax=0.0)
    dx, dgamma, dbeta = batch_renorm_backward(dy, cache)
    y_bn, cache_bn = kernels.batch_norm_forward(x, gamma, beta, eps=EPS)
    dx_bn, dgamma_bn, dbeta_bn = kernels.batch_norm_backward(dy, cache_bn)
    np.testing.assert_allclose(y, y_bn, atol=1e-12)
    np.testing.assert_allclose(dx, dx_bn, atol=1e-11)
    np.testing.assert_allclose(dgamma, dgamma_bn, atol=1e-11)
    np.testing.assert_allclose(dbeta, dbeta_bn, atol=1e-11)


def test_unclipped_training_output_equals_inference_output(rng):
    """x_n r + d = (x - mu)/sigma when nothing is clipped: renorm's training/inference match."""
    x, gamma, beta, mu, sigma = make(rng, (20, 6), -1)
    y, cache = batch_renorm_forward(x, gamma, beta, mu, sigma, eps=EPS, rmax=1e6, dmax=1e6)
    np.testing.assert_allclose(y, batch_renorm_inference(x, mu, sigma, gamma, beta), atol=1e-12)
    np.testing.assert_allclose(cache.r[0], cache.std[0] / sigma)


def test_virtual_batches_normalize_each_chunk_on_its_own(rng):
    x, gamma, beta, mu, sigma = make(rng, (12, 2, 3), -1)
    kw = {"eps": EPS, "rmax": 2.0, "dmax": 1.0}
    y, cache = batch_renorm_forward(x, gamma, beta, mu, sigma, groups=4, **kw)
    assert cache.mean.shape == (4, 3)
    for i in range(4):
        part = slice(3 * i, 3 * i + 3)
        y_i, cache_i = batch_renorm_forward(x[part], gamma, beta, mu, sigma, **kw)
        np.testing.assert_allclose(y[part], y_i, atol=1e-13)
        np.testing.assert_allclose(cache.r[i], cache_i.r[0])
        np.testing.assert_allclose(cache.d[i], cache_i.d[0])
    with pytest.raises(ValueError, match="groups=5 must divide"):
        batch_renorm_forward(x, gamma, beta, mu, sigma, groups=5)


def test_r_d_clip_values():
    r, d = batch_renorm_r_d(
        np.array([0.0, 10.0, -10.0]), np.array([1.0, 100.0, 0.01]),
        np.zeros(3), np.ones(3), rmax=3.0, dmax=5.0,
    )  # fmt: skip
    np.testing.assert_array_equal(r, [1.0, 3.0, 1 / 3])
    np.testing.assert_array_equal(d, [0.0, 5.0, -5.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_low_precision_dtype_policy(rng, dtype):
    x64, gamma, beta, mu, sigma = make(rng, (32, 4), -1)
    x = x64.astype(dtype)
    y, cache = batch_renorm_forward(x, gamma, beta, mu, sigma)
    dx, dgamma, dbeta = batch_renorm_backward(np.ones_like(x), cache)
    assert y.dtype == dtype and dx.dtype == dtype and dgamma.dtype == np.float32
    y64, _ = batch_renorm_forward(x.astype(np.float64), gamma, beta, mu, sigma)
    tol = 1e-5 if dtype == np.float32 else 1e-2
    np.testing.assert_allclose(y.astype(np.float64), y64, rtol=tol, atol=tol * 10)


def test_float32_large_offset_is_accurate(rng):
    """Two-pass variance: no cancellation for data far from zero."""
    x = (1e4 + 1e-2 * rng.normal(size=(64, 3))).astype(np.float32)
    ones, zeros = np.ones(3), np.zeros(3)
    y, cache = batch_renorm_forward(x, ones, zeros, zeros, ones, eps=1e-8, rmax=1.0, dmax=0.0)
    ref = x.astype(np.float64)
    var = ref.var(axis=0)
    np.testing.assert_allclose(cache.var[0], var, rtol=1e-3)
    np.testing.assert_allclose(y, (ref - ref.mean(0)) / np.sqrt(var + 1e-8), atol=2e-2)


def test_inference_formula(rng):
    x, gamma, beta, mu, sigma = make(rng, (3, 4, 5), 1)
    y = batch_renorm_inference(x, mu, sigma, gamma, beta, axis=1)
    s = (1, 4, 1)
    expected = gamma.reshape(s) * (x - mu.reshape(s)) / sigma.reshape(s) + beta.reshape(s)
    np.testing.assert_allclose(y, expected, rtol=1e-13)


@pytest.mark.parametrize("shape,axis", [((64, 7), -1), ((4, 5, 5, 6), -1), ((4, 6, 5, 5), 1)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_kernel_matches_reference(rng, shape, axis, dtype):
    x, gamma, beta, mu, sigma = make(rng, shape, axis)
    x = (x + 100.0).astype(dtype)  # an offset: both must avoid E[x^2] - E[x]^2
    mu = mu + 100.0
    dy = rng.normal(size=shape).astype(dtype)
    kw = {"axis": axis, "eps": EPS, "rmax": 1.5, "dmax": 0.5}
    y_ref, c_ref = ref.batch_renorm_forward(x, gamma, beta, mu, sigma, **kw)
    y, cache = batch_renorm_forward(x, gamma, beta, mu, sigma, **kw)
    assert y.dtype == dtype
    tol = {np.float64: 1e-10, np.float32: 2e-4, np.float16: 2e-2}[dtype]
    np.testing.assert_allclose(y.astype(np.float64), y_ref.astype(np.float64), atol=tol)
    np.testing.assert_allclose(cache.r, c_ref.r, rtol=tol)
    np.testing.assert_allclose(cache.d, c_ref.d, rtol=tol, atol=tol)
    got = batch_renorm_backward(dy, cache)
    want = ref.batch_renorm_backward(dy, c_ref)
    for g, w in zip(got, want, strict=True):
        scale = max(1.0, float(np.abs(w.astype(np.float64)).max()))
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), atol=tol * scale)
