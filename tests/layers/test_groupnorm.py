"""GroupNorm and LayerNorm against torch (float64, NHWC <-> NCHW), finite differences, the NumPy
reference kernels, float32 closeness and the bad-input contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnlab.kernels import groupnorm as fused
from bnlab.kernels import groupnorm_ref as ref
from bnlab.layers import GroupNorm, LayerNorm, layer_from_config

RNG = np.random.default_rng(5)


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.moveaxis(a, -1, 1).copy())


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _set_affine(ours, theirs) -> None:
    for k, tk in (("gamma", "weight"), ("beta", "bias")):
        if k in ours.params:
            ours.params[k][...] = RNG.normal(1 if k == "gamma" else 0, 0.5, ours.params[k].shape)
            p = ours.params[k]
            value = np.moveaxis(p, -1, 0) if p.ndim == 3 else p  # LayerNorm((H, W, C))
            with torch.no_grad():
                getattr(theirs, tk).copy_(torch.tensor(np.ascontiguousarray(value)))


@pytest.mark.parametrize(
    "shape, groups",
    [((3, 5, 4, 8), 1), ((3, 5, 4, 8), 2), ((2, 3, 3, 8), 8), ((4, 6), 3), ((2, 7, 6), 2)],
)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_torch_float64(shape, groups, affine):
    C = shape[-1]
    ours = GroupNorm(groups, C, affine=affine).astype(np.float64)
    theirs = torch.nn.GroupNorm(groups, C, affine=affine).double()
    _set_affine(ours, theirs)
    x = RNG.normal(3.0, 2.0, shape)
    dy = RNG.normal(size=shape)
    xt = _nchw(x).requires_grad_()
    yt = theirs(xt)
    yt.backward(_nchw(dy))
    y = ours.forward(x)
    dx = ours.backward(dy)
    np.testing.assert_allclose(y, _nhwc(yt), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, _nhwc(xt.grad), rtol=1e-10, atol=1e-12)
    if affine:
        np.testing.assert_allclose(ours.grads["gamma"], theirs.weight.grad.numpy(), atol=1e-11)
        np.testing.assert_allclose(ours.grads["beta"], theirs.bias.grad.numpy(), atol=1e-11)


@pytest.mark.parametrize(
    "shape, normalized", [((4, 6), (6,)), ((2, 3, 4, 5), (5,)), ((2, 3, 4, 5), (3, 4, 5))]
)
@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, False)])
def test_layer_norm_matches_torch_float64(shape, normalized, affine, bias):
    ours = LayerNorm(normalized, elementwise_affine=affine, bias=bias).astype(np.float64)
    # channels last: our LayerNorm((H, W, C)) on NHWC is torch's LayerNorm((C, H, W)) on NCHW
    tshape = normalized if len(normalized) < 3 else (normalized[2], *normalized[:2])
    theirs = torch.nn.LayerNorm(tshape, elementwise_affine=affine, bias=bias).double()
    _set_affine(ours, theirs)
    x, dy = RNG.normal(-1.0, 3.0, shape), RNG.normal(size=shape)
    to_t, from_t = (_nchw, _nhwc) if len(normalized) == 3 else (torch.tensor, np.asarray)
    xt = to_t(x).requires_grad_()
    yt = theirs(xt)
    yt.backward(to_t(dy))
    np.testing.assert_allclose(ours.forward(x), from_t(yt.detach()), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.backward(dy), from_t(xt.grad), rtol=1e-10, atol=1e-12)
    if affine:
        g = theirs.weight.grad.numpy()
        g = np.moveaxis(g, 0, -1) if g.ndim == 3 else g
        np.testing.assert_allclose(ours.grads["gamma"], g, atol=1e-11)
    assert sorted(ours.params) == sorted(["gamma"] * affine + ["beta"] * (affine and bias))


def _loss_grads(layer, x, w):
    """Finite differences of L = sum(w * layer(x)) against layer.backward, float64."""
    layer.forward(x)
    dx = layer.backward(w)
    h = 1e-6

    def num(arr, idx):
        old = arr[idx]
        arr[idx] = old + h
        lp = float((w * layer.forward(x)).sum())
        arr[idx] = old - h
        lm = float((w * layer.forward(x)).sum())
        arr[idx] = old
        return (lp - lm) / (2 * h)

    for idx in [(0, 1, 2, 3), (1, 0, 0, 0), (1, 2, 1, 5)]:
        assert num(x, idx) == pytest.approx(dx[idx], rel=1e-6, abs=1e-8)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    for k in layer.params:
        for i in (0, 5):
            assert num(layer.params[k], i) == pytest.approx(grads[k][i], rel=1e-6, abs=1e-8)


def test_group_norm_finite_differences():
    gn = GroupNorm(3, 6).astype(np.float64)
    gn.params["gamma"][...] = RNG.normal(size=6)
    gn.params["beta"][...] = RNG.normal(size=6)
    _loss_grads(gn, RNG.normal(size=(2, 3, 4, 6)), RNG.normal(size=(2, 3, 4, 6)))


def test_layer_norm_finite_differences():
    ln = LayerNorm(6).astype(np.float64)
    ln.params["gamma"][...] = RNG.normal(size=6)
    _loss_grads(ln, RNG.normal(size=(2, 3, 4, 6)), RNG.normal(size=(2, 3, 4, 6)))


def test_fused_kernels_equal_reference_and_float32_close():
    x = RNG.normal(100.0, 0.01, (3, 5, 5, 12))  # a large offset: the shifted sums keep digits
    g, b, dy = RNG.normal(size=12), RNG.normal(size=12), RNG.normal(size=x.shape)
    y1, c1 = fused.group_norm_forward(x, g, b, 4)
    y2, c2 = ref.group_norm_forward(x, g, b, 4)
    np.testing.assert_allclose(y1, y2, rtol=1e-9, atol=1e-9)
    for a, r in zip(
        fused.group_norm_backward(dy, c1), ref.group_norm_backward(dy, c2), strict=True
    ):
        np.testing.assert_allclose(a, r, rtol=1e-8, atol=1e-8)
    y32, _ = fused.group_norm_forward(x.astype(np.float32), g, b, 4)
    assert y32.dtype == np.float32
    y16, _ = fused.group_norm_forward(x.astype(np.float16), g, b, 4)
    assert y16.dtype == np.float16
    x32 = x.astype(np.float32)  # the float32 input's own exact values, computed in float64
    np.testing.assert_allclose(
        y32, ref.group_norm_forward(x32.astype(np.float64), g, b, 4)[0], atol=2e-5
    )


def test_same_bits_on_one_and_two_threads():
    from bnlab.runtime import kernel_threads

    x = RNG.normal(size=(8, 64, 64)).astype(np.float32)
    dy = RNG.normal(size=x.shape).astype(np.float32)
    outs = []
    for n in (1, 2):
        with kernel_threads(n):
            y, c = fused.group_norm_forward(x, None, None, 8)
            outs.append((y, *fused.group_norm_backward(dy, c)))
    for a, b in zip(*outs, strict=True):
        assert a.tobytes() == b.tobytes()


def test_bad_inputs_raise_before_any_change():
    with pytest.raises(ValueError, match="divisible by num_groups=4"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match="normalized_shape"):
        LayerNorm(0)
    gn = GroupNorm(2, 4)
    with pytest.raises(ValueError, match=r"expected input \(N, \.\.\., 4\)"):
        gn.forward(np.zeros((2, 3, 3, 6), np.float32))
    x = RNG.normal(size=(2, 3, 3, 4)).astype(np.float32)
    gn.forward(x)
    gn.backward(np.ones_like(x))
    before = {k: v.copy() for k, v in gn.grads.items()}
    bad = np.ones_like(x)
    bad[0, 1, 1, 2] = np.nan
    with pytest.raises(FloatingPointError, match="dy contains 1 NaN"):
        gn.backward(bad)
    for k, v in before.items():
        assert np.array_equal(gn.grads[k], v)
    x[1, 0, 0, 0] = np.inf
    with pytest.raises(FloatingPointError, match="x contains 0 NaN and 1 Inf"):
        gn.forward(x)
    with pytest.raises(TypeError, match="floating-point"):
        LayerNorm(4).forward(np.ones((2, 4), np.int64))
    with pytest.raises(ValueError, match=r"expected input \(N, \.\.\., 3, 4\)"):
        LayerNorm((3, 4)).forward(np.ones((2, 4, 3), np.float32))


def test_lazy_channels_config_round_trip_and_batch_of_one():
    gn = GroupNorm(2)
    y = gn.forward(RNG.normal(size=(1, 4, 4, 6)).astype(np.float32))  # batch of one is fine
    assert gn.num_channels == 6 and gn.params["gamma"].shape == (6,) and y.shape == (1, 4, 4, 6)
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(4).forward(np.ones((2, 6), np.float32))
    for layer in (gn, LayerNorm((4, 6), bias=False, eps=1e-3)):
        again = layer_from_config(type(layer).__name__, layer.get_config())
        assert again.get_config() == layer.get_config()
        assert {k: v.shape for k, v in again.params.items()} == {
            k: v.shape for k, v in layer.params.items()
        }
