"""bnlab.kernels batch norm (fused and reference) against PyTorch, finite differences, numerics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlab.kernels import (
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_inference,
    batch_norm_inference_backward,
    merge_moments,
    moments,
)
from bnlab.kernels import batchnorm_ref as ref

# (shape, feature axis): dense, NHWC, NCHW, sequences (N, L, C), N = 2 and odd sizes
CASES = [
    ((2, 3), -1),
    ((7, 5), -1),
    ((256, 33), 1),
    ((2, 5, 3, 4), -1),
    ((3, 4, 5, 7), 3),
    ((4, 3, 5, 6), 1),
    ((5, 9, 6), -1),
    ((5, 6, 9), 1),
    ((9, 7, 11, 5), -1),
    ((3, 2, 4), 0),
]


def torch_train(x, gamma, beta, dy, axis, eps=1e-5):
    """PyTorch's F.batch_norm in training mode with the feature axis moved to 1 (NCHW)."""
    xt = torch.tensor(np.moveaxis(x, axis, 1).copy(), requires_grad=True)
    g = torch.tensor(gamma, requires_grad=True)
    b = torch.tensor(beta, requires_grad=True)
    y = F.batch_norm(xt, None, None, g, b, training=True, eps=eps)
    y.backward(torch.tensor(np.moveaxis(dy, axis, 1).copy()))
    back = [np.moveaxis(t.detach().numpy(), 1, axis) for t in (y, xt.grad)]
    return back[0], back[1], g.grad.numpy(), b.grad.numpy()


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def make(shape, axis, dtype, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[axis]
    x = (rng.normal(size=shape) * rng.uniform(0.5, 3, size=C).reshape(
        [C if i == axis % len(shape) else 1 for i in range(len(shape))]
    ) + 2.0).astype(dtype)  # fmt: skip
    gamma = rng.normal(1.0, 0.5, size=C).astype(dtype)
    beta = rng.normal(size=C).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    return x, gamma, beta, dy


@pytest.mark.parametrize(("shape", "axis"), CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("impl", ["fused", "ref"])
def test_training_matches_torch(shape, axis, dtype, impl):
    x, gamma, beta, dy = make(shape, axis, dtype)
    fwd, bwd = (
        (batch_norm_forward, batch_norm_backward)
        if impl == "fused"
        else (ref.batch_norm_forward, ref.batch_norm_backward)
    )
    y, cache = fwd(x, gamma, beta, axis=axis)
    ours = (y,) + bwd(dy, cache)
    # the cache carries the biased batch variance in float64
    red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    np.testing.assert_allclose(cache.var[0], x.astype(np.float64).var(axis=red), rtol=1e-10)
    np.testing.assert_allclose(cache.mean[0], x.astype(np.float64).mean(axis=red), rtol=1e-10)
    theirs = torch_train(x, gamma, beta, dy, axis)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == dtype and a.shape == b.shape
    if dtype == np.float64:
        for a, b in zip(ours, theirs, strict=True):
            assert rel_err(a, b) < 1e-12
        return
    # float32: torch's own float32 dx loses digits where its terms cancel (N = 2), so compare
    # with a tolerance on the size of the terms, and tightly with torch in float64
    scale = np.abs(gamma).max() / np.sqrt(cache.var[0].min() + 1e-5) * np.abs(dy).max()
    np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=1e-4 * scale)
    for a, b in ((ours[0], theirs[0]), (ours[2], theirs[2]), (ours[3], theirs[3])):
        assert rel_err(a, b) < 2e-5
    exact = torch_train(*(v.astype(np.float64) for v in (x, gamma, beta, dy)), axis)
    for a, b in zip(ours, exact, strict=True):
        assert rel_err(a, b) < 2e-6


@pytest.mark.parametrize(("shape", "axis"), CASES)
def test_fused_matches_reference_float32(shape, axis):
    x, gamma, beta, dy = make(shape, axis, np.float32, seed=1)
    y, c = batch_norm_forward(x, gamma, beta, axis=axis)
    y_r, c_r = ref.batch_norm_forward(x, gamma, beta, axis=axis)
    assert rel_err(y, y_r) < 1e-6
    for ours, theirs in zip(
        batch_norm_backward(dy, c), ref.batch_norm_backward(dy, c_r), strict=True
    ):
        assert rel_err(ours, theirs) < 1e-6


@pytest.mark.parametrize(("shape", "axis"), [((5, 4), -1), ((3, 2, 2, 3), 1), ((2, 3, 2, 3), -1)])
@pytest.mark.parametrize("impl", ["fused", "ref"])
def test_finite_differences(shape, axis, impl):
    """Central differences of L = sum(w * y) (sum(y) itself has dx = 0)."""
    fwd, bwd = (
        (batch_norm_forward, batch_norm_backward)
        if impl == "fused"
        else (ref.batch_norm_forward, ref.batch_norm_backward)
    )
    x, gamma, beta, w = make(shape, axis, np.float64, seed=2)

    def loss(x_, g_, b_):
        return float((w * fwd(x_, g_, b_, axis=axis)[0]).sum())

    dx, dgamma, dbeta = bwd(w, fwd(x, gamma, beta, axis=axis)[1])
    h = 1e-5
    for arr, grad in ((x, dx), (gamma, dgamma), (beta, dbeta)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = loss(x, gamma, beta)
            arr[i] = old - h
            down = loss(x, gamma, beta)
            arr[i] = old
            num[i] = (up - down) / (2 * h)
        assert np.linalg.norm(num - grad) / np.linalg.norm(grad) < 1e-6


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=2, max_size=4).flatmap(
        lambda s: st.tuples(st.just(tuple(s)), st.integers(-len(s), len(s) - 1))
    ),
    st.integers(0, 2**31 - 1),
)
def test_hypothesis_shapes_and_axes(shape_axis, seed):
    shape, axis = shape_axis
    if np.prod(shape) // shape[axis] < 2:
        shape = (shape[0] + 2,) + shape[1:] if axis % len(shape) != 0 else shape + (2,)
    x, gamma, beta, dy = make(shape, axis, np.float64, seed=seed % 1000)
    y, cache = batch_norm_forward(x, gamma, beta, axis=axis)
    dx, dgamma, dbeta = batch_norm_backward(dy, cache)
    ty, tdx, tdg, tdb = torch_train(x, gamma, beta, dy, axis)
    for ours, theirs in ((y, ty), (dx, tdx), (dgamma, tdg), (dbeta, tdb)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("shape", "axis"), [((6, 5), -1), ((4, 3, 5, 6), 1), ((3, 4, 5, 6), -1)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inference_and_its_gradient_match_torch(shape, axis, dtype):
    x, gamma, beta, dy = make(shape, axis, dtype, seed=3)
    rng = np.random.default_rng(4)
    C = shape[axis]
    mean, var = rng.normal(size=C).astype(dtype), rng.uniform(0.5, 2, size=C).astype(dtype)
    xt = torch.tensor(np.moveaxis(x, axis, 1).copy(), requires_grad=True)
    g, b = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    yt = F.batch_norm(xt, torch.tensor(mean), torch.tensor(var), g, b, training=False, eps=1e-5)
    yt.backward(torch.tensor(np.moveaxis(dy, axis, 1).copy()))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    y = batch_norm_inference(x, mean, var, gamma, beta, axis=axis)
    assert y.dtype == dtype
    assert rel_err(y, np.moveaxis(yt.detach().numpy(), 1, axis)) < tol
    dx, dgamma, dbeta = batch_norm_inference_backward(dy, x, mean, var, gamma, axis=axis)
    assert rel_err(dx, np.moveaxis(xt.grad.numpy(), 1, axis)) < tol
    assert rel_err(dgamma, g.grad.numpy()) < tol * 10
    assert rel_err(dbeta, b.grad.numpy()) < tol * 10
    assert rel_err(y, ref.batch_norm_inference(x, mean, var, gamma, beta, axis=axis)) < tol


@pytest.mark.parametrize("impl", ["fused", "ref"])
def test_large_offset_no_cancellation(impl):
    """float32 x = 1e4 + 1e-2 N(0, 1): E[x^2] - E[x]^2 in float32 would give garbage."""
    fwd = batch_norm_forward if impl == "fused" else ref.batch_norm_forward
    x = (1e4 + 1e-2 * np.random.default_rng(5).normal(size=(4096, 4))).astype(np.float32)
    x64 = x.astype(np.float64)
    var = x64.var(axis=0)
    naive = np.mean(x * x, axis=0) - np.mean(x, axis=0) ** 2  # float32 textbook formula
    assert np.abs(naive - var).max() > 1e-3 * var.max()  # the trap is real
    y, cache = fwd(x, None, None, eps=1e-9)
    np.testing.assert_allclose(y.astype(np.float64).std(axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.abs(y.astype(np.float64).mean(axis=0)), 0.0, atol=1e-3)
    np.testing.assert_allclose(cache.var[0], var, rtol=1e-6)
    # with the default eps the std is sqrt(var / (var + eps)), also within 1e-3
    y, _ = fwd(x, None, None)
    np.testing.assert_allclose(y.std(axis=0), np.sqrt(var / (var + 1e-5)), atol=1e-3)


@pytest.mark.parametrize("impl", ["fused", "ref"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_variance_channel(impl, dtype):
    fwd, bwd = (
        (batch_norm_forward, batch_norm_backward)
        if impl == "fused"
        else (ref.batch_norm_forward, ref.batch_norm_backward)
    )
    x, gamma, beta, dy = make((8, 3), -1, dtype, seed=6)
    x[:, 1] = 3.7
    y, cache = fwd(x, gamma, beta)
    np.testing.assert_array_equal(y[:, 1], np.full(8, beta[1], dtype))
    dx, dgamma, dbeta = bwd(dy, cache)
    assert np.isfinite(dx).all() and np.isfinite(dgamma).all() and np.isfinite(dbeta).all()
    # constant channel: xhat = 0, so dx = gamma / sqrt(eps) * (dy - mean(dy))
    expect = gamma[1] / np.sqrt(1e-5) * (dy[:, 1] - dy[:, 1].mean())
    np.testing.assert_allclose(dx[:, 1], expect, rtol=1e-4 if dtype == np.float32 else 1e-10)


def test_float16_computed_in_float32():
    x, gamma, beta, dy = make((16, 8, 8, 4), -1, np.float32, seed=7)
    x16, dy16 = x.astype(np.float16), dy.astype(np.float16)
    y, cache = batch_norm_forward(x16, gamma, beta)
    assert y.dtype == np.float16
    y32, c32 = batch_norm_forward(x16.astype(np.float32), gamma, beta)
    np.testing.assert_array_equal(y, y32.astype(np.float16))
    dx, dgamma, _ = batch_norm_backward(dy16, cache)
    assert dx.dtype == np.float16 and dgamma.dtype == np.float32
    dx32, _, _ = batch_norm_backward(dy16.astype(np.float32), c32)
    np.testing.assert_array_equal(dx, dx32.astype(np.float16))
    yi = batch_norm_inference(x16, cache.mean[0], cache.var[0], gamma, beta)
    assert yi.dtype == np.float16


def test_hot_path_does_not_copy_input():
    x = np.random.default_rng(8).normal(size=(4, 5, 5, 6)).astype(np.float32)
    _, cache = batch_norm_forward(x, None, None)
    assert cache.x is x or np.shares_memory(cache.x, x)
    _, cache = batch_norm_forward(np.moveaxis(x, -1, 1).copy(), None, None, axis=1)
    assert cache.x.flags.c_contiguous


def test_moments_and_merge():
    x = (np.random.default_rng(9).normal(size=(1000, 3, 2)) * 3 + 5).astype(np.float32)
    mean, var, n = moments(x, axis=1)
    x64 = np.moveaxis(x.astype(np.float64), 1, -1).reshape(-1, 3)
    np.testing.assert_allclose(mean, x64.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var, x64.var(axis=0), rtol=1e-10)
    assert n == 2000
    acc = moments(x[:1], axis=1)
    acc = merge_moments(*acc, *moments(x[1:700], axis=1))
    acc = merge_moments(*acc, *moments(x[700:], axis=1))
    np.testing.assert_allclose(acc[0], mean, rtol=1e-12)
    np.testing.assert_allclose(acc[1], var, rtol=1e-10)
    assert acc[2] == n
    empty = moments(np.zeros((0, 3), np.float32))
    assert empty[2] == 0
    merged = merge_moments(*empty, mean, var, n)
    np.testing.assert_allclose(merged[0], mean)
    np.testing.assert_allclose(merged[1], var)


@pytest.mark.parametrize("impl", ["fused", "ref"])
def test_bad_inputs(impl):
    fwd, bwd = (
        (batch_norm_forward, batch_norm_backward)
        if impl == "fused"
        else (ref.batch_norm_forward, ref.batch_norm_backward)
    )
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fwd(np.ones(4, np.float32), None, None)
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        fwd(x, None, None, axis=2)
    with pytest.raises(TypeError, match="floating-point"):
        fwd(np.ones((4, 3), np.int64), None, None)
    with pytest.raises(TypeError, match="floating-point"):
        fwd(np.ones((4, 3), object), None, None)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        fwd(x, np.ones(4), None)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        fwd(np.ones((1, 3), np.float32), None, None)
    y, empty = fwd(np.ones((0, 3), np.float32), None, None)  # an empty batch: empty output
    assert y.shape == (0, 3) and bwd(np.ones((0, 3), np.float32), empty)[0].shape == (0, 3)
    _, cache = fwd(np.arange(12, dtype=np.float32).reshape(4, 3), None, None)
    with pytest.raises(ValueError, match=r"dy must have the forward input's shape \(4, 3\)"):
        bwd(np.ones((3, 4), np.float32), cache)
    assert batch_norm_inference(np.ones((0, 3), np.float32), None, None, None, None).shape == (0, 3)


@pytest.mark.parametrize(("shape", "axis"), [((64, 9), 1), ((6, 5, 7), 1)])
def test_serial_twins_give_the_parallel_loops_bits(shape, axis):
    """Each compiled pass is a (serial, parallel) pair: the same blocks give the same bits,
    whichever runs them (ghost groups of 1 and 3 blocks, the last one empty)."""
    from bnlab.kernels import batchnorm as bn
    from bnlab.kernels import batchnorm_fused as fk

    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    v, u = bn.channel_view(x, axis), bn.channel_view(dy, axis)
    G, C = 3, v.shape[1]
    bounds, nblocks = np.array([[0, 2], [2, v.shape[0]], [v.shape[0]] * 2]), np.array([1, 3, 1])
    mid = v.ndim == 3
    outs = []
    for twin in (0, 1):
        fwd = (fk.forward_mid if mid else fk.forward_last)[twin]
        y, dx = np.empty_like(v), np.empty_like(v)
        affine = (None, np.full((G, C), 1.5), np.full((G, C), 0.5), None, 1e-5)
        mean, var, finite, bad = fwd(v, bounds, nblocks, *affine, y)  # the statistics, y
        stats = (np.array([2, v.shape[0] - 2, 0]), mean, var, np.ones((G, C)))
        bwd = (fk.backward_mid if mid else fk.backward_last)[twin]
        grads = np.empty((2, C), np.float32)
        args = (u, v, stats, 1e-5, None, None, bounds, nblocks)
        sums, ok_s, ok_g, bad_dx = bwd(*args, None, grads, True, dx)  # the sums, then dx
        assert finite and ok_s and ok_g and bad == bad_dx == 0
        outs.append([a.tobytes() for a in (mean, var, sums, grads, y, dx)])
    assert outs[0] == outs[1]
