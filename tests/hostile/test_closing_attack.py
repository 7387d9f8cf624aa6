"""Issue 23's closing attack on the surfaces added since its second pass: BN kernels per call,
chunk threads, hand-replaced weights and buffers (benchmarks/attack_surfaces.py has the rest)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import bnlab.layers.conv2d as conv_module
from bnlab import kernels as K
from bnlab import layers as L
from bnlab.runtime import kernel_threads

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 5)).astype(np.float32)
ONES, ZEROS = np.ones(5), np.zeros(5)


@pytest.mark.parametrize(
    "call",
    [
        lambda: K.batch_norm_forward(X, np.full(5, 3e38), ZEROS),  # gamma * xhat
        lambda: K.batch_norm_forward(X, ONES * 3e38, np.full(5, 3e38)),  # + beta
        lambda: K.batch_norm_forward(X.astype(np.float16), ONES * 1e5, ZEROS),  # float16 y
        lambda: K.batch_norm_inference(X * 1e37, ZEROS, ZEROS, ONES, ZEROS),  # var 0
        lambda: K.batch_norm_inference(X, ZEROS, ONES, ONES * 1e300, ZEROS),  # gamma 1e300
        lambda: K.batch_norm_backward(
            RNG.normal(size=X.shape).astype(np.float32) * np.float32(1e20),
            K.batch_norm_forward(X, np.full(5, 1e30), ZEROS)[1],
        ),  # dx
    ],
)
def test_bn_outputs_that_overflow_from_finite_inputs_are_refused(call: Any) -> None:
    with pytest.raises(FloatingPointError, match="finite inputs gave a non-finite output"):
        call()


def test_bn_inference_still_passes_nan_input_on_and_valid_bits_are_unchanged() -> None:
    y = K.batch_norm_inference(X * np.nan, ZEROS, ONES, ONES, ZEROS)
    assert np.isnan(y).all()
    big = np.full(5, 1e30)  # large but finite: the same bits as before the check
    y, _ = K.batch_norm_forward(X, big, ZEROS)
    ref = (X - X.mean(0, dtype=np.float64)) / np.sqrt(X.var(0, dtype=np.float64) + 1e-5) * 1e30
    np.testing.assert_allclose(y, ref.astype(np.float32), rtol=1e-5)


def test_layer_overflow_changes_no_buffer() -> None:
    bn = L.BatchNorm(5)
    bn.params["beta"][...] = 3e38
    bn.params["gamma"][...] = 3e38
    with pytest.raises(FloatingPointError, match="overflows float32"):
        bn.forward(X)
    assert bn.num_batches_tracked == 0 and not bn.running_mean.any()


@pytest.mark.parametrize("groups", ["ab", 2.5, [(0.5, 8)], [[0, 1, 2]]])
def test_bn_groups_that_are_not_integer_row_bounds_are_refused(groups: Any) -> None:
    x = RNG.normal(size=(16, 5, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="groups"):
        K.batch_norm_forward(x, ONES, ZEROS, axis=1, groups=groups)


@pytest.mark.parametrize("kind", ["BatchNorm", "BatchRenorm"])
@pytest.mark.parametrize(
    "key, value",
    [
        ("running_mean", np.zeros(9, np.float32)),  # was read past its end by the update
        ("running_mean", np.zeros(3, np.float32)),
        ("running_mean", [0.0] * 5),
        ("running_mean", np.zeros(5, np.float16)),
        ("running_mean", np.zeros(5, int)),
        ("running_var", np.zeros((5, 1), np.float32)),
        ("num_batches_tracked", np.array(2.5)),
        ("num_batches_tracked", 3),
    ],
)
def test_bn_buffers_replaced_by_hand_are_refused_in_training(
    kind: str, key: str, value: Any
) -> None:
    bn = getattr(L, kind)(5)
    bn.buffers[key] = value
    with pytest.raises(ValueError, match=f"buffers\\['{key}'\\] must be"):
        bn.forward(X)


@pytest.mark.parametrize("key, value", [("running_mean", np.nan), ("running_var", -1.0)])
def test_bn_statistics_set_to_nan_or_a_negative_variance_are_named(key: str, value: float) -> None:
    bn = L.BatchNorm(5)
    bn.buffers[key][...] = value
    with pytest.raises(ValueError, match=f"{key} holds NaN, Inf or .* negative values"):
        bn.forward(X)
    assert bn.num_batches_tracked == 0


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.complex64])
def test_astype_takes_float32_or_float64_only(dtype: Any) -> None:
    net = L.Sequential([L.Dense(5, 3, seed=0), L.BatchNorm(3)])
    with pytest.raises(TypeError, match="float32 or float64"):
        net.astype(dtype)
    assert all(p.dtype == np.float32 for layer in net.layers for p in layer.params.values())


def _conv(alg: str) -> L.Conv2D:
    return L.Conv2D(8, 4, 3, padding="same", algorithm=alg, seed=0)


@pytest.mark.parametrize("alg", ["im2col", "winograd", "dense"])
@pytest.mark.parametrize(
    "store, make",
    [
        ("params", lambda W: W.tolist()),
        ("params", lambda W: W.astype(np.float16)),
        ("params", lambda W: W.astype(int)),
        ("params", lambda W: W.astype(np.float64)),  # the grads stay float32
        ("params", lambda W: np.concatenate([W, W], axis=-1)),
        ("grads", lambda W: W.astype(np.float64)),
        ("grads", lambda W: np.asfortranarray(W)),
    ],
)
def test_weights_replaced_by_hand_are_refused_before_a_product(
    alg: str, store: str, make: Any
) -> None:
    layer = L.Dense(8, 4, seed=0) if alg == "dense" else _conv(alg)
    x = RNG.normal(size=(2, 8) if alg == "dense" else (2, 6, 6, 8)).astype(np.float32)
    y = layer.forward(x)
    W = getattr(layer, store)["W"]
    getattr(layer, store)["W"] = make(W.T.T.copy() if store == "params" else W)
    with pytest.raises(TypeError, match=f"{store}\\['[Wb]'\\] must be a float32 or float64 array"):
        layer.forward(x)
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("alg", ["im2col", "winograd", "dense"])
@pytest.mark.parametrize("dtype", [complex, int, object, "U1"])
def test_backward_refuses_dy_that_is_not_floating_point(alg: str, dtype: Any) -> None:
    layer = L.Dense(8, 4, seed=0) if alg == "dense" else _conv(alg)
    x = RNG.normal(size=(2, 8) if alg == "dense" else (2, 6, 6, 8)).astype(np.float32)
    y = layer.forward(x)
    with pytest.raises(TypeError, match="dy must be a floating-point array"):
        layer.backward(np.ones(y.shape).astype(dtype))


def test_a_failing_chunk_thread_leaves_conv2d_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = _conv("im2col")
    x = RNG.normal(size=(64, 12, 12, 8)).astype(np.float32)
    original = conv_module.col2im

    def fails_off_the_main_thread(*args: Any, **kw: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("injected")
        return original(*args, **kw)

    with kernel_threads(2):
        y = conv.forward(x)
        conv.backward(np.ones_like(y))
        grads, saved = {k: v.copy() for k, v in conv.grads.items()}, conv._x
        monkeypatch.setattr(conv_module, "col2im", fails_off_the_main_thread)
        if conv._pieces(x.shape, np.float32)[2] < 2:
            pytest.skip("needs 2 Numba threads for 2 chunk threads")
        with pytest.raises(RuntimeError, match="injected"):
            conv.backward(np.ones_like(y) * 3)
    for k, v in grads.items():  # the check can fail: the first thread wrote dW before
        np.testing.assert_array_equal(conv.grads[k], v)
    assert conv._x is saved


def test_kernel_threads_takes_numpy_integers_and_refuses_the_rest() -> None:
    with kernel_threads(np.int64(1)):
        pass
    assert (
        L.Sequential([L.Dense(2, 2)], kernel_threads=np.int64(2)).get_config()["kernel_threads"]
        == 2
        and type(L.Sequential([L.Dense(2, 2)], kernel_threads=np.int64(2)).kernel_threads) is int
    )
    for bad in (0, -1, True, "2", 2.5):
        with pytest.raises(ValueError, match="must be a positive int or None"), kernel_threads(bad):
            pass


@pytest.mark.parametrize("make", [lambda: L.BatchNorm(5), lambda: L.BatchRenorm(5),
                                  lambda: L.GroupNorm(1, 5), lambda: L.LayerNorm(5)])  # fmt: skip
def test_float64_gradients_that_overflow_a_float32_layer_are_refused(make: Any) -> None:
    layer = make()
    y = layer.forward(X.astype(np.float64))
    with pytest.raises(FloatingPointError, match="dgamma overflows the layer's float32"):
        layer.backward(RNG.normal(size=y.shape) * 1e300)
    assert not any(g.any() for g in layer.grads.values())  # nothing written


@pytest.mark.parametrize("make", [lambda: L.GroupNorm(1, 5), lambda: L.LayerNorm(5)])
def test_group_and_layer_norm_outputs_that_overflow_are_refused(make: Any) -> None:
    layer = make()
    layer.params["gamma"][...] = layer.params["beta"][...] = 3e38
    with pytest.raises(FloatingPointError, match="finite inputs gave a non-finite output"):
        layer.forward(X)


def test_renorm_negative_running_var_is_named() -> None:
    bn = L.BatchRenorm(5)
    bn.buffers["running_var"][...] = -1.0
    with pytest.raises(ValueError, match="running_var holds NaN or negative values"):
        bn.forward(X)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "shape, axis",
    [((60, 5), -1), ((200, 5), -1), ((7, 5, 3, 3), 1), ((64, 16, 16, 5), -1), ((32, 5, 32, 32), 1)],
)  # rows and planes, serial and parallel blocks, dx in float32 (>= 64 values) and float64
def test_every_compiled_write_loop_reports_an_overflow(shape: Any, axis: int, threads: int) -> None:
    x = RNG.normal(size=shape).astype(np.float32)
    dy = RNG.normal(size=shape).astype(np.float32) * np.float32(1e20)
    x[(0,) * x.ndim] = 1e3  # one large value: every other xhat stays small
    with kernel_threads(threads):
        y, cache = K.batch_norm_forward(x, ONES, ZEROS, axis=axis)  # finite
        K.batch_norm_backward(dy * np.float32(1e-20), cache)
        big = np.full(5, 3e38)
        with pytest.raises(FloatingPointError, match="non-finite output"):
            K.batch_norm_forward(x, big, ZEROS, axis=axis)
        with pytest.raises(FloatingPointError, match="non-finite output"):
            K.batch_norm_inference(x, ZEROS, ONES, big, ZEROS, axis=axis)
        cache = K.batch_norm_forward(x, np.full(5, 1e30), ZEROS, axis=axis)[1]
        with pytest.raises(FloatingPointError, match="non-finite output"):
            K.batch_norm_backward(dy, cache)


def test_winograd_kernels_refuse_aliased_or_unusable_outputs_and_arguments() -> None:
    x = RNG.normal(size=(1, 6, 6, 4)).astype(np.float32)
    W = RNG.normal(size=(3, 3, 4, 4)).astype(np.float32)
    dy = RNG.normal(size=(1, 6, 6, 4)).astype(np.float32)
    read_only = np.empty_like(x)
    read_only.flags.writeable = False
    for out, words in ((x, "shares memory"), (read_only, "writeable"), ([0.0], "numpy array")):
        with pytest.raises((TypeError, ValueError), match=f"out {words}|out must .*{words}"):
            K.winograd_conv3x3(x, W, out=out)
    for kw in ({"dx_out": dy}, {"dx_out": x}, {"dW_out": W}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} shares memory"):
            K.winograd_conv3x3_backward(x, W, dy, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dW_out must have"):
        K.winograd_conv3x3_backward(x, W, dy, dW_out=np.empty((3, 3, 4, 5), np.float32))
    for bad in ({"pads": (1.5, 1, 1, 1)}, {"b": np.ones(4, complex)}, {"b": "abcd"}):
        with pytest.raises((TypeError, ValueError), match="pads|b must be"):
            K.winograd_conv3x3(x, W, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x must be"):
        K.winograd_conv3x3(x.tolist(), W)  # type: ignore[arg-type]
    y = K.winograd_conv3x3(x, W, b=[1, 2, 3, 4])  # a list of numbers is a bias
    assert np.isfinite(y).all()
