"""Numba configuration for every bnlab kernel: import ``njit``, ``prange`` from here.

Importing this module chooses Numba's threading layer (``bnlab.runtime``: ``omp``, else
``tbb``, else ``workqueue``; ``NUMBA_THREADING_LAYER`` overrides) before the first parallel
kernel runs. The thread policy itself (how many threads a kernel uses, ``kernel_threads``)
lives in :mod:`bnlab.runtime`; its names are re-exported here for the kernels.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bnlab import runtime
from bnlab.runtime import (
    check_thread_count,
    get_num_threads,
    kernel_thread_count,
    kernel_threads,
    run_on_one_blas_thread,
    run_on_threads,
    set_num_threads,
)

THREADING_LAYER: str = runtime.configure_threading_layer()
runtime.configure_allocator()

from numba import njit, prange  # noqa: E402 (after the threading layer is chosen)

__all__ = [
    "njit",
    "njit_pair",
    "call_on_policy",
    "in_threads",
    "prange",
    "get_num_threads",
    "kernel_threads",
    "kernel_thread_count",
    "run_on_threads",
    "check_thread_count",
    "THREADING_LAYER",
]

KernelPair = tuple[Callable[..., Any], Callable[..., Any]]


def njit_pair(body: Callable[..., Any], nogil: bool = False) -> KernelPair:
    """A single-threaded and a parallel compilation of one ``prange`` loop body.

    Numba's on-disk cache keys a function by its qualified name and bytecode, not by its
    compile flags, so the serial twin is a copy of ``body`` under the name
    ``<name>_serial`` (otherwise both would load whichever was compiled first).
    """
    name = f"{body.__name__}_serial"
    code = body.__code__.replace(co_name=name, co_qualname=f"{body.__qualname__}_serial")
    twin = types.FunctionType(code, body.__globals__, name, body.__defaults__, body.__closure__)
    twin.__qualname__ = f"{body.__qualname__}_serial"
    twin.__module__ = body.__module__
    return njit(cache=True, nogil=nogil)(twin), njit(cache=True, parallel=True)(body)


def call_on_policy(pair: KernelPair, rank: int, size: int, min_size: int, *args: Any) -> Any:
    """Run ``pair`` (from :func:`njit_pair`) on the threads the runtime policy gives data of
    this rank (``bnlab.runtime.kernel_thread_count``); serially below ``min_size`` elements."""
    n = kernel_thread_count(rank) if size >= min_size else 1
    if n <= 1:
        return pair[0](*args)
    return run_on_threads(n, pair[1], *args)


_POOL: list[ThreadPoolExecutor] = []


def in_threads(threads: int, work: Callable[[int], None]) -> None:
    """``work(t)`` for t < ``threads``, t = 0 in this thread and the others in a pool, with
    NumPy's BLAS on one thread meanwhile (each product stays on the thread that runs it);
    just ``work(0)`` for one thread; the caller's NumPy error state (``np.errstate``) holds on
    every thread. ``work`` releases the GIL in its heavy parts (NumPy's products, kernels
    compiled with ``nogil``); bnlab's kernels run serially on the pool's threads (their Numba
    thread count is 1)."""
    if threads <= 1:
        work(0)
        return
    if not _POOL:
        pool = ThreadPoolExecutor(
            os.cpu_count() or 2, "bnlab-chunks", initializer=set_num_threads, initargs=(1,)
        )
        _POOL.append(pool)
    state = np.geterr()  # NumPy's error state is per thread: the caller's holds in each

    def run(t: int) -> None:
        with np.errstate(**state):
            work(t)

    def all_threads() -> None:
        futures = [_POOL[0].submit(run, t) for t in range(1, threads)]
        try:
            work(0)
        finally:
            errors = [f.exception() for f in futures]
        for err in errors:
            if err is not None:
                raise err

    run_on_one_blas_thread(all_threads)
