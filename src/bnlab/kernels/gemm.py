"""A matrix product split over Numba's threads, one BLAS call per block (BLAS on one thread).

:func:`split_matmul` computes ``out = a @ b`` in blocks of ``out``'s rows or columns (Dense's
large products). The blocks run in one Numba parallel loop that calls NumPy's bundled OpenBLAS
(``cblas_?gemm`` through ctypes, :func:`bnlab.runtime.openblas_gemm`).
OpenBLAS's own threads gained nothing at an MLP's shapes (batch 60, 784 -> 100: 101 us on one
thread, 124 us on two) and a Python thread pool costs 50-80 us a call to wake; Numba's parallel
loop costs a few microseconds (the same product 58 us on two threads, its dW 53 us against 102).
(Winograd's 16 products of one image, shared out the same way, measured 72 -> 47 us alone but
no faster inside the layer, where the transforms' data then crosses between the cores.)

Floating-point exceptions raised by BLAS on the loop's threads are caught there
(``fetestexcept``) and reported as ``np.matmul`` reports them, under the caller's
``np.errstate``. Where NumPy's OpenBLAS or ``<fenv.h>`` is not found, it is ``np.matmul``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from bnlab.kernels._numba import njit, prange
from bnlab.runtime import (
    fp_exception_calls,
    openblas_gemm,
    run_on_one_blas_thread,
    run_on_threads,
)

__all__ = ["split_matmul"]


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


def _blas(a: Any, b: Any, out: Any, threads: int, ndim: int) -> tuple[Any, Any]:
    """(the gemm of a's dtype, fp_exception_calls()) for arrays a, b, out of ``ndim``
    dimensions and one dtype with ``threads`` > 1, else (None, None)."""
    gemms = openblas_gemm() if threads > 1 else None
    if gemms is None or not all(type(v) is np.ndarray and v.ndim == ndim for v in (a, b, out)):
        return None, None
    gemm = gemms.get(a.dtype)
    if gemm is None or b.dtype != a.dtype or out.dtype != a.dtype:
        return None, None
    return gemm, fp_exception_calls()


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
    gemm, fe = _blas(a, b, out, threads, 2)
    if gemm is None or fe is None:
        return np.matmul(a, b, out=out)
    m, n = out.shape
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
    args = (base_a[0], base_a[1], base_b[0], base_b[1], out, by_rows, step)
    _launch(_split_gemm, parts, gemm, fe, *args)
    return out


def _launch(kernel: Any, parts: int, gemm: Any, fe: Any, *args: Any) -> None:
    """``kernel(gemm, fe, *args, flags)`` on ``parts`` Numba threads, BLAS on one thread;
    then the floating-point exceptions its blocks raised (``flags``) reported as ``np.matmul``
    reports them under the caller's ``np.errstate`` (ignore, raise, else a RuntimeWarning)."""
    flags = np.zeros(parts, np.int32)
    clear, test, invalid, overflow = fe
    run_on_one_blas_thread(
        run_on_threads, parts, kernel, gemm, (clear, test, invalid | overflow), *args, flags
    )
    raised = int(np.bitwise_or.reduce(flags))
    if not raised:
        return
    errstate = np.geterr()
    for bit, mode, what in ((overflow, errstate["over"], "overflow"),
                            (invalid, errstate["invalid"], "invalid value")):  # fmt: skip
        if raised & bit and mode != "ignore":
            message = f"{what} encountered in matmul"
            if mode == "raise":
                raise FloatingPointError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)
