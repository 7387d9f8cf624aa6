"""bnlab.layers.BatchNorm against torch.nn.BatchNorm1d/2d, and its bad-input contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bnlab.layers import BatchNorm, layer_from_config

# (bnlab shape, axis, torch module, feature axis for torch): NHWC vs NCHW, dense, sequences
SETUPS = [
    ((2, 5), -1, torch.nn.BatchNorm1d),
    ((7, 5), -1, torch.nn.BatchNorm1d),
    ((5, 3, 3, 4), -1, torch.nn.BatchNorm2d),
    ((2, 4, 5, 3), 1, torch.nn.BatchNorm2d),
    ((3, 7, 4), -1, torch.nn.BatchNorm1d),
]


def to_torch(a: np.ndarray, axis: int) -> torch.Tensor:
    return torch.tensor(np.moveaxis(a, axis, 1).copy())


def from_torch(t: torch.Tensor, axis: int) -> np.ndarray:
    return np.moveaxis(t.detach().numpy(), 1, axis)


def pair(shape, axis, module, dtype, momentum=0.1, **kw):
    C = shape[axis]
    ours = BatchNorm(C, axis=axis, momentum=momentum, **kw).astype(dtype)
    theirs = module(C, momentum=momentum, **kw).to(torch.float64 if dtype == np.float64 else None)
    rng = np.random.default_rng(21)
    if kw.get("affine", True):
        g, b = rng.normal(1, 0.3, size=C), rng.normal(size=C)
        ours.params["gamma"][...] = g
        ours.params["beta"][...] = b
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(g))
            theirs.bias.copy_(torch.tensor(b))
    return ours, theirs


def tol(dtype):
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-4, "atol": 2e-5}


@pytest.mark.parametrize(("shape", "axis", "module"), SETUPS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_steps_then_eval_match_torch(shape, axis, module, dtype, momentum):
    ours, theirs = pair(shape, axis, module, dtype, momentum)
    rng = np.random.default_rng(22)
    for step in range(3):
        x = (rng.normal(size=shape) * (step + 1) + step).astype(dtype)
        dy = rng.normal(size=shape).astype(dtype)
        xt = to_torch(x, axis).requires_grad_(True)
        yt = theirs(xt)
        yt.backward(to_torch(dy, axis))
        y = ours.forward(x)
        dx = ours.backward(dy)
        np.testing.assert_allclose(y, from_torch(yt, axis), **tol(dtype))
        np.testing.assert_allclose(dx, from_torch(xt.grad, axis), **tol(dtype))
        np.testing.assert_allclose(ours.grads["gamma"], theirs.weight.grad.numpy(), **tol(dtype))
        np.testing.assert_allclose(ours.grads["beta"], theirs.bias.grad.numpy(), **tol(dtype))
        theirs.zero_grad()
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), **tol(dtype))
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), **tol(dtype))
    assert ours.num_batches_tracked == int(theirs.num_batches_tracked) == 3
    # eval: running statistics; backward is the gradient of the inference affine map
    ours.eval()
    theirs.eval()
    x = rng.normal(size=shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    xt = to_torch(x, axis).requires_grad_(True)
    yt = theirs(xt)
    yt.backward(to_torch(dy, axis))
    np.testing.assert_allclose(ours.forward(x), from_torch(yt, axis), **tol(dtype))
    np.testing.assert_allclose(ours.backward(dy), from_torch(xt.grad, axis), **tol(dtype))
    np.testing.assert_allclose(ours.grads["gamma"], theirs.weight.grad.numpy(), **tol(dtype))
    np.testing.assert_allclose(ours.grads["beta"], theirs.bias.grad.numpy(), **tol(dtype))
    assert ours.num_batches_tracked == 3


def test_running_var_is_unbiased_and_keras_momentum_convention():
    bn = BatchNorm(2, momentum=0.25).astype(np.float64)
    x = np.random.default_rng(23).normal(size=(5, 3, 2))  # m = 15 values per channel
    bn.forward(x)
    flat = x.reshape(-1, 2)
    np.testing.assert_allclose(bn.running_mean, 0.25 * flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.75 + 0.25 * flat.var(axis=0, ddof=1), rtol=1e-12)


@pytest.mark.parametrize(("shape", "axis", "module"), SETUPS[1:4])
def test_no_affine_and_no_running_stats_match_torch(shape, axis, module):
    ours, theirs = pair(shape, axis, module, np.float64, affine=False, track_running_stats=False)
    assert ours.params == {} and ours.grads == {} and ours.buffers == {}
    assert ours.running_mean is None and ours.num_batches_tracked is None
    rng = np.random.default_rng(24)
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        x, dy = rng.normal(size=shape), rng.normal(size=shape)
        xt = to_torch(x, axis).requires_grad_(True)
        yt = theirs(xt)
        yt.backward(to_torch(dy, axis))
        np.testing.assert_allclose(ours.forward(x), from_torch(yt, axis), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.backward(dy), from_torch(xt.grad, axis), rtol=1e-10)


def test_dtypes():
    x = np.random.default_rng(25).normal(size=(8, 4, 4, 3))
    bn = BatchNorm(3)
    assert bn.forward(x.astype(np.float16)).dtype == np.float16
    assert bn.backward(np.ones((8, 4, 4, 3), np.float16)).dtype == np.float16
    assert bn.forward(x.astype(np.float32)).dtype == np.float32
    bn64 = BatchNorm(3).astype(np.float64)
    y = bn64.forward(x)
    assert y.dtype == np.float64 and bn64.running_mean.dtype == np.float64
    assert bn64.backward(y).dtype == np.float64 and bn64.grads["gamma"].dtype == np.float64


def test_config_state_dict_and_params_identity():
    bn = BatchNorm(4, axis=1, momentum=None, eps=1e-3, affine=True, virtual_batch_size=8, name="bn")
    cfg = bn.get_config()
    assert set(cfg) == {
        "num_features", "axis", "momentum", "eps", "affine", "track_running_stats",
        "virtual_batch_size", "name",
    }  # fmt: skip
    clone = layer_from_config("BatchNorm", json.loads(json.dumps(cfg)))
    assert clone.get_config() == cfg
    gamma = bn.params["gamma"]
    bn.forward(np.random.default_rng(26).normal(size=(16, 4, 3)).astype(np.float32))
    assert bn.params["gamma"] is gamma  # optimizers update params in place
    clone.load_state_dict(bn.state_dict())
    np.testing.assert_array_equal(clone.running_var, bn.running_var)
    assert clone.num_batches_tracked == bn.num_batches_tracked == 2


def snapshot(bn: BatchNorm) -> dict[str, np.ndarray]:
    return bn.state_dict()


def assert_unchanged(bn: BatchNorm, before: dict[str, np.ndarray]) -> None:
    after = bn.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_bad_inputs_raise_and_change_nothing():
    bn = BatchNorm(3, name="bn7")
    bn.forward(np.random.default_rng(27).normal(size=(4, 3)).astype(np.float32))
    before = snapshot(bn)
    cases = [
        (np.ones(3, np.float32), ValueError, "bn7.*at least 2 dimensions"),
        (np.ones((4, 5), np.float32), ValueError, "bn7.*num_features=3.*got shape \\(4, 5\\)"),
        (np.ones((4, 3), np.int32), TypeError, "bn7.*floating-point.*int32"),
        (np.ones((4, 3), object), TypeError, "bn7.*floating-point.*object"),
        (np.ones((1, 3), np.float32), ValueError, "Expected more than 1 value per channel"),
    ]
    for x, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            bn.forward(x)
        assert_unchanged(bn, before)
    # an empty training batch: an empty output and nothing updated (PyTorch's output)
    assert bn.forward(np.ones((0, 3), np.float32)).shape == (0, 3)
    assert bn.backward(np.ones((0, 3), np.float32)).shape == (0, 3)
    assert_unchanged(bn, before)
    with pytest.raises(ValueError, match="bn7.*axis=2 is out of range"):
        BatchNorm(3, axis=2, name="bn7").forward(np.ones((4, 3), np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        x = np.random.default_rng(28).normal(size=(4, 3)).astype(np.float32)
        x[2, 1] = bad
        with pytest.raises(FloatingPointError, match="bn7"):
            bn.forward(x)
        assert_unchanged(bn, before)
        assert bn.num_batches_tracked == 1
    # eval mode: an empty batch gives an empty output; one example is fine
    bn.eval()
    assert bn.forward(np.ones((0, 3), np.float32)).shape == (0, 3)
    assert bn.forward(np.ones((1, 3), np.float32)).shape == (1, 3)
    assert_unchanged(bn, before)


def test_backward_errors():
    bn = BatchNorm(3, name="bn8")
    with pytest.raises(RuntimeError, match="bn8.*backward called before forward"):
        bn.backward(np.ones((4, 3), np.float32))
    bn.forward(np.random.default_rng(29).normal(size=(4, 3)).astype(np.float32))
    with pytest.raises(ValueError, match=r"bn8.*dy must have the shape.*\(4, 3\), got \(4, 2\)"):
        bn.backward(np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match="bn8.*dy"):
        bn.backward(np.ones((4, 3), np.int64))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_features": 0}, "num_features must be >= 1"),
        ({"num_features": 3, "momentum": 1.5}, "momentum must be in"),
        ({"num_features": 3, "eps": 0.0}, "eps must be > 0"),
        ({"num_features": 3, "virtual_batch_size": 0}, "virtual_batch_size"),
    ],
)
def test_bad_constructor_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        BatchNorm(**kwargs)
