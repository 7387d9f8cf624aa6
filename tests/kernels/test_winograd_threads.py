"""Winograd's chunks of images on threads of their own (``bnlab.runtime.chunk_threads``), and
the layers' BLAS on one thread meanwhile (``bnlab.runtime.one_blas_thread``).

With one chunk thread the kernels are the serial code (the README's pinned one-thread runs keep
their bits); with more, each thread sums dW over its own chunks and the threads' sums are added
in thread order, so the same thread count gives the same bits, and the results agree with one
thread to float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab import runtime
from bnlab.kernels.winograd import winograd_conv3x3, winograd_conv3x3_backward
from bnlab.layers import Conv2D, Dense

CHUNK = 40_000  # bytes: a few images per chunk, so a batch of 9 has several chunks


def _data(dtype=np.float32):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 11, 10, 5)).astype(dtype)
    W = rng.standard_normal((3, 3, 5, 6)).astype(dtype)
    dy = rng.standard_normal((9, 11, 10, 6)).astype(dtype)
    return x, W, dy


def _run(threads):
    x, W, dy = _data()
    with runtime.kernel_threads(threads):
        y = winograd_conv3x3(x, W, pads=(1, 1, 1, 1), chunk_bytes=CHUNK)
        dx, dW = winograd_conv3x3_backward(x, W, dy, pads=(1, 1, 1, 1), chunk_bytes=CHUNK)
    return y, dx, dW


@pytest.mark.parametrize("threads", [2, 3])
def test_chunk_threads_repeat_their_bits(threads):
    first, second = _run(threads), _run(threads)
    for a, b in zip(first, second, strict=True):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("threads", [2, 3])
def test_chunk_threads_agree_with_one_thread(threads):
    for a, b in zip(_run(threads), _run(1), strict=True):
        scale = float(np.abs(b).max())
        assert np.abs(a.astype(np.float64) - b).max() <= 2e-6 * scale


def test_chunk_threads_in_float64_match_a_direct_convolution():
    x, W, dy = _data(np.float64)
    with runtime.kernel_threads(2):
        y = winograd_conv3x3(x, W, pads=(1, 1, 1, 1), chunk_bytes=CHUNK)
        dx, dW = winograd_conv3x3_backward(x, W, dy, pads=(1, 1, 1, 1), chunk_bytes=CHUNK)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = sum(
        np.einsum("nhwc,co->nhwo", xp[:, p : p + 11, q : q + 10], W[p, q])
        for p in range(3)
        for q in range(3)
    )
    dW_ref = np.stack(
        [
            np.stack(
                [np.einsum("nhwc,nhwo->co", xp[:, p : p + 11, q : q + 10], dy) for q in range(3)]
            )
            for p in range(3)
        ]
    )
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(dW, dW_ref, rtol=0, atol=1e-12 * np.abs(dW_ref).max())
    assert dx is not None and np.isfinite(dx).all()


def test_an_error_on_a_chunk_thread_reaches_the_caller_and_blas_threads_are_restored():
    calls = runtime.openblas_thread_calls()
    before = calls[0]() if calls else None
    x, W, _ = _data()
    bad_out = np.empty((9, 11, 10, 6), np.float64)  # wrong dtype: refused before any thread
    with runtime.kernel_threads(2), pytest.raises(ValueError, match="out must have"):
        winograd_conv3x3(x, W, out=bad_out, chunk_bytes=CHUNK)

    from bnlab.kernels._numba import in_threads

    def work(t):
        if t == 1:
            raise RuntimeError("chunk 1 failed")

    with pytest.raises(RuntimeError, match="chunk 1 failed"):
        in_threads(2, work)
    if calls:
        assert calls[0]() == before


@pytest.mark.parametrize("layer", [Conv2D(4, 3, padding="same"), Dense(4)])
def test_layers_restore_blas_threads_after_forward_and_backward(layer):
    calls = runtime.openblas_thread_calls()
    if calls is None:
        pytest.skip("NumPy's OpenBLAS thread control was not found")
    before = calls[0]()
    x = np.ones((2, 5, 5, 3) if isinstance(layer, Conv2D) else (2, 3), np.float32)
    y = layer.forward(x)
    layer.backward(np.ones_like(y))
    assert calls[0]() == before
    with pytest.raises(ValueError):
        layer.backward(np.ones((1, 1), np.float32))
    assert calls[0]() == before


def test_the_callers_numpy_error_state_holds_on_the_chunk_threads():
    """An overflow inside a chunk thread: ignored under the caller's errstate (no warning
    leaks from the pool), raised under errstate(all="raise")."""
    import warnings

    x = np.full((9, 11, 10, 5), 3e38, np.float32)
    W = np.full((3, 3, 5, 6), 3e38, np.float32)
    with runtime.kernel_threads(2), warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="ignore", invalid="ignore"):
            y = winograd_conv3x3(x, W, chunk_bytes=CHUNK)
        assert not np.isfinite(y).all()
        with np.errstate(all="raise"), pytest.raises(FloatingPointError):
            winograd_conv3x3(x, W, chunk_bytes=CHUNK)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("threads", [2, 3])
def test_a_wide_dense_cuts_its_products_by_columns_over_the_threads(threads, batch):
    """y, dW and dx of a layer of >= SPLIT_MIN_WEIGHTS weights in column blocks on the chunk
    threads (batch > 1; one example stays whole): the same bits run after run, within
    float32 rounding of one thread (OpenBLAS here: the same bits)."""
    rng = np.random.default_rng(0)
    layer = Dense(600, 700, seed=1)
    x = rng.standard_normal((batch, 600)).astype(np.float32)
    dy = rng.standard_normal((batch, 700)).astype(np.float32)

    def run(n):
        with runtime.kernel_threads(n):
            y = layer.forward(x).copy()
            return y, layer.backward(dy).copy(), layer.grads["W"].copy()

    one, first, second = run(1), run(threads), run(threads)
    for a, b, c in zip(one, first, second, strict=True):
        assert b.tobytes() == c.tobytes()
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * float(np.abs(a).max()))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("fits", [True, False])
def test_im2col_pieces_on_threads_repeat_and_agree_with_one_thread(monkeypatch, threads, fits):
    """im2col's pieces of images on chunk threads (``Conv2D._pieces``), dW summed per thread
    then in thread order: the same bits run after run, within float32 rounding of one thread
    (BLAS may round a smaller product apart); also when the batch's patches are not kept."""
    import bnlab.layers.conv2d as conv_mod

    monkeypatch.setattr(conv_mod, "PIECE_BYTES", 4000)
    if not fits:
        monkeypatch.setattr(conv_mod, "MAX_COLS_BYTES", 9000)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 6, 5, 4)).astype(np.float32)
    dy = rng.standard_normal((7, 3, 3, 5)).astype(np.float32)
    layer = Conv2D(4, 5, 3, stride=2, padding="same", algorithm="im2col", seed=3)

    def run(n):
        with runtime.kernel_threads(n):
            y = layer.forward(x).copy()
            dx = layer.backward(dy).copy()
            return y, dx, layer.grads["W"].copy(), layer.grads["b"].copy()

    with runtime.kernel_threads(threads):  # 1296 bytes of patches per image: 4 or 3 pieces
        assert layer._pieces(x.shape, np.float32)[1:3] == (2, 2) if threads == 2 else (3, 3)
    one, first, second = run(1), run(threads), run(threads)
    for a, b, c in zip(one, first, second, strict=True):
        assert b.tobytes() == c.tobytes()
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.abs(a).max()))


