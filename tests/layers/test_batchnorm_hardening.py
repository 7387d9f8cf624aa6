"""Hostile input for the normalization layers (issue 15) and PyTorch's conventions (issue 16).

Every error names the problem and leaves parameters, gradients and buffers byte-for-byte
unchanged; an empty batch, ``track_running_stats`` switched off later, ``reset_*`` and the
Keras momentum warning follow PyTorch 2.13.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bnlab.comm import SelfComm
from bnlab.layers import BatchNorm, BatchRenorm, SyncBatchNorm, SyncBatchRenorm


def state(layer) -> dict[str, bytes]:
    return {f"{s}:{k}": np.asarray(v).tobytes() for s in ("params", "grads", "buffers")
            for k, v in getattr(layer, s).items()}  # fmt: skip


LAYERS = {
    "bn": lambda: BatchNorm(3, name="L"),
    "bn-ghost": lambda: BatchNorm(3, virtual_batch_size=2, name="L"),
    "bn-cumulative": lambda: BatchNorm(3, momentum=None, name="L"),
    "bn-no-affine": lambda: BatchNorm(3, affine=False, name="L"),
    "renorm": lambda: BatchRenorm(3, name="L"),
    "renorm-ghost": lambda: BatchRenorm(3, virtual_batch_size=2, name="L"),
    "sync-bn": lambda: SyncBatchNorm(3, comm=SelfComm(), name="L"),
    "sync-renorm": lambda: SyncBatchRenorm(3, comm=SelfComm(), virtual_batch_size=2, name="L"),
}


def trained(kind: str):
    layer = LAYERS[kind]()
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    layer.backward(np.ones_like(layer.forward(x)))
    return layer


@pytest.mark.parametrize("kind", LAYERS)
def test_a_batch_that_overflows_the_running_statistics_changes_nothing(kind):
    """Finite float32 x with |x| ~ 1e22: var ~ 1e44 is finite in float64, inf in float32."""
    layer = trained(kind)
    before = state(layer)
    x = np.array([[1e22, 0, 1], [-1e22, 1, 0], [1e22, 0, 1], [-1e22, 1, 0]], np.float32)
    with pytest.raises(FloatingPointError, match=r"'L'.*running_(var|mean) non-finite"):
        layer.forward(x)
    assert state(layer) == before


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_dy_raises_and_keeps_the_gradients(kind, mode, bad):
    layer = trained(kind)
    if mode == "eval":
        layer.eval()
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    layer.forward(x)
    before = state(layer)
    dy = np.ones_like(x)
    dy[2, 1] = bad
    with pytest.raises(FloatingPointError, match=r"'L'.*dy contains"):
        layer.backward(dy)
    assert state(layer) == before


@pytest.mark.parametrize(
    ("cls", "kwargs", "exc", "words"),
    [
        (BatchRenorm, {"momentum": None}, TypeError, "momentum.*None"),
        (BatchRenorm, {"axis": "x"}, TypeError, "axis must be an int.*'x'"),
        (BatchNorm, {"axis": "x"}, TypeError, "axis must be an int.*'x'"),
        (BatchNorm, {"axis": 1.0}, TypeError, "axis must be an int"),
        (BatchNorm, {"momentum": "0.1"}, TypeError, "momentum must be a float"),
        (BatchRenorm, {"momentum": [0.1]}, TypeError, "momentum must be a float"),
        (BatchNorm, {"eps": "1e-5"}, TypeError, "eps must be a float"),
        (BatchNorm, {"eps": float("nan")}, ValueError, "eps must be > 0"),
        (BatchRenorm, {"eps": -1.0}, ValueError, "eps must be > 0"),
        (BatchNorm, {"affine": "yes"}, TypeError, "affine must be True or False"),
        (BatchNorm, {"track_running_stats": 1}, TypeError, "track_running_stats"),
        (BatchRenorm, {"rmax": None}, TypeError, "rmax must be a float"),
        (BatchRenorm, {"dmax": float("inf")}, ValueError, "dmax must be a finite float"),
        (BatchRenorm, {"num_features": 3.0}, TypeError, "num_features must be an int"),
        (SyncBatchRenorm, {"momentum": None}, TypeError, "momentum"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(cls, kwargs, exc, words):
    args = {"num_features": 3, **kwargs}
    with pytest.raises(exc, match=words):
        cls(**args)


@pytest.mark.parametrize("cls", [BatchNorm, BatchRenorm, SyncBatchNorm])
def test_keras_style_momentum_warns_once(cls):
    with pytest.warns(UserWarning, match="Keras' momentum k is 1 - k here") as record:
        layer = cls(3, momentum=0.99)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer.forward(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
        cls(3, momentum=0.5)


@pytest.mark.parametrize("shape", [(0, 3), (2, 0, 0, 3)])
def test_empty_training_batch_matches_pytorch(shape):
    bn = BatchNorm(3)
    tb = torch.nn.BatchNorm1d(3) if len(shape) == 2 else torch.nn.BatchNorm2d(3)
    before = state(bn)
    y = bn.forward(np.zeros(shape, np.float32))
    tshape = shape if len(shape) == 2 else (shape[0], 3, *shape[1:3])
    xt = torch.zeros(tshape, requires_grad=True)
    yt = tb(xt)
    yt.sum().backward()
    assert y.shape == shape and yt.numel() == 0
    dx = bn.backward(np.zeros(shape, np.float32))
    assert dx.shape == shape
    np.testing.assert_array_equal(bn.running_mean, tb.running_mean.numpy())
    np.testing.assert_array_equal(bn.running_var, tb.running_var.numpy())
    np.testing.assert_array_equal(bn.grads["gamma"], tb.weight.grad.numpy())
    assert state(bn) == before  # PyTorch counts the batch in num_batches_tracked; bnlab not


def test_track_running_stats_switched_off_later_matches_pytorch():
    rng = np.random.default_rng(4)
    bn, tb = BatchNorm(3), torch.nn.BatchNorm1d(3)
    batches = [rng.normal(2.0, 3.0, size=(8, 3)).astype(np.float32) for _ in range(3)]
    for x in batches[:2]:
        bn.forward(x)
        tb(torch.from_numpy(x))
    bn.track_running_stats = tb.track_running_stats = False
    y = bn.forward(batches[2])  # training: batch statistics, no update
    yt = tb(torch.from_numpy(batches[2])).detach().numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean, tb.running_mean.numpy(), rtol=1e-6)
    bn.eval()
    tb.eval()
    x = rng.normal(size=(5, 3)).astype(np.float32)  # eval: still the buffers
    np.testing.assert_allclose(
        bn.forward(x), tb(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("cls", [BatchNorm, BatchRenorm])
def test_reset_running_stats_and_parameters_as_pytorch(cls):
    layer = trained("bn" if cls is BatchNorm else "renorm")
    layer.params["gamma"][...] = 3.0
    layer.params["beta"][...] = -1.0
    layer.reset_running_stats()
    tb = torch.nn.BatchNorm1d(3)
    tb.reset_running_stats()
    np.testing.assert_array_equal(layer.running_mean, tb.running_mean.numpy())
    np.testing.assert_array_equal(layer.running_var, tb.running_var.numpy())
    assert layer.num_batches_tracked == 0
    np.testing.assert_array_equal(layer.params["gamma"], 3.0)
    layer.reset_parameters()
    np.testing.assert_array_equal(layer.params["gamma"], tb.weight.detach().numpy())
    np.testing.assert_array_equal(layer.params["beta"], tb.bias.detach().numpy())


def test_nan_training_batch_in_a_later_chunk_changes_nothing():
    layer = trained("renorm-ghost")
    before = state(layer)
    x = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
    x[3, 0] = np.inf
    with pytest.raises(FloatingPointError, match="'L'.*1 Inf"):
        layer.forward(x)
    assert state(layer) == before


@pytest.mark.parametrize("kind", ["bn", "bn-ghost", "renorm", "sync-bn"])
def test_need_input_grad_false_skips_dx_with_the_same_gradients(kind):
    a, b = trained(kind), trained(kind)
    x = np.random.default_rng(6).normal(size=(4, 3)).astype(np.float32)
    dy = np.random.default_rng(7).normal(size=(4, 3)).astype(np.float32)
    a.forward(x)
    b.forward(x)
    assert a.backward(dy, need_input_grad=False) is None
    assert b.backward(dy).shape == (4, 3)
    assert state(a) == state(b)
