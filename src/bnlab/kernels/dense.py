"""Dense's kernels: its products split over threads, and its bias gradient.

:func:`split_matmul` computes ``out = a @ b`` as one BLAS call per block of ``out`` (its rows,
or its columns when it is wider than tall), the blocks on Numba's threads, BLAS on one thread
in each. OpenBLAS's own threads gained nothing at an MLP's shapes (batch 60, 784 -> 100: 101 us
on one thread, 124 us on two) and a Python thread pool costs 50-80 us a call to wake; Numba's
parallel loop costs a few microseconds (the same product 58 us, its dW 53 us against 102).

:func:`column_sums` is ``db = sum over rows of dy`` without NumPy's reduction overhead.

``np.sum(dy, axis=0)`` of a C-contiguous (N, C) array with C >= 2 adds the rows in order,
``((0 + dy[0]) + dy[1]) + ...`` per column (NumPy's pairwise summation applies only along
a contiguous reduced axis, i.e. C == 1). :func:`column_sums` does the same additions in the
same order in a compiled loop, so its result has the same bits (tests/layers/test_dense_fast.py
compares them), at a fraction of the cost for an MLP's (60, 100) gradient: most of NumPy's time
there is the reduction machinery's setup.
"""

from __future__ import annotations

import warnings

import numpy as np

from bnlab.kernels._numba import njit, prange
from bnlab.runtime import (
    fp_exception_calls,
    openblas_gemm,
    run_on_one_blas_thread,
    run_on_threads,
)

__all__ = ["column_sums", "split_matmul"]

_FAST = (np.dtype(np.float32), np.dtype(np.float64))


@njit(cache=True)
def _column_sums(a, out):  # pragma: no cover (compiled)
    n, c = a.shape
    for j in range(c):
        out[j] = 0.0  # NumPy starts from the identity: a -0.0 first row sums to +0.0
    for i in range(n):
        for j in range(c):
            out[j] += a[i, j]


def column_sums(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[j] = sum_i a[i, j]``, bit-identical to ``np.sum(a, axis=0, out=out)``.

    The compiled loop takes a C-contiguous float32/float64 ``a`` of at least one row and two
    columns and an ``out`` of its dtype; anything else goes to ``np.sum`` itself.
    """
    if (
        a.ndim == 2
        and a.dtype in _FAST
        and out.dtype == a.dtype
        and a.shape[0] >= 1
        and a.shape[1] >= 2
        and out.shape == (a.shape[1],)
        and a.flags.c_contiguous
        and out.flags.writeable
    ):
        _column_sums(a, out)
        return out
    return np.sum(a, axis=0, out=out)


@njit(parallel=True, nogil=True, cache=True)
def _split_gemm(gemm, fe, a, ta, b, tb, out, by_rows, step, flags):  # pragma: no cover
    """out = op(a) @ op(b) (op: transposed if ta/tb, a and b C-contiguous), in ``len(flags)``
    blocks of ``step`` of out's rows (``by_rows``) or columns, one row-major CBLAS call per
    block; ``flags[t]``: the floating-point exceptions (``fe``: clear, test, mask) of block t."""
    clear, test, mask = fe
    parts = len(flags)
    m, n = out.shape
    k = a.shape[0] if ta else a.shape[1]
    size = a.itemsize
    total = m if by_rows else n
    for t in prange(parts):
        lo = t * step
        hi = min(total, lo + step)
        if hi > lo:
            r0, r1, c0, c1 = (lo, hi, 0, n) if by_rows else (0, m, lo, hi)
            pa = a.ctypes.data + (r0 if ta else r0 * k) * size
            pb = b.ctypes.data + (c0 * k if tb else c0) * size
            pc = out.ctypes.data + (r0 * n + c0) * size
            lda = m if ta else k
            ldb = k if tb else n
            clear(mask)
            kind_a, kind_b = 112 if ta else 111, 112 if tb else 111  # CblasTrans / NoTrans
            gemm(101, kind_a, kind_b, r1 - r0, c1 - c0, k, 1.0, pa, lda, pb, ldb, 0.0, pc, n)
            flags[t] = test(mask)


def _as_c(arr: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """(C-contiguous base, transposed?) of a 2-D array stored either way, or None."""
    flags = arr.flags
    if flags.c_contiguous:
        return arr, False
    if flags.f_contiguous:
        return arr.T, True
    return None


def split_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int) -> np.ndarray:
    """``out = a @ b`` with ``out`` cut in ``threads`` blocks, one BLAS call per block on
    Numba's threads, BLAS on one thread in each: blocks of columns, multiples of 64 wide, if
    ``out`` has ``64 * threads`` columns or more, else blocks of rows.

    Deterministic: the blocks depend only on the shapes and ``threads``, and every element
    is one BLAS dot product of the full inner dimension (its rounding may differ from one
    unsplit call's in the last bits: OpenBLAS's kernels group a block's edge differently).
    Takes float32/float64 2-D ``a``, ``b`` stored C- or F-contiguous (``x.T`` is fine) and a
    C-contiguous, writeable ``out`` of their dtype that shares no memory with them; anything
    else (or one thread, or no OpenBLAS of NumPy's found) is ``np.matmul(a, b, out=out)``.
    """
    gemms = openblas_gemm() if threads > 1 else None
    gemm = None if gemms is None else gemms.get(a.dtype)
    fe = fp_exception_calls()
    if (
        gemm is None
        or fe is None
        or a.ndim != 2
        or b.ndim != 2
        or b.dtype != a.dtype
        or out.dtype != a.dtype
    ):
        return np.matmul(a, b, out=out)
    m, n = out.shape if out.ndim == 2 else (0, 0)
    if m < 1 or n < 1:
        return np.matmul(a, b, out=out)
    base_a, base_b, out_flags = _as_c(a), _as_c(b), out.flags
    by_rows = n < 64 * threads
    step = -(-m // threads) if by_rows else -(-n // (64 * threads)) * 64
    parts = -(-m // step) if by_rows else -(-n // step)
    if (
        base_a is None
        or base_b is None
        or parts <= 1
        or a.shape != (m, b.shape[0])
        or b.shape[1] != n
        or b.shape[0] == 0
        or not (out_flags.c_contiguous and out_flags.writeable)
        or np.may_share_memory(out, a)
        or np.may_share_memory(out, b)
    ):
        return np.matmul(a, b, out=out)
    flags = np.zeros(parts, np.int32)
    fe_args = (fe[0], fe[1], fe[2] | fe[3])
    args = (gemm, fe_args, base_a[0], base_a[1], base_b[0], base_b[1], out, by_rows, step, flags)
    run_on_one_blas_thread(run_on_threads, parts, _split_gemm, *args)
    if flags.any():
        _report(int(np.bitwise_or.reduce(flags)), fe[2], fe[3])
    return out


def _report(raised: int, invalid: int, overflow: int) -> None:
    """Overflow / invalid value raised in the blocks' BLAS calls, reported as ``np.matmul``
    reports them under the caller's ``np.errstate`` (ignore, raise, else a RuntimeWarning)."""
    errstate = np.geterr()
    for bit, mode, what in ((overflow, errstate["over"], "overflow"),
                            (invalid, errstate["invalid"], "invalid value")):  # fmt: skip
        if raised & bit and mode != "ignore":
            message = f"{what} encountered in matmul"
            if mode == "raise":
                raise FloatingPointError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
