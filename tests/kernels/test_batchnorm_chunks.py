"""The chunked passes (ghost batches, shards) equal the one-chunk entry points bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.kernels import (
    batch_norm_grad_input,
    batch_norm_grad_sums,
    batch_norm_inference,
    moments,
)
from bnlab.kernels.batchnorm_chunks import (
    chunk_grad_input,
    chunk_grad_sums,
    chunk_moments,
    chunk_normalize,
    plan_chunks,
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "axis", "bounds"),
    [
        ((9, 5), -1, [(0, 4), (4, 8), (8, 9)]),
        ((80, 3), -1, [(0, 70), (70, 80)]),  # 70 rows: the float32 dx pass (m >= 64)
        ((6, 2, 3, 4), -1, [(0, 2), (2, 2), (2, 5), (5, 6)]),  # NHWC, an empty chunk
        ((6, 4, 5), 1, [(0, 3), (3, 6)]),  # feature axis in the middle: chunk by chunk
    ],
)
def test_chunked_passes_equal_the_entry_points_chunk_by_chunk(dtype, shape, axis, bounds):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3 + 2).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    C = shape[axis]
    scale, shift = rng.uniform(0.5, 2, size=(len(bounds), C)), rng.normal(size=(len(bounds), C))
    plan = plan_chunks(x, axis % x.ndim, bounds)
    assert (plan.grouped is not None) == (axis == -1)
    count, mean, var = chunk_moments(x, axis % x.ndim, plan)
    y = chunk_normalize(x, axis % x.ndim, plan, (mean, var), scale, shift, 1e-3)
    sums = chunk_grad_sums(dy, x, axis % x.ndim, plan, mean)
    dx = chunk_grad_input(dy, x, axis % x.ndim, plan, (count, mean, var, scale), sums, 1e-3)
    for j, (a, b) in enumerate(bounds):
        m_j, v_j, n_j = moments(x[a:b], axis=axis)
        assert count[j] == n_j and mean[j].tobytes() == m_j.tobytes()
        assert var[j].tobytes() == v_j.tobytes()
        if n_j == 0:
            continue
        y_j = batch_norm_inference(x[a:b], m_j, v_j, scale[j], shift[j], axis=axis, eps=1e-3)
        assert y[a:b].tobytes() == y_j.tobytes()
        s = batch_norm_grad_sums(dy[a:b], x[a:b], m_j, axis=axis)
        assert sums[j, 0].tobytes() == s[0].tobytes() and sums[j, 1].tobytes() == s[1].tobytes()
        dx_j = batch_norm_grad_input(
            dy[a:b], x[a:b], m_j, v_j, scale[j], s[0], s[1], count=n_j, axis=axis, eps=1e-3
        )
        assert dx[a:b].tobytes() == dx_j.tobytes()
