"""BN kernels refuse what would give NaN silently: bad eps, NaN parameters, negative variance,
NaN/Inf data in the training passes; ghost-batch groups equal the kernels on each group alone,
and a reduction of the statistics and sums over shards gives the whole batch's result."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.kernels import (
    batch_norm_backward,
    batch_norm_forward,
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
    with pytest.raises(
        FloatingPointError, match=r"batch_norm_forward: x contains \d NaN and \d Inf"
    ):
        batch_norm_forward(x, ONES, ZEROS)
    _, cache = batch_norm_forward(X, ONES, ZEROS)
    dy = np.ones_like(X)
    dy[0, 2] = bad
    with pytest.raises(FloatingPointError, match="batch_norm_backward: .*dy"):
        batch_norm_backward(dy, cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "axis", "bounds"),
    [
        ((9, 5), -1, [(0, 4), (4, 7), (7, 9)]),
        ((80, 3), -1, [(0, 70), (70, 80)]),  # 70 rows: the float32 dx pass (m >= 64)
        ((6, 2, 3, 4), -1, [(0, 2), (2, 5), (5, 6)]),  # NHWC: a group of one image
        ((6, 4, 5), 1, [(0, 3), (3, 6)]),  # feature axis in the middle
        ((8, 4, 5), 1, 2),  # a group count: two equal groups
    ],
)
def test_groups_equal_the_kernels_on_each_group_bit_for_bit(dtype, shape, axis, bounds):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3 + 2).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    C = shape[axis]
    g, b = rng.uniform(0.5, 2, size=C), rng.normal(size=C)
    y, cache = batch_norm_forward(x, g, b, axis=axis, eps=1e-3, groups=bounds)
    dx, dgamma, dbeta = batch_norm_backward(dy, cache)
    if isinstance(bounds, int):
        bounds = [(j * shape[0] // bounds, (j + 1) * shape[0] // bounds) for j in range(bounds)]
    want_dbeta = np.zeros(C)
    for j, (lo, hi) in enumerate(bounds):
        m_j, v_j, n_j = moments(x[lo:hi], axis=axis)
        assert cache.count[j] == n_j and cache.mean[j].tobytes() == m_j.tobytes()
        assert cache.var[j].tobytes() == v_j.tobytes()
        if n_j == 0:
            continue
        y_j, cache_j = batch_norm_forward(x[lo:hi], g, b, axis=axis, eps=1e-3)
        assert y[lo:hi].tobytes() == y_j.tobytes()
        dx_j, _, dbeta_j = batch_norm_backward(dy[lo:hi], cache_j)
        assert dx[lo:hi].tobytes() == dx_j.tobytes()
        want_dbeta += dbeta_j
    np.testing.assert_allclose(dbeta, want_dbeta, rtol=1e-5)
    np.testing.assert_allclose(
        dbeta,
        dy.sum(axis=tuple(i for i in range(dy.ndim) if i != axis % dy.ndim)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_a_reduction_over_two_shards_gives_the_whole_batch():
    """Each half reduces its statistics and sums with the other's: y and dx of the full batch."""
    rng = np.random.default_rng(2)
    x, dy = rng.normal(3.0, 2.0, size=(10, 3)), rng.normal(size=(10, 3))
    y, cache = batch_norm_forward(x, ONES, ZEROS)
    dx, dgamma, _ = batch_norm_backward(dy, cache)
    halves = (slice(0, 4), slice(4, 10))

    def merged_with(other):
        def reduce(count, mean, var):
            o_mean, o_var, o_n = moments(other)
            stack = (
                np.array([count, [o_n]]),
                np.stack([mean, o_mean[None]]),
                np.stack([var, o_var[None]]),
            )
            return merge_moment_stack(*stack)

        return reduce

    caches, seen = [], []
    for mine, other in (halves, halves[::-1]):
        y_half, c = batch_norm_forward(x[mine], ONES, ZEROS, reduce=merged_with(x[other]))
        np.testing.assert_allclose(y_half, y[mine], rtol=1e-12, atol=1e-14)
        assert c.count.tolist() == [10]
        caches.append(c)
    batch_norm_backward(dy[halves[1]], caches[1], reduce=lambda s: seen.append(s.copy()) or s)
    dx_a, dgamma_a, _ = batch_norm_backward(dy[halves[0]], caches[0], reduce=lambda s: s + seen[0])
    np.testing.assert_allclose(dx_a, dx[halves[0]], rtol=1e-12, atol=1e-14)
    share = (dy[halves[0]] * (x[halves[0]] - cache.mean) / np.sqrt(cache.var + 1e-5)).sum(axis=0)
    np.testing.assert_allclose(dgamma_a, share, rtol=1e-12)  # this shard's share only


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
