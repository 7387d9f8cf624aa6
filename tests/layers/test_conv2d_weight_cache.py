"""Conv2D keeps Winograd's transformed weights U between calls (``TransformCache``); every way
of changing W must give the bits of a layer that never saw the old W.

The oracle is a fresh Conv2D holding a copy of the changed parameters (its cache empty), run on
the same input; a stale U would give the old W's outputs, which differ in many elements."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab import runtime
from bnlab.deploy import fold_batch_norm
from bnlab.kernels.winograd_weights import TransformCache, winograd_weights
from bnlab.layers import BatchNorm, Conv2D, Sequential
from bnlab.optim import SGD


def _layer(seed: int = 1) -> Conv2D:
    return Conv2D(8, 6, 3, padding="same", algorithm="winograd", seed=seed)


def _x(n: int = 2) -> np.ndarray:
    return np.random.default_rng(4).standard_normal((n, 7, 9, 8)).astype(np.float32)


def _fresh_forward(layer: Conv2D, x: np.ndarray) -> np.ndarray:
    twin = _layer()
    for k, v in layer.params.items():
        twin.params[k] = np.array(v, copy=True)
    return twin.forward(x)


def _check_follows(layer: Conv2D, x: np.ndarray, before: np.ndarray) -> None:
    after = layer.forward(x)
    assert after.tobytes() == _fresh_forward(layer, x).tobytes()
    assert after.tobytes() != before.tobytes()  # the change reached the output


@pytest.mark.parametrize(
    "change",
    [
        lambda W: W.__setitem__((1, 1, 0, 0), W[1, 1, 0, 0] + 1),  # one element, in place
        lambda W: W.__imul__(np.float32(0.5)),  # every element, in place
        lambda W: W.__setitem__(Ellipsis, W[::-1]),  # the same values, moved
    ],
)
def test_in_place_changes_of_W_reach_the_output(change):
    layer, x = _layer().eval(), _x()
    before = layer.forward(x).copy()
    change(layer.params["W"])
    _check_follows(layer, x, before)


def test_a_new_array_assigned_to_params_reaches_the_output():
    layer, x = _layer().eval(), _x()
    before = layer.forward(x).copy()
    layer.params["W"] = np.ascontiguousarray(layer.params["W"][:, ::-1])
    _check_follows(layer, x, before)


def test_an_optimizer_step_reaches_the_next_forward_and_backward():
    layer, x = _layer(), _x()
    opt = SGD(layer.params, layer.grads, lr=0.1)
    before = layer.forward(x).copy()
    layer.backward(np.ones_like(before))
    opt.step()
    _check_follows(layer, x, before)
    twin = _layer()  # dx after another step: U^T of the current W, not the forward's
    layer.backward(np.ones_like(before))
    opt.step()
    for k, v in layer.params.items():
        twin.params[k] = np.array(v, copy=True)
    twin.forward(x)
    layer_dx = layer.backward(np.ones_like(before))
    assert layer_dx is not None
    dx_fresh = twin.backward(np.ones_like(before))
    assert dx_fresh is not None and layer_dx.tobytes() == dx_fresh.tobytes()


def test_W_changed_between_forward_and_backward_is_the_W_backward_uses():
    layer, x, dy = _layer(), _x(), np.ones((2, 7, 9, 6), np.float32)
    layer.forward(x)
    layer.params["W"][...] *= 2
    dx = layer.backward(dy)
    twin = _layer()
    twin.params["W"][...] = layer.params["W"]
    twin.forward(x)
    want = twin.backward(dy)
    assert dx is not None and want is not None and dx.tobytes() == want.tobytes()


def test_load_state_dict_and_astype_reach_the_output():
    layer, x = _layer().eval(), _x()
    before = layer.forward(x).copy()
    layer.load_state_dict(_layer(seed=9).state_dict())
    _check_follows(layer, x, before)
    layer.astype(np.float64)
    twin = _layer(seed=9).astype(np.float64)
    x64 = x.astype(np.float64)
    assert layer.forward(x64).tobytes() == twin.forward(x64).tobytes()


def test_folding_a_copy_of_a_model_that_ran_reaches_the_output():
    model = Sequential([_layer(), BatchNorm(6)]).eval()
    model.layers[1].running_var[...] = 4.0  # folding halves W (and the copy's cached U is stale)
    x = _x()
    plain = model.forward(x).copy()
    folded = fold_batch_norm(model)
    np.testing.assert_allclose(folded.forward(x), plain, rtol=1e-5, atol=1e-5)


def test_a_sign_of_zero_is_a_change():
    """-0.0 == 0.0 as values, not as bits: the cache compares bits."""
    cache, W = TransformCache(), np.zeros((3, 3, 2, 2), np.float32)
    first = cache.get(W)
    W[0, 0, 0, 0] = -0.0
    second = cache.get(W)
    assert second is not first
    assert second.tobytes() == winograd_weights(W).tobytes()
    assert cache.get(W) is second  # unchanged W: the same arrays
    assert not second.flags.writeable and not cache.transposed().flags.writeable


def test_cached_eval_is_bit_identical_to_an_uncached_kernel_on_one_thread():
    from bnlab.kernels.winograd import winograd_conv3x3

    layer, x = _layer().eval(), _x(3)
    with runtime.kernel_threads(1):
        for _ in range(3):
            y = layer.forward(x)
        W, b = layer.params["W"], layer.params["b"]
        want = winograd_conv3x3(x, W, b, layer.pads(7, 9))
    assert y.tobytes() == want.tobytes()
