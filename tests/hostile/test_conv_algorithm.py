"""Issue 23, the Conv2D ``algorithm=`` surface: bad values refused (also from a checkpoint),
NaN passing through both algorithms alike, and an overflow of finite values refused by both
(FloatingPointError, no NumPy RuntimeWarning, the layer and a Sequential left as before)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import bnlab
from bnlab import layers as L
from bnlab.deploy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

ALGORITHMS = ("im2col", "winograd")
RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 6, 6, 8)).astype(np.float32)


def _conv(algorithm: str, dtype: type = np.float32) -> L.Conv2D:
    return L.Conv2D(8, 4, 3, padding="same", algorithm=algorithm, seed=0).astype(dtype)


@pytest.mark.parametrize("bad", ["fast", None, 3, "WINOGRAD", ["im2col"], True, ""])
def test_a_bad_algorithm_is_refused_naming_the_choices(bad: object) -> None:
    with pytest.raises(ValueError, match=r"algorithm must be one of \('auto', 'im2col'"):
        L.Conv2D(8, 4, 3, algorithm=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_nan_input_passes_through_as_im2col_and_torch_do(algorithm: str) -> None:
    x = np.where(X > 1.5, np.nan, X).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning either
        y = _conv(algorithm).forward(x)
    y_ref = _conv("im2col").forward(x)
    assert np.isnan(y).any() and np.array_equal(np.isnan(y), np.isnan(y_ref))


def _huge() -> np.ndarray:
    return np.full((2, 6, 6, 8), 3e38, np.float32)  # finite; any sum of two overflows


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_overflowing_forward_is_refused_and_changes_nothing(algorithm: str) -> None:
    conv = _conv(algorithm)
    y = conv.forward(X).copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FloatingPointError, match=r"Conv2D\(8->4, 3x3\)\.forward.*float32"):
            conv.forward(_huge())
    dy = RNG.normal(size=y.shape).astype(np.float32)
    dx = conv.backward(dy)  # the backward of the last good forward
    fresh = _conv(algorithm)
    fresh.forward(X)
    assert np.array_equal(dx, fresh.backward(dy))
    assert np.array_equal(conv.grads["W"], fresh.grads["W"])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_overflowing_backward_is_refused_and_keeps_the_grads(algorithm: str) -> None:
    conv = _conv(algorithm)
    x = (X / np.abs(X).max() * np.float32(1e38)).astype(np.float32)  # forward fits float32
    y = conv.forward(x)
    assert np.isfinite(y).all()
    conv.grads["W"][...] = 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FloatingPointError, match="backward.*overflowed float32"):
            conv.backward(np.ones_like(y))  # dW sums 72 products of about 1e38
    assert (conv.grads["W"] == 7.0).all()


def test_both_algorithms_compute_the_same_input_in_float64() -> None:
    x = (X / np.abs(X).max() * 1e38).astype(np.float64)  # the fix the message names
    ys = []
    for algorithm in ALGORITHMS:
        conv = _conv(algorithm, np.float64)
        ys.append(conv.forward(x))
        assert np.isfinite(conv.backward(np.ones_like(ys[-1]))).all()
    np.testing.assert_allclose(ys[0], ys[1], rtol=1e-9, atol=1e-9 * np.abs(ys[0]).max())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_sequential_rolls_back_the_statistics_of_a_bn_before_the_overflow(
    algorithm: str,
) -> None:
    net = L.Sequential([L.BatchNorm(8), L.Conv2D(8, 4, 3, algorithm=algorithm, seed=0)])
    net.layers[0].params["gamma"][...] = 5e37  # BN's output is finite, the conv's is not
    net.layers[1].params["W"][...] = 1.0
    before = {k: v.copy() for k, v in net.layers[0].buffers.items()}
    with pytest.raises(FloatingPointError, match="overflowed"):
        net.forward(X)
    for k, v in net.layers[0].buffers.items():
        assert np.array_equal(v, before[k]), k


def _checkpoint_with(tmp_path: Path, value: object) -> Path:
    m = L.Sequential([L.Conv2D(3, 4, 3, algorithm="winograd", seed=0), L.ReLU()])
    path = save_checkpoint(tmp_path / "c.npz", m)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta["model_config"]["layers"][0]["config"]["algorithm"] = value
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
    return path


@pytest.mark.parametrize("value", ["bogus", 3, None, ["im2col"], True, {"a": 1}])
def test_a_checkpoint_with_a_bad_algorithm_is_refused(tmp_path: Path, value: object) -> None:
    path = _checkpoint_with(tmp_path, value)
    data = path.read_bytes()
    for load in (load_checkpoint, bnlab.load):
        with pytest.raises(CheckpointError, match=r"layers\[0\]\.config.*algorithm must be"):
            load(path)
    assert path.read_bytes() == data and sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_overflow_in_the_last_piece_of_a_batch_is_refused(algorithm: str, threads: int) -> None:
    """The output and dx are checked piece by piece where they are written (on the pieces'
    threads): an overflow confined to the last image, forward or only in dx, is refused."""
    conv = L.Conv2D(8, 4, 3, padding="same", algorithm=algorithm, use_bias=False, seed=0)
    conv.params["W"][...] = 1.0
    x = np.full((8, 32, 32, 8), 1e-30, np.float32)
    with bnlab.kernels.kernel_threads(threads):
        huge = x.copy()
        huge[-1] = 3e38
        with pytest.raises(FloatingPointError, match=r"forward.*overflowed float32"):
            conv.forward(huge)
        y = conv.forward(x)
        conv.grads["W"][...] = 7.0
        dy = np.ones_like(y)
        dy[-1] = 3e38  # dW = sum x dy stays finite (about 1e12); dx of the last image does not
        with pytest.raises(FloatingPointError, match=r"backward.*overflowed float32"):
            conv.backward(dy)
        assert (conv.grads["W"] == 7.0).all()
        dy[-1] = 1.0
        assert np.isfinite(conv.backward(dy)).all()
