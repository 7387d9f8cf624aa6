"""``out=`` of the batch-norm kernels (issue 14): the same bits as the allocating call.

The buffers exist for speed (no fresh large arrays, so no page faults per call); they must not
change a single bit of y, dx, dgamma, dbeta or the cached statistics, and a bad ``out`` is
refused before anything is written.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.kernels import (
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_inference,
    kernel_threads,
)

# dense, NHWC (channels last), the feature axis in the middle, float32's low-precision dx
# pass (m >= 64), a size above the serial threshold (65536 elements: parallel blocks)
CASES = [
    ((7, 5), -1),
    ((300, 40), -1),
    ((2, 5, 3, 4), -1),
    ((4, 3, 5, 6), 1),
    ((3, 2, 4), 0),
    ((32, 16, 16, 17), -1),
    ((64, 1100), -1),
]


def data(shape, axis, dtype, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[axis]
    x = (rng.normal(2.0, 3.0, size=shape)).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    return x, rng.normal(1, 0.3, C).astype(dtype), rng.normal(size=C).astype(dtype), dy


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize(("shape", "axis"), CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("threads", [1, 2])
def test_out_gives_the_bits_of_the_allocating_call(shape, axis, dtype, threads):
    x, gamma, beta, dy = data(shape, axis, dtype)
    with kernel_threads(threads):
        y, cache = batch_norm_forward(x, gamma, beta, axis=axis)
        dx, dgamma, dbeta = batch_norm_backward(dy, cache)
        y_buf = np.full_like(x, np.nan)  # stale contents must not leak into the result
        dx_buf = np.full_like(x, np.nan)
        y2, cache2 = batch_norm_forward(x, gamma, beta, axis=axis, out=y_buf)
        dx2, dgamma2, dbeta2 = batch_norm_backward(dy, cache2, out=dx_buf)
    assert y2 is y_buf and dx2 is dx_buf
    for ours, ref in ((y2, y), (dx2, dx), (dgamma2, dgamma), (dbeta2, dbeta)):
        assert same_bits(ours, ref)
    assert same_bits(cache2.mean, cache.mean) and same_bits(cache2.var, cache.var)


@pytest.mark.parametrize(("shape", "axis"), CASES[:4])
def test_a_cache_stays_valid_when_its_out_is_reused(shape, axis):
    """The cache holds x, not y: the next forward into the same out leaves it usable."""
    x, gamma, beta, dy = data(shape, axis, np.float32)
    x2 = data(shape, axis, np.float32, seed=1)[0]
    y_buf, dx_buf = np.empty_like(x), np.empty_like(x)
    _, cache = batch_norm_forward(x, gamma, beta, axis=axis, out=y_buf)
    expect = [a.copy() for a in batch_norm_backward(dy, cache)]
    batch_norm_forward(x2, gamma, beta, axis=axis, out=y_buf)  # overwrites y, not the cache
    got = batch_norm_backward(dy, cache, out=dx_buf)
    assert all(same_bits(a, b) for a, b in zip(got, expect, strict=True))


def test_repeated_steps_into_the_same_buffers_are_identical():
    x, gamma, beta, dy = data((256, 96), -1, np.float32)
    y_buf, dx_buf = np.empty_like(x), np.empty_like(x)
    y0, c0 = batch_norm_forward(x, gamma, beta)
    first = [y0, *batch_norm_backward(dy, c0)]
    for _ in range(3):
        y, cache = batch_norm_forward(x, gamma, beta, out=y_buf)
        step = [y, *batch_norm_backward(dy, cache, out=dx_buf)]
        assert all(same_bits(a, b) for a, b in zip(step, first, strict=True))


@pytest.mark.parametrize(("shape", "axis"), CASES[:4])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_inference_out(shape, axis, dtype):
    x, gamma, beta, _ = data(shape, axis, dtype)
    mean, var = np.linspace(-1, 1, shape[axis]), np.linspace(0.5, 2, shape[axis])
    y = batch_norm_inference(x, mean, var, gamma, beta, axis=axis)
    buf = np.empty_like(x)
    assert batch_norm_inference(x, mean, var, gamma, beta, axis=axis, out=buf) is buf
    assert same_bits(buf, y)


def bad_outs(x):
    read_only = np.empty_like(x)
    read_only.flags.writeable = False
    return [
        (np.empty((4, 4), x.dtype), ValueError, r"out must have the result's shape \(6, 4\)"),
        (np.empty_like(x, dtype=np.float64), ValueError, "dtype float32, got shape"),
        (np.empty((4, 6), x.dtype).T, ValueError, "C-contiguous and writeable"),
        (read_only, ValueError, "C-contiguous and writeable"),
        (x.tolist(), TypeError, "out must be a numpy array or None, got list"),
    ]


def test_bad_out_is_refused_before_anything_is_written():
    x, gamma, beta, dy = data((6, 4), -1, np.float32)
    _, cache = batch_norm_forward(x, gamma, beta)
    for out, exc, words in [*bad_outs(x), (x, ValueError, "shares memory with an input")]:
        before = None if isinstance(out, list) else out.copy()
        with pytest.raises(exc, match=words):
            batch_norm_forward(x, gamma, beta, out=out)
        with pytest.raises(exc, match=words):
            batch_norm_inference(x, None, None, gamma, beta, out=out)
        if before is not None:
            assert same_bits(out, before)
    x_before = x.copy()
    for out in (dy, x, x[:, :]):
        with pytest.raises(ValueError, match="shares memory with an input"):
            batch_norm_backward(dy, cache, out=out)
    assert same_bits(x, x_before)
    nan_x = x.copy()
    nan_x[2, 1] = np.nan
    buf = np.zeros_like(x)
    with pytest.raises(FloatingPointError, match="x contains 1 NaN"):
        batch_norm_forward(nan_x, gamma, beta, out=buf)
    assert not buf.any()  # found in the statistics, before the normalizing pass
