"""The Figure 1 instrument (bnlab.train.monitor): percentiles of one unit's input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnlab.data import BatchIterator
from bnlab.layers import BatchNorm, Dense, Sequential, Sigmoid
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import SGD
from bnlab.train import ActivationMonitor, TrainState, fit, layer_input, percentiles


def blobs(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs in 5 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centers = rng.normal(0, 3, size=(3, 5))
    x = (centers[y] + rng.normal(0, 0.5, size=(n, 5))).astype(np.float32)
    return x, y.astype(np.int64)


def mlp(bn: bool = False, seed: int = 0) -> Sequential:
    layers = [Dense(5, 8, use_bias=not bn, seed=seed)]
    if bn:
        layers.append(BatchNorm(8))
    layers += [Sigmoid(), Dense(8, 3, seed=seed + 1)]
    return Sequential(layers)


# -- percentiles ---------------------------------------------------------------------------------


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200),
    st.lists(st.floats(0, 100), min_size=1, max_size=5),
)
def test_percentiles_match_numpy(values: list[float], qs: list[float]) -> None:
    got = percentiles(np.array(values), qs)
    want = np.percentile(np.array(values, dtype=np.float64), qs)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_percentiles_default_15_50_85(rng: np.random.Generator) -> None:
    v = rng.normal(size=10_001)
    np.testing.assert_array_equal(percentiles(v), np.percentile(v, [15, 50, 85]))
    assert percentiles(np.array([3.0]), (0, 50, 100)).tolist() == [3.0, 3.0, 3.0]


def test_percentiles_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentiles(np.array([]))
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentiles(np.arange(5.0), (15, 101))


def test_layer_input_and_monitor_match_numpy() -> None:
    """The monitor records numpy's percentiles of the BN output computed by hand (eval mode)."""
    x, y = blobs()
    model = mlp(bn=True)
    mon = ActivationMonitor(x, layer_index=2, unit=5, every=10, batch_size=33)
    state = fit(
        model,
        SoftmaxCrossEntropy(),
        SGD.from_model(model, lr=0.5),
        BatchIterator(x, y, 24, seed=0),
        steps=10,
        callbacks=[mon],
    )
    assert model.training  # the monitor restored training mode
    bn = model.layers[1]
    h = x.astype(np.float64) @ model.layers[0].params["W"]
    want = (h - bn.running_mean) / np.sqrt(bn.running_var + bn.eps)
    want = want * bn.params["gamma"] + bn.params["beta"]
    np.testing.assert_allclose(layer_input(model, x, 2, batch_size=50), want, rtol=1e-4, atol=1e-5)
    got = [state.history[-1][k] for k in ("p15", "p50", "p85")]
    np.testing.assert_allclose(got, np.percentile(want[:, 5], [15, 50, 85]), rtol=1e-4, atol=1e-5)
    assert [row["step"] for row in state.history] == [0, 10]


def test_monitor_refuses_a_unit_out_of_range() -> None:
    x, _ = blobs(n=10)
    mon = ActivationMonitor(x, layer_index=2, unit=8, every=1)
    with pytest.raises(ValueError, match="unit 8 out of range"):
        mon.record(TrainState(model=mlp(), optimizer=None))


def test_layer_input_refuses_an_index_out_of_range() -> None:
    x, _ = blobs(n=10)
    with pytest.raises(ValueError, match="index 4 out of range for a model of 3 layers"):
        layer_input(mlp(), x, 4)
    np.testing.assert_array_equal(layer_input(mlp(), x, -3), x)  # the input of layer 0