@pytest.mark.parametrize(
    "pads", [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 0, 1), (2, 2, 1, 0), (1, 2, 2, 2)]
)
@pytest.mark.parametrize("height", [5, 8, 13])
@pytest.mark.parametrize("threads", [2, 3])
def test_bands_of_one_image_give_the_bits_of_the_whole_image(monkeypatch, pads, height, threads):
    """Fewer images than threads: each image is cut into bands of tile rows (``_pieces``),
    whose outputs are bit for bit those of the whole image on one thread."""
    from bnlab.kernels import winograd

    monkeypatch.setattr(winograd, "BAND_MIN_MACS", 1)
    rng = np.random.default_rng(height)
    x = rng.standard_normal((1, height, 9, 5)).astype(np.float32)
    W = rng.standard_normal((3, 3, 5, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    pieces = winograd._pieces(x, 6, pads, None, threads)
    assert len(pieces) == min(threads, (height + pads[0] + pads[1] - 1) // 2) > 1
    with runtime.kernel_threads(1):
        whole = winograd_conv3x3(x, W, b, pads)
    with runtime.kernel_threads(threads):
        banded = winograd_conv3x3(x, W, b, pads)
        again = winograd_conv3x3(np.concatenate([x, x]), W, b, pads)  # 2 images, 3 threads
    assert banded.tobytes() == whole.tobytes()
    assert again[1:].tobytes() == whole.tobytes()


def test_small_work_and_large_padding_stay_whole_images():
    from bnlab.kernels.winograd import _pieces

    x = np.zeros((1, 30, 30, 128), np.float32)
    assert len(_pieces(x, 128, (1, 1, 1, 1), None, 2)) == 2  # 59M multiply-adds: two bands
    assert len(_pieces(x[..., :32], 32, (1, 1, 1, 1), None, 2)) == 1  # 3.7M: one piece
    assert len(_pieces(x, 32, (3, 3, 3, 3), None, 2)) == 1  # bands assume pads <= 2
    assert len(_pieces(np.zeros((4, 30, 30, 32), np.float32), 32, (1,) * 4, None, 2)) == 2


def test_one_example_through_dense_keeps_blas_threads_and_a_batch_does_not():
    layer = Dense(4)
    assert not layer.blas_on_one_thread(np.ones((1, 3), np.float32))
    assert layer.blas_on_one_thread(np.ones((2, 3), np.float32))
