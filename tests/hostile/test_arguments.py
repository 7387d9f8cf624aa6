"""Issue 23 medium: unvalidated arguments never reach arithmetic; each case ends in a
TypeError/ValueError/FloatingPointError naming the argument, and nothing changes."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab import kernels as K
from bnlab import layers as L

X2 = np.random.default_rng(1).normal(size=(16, 5)).astype(np.float32)
G, B = np.ones(5), np.zeros(5)


@pytest.mark.parametrize("axis", [1.5, "1", None, True])
def test_axis_must_be_an_integer(axis: object) -> None:
    with pytest.raises(TypeError, match="axis"):
        K.batch_norm_forward(X2, G, B, axis=axis)
    with pytest.raises(TypeError, match="axis"):
        K.batch_norm_inference(X2, B, G, G, B, axis=axis)
    with pytest.raises((TypeError, ValueError), match="axis"):
        L.BatchNorm(5, axis=axis).forward(X2)


@pytest.mark.parametrize("cache", [None, "cache", (1, 2)])
def test_backward_needs_the_forward_cache(cache: object) -> None:
    with pytest.raises(TypeError, match="cache must be the forward's BatchNormCache"):
        K.batch_norm_backward(X2, cache)
    with pytest.raises(TypeError, match="cache must be the forward's BatchNormCache"):
        K.batch_renorm_backward(X2, cache)


@pytest.mark.parametrize(
    ("kw", "name"),
    [({"rmax": 0.5}, "rmax"), ({"rmax": 0.0}, "rmax"), ({"rmax": np.inf}, "rmax"),
     ({"rmax": np.nan}, "rmax"), ({"dmax": -1.0}, "dmax"), ({"dmax": "x"}, "dmax")],
)  # fmt: skip
def test_renorm_clips_are_checked(kw: dict, name: str) -> None:
    with pytest.raises((TypeError, ValueError), match=name):
        K.batch_renorm_forward(X2, G, B, np.zeros(5), np.ones(5), **kw)


@pytest.mark.parametrize("stride", [0, -1, 1.5])
def test_im2col_stride(stride: object) -> None:
    x = np.zeros((2, 4, 4, 3), np.float32)
    with pytest.raises((TypeError, ValueError), match="stride"):
        K.im2col(x, (3, 3), (stride, 1))
    with pytest.raises(TypeError, match="stride must be a tuple of 2 ints"):
        K.im2col(x, (3, 3), stride)


def test_sequential_nan_dy_names_the_grads_it_wrote() -> None:
    net = L.Sequential([L.Dense(5, 4, seed=0), L.BatchNorm(4), L.Dense(4, 2, seed=1)])
    net.forward(X2)
    params = {k: v.copy() for k, v in net.params.items()}
    dy = np.ones((16, 2), np.float32)
    dy[3, 1] = np.nan  # the last Dense passes it on (a data-parallel step reduces it first)
    with pytest.raises(FloatingPointError, match="grads of the layers after index 1 hold"):
        net.backward(dy)
    for k, v in net.params.items():
        np.testing.assert_array_equal(v, params[k], err_msg=k)


def test_nan_gamma_in_training_is_refused() -> None:
    bn = L.BatchNorm(5)
    bn.params["gamma"][0] = np.nan
    running = bn.running_mean.copy()
    with pytest.raises((FloatingPointError, ValueError), match="gamma must be finite"):
        bn.forward(X2)
    np.testing.assert_array_equal(bn.running_mean, running)


def test_cumulative_momentum_with_a_negative_counter() -> None:
    bn = L.BatchNorm(5, momentum=None)
    bn.buffers["num_batches_tracked"][...] = -1
    with pytest.raises(ValueError, match="num_batches_tracked"):
        bn.forward(X2)


@pytest.mark.parametrize("key", ["running_mean", "running_var"])
def test_running_buffer_of_the_wrong_shape(key: str) -> None:
    bn = L.BatchNorm(5)
    with pytest.raises((ValueError, KeyError), match=key):
        bn.load_state_dict({**bn.state_dict(), key: np.zeros(3, np.float32)})
    bn.buffers[key] = np.zeros(3, np.float32)
    for mode in (bn.train, bn.eval):  # refused before the update reads or writes it
        with pytest.raises(ValueError, match=f"buffers\\['{key}'\\] must be .* shape \\(5,\\)"):
            mode().forward(X2)


@pytest.mark.parametrize("seed", ["x", 1.5, [1, "a"]])
def test_dense_seed(seed: object) -> None:
    with pytest.raises((TypeError, ValueError), match="seed"):
        L.Dense(5, 3, seed=seed)


def test_interop_arguments(tmp_path) -> None:
    from bnlab.deploy import export_onnx, from_torch, to_torch

    net = L.Sequential([L.Dense(6, 3, seed=0)]).eval()
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints"):
        export_onnx(net, tmp_path / "m.onnx", input_shape="6")
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints"):
        to_torch(net, input_shape="abc")
    with pytest.raises(TypeError, match="from_torch: module must be a torch.nn.Module"):
        from_torch("abc")
    assert not (tmp_path / "m.onnx").exists()
