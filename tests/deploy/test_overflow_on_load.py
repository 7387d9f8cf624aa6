"""Issue 23, high 16: values that overflow the layer's dtype are refused, not stored as inf."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.deploy import fold_batch_norm, load_keras_batch_norm
from bnlab.layers import BatchNorm, Dense, Sequential


def _state(layer):
    return {k: v.copy() for k, v in {**layer.params, **layer.buffers}.items()}


@pytest.mark.parametrize("index,key", [(0, "gamma"), (2, "running_mean"), (3, "running_var")])
def test_keras_weights_beyond_float32_are_refused(index, key):
    bn = BatchNorm(3)
    before = _state(bn)
    weights = [np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)]
    weights[index] = np.array([1.0, 1e300, 1.0])
    with pytest.raises(ValueError, match=rf"{key} holds values beyond float32"):
        load_keras_batch_norm(bn, weights)
    for k, v in before.items():
        np.testing.assert_array_equal({**bn.params, **bn.buffers}[k], v)


def test_keras_weights_fit_a_float64_layer():
    bn = BatchNorm(3).astype(np.float64)
    load_keras_batch_norm(bn, [np.ones(3), np.zeros(3), np.array([0, 1e300, 0]), np.ones(3)])
    assert bn.running_mean[1] == 1e300


@pytest.mark.parametrize("with_dense", [True, False])
def test_fold_that_overflows_float32_is_refused(with_dense):
    bn = BatchNorm(4)
    bn.params["gamma"][...] = 3e38
    bn.buffers["running_var"][...] = 0.0
    model = Sequential([Dense(3, 4, seed=0), bn] if with_dense else [bn])
    model.eval()
    with pytest.raises(ValueError, match=r"folding BatchNorm layer .* beyond float32"):
        fold_batch_norm(model)
    folded = fold_batch_norm(model.astype(np.float64))  # the fix the message names
    x = np.ones((2, 3 if with_dense else 4))
    assert np.isfinite(folded.forward(x)).all()
