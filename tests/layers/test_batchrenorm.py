"""BatchRenorm layer: schedule, running statistics, BN equivalence, eval mode, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bnlab.layers import BatchRenorm, layer_from_config

CONST = {"warmup_steps": 0, "rmax_steps": 0, "dmax_steps": 0}


def test_schedule_values_paper_defaults():
    layer = BatchRenorm(4)  # warm-up 5k, rmax 3 at 40k, dmax 5 at 25k
    expected = {
        0: (1.0, 0.0), 4999: (1.0, 0.0), 5000: (1.0, 0.0),
        15000: (1.0 + 2.0 * 10000 / 35000, 5.0 * 10000 / 20000),
        25000: (1.0 + 2.0 * 20000 / 35000, 5.0), 40000: (3.0, 5.0), 10**6: (3.0, 5.0),
    }  # fmt: skip
    for step, (rmax, dmax) in expected.items():
        assert layer.current_rmax(step) == pytest.approx(rmax, rel=1e-12), step
        assert layer.current_dmax(step) == pytest.approx(dmax, rel=1e-12), step


def test_schedule_constants_and_jumps():
    const = BatchRenorm(2, rmax=2.5, dmax=1.5, **CONST)
    assert [const.current_rmax(t) for t in (0, 7)] == [2.5, 2.5]
    assert [const.current_dmax(t) for t in (0, 7)] == [1.5, 1.5]
    jump = BatchRenorm(2, warmup_steps=10, rmax_steps=0, dmax_steps=10)
    assert (jump.current_rmax(9), jump.current_rmax(10)) == (1.0, 3.0)
    assert (jump.current_dmax(9), jump.current_dmax(10)) == (0.0, 5.0)
    ramp = BatchRenorm(2, warmup_steps=0, rmax_steps=4, dmax_steps=2)
    assert [ramp.current_rmax(t) for t in range(6)] == [1.0, 1.5, 2.0, 2.5, 3.0, 3.0]
    assert [ramp.current_dmax(t) for t in range(4)] == [0.0, 2.5, 5.0, 5.0]


def test_schedule_follows_training_steps(rng):
    layer = BatchRenorm(3, warmup_steps=2, rmax_steps=4, dmax_steps=3)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    seen = []
    for _ in range(5):
        seen.append((layer.current_rmax(), layer.current_dmax()))
        layer.forward(x)
    assert seen == [(1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (2.0, 5.0), (3.0, 5.0)]
    layer.eval().forward(x)
    assert layer.num_batches_tracked == 5  # inference does not count


def test_running_statistics_update_by_hand(rng):
    layer = BatchRenorm(3, momentum=0.2, eps=1e-3, **CONST)
    mu, sigma = np.zeros(3), np.sqrt(1.0 + 1e-3)
    for _ in range(3):
        x = rng.normal(3.0, 2.0, size=(10, 3))
        layer.forward(x)
        mu_b, sigma_b = x.mean(0), np.sqrt(x.var(0) + 1e-3)
        mu, sigma = mu + 0.2 * (mu_b - mu), sigma + 0.2 * (sigma_b - sigma)
        np.testing.assert_allclose(layer.running_mean, mu, rtol=1e-5)
        np.testing.assert_allclose(layer.moving_std, sigma, rtol=1e-5)
        np.testing.assert_allclose(layer.running_var, sigma**2 - 1e-3, rtol=1e-5)
    assert layer.num_batches_tracked == 3


def test_output_uses_r_d_from_stats_before_update(rng):
    layer = BatchRenorm(3, momentum=0.5, rmax=100.0, dmax=100.0, **CONST).astype(np.float64)
    layer.forward(rng.normal(size=(16, 3)))
    x = rng.normal(1.0, 4.0, size=(16, 3))
    mu, sigma = layer.running_mean.copy(), layer.moving_std
    y = layer.forward(x)  # r, d not clipped: y = (x - mu) / sigma with the old mu, sigma
    np.testing.assert_allclose(y, (x - mu) / sigma, atol=1e-12)


@pytest.mark.parametrize("shape,axis", [((16, 5), -1), ((4, 3, 3, 5), -1), ((4, 5, 3, 3), 1)])
def test_rmax1_dmax0_equals_torch_batch_norm_layer(rng, shape, axis):
    layer = BatchRenorm(5, axis=axis, momentum=0.1, eps=1e-3, rmax=1.0, dmax=0.0).astype(np.float64)
    layer.params["gamma"][...] = rng.normal(size=5)
    layer.params["beta"][...] = rng.normal(size=5)
    bn = torch.nn.BatchNorm2d(5, eps=1e-3, momentum=0.1).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(layer.params["gamma"]))
        bn.bias.copy_(torch.tensor(layer.params["beta"]))
    for _ in range(2):
        x = rng.normal(2.0, 3.0, size=shape)
        dy = rng.normal(size=shape)
        y, dx = layer.forward(x), layer.backward(dy)
        xt = torch.tensor(np.moveaxis(x, axis, 1).reshape(shape[0], 5, -1, 1), requires_grad=True)
        yt = bn(xt)
        yt.backward(torch.tensor(np.moveaxis(dy, axis, 1).reshape(yt.shape)))
        back = np.moveaxis(yt.detach().numpy().reshape(np.moveaxis(x, axis, 1).shape), 1, axis)
        np.testing.assert_allclose(y, back, atol=1e-12)
        gx = np.moveaxis(xt.grad.numpy().reshape(np.moveaxis(x, axis, 1).shape), 1, axis)
        np.testing.assert_allclose(dx, gx, atol=1e-11)
        np.testing.assert_allclose(layer.grads["gamma"], bn.weight.grad.numpy(), atol=1e-10)
        np.testing.assert_allclose(layer.grads["beta"], bn.bias.grad.numpy(), atol=1e-10)
        bn.zero_grad()
    np.testing.assert_allclose(layer.running_mean, bn.running_mean.numpy(), atol=1e-12)


def test_rmax1_dmax0_equals_bnlab_batch_norm_layer(rng):
    from bnlab import layers

    renorm = BatchRenorm(4, momentum=0.1, eps=1e-5, rmax=1.0, dmax=0.0)
    bn = layers.BatchNorm(4, momentum=0.1, eps=1e-5)
    for _ in range(2):
        x = rng.normal(1.0, 2.0, size=(12, 4)).astype(np.float32)
        dy = rng.normal(size=(12, 4)).astype(np.float32)
        np.testing.assert_allclose(renorm.forward(x), bn.forward(x), atol=1e-5)
        np.testing.assert_allclose(renorm.backward(dy), bn.backward(dy), atol=1e-5)
        for k in ("gamma", "beta"):
            np.testing.assert_allclose(renorm.grads[k], bn.grads[k], atol=1e-4)
    np.testing.assert_allclose(renorm.running_mean, bn.running_mean, atol=1e-6)


def test_virtual_batches_and_their_running_update(rng):
    layer = BatchRenorm(3, momentum=0.5, virtual_batch_size=4, rmax=2.0, dmax=1.0, **CONST)
    layer.astype(np.float64)
    x = rng.normal(size=(12, 3)) * [1.0, 2.0, 3.0] + [0.0, 1.0, -1.0]
    y = layer.forward(x)
    ref = BatchRenorm(3, rmax=2.0, dmax=1.0, **CONST).astype(np.float64)
    for i in range(3):
        part = slice(4 * i, 4 * i + 4)
        np.testing.assert_allclose(y[part], ref.forward(x[part]), atol=1e-12)
        ref.load_state_dict(BatchRenorm(3).astype(np.float64).state_dict())
    chunks = x.reshape(3, 4, 3)
    mu_b, sigma_b = chunks.mean(1).mean(0), np.sqrt(chunks.var(1) + 1e-3).mean(0)
    sigma0 = np.sqrt(1 + 1e-3)
    np.testing.assert_allclose(layer.running_mean, 0.5 * mu_b, atol=1e-12)
    np.testing.assert_allclose(layer.moving_std, sigma0 + 0.5 * (sigma_b - sigma0), atol=1e-12)


def test_eval_forward_and_backward_finite_differences(rng):
    layer = BatchRenorm(4, momentum=0.3).astype(np.float64)
    layer.forward(rng.normal(2.0, 3.0, size=(20, 4)))
    layer.params["gamma"][...] = rng.normal(size=4)
    layer.eval()
    x = rng.normal(size=(5, 4))
    y = layer.forward(x)
    sigma = np.sqrt(layer.running_var + layer.eps)
    expected = layer.params["gamma"] * (x - layer.running_mean) / sigma + layer.params["beta"]
    np.testing.assert_allclose(y, expected, atol=1e-12)
    w = rng.normal(size=x.shape)
    dx = layer.backward(w)
    h = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (np.sum(w * layer.forward(xp)) - np.sum(w * layer.forward(xm))) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-9)
    layer.forward(x)
    layer.backward(w)
    x_n = (x - layer.running_mean) / sigma
    np.testing.assert_allclose(layer.grads["gamma"], np.sum(w * x_n, axis=0), atol=1e-12)
    np.testing.assert_allclose(layer.grads["beta"], w.sum(0), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtypes(rng, dtype):
    layer = BatchRenorm(3)
    x = rng.normal(size=(6, 3)).astype(dtype)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dtype and dx.dtype == dtype
    assert layer.grads["gamma"].dtype == np.float32
    assert layer.eval().forward(x).dtype == dtype


def test_config_and_state_round_trip(rng):
    layer = BatchRenorm(3, axis=1, momentum=0.05, rmax=2.0, virtual_batch_size=2, name="brn")
    layer.forward(rng.normal(size=(4, 3, 2)).astype(np.float32))
    cfg = json.loads(json.dumps(layer.get_config()))
    clone = layer_from_config("BatchRenorm", cfg)
    assert clone.get_config() == layer.get_config()
    clone.load_state_dict(layer.state_dict())
    assert clone.num_batches_tracked == 1
    x = rng.normal(size=(4, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(clone.forward(x), layer.forward(x))


def snapshot(layer):
    return {k: np.array(v, copy=True) for k, v in {**layer.params, **layer.buffers}.items()}


BAD_INPUTS = [
    (np.ones((4, 5)), ValueError, "5 features"),
    (np.ones(3), ValueError, "at least 2 dimensions"),
    (np.ones((4, 3), dtype=np.int64), TypeError, "floating-point"),
    (np.ones((1, 3)), ValueError, "more than 1 value per channel"),
    (np.array([[1.0, 2.0, np.nan], [0.0, 1.0, 2.0]]), FloatingPointError, "NaN"),
    (np.array([[1.0, 2.0, np.inf], [0.0, 1.0, 2.0]]), FloatingPointError, "Inf"),
]


@pytest.mark.parametrize("x,exc,msg", BAD_INPUTS)
def test_bad_input_raises_and_changes_nothing(rng, x, exc, msg):
    layer = BatchRenorm(3, name="brn")
    layer.forward(rng.normal(size=(4, 3)).astype(np.float32))
    before = snapshot(layer)
    with pytest.raises(exc, match=msg) as info:
        layer.forward(x)
    assert "brn" in str(info.value)
    after = snapshot(layer)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_empty_training_batch_gives_empty_output_and_changes_nothing(rng):
    layer = BatchRenorm(3, name="brn")
    layer.forward(rng.normal(size=(4, 3)).astype(np.float32))
    layer.backward(np.ones((4, 3), np.float32))
    before = snapshot(layer)
    assert layer.forward(np.ones((0, 3), np.float32)).shape == (0, 3)
    assert layer.eval().forward(np.ones((0, 3), np.float32)).shape == (0, 3)
    after = snapshot(layer)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_bad_axis_and_virtual_batch():
    with pytest.raises(ValueError, match="axis=3 is out of range"):
        BatchRenorm(3, axis=3).forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="must divide the batch size"):
        BatchRenorm(3, virtual_batch_size=4).forward(np.ones((6, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchRenorm(3, virtual_batch_size=1).forward(np.ones((6, 3)))
    with pytest.raises(ValueError, match="feature axis"):
        BatchRenorm(3, axis=0, virtual_batch_size=1).forward(np.ones((3, 4)))
    # eval mode accepts any batch size, a single example included
    assert BatchRenorm(3, virtual_batch_size=4).eval().forward(np.ones((1, 3))).shape == (1, 3)


@pytest.mark.parametrize(
    "kwargs,msg",
    [({"num_features": 0}, "num_features"), ({"momentum": 1.5}, "momentum"),
     ({"eps": 0.0}, "eps"), ({"rmax": 0.5}, "rmax"), ({"dmax": -1.0}, "dmax"),
     ({"warmup_steps": -1}, "warmup_steps"), ({"rmax_steps": 2.5}, "rmax_steps"),
     ({"virtual_batch_size": 0}, "virtual_batch_size")],
)  # fmt: skip
def test_bad_constructor_arguments(kwargs, msg):
    args = {"num_features": 3, **kwargs}
    with pytest.raises(ValueError, match=msg):
        BatchRenorm(**args)


def test_backward_errors(rng):
    layer = BatchRenorm(3, name="brn")
    with pytest.raises(RuntimeError, match="'brn': backward called before forward"):
        layer.backward(np.ones((4, 3)))
    layer.forward(rng.normal(size=(4, 3)).astype(np.float32))
    layer.backward(np.ones((4, 3), np.float32))
    grads = {k: v.copy() for k, v in layer.grads.items()}
    with pytest.raises(ValueError, match=r"dy must have the shape .*\(4, 3\), got \(4, 2\)"):
        layer.backward(np.ones((4, 2)))
    with pytest.raises(FloatingPointError, match="dy contains 1 NaN"):
        layer.backward(np.array([[np.nan, 0, 0]] + [[5.0, 0, 0]] * 3))
    for k, v in layer.grads.items():
        np.testing.assert_array_equal(v, grads[k])
