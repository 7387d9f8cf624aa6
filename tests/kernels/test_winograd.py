"""Winograd F(2x2, 3x3): forward, dx and dW against a float64 direct convolution and PyTorch.

The float32 bound held here is the one stated in bnlab.kernels.winograd's docstring:
max |error| <= 2e-6 * max |reference| against float64, for y, dx and dW; against PyTorch's
float32 (whose own dW is up to 3.7e-6 off float64 on the net's shapes) 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnlab.kernels.im2col import same_padding
from bnlab.kernels.winograd import winograd_conv3x3, winograd_conv3x3_backward
from bnlab.kernels.winograd_weights import winograd_weights, winograd_weights_grad

F32_BOUND = 2e-6
TORCH_BOUND = 1e-5


def direct(x: np.ndarray, W: np.ndarray, dy: np.ndarray | None, pads):  # noqa: ANN201
    """float64 oracle: y = sum_{p,q} xpad[:, p:p+Ho, q:q+Wo] @ W[p, q], and its adjoints."""
    x, W = x.astype(np.float64), W.astype(np.float64)
    pt, pb, pl, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ho, wo = xp.shape[1] - 2, xp.shape[2] - 2
    y = sum(xp[:, p : p + ho, q : q + wo] @ W[p, q] for p in range(3) for q in range(3))
    if dy is None:
        return y, None, None
    dy = dy.astype(np.float64)
    dxp, dW = np.zeros_like(xp), np.zeros_like(W)
    for p in range(3):
        for q in range(3):
            dW[p, q] = np.einsum("nijc,nijo->co", xp[:, p : p + ho, q : q + wo], dy)
            dxp[:, p : p + ho, q : q + wo] += dy @ W[p, q].T
    return y, dxp[:, pt : pt + x.shape[1], pl : pl + x.shape[2]], dW


def torch_conv(x: np.ndarray, W: np.ndarray, dy: np.ndarray, pads):  # noqa: ANN201
    """PyTorch's y, dx, dW (NHWC / HWIO) for the same convolution, in x's dtype."""
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    Wt = torch.from_numpy(W.transpose(3, 2, 0, 1).copy()).requires_grad_()
    pt, pb, pl, pr = pads
    y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), Wt)
    y.backward(torch.from_numpy(dy.transpose(0, 3, 1, 2).copy()))
    assert xt.grad is not None and Wt.grad is not None
    return (
        y.detach().numpy().transpose(0, 2, 3, 1),
        xt.grad.numpy().transpose(0, 2, 3, 1),
        Wt.grad.numpy().transpose(2, 3, 1, 0),
    )


def pads_of(padding, h: int, w: int) -> tuple[int, int, int, int]:  # noqa: ANN001
    if padding == "same":
        return (*same_padding(h, 3, 1), *same_padding(w, 3, 1))
    p = 0 if padding == "valid" else padding
    return (p, p, p, p)


NET = [  # the Keras cifar10_cnn convolutions at batch 32: (N, H, W, C, Cout, padding)
    (32, 32, 32, 3, 32, "same"),
    (32, 32, 32, 32, 32, "valid"),
    (32, 15, 15, 32, 64, "same"),
    (32, 15, 15, 64, 64, "valid"),
]
AWKWARD = [
    (2, 7, 5, 4, 3, "same"),  # odd H and W: the last tile is padded
    (3, 6, 9, 2, 5, "valid"),
    (2, 5, 6, 3, 2, 2),  # int padding wider than the kernel's reach
    (1, 1, 1, 4, 3, "same"),  # 1x1 images
    (2, 3, 3, 1, 1, "valid"),  # C = 1, a single output pixel
    (1, 8, 8, 1, 6, 1),  # batch 1, C = 1
    (4, 4, 7, 5, 1, "same"),  # Cout = 1
]


def _case(rng, case, dtype):  # noqa: ANN001, ANN202
    n, h, w, c, co, padding = case
    pads = pads_of(padding, h, w)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    W = (rng.standard_normal((3, 3, c, co)) / np.sqrt(9 * c)).astype(dtype)
    ho, wo = h + pads[0] + pads[1] - 2, w + pads[2] + pads[3] - 2
    dy = rng.standard_normal((n, ho, wo, co)).astype(dtype)
    return x, W, dy, pads


def _max_rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("case", NET + AWKWARD)
def test_float32_within_the_stated_bound_of_float64_and_torch(rng, case):
    x, W, dy, pads = _case(rng, case, np.float32)
    y = winograd_conv3x3(x, W, None, pads)
    dx, dW = winograd_conv3x3_backward(x, W, dy, pads)
    assert y.dtype == dx.dtype == dW.dtype == np.float32
    exact = direct(x, W, dy, pads)
    theirs = torch_conv(x, W, dy, pads)
    for ours, ref, tref in zip((y, dx, dW), exact, theirs, strict=True):
        assert _max_rel(ours, ref) <= F32_BOUND
        assert _max_rel(ours, tref) <= TORCH_BOUND


@pytest.mark.parametrize("case", NET[1:2] + AWKWARD)
def test_float64_matches_the_direct_convolution(rng, case):
    x, W, dy, pads = _case(rng, case, np.float64)
    b = rng.standard_normal(W.shape[3])
    y = winograd_conv3x3(x, W, b, pads)
    dx, dW = winograd_conv3x3_backward(x, W, dy, pads)
    y_ref, dx_ref, dW_ref = direct(x, W, dy, pads)
    for ours, ref in ((y, y_ref + b), (dx, dx_ref), (dW, dW_ref)):
        assert ours.dtype == np.float64
        assert _max_rel(ours, ref) <= 1e-13


def test_weight_transform_and_its_adjoint():
    """<G W G^T, dU> = <W, G^T dU G>: winograd_weights_grad is the adjoint of winograd_weights."""
    g = np.random.default_rng(3)
    W, dU = g.standard_normal((3, 3, 4, 5)), g.standard_normal((16, 4, 5))
    lhs = np.sum(winograd_weights(W) * dU)
    rhs = np.sum(W * winograd_weights_grad(dU))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    # a 1 at the kernel's centre is the tile's middle 2x2 of ones after the transform
    centre = np.zeros((3, 3, 1, 1))
    centre[1, 1] = 1
    np.testing.assert_array_equal(
        winograd_weights(centre).reshape(4, 4), np.outer([0, 0.5, -0.5, 0], [0, 0.5, -0.5, 0])
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cin, cout", [(1, 1), (1, 3), (3, 32), (5, 7), (32, 64), (64, 64)])
def test_weight_transforms_have_the_bits_of_the_einsum_formulation(cin, cout, dtype):
    """The compiled G W G^T and G^T dU G add in NumPy's einsum order: the bits training had
    before they were compiled (signed zeros and values spanning the exponent range too)."""
    g = np.random.default_rng(cin * 100 + cout)
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]).astype(dtype)
    for W, dU in (
        (g.standard_normal((3, 3, cin, cout)), g.standard_normal((16, cin, cout))),
        (g.standard_normal((3, 3, cin, cout)) * 10.0 ** g.integers(-30, 30, (3, 3, cin, cout)),
         g.standard_normal((16, cin, cout)) * 10.0 ** g.integers(-30, 30, (16, cin, cout))),
        (np.where(g.random((3, 3, cin, cout)) < 0.3, -0.0, 1.0) * g.standard_normal(1),
         np.where(g.random((16, cin, cout)) < 0.3, -0.0, 1.0) * g.standard_normal(1)),
    ):  # fmt: skip
        W, dU = W.astype(dtype), dU.astype(dtype)
        U = np.einsum("rqco,sq->rsco", np.einsum("rp,pqco->rqco", G, W), G).reshape(16, cin, cout)
        d = dU.reshape(4, 4, cin, cout)
        dW = np.einsum("psco,sq->pqco", np.einsum("rp,rsco->psco", G, d), G)
        assert winograd_weights(W).tobytes() == U.tobytes()
        assert winograd_weights_grad(dU).tobytes() == dW.tobytes()


def test_two_calls_give_identical_bits_and_chunking_keeps_y_and_dx_bits(rng):
    x, W, dy, pads = _case(rng, (5, 9, 7, 6, 4, "same"), np.float32)
    y1, y2 = winograd_conv3x3(x, W, None, pads), winograd_conv3x3(x, W, None, pads)
    (dx1, dW1), (dx2, dW2) = (winograd_conv3x3_backward(x, W, dy, pads) for _ in range(2))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(dW1, dW2)
    # one image per chunk: every tile is computed alone, so y and dx keep their bits; dW's
    # sum over chunks is rounded in another order and only stays within the bound
    one = 1
    y3 = winograd_conv3x3(x, W, None, pads, chunk_bytes=one)
    dx3, dW3 = winograd_conv3x3_backward(x, W, dy, pads, chunk_bytes=one)
    np.testing.assert_array_equal(y3, y1)
    np.testing.assert_array_equal(dx3, dx1)
    assert _max_rel(dW3, dW1) <= F32_BOUND


def test_no_dx_and_out_buffers(rng):
    x, W, dy, pads = _case(rng, (2, 6, 6, 3, 2, "same"), np.float32)
    out, dx_out = np.full((2, 6, 6, 2), np.nan, np.float32), np.full(x.shape, np.nan, np.float32)
    assert winograd_conv3x3(x, W, None, pads, out=out) is out
    dx, dW = winograd_conv3x3_backward(x, W, dy, pads, dx_out=dx_out)
    assert dx is dx_out and np.isfinite(dx).all()
    none, dW2 = winograd_conv3x3_backward(x, W, dy, pads, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dW2, dW)


def test_scratch_buffers_and_dW_out_keep_the_bits(rng):
    """Work arrays from ``scratch`` (a layer's BufferPool, reused, stale NaN contents) and dW
    written into ``dW_out`` give the bits of fresh arrays; a second call reuses them."""
    from bnlab.layers._common import BufferPool

    x, W, dy, pads = _case(rng, (5, 9, 7, 6, 4, "same"), np.float32)
    pool, asked = BufferPool(), []

    def scratch(purpose, shape, dtype):  # noqa: ANN001, ANN202
        buf = pool.get(purpose, shape, dtype)
        asked.append(id(buf))
        buf.fill(np.nan)
        return buf

    y = winograd_conv3x3(x, W, None, pads, chunk_bytes=9000)
    dx, dW = winograd_conv3x3_backward(x, W, dy, pads, chunk_bytes=9000)
    for _ in range(2):
        asked.clear()
        ys = winograd_conv3x3(x, W, None, pads, chunk_bytes=9000, scratch=scratch)
        dW_out = np.full_like(W, np.nan)
        got = winograd_conv3x3_backward(
            x, W, dy, pads, chunk_bytes=9000, scratch=scratch, dW_out=dW_out
        )
        assert got[1] is dW_out
        assert ys.tobytes() == y.tobytes() and got[0].tobytes() == dx.tobytes()
        assert dW_out.tobytes() == dW.tobytes()
        ids = list(asked)
    assert asked == ids and len(asked) >= 5  # U, V, M forward; U, V, M, dU, dU', UT backward
    with pytest.raises(ValueError, match="dW_out must have the result's shape .* dtype float32"):
        winograd_conv3x3_backward(x, W, dy, pads, dW_out=np.zeros(W.shape, np.float64))


def test_bad_arguments_name_the_problem(rng):
    x, W, dy, pads = _case(rng, (2, 6, 6, 3, 2, "same"), np.float32)
    with pytest.raises(ValueError, match=r"W \(3, 3, C, Cout\).*\(5, 5, 3, 2\)"):
        winograd_conv3x3(x, np.zeros((5, 5, 3, 2), np.float32), None, pads)
    with pytest.raises(ValueError, match="same float dtype"):
        winograd_conv3x3(x, W.astype(np.float64), None, pads)
    with pytest.raises(ValueError, match="same float dtype"):
        winograd_conv3x3(x.astype(np.int32), W.astype(np.int32), None, pads)
    with pytest.raises(ValueError, match=r"b must be \(2,\) real numbers"):
        winograd_conv3x3(x, W, np.zeros(3, np.float32), pads)
    with pytest.raises(ValueError, match="does not fit"):
        winograd_conv3x3(x[:, :1, :1], W, None, (0, 0, 0, 0))
    with pytest.raises(ValueError, match="out must have the result's shape"):
        winograd_conv3x3(x, W, None, pads, out=np.empty((2, 6, 6, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy must be a float \(2, 6, 6, 2\) array"):
        winograd_conv3x3_backward(x, W, dy[:, :5], pads)


def test_finite_out_reports_each_piece_of_forward_and_dx() -> None:
    """One bool per piece of work: all True for finite results, a False where one overflowed."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 9, 9, 16)).astype(np.float32)
    W = rng.standard_normal((3, 3, 16, 8)).astype(np.float32)
    flags: list[bool] = []
    y = winograd_conv3x3(x, W, chunk_bytes=1, finite_out=flags)
    assert len(flags) == 6 and all(flags)  # one image a chunk
    flags.clear()
    winograd_conv3x3_backward(x, W, np.ones_like(y), chunk_bytes=1, finite_out=flags)
    assert len(flags) == 6 and all(flags)
    x[4] = 3e38
    flags.clear()
    with np.errstate(all="ignore"):
        winograd_conv3x3(x, W, chunk_bytes=1, finite_out=flags)
    assert len(flags) == 6 and flags.count(False) == 1  # in the order the pieces finished
