"""BN kernels refuse what would give NaN silently: bad eps, NaN parameters, negative variance,
NaN/Inf data in the training passes; the split entry points equal the fused passes."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.kernels import (
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_grad_input,
    batch_norm_grad_sums,
    batch_norm_inference,
    batch_norm_inference_backward,
    batch_renorm_forward,
    batch_renorm_inference,
    merge_moment_stack,
    merge_moments,
    moments,
)
from bnlab.kernels import batchnorm as fused
from bnlab.kernels import batchnorm_ref as ref

X = np.random.default_rng(0).normal(size=(6, 3))
ONES, ZEROS = np.ones(3), np.zeros(3)


def _inference(mod, **over):
    args = {"mean": ZEROS, "var": ONES, "gamma": ONES, "beta": ZEROS, "eps": 1e-5, **over}
    eps = args.pop("eps")
    return mod.batch_norm_inference(X, *args.values(), eps=eps)


@pytest.mark.parametrize("mod", [ref, fused])
@pytest.mark.parametrize(
    ("over", "exc", "words"),
    [
        ({"eps": 0.0}, ValueError, "eps must be a finite float > 0"),
        ({"eps": -1e-5}, ValueError, "eps must be a finite float > 0"),
        ({"eps": float("nan")}, ValueError, "eps must be a finite float > 0"),
        ({"eps": float("inf")}, ValueError, "eps must be a finite float > 0"),
        ({"eps": "a"}, TypeError, "eps must be a positive float"),
        ({"gamma": np.array([1.0, np.nan, 1.0])}, ValueError, "gamma must be finite.*1 NaN"),
        ({"beta": np.array([np.inf, 0.0, 0.0])}, ValueError, "beta must be finite.*1 Inf"),
        ({"var": np.array([1.0, -0.5, 1.0])}, ValueError, "var must be >= 0.*-0.5"),
        ({"var": np.array([1.0, np.nan, 1.0])}, ValueError, "var must be finite"),
        ({"mean": np.array([np.nan, 0.0, 0.0])}, ValueError, "mean must be finite"),
        ({"gamma": np.ones(3, complex)}, TypeError, "gamma must be a real numeric array"),
    ],
)
def test_inference_refuses_bad_arguments(mod, over, exc, words):
    with pytest.raises(exc, match="batch_norm_inference: " + words):
        _inference(mod, **over)


def test_training_kernels_refuse_bad_eps_and_parameters():
    with pytest.raises(ValueError, match="batch_norm_forward: eps"):
        batch_norm_forward(X, ONES, ZEROS, eps=0.0)
    with pytest.raises(ValueError, match="batch_norm_forward: gamma must be finite"):
        batch_norm_forward(X, np.array([np.nan, 1, 1]), ZEROS)
    with pytest.raises(ValueError, match="batch_renorm_forward: eps"):
        batch_renorm_forward(X, ONES, ZEROS, ZEROS, ONES, eps=float("nan"))
    with pytest.raises(ValueError, match="moving_std must be > 0"):
        batch_renorm_inference(X, ZEROS, np.array([1.0, 0.0, 1.0]), ONES, ZEROS)
    with pytest.raises(ValueError, match="batch_norm_inference_backward: var must be >= 0"):
        batch_norm_inference_backward(X, X, ZEROS, -ONES, ONES)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_data_in_the_training_passes_raises(bad):
    x = X.copy()
    x[1, 1] = bad
    with pytest.raises(FloatingPointError, match="batch_norm_forward: .*not finite"):
        batch_norm_forward(x, ONES, ZEROS)
    _, cache = batch_norm_forward(X, ONES, ZEROS)
    dy = np.ones_like(X)
    dy[0, 2] = bad
    with pytest.raises(FloatingPointError, match="batch_norm_backward: .*dy"):
        batch_norm_backward(dy, cache)


@pytest.mark.parametrize(("shape", "axis"), [((40, 5), -1), ((4, 3, 3, 5), -1), ((4, 5, 6), 1)])
def test_split_entry_points_equal_the_fused_passes_bit_for_bit(shape, axis):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=shape) * 2 + 3).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    g, b = rng.uniform(0.5, 2, size=5), rng.normal(size=5)
    y, cache = batch_norm_forward(x, g, b, axis=axis)
    mean, var, m = moments(x, axis=axis)
    assert mean.tobytes() == cache.mean.tobytes() and var.tobytes() == cache.var.tobytes()
    assert batch_norm_inference(x, mean, var, g, b, axis=axis).tobytes() == y.tobytes()
    dx, dgamma, dbeta = batch_norm_backward(dy, cache)
    sdy, sdyx = batch_norm_grad_sums(dy, x, mean, axis=axis)
    got = batch_norm_grad_input(dy, x, mean, var, g, sdy, sdyx, count=m, axis=axis)
    assert got.tobytes() == dx.tobytes()
    assert sdy.astype(np.float32).tobytes() == dbeta.tobytes()


def test_grad_input_with_a_global_count_is_the_whole_batch_gradient():
    """Two halves with the global statistics, the global sums and m = N: the full dx."""
    rng = np.random.default_rng(2)
    x, dy = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    _, cache = batch_norm_forward(x, ONES, ZEROS)
    dx, _, _ = batch_norm_backward(dy, cache)
    parts = [batch_norm_grad_sums(dy[s], x[s], cache.mean) for s in (slice(0, 4), slice(4, 10))]
    sdy, sdyx = (parts[0][i] + parts[1][i] for i in (0, 1))
    halves = [
        batch_norm_grad_input(dy[s], x[s], cache.mean, cache.var, ONES, sdy, sdyx, count=10)
        for s in (slice(0, 4), slice(4, 10))
    ]
    np.testing.assert_allclose(np.concatenate(halves), dx, rtol=1e-12, atol=1e-14)
    assert batch_norm_grad_sums(dy[:0], x[:0], cache.mean)[0].tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="count must be a positive int"):
        batch_norm_grad_input(dy, x, cache.mean, cache.var, ONES, sdy, sdyx, count=0)


def test_merge_moment_stack_equals_pairwise_merges_and_skips_empty_samples():
    rng = np.random.default_rng(3)
    parts = [rng.normal(5.0, 2.0, size=(n, 4)) for n in (3, 0, 7, 1)]
    stats = [moments(p) for p in parts]
    count = np.array([[s[2]] for s in stats])
    mean = np.stack([s[0] for s in stats])[:, None, :]
    var = np.stack([s[1] for s in stats])[:, None, :]
    n, mu, v = merge_moment_stack(count, mean, var)
    want = stats[0]
    for s in stats[1:]:
        want = merge_moments(*want, *s) if s[2] else want
    assert n.tolist() == [11]
    np.testing.assert_allclose(mu[0], want[0], rtol=1e-15)
    np.testing.assert_allclose(v[0], want[1], rtol=1e-14)
    full = np.concatenate(parts)
    np.testing.assert_allclose(v[0], full.var(axis=0), rtol=1e-13)
    # one non-empty sample among empty ones comes back with its own bits
    lone = merge_moment_stack(np.array([[0], [7]]), mean[[1, 2]], var[[1, 2]])
    assert lone[1].tobytes() == mean[2].tobytes() and lone[2].tobytes() == var[2].tobytes()
