"""``split_matmul``: a product cut in blocks of rows or columns, one BLAS call per block on
Numba's threads. Oracle: float64 products; determinism (same bits run after run); the fallbacks
are ``np.matmul`` itself (same bits); floating-point exceptions reported as ``np.matmul`` does."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bnlab import runtime
from bnlab.kernels import gemm as kgemm
from bnlab.kernels.gemm import split_matmul

needs_blas = pytest.mark.skipif(
    runtime.openblas_gemm() is None or runtime.fp_exception_calls() is None,
    reason="NumPy's bundled OpenBLAS or <fenv.h> not found: split_matmul is np.matmul",
)
SHAPES = [(60, 784, 100), (784, 60, 100), (60, 100, 10), (1, 5, 7), (7, 3, 2), (3, 50, 1000),
          (200, 1, 130), (5, 300, 129)]  # fmt: skip


def _operands(rng, m, k, n, dtype, a_order, b_order):
    a = np.asarray(rng.standard_normal((m, k)), dtype=dtype, order=a_order)
    b = np.asarray(rng.standard_normal((k, n)), dtype=dtype, order=b_order)
    return a, b


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_layout_against_float64_and_the_same_bits_twice(shape, threads, dtype):
    """a and b stored C or F (x.T, W.T as Dense passes them); error bound: 1e-5 (float32) /
    1e-13 (float64) of sum_k |a_ik||b_kj|, the scale of each element's rounding."""
    rng = np.random.default_rng(sum(shape) + threads)
    m, k, n = shape
    for a_order in "CF":
        for b_order in "CF":
            a, b = _operands(rng, m, k, n, dtype, a_order, b_order)
            exact = a.astype(np.float64) @ b.astype(np.float64)
            scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
            first, second = np.full((m, n), np.nan, dtype), np.full((m, n), np.nan, dtype)
            assert split_matmul(a, b, first, threads) is first
            split_matmul(a, b, second, threads)
            assert first.tobytes() == second.tobytes()
            tol = 1e-5 if dtype == np.float32 else 1e-13
            assert np.all(np.abs(first - exact) <= tol * scale + 1e-30)


@needs_blas
def test_the_blocks_run_in_parallel_on_numba_threads(monkeypatch):
    """The compiled kernel is what runs (with one block per thread), not a fallback."""
    calls = []
    kernel = kgemm._split_gemm
    monkeypatch.setattr(kgemm, "_split_gemm", lambda *a: calls.append(len(a[-1])) or kernel(*a))
    rng = np.random.default_rng(0)
    a, b = _operands(rng, 60, 784, 100, np.float32, "C", "C")
    out = np.empty((60, 100), np.float32)
    split_matmul(a, b, out, 2)
    split_matmul(a, b, np.empty((60, 1000), np.float32)[:, :100], 2)  # not contiguous: fallback
    assert calls == [2]
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)


def _same_as_matmul(a, b, out, threads=2):
    expected = np.matmul(a, b)
    split_matmul(a, b, out, threads)
    assert out.tobytes() == expected.astype(out.dtype).tobytes()


@pytest.mark.parametrize(
    "case",
    ["one thread", "int", "mixed dtypes", "strided a", "out aliases a", "1-D b", "float16",
     "empty inner", "empty rows"],
)  # fmt: skip
def test_what_it_does_not_split_is_np_matmul_itself(case):
    rng = np.random.default_rng(1)
    a, b = _operands(rng, 40, 30, 20, np.float32, "C", "C")
    out = np.zeros((40, 20), np.float32)
    if case == "one thread":
        _same_as_matmul(a, b, out, threads=1)
    elif case == "int":
        _same_as_matmul(a.astype(np.int64), b.astype(np.int64), out.astype(np.int64))
    elif case == "mixed dtypes":
        _same_as_matmul(a, b.astype(np.float64), out.astype(np.float64))
    elif case == "strided a":
        _same_as_matmul(np.repeat(a, 2, axis=1)[:, ::2], b, out)
    elif case == "out aliases a":
        square = np.ascontiguousarray(a[:30, :30])
        expected = square @ square
        split_matmul(square, square.copy(), square, 2)
        assert square.tobytes() == expected.tobytes()
    elif case == "1-D b":
        _same_as_matmul(a, b[:, 0].copy(), np.empty(40, np.float32))
    elif case == "float16":
        _same_as_matmul(a.astype(np.float16), b.astype(np.float16), out.astype(np.float16))
    elif case == "empty inner":
        _same_as_matmul(a[:, :0], b[:0], out)
    else:
        _same_as_matmul(a[:0], b, out[:0])


def test_without_openblas_it_is_np_matmul(monkeypatch):
    monkeypatch.setattr(kgemm, "openblas_gemm", lambda: None)
    rng = np.random.default_rng(2)
    a, b = _operands(rng, 60, 784, 100, np.float32, "C", "F")
    _same_as_matmul(a, b, np.empty((60, 100), np.float32))


@needs_blas
def test_overflow_is_reported_as_np_matmul_reports_it():
    """BLAS on Numba's threads raises its floating-point exceptions there; they come back to
    the caller under its np.errstate: a warning by default, an error under 'raise'."""
    a = np.full((60, 784), 3e38, np.float32)
    b = np.ones((784, 100), np.float32)
    out = np.empty((60, 100), np.float32)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        split_matmul(a, b, out, 2)
    assert any("overflow encountered in matmul" in str(w.message) for w in seen)
    with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
        split_matmul(a, b, out, 2)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        split_matmul(a, b, out, 2)
    assert np.isinf(out).all()
    with warnings.catch_warnings():  # a finite product afterwards reports nothing
        warnings.simplefilter("error")
        split_matmul(np.ones_like(a), b, out, 2)
    assert (out == 784).all()
