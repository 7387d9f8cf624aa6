"""Numba configuration for every bnlab kernel: import ``njit``, ``prange`` from here.

The threading layer is chosen once, before the first parallel kernel runs: ``omp`` (the
``workqueue`` layer cost about 1 ms per call on the development machine), falling back to
``tbb`` and then to ``workqueue`` when no OpenMP runtime can be loaded. Set the environment
variable ``NUMBA_THREADING_LAYER`` to override.

:func:`kernel_threads` runs the parallel kernels on fewer threads inside a block. A network
step needs it: between its matrix products OpenBLAS's worker threads keep spinning (about
0.1 s after each call) and hold the cores, so a second thread pool started in between waits
for them (see ``Sequential`` and ``benchmarks/bench_cnn.py``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numba
from numba import get_num_threads, njit, prange, set_num_threads

__all__ = [
    "njit",
    "prange",
    "get_num_threads",
    "kernel_threads",
    "check_thread_count",
    "THREADING_LAYER",
]


def _pick_threading_layer() -> str:
    """Return the first threading layer whose runtime library can be loaded."""
    if "NUMBA_THREADING_LAYER" in os.environ:
        return str(getattr(numba.config, "THREADING_LAYER", "default"))
    for layer, module in (("omp", "numba.np.ufunc.omppool"), ("tbb", "numba.np.ufunc.tbbpool")):
        try:
            importlib.import_module(module)
        except (ImportError, OSError):
            continue
        return layer
    return "workqueue"


THREADING_LAYER: str = _pick_threading_layer()
setattr(numba.config, "THREADING_LAYER", THREADING_LAYER)  # noqa: B010 (untyped module)


def check_thread_count(n: object, who: str) -> None:
    """Raise ValueError unless ``n`` is a positive int or None."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"{who} must be a positive int or None, got {n!r}")


@contextmanager
def kernel_threads(n: int | None) -> Iterator[None]:
    """Run bnlab's parallel kernels on at most ``n`` threads inside the block.

    ``None`` leaves Numba's setting as it is. The previous count is restored on exit, also
    when the block raises. Numba's count is per calling thread, so other threads are unaffected.

    >>> with kernel_threads(1):
    ...     get_num_threads()
    1
    """
    check_thread_count(n, "kernel_threads: n")
    if n is None:
        yield
        return
    old = get_num_threads()
    most = int(getattr(numba.config, "NUMBA_NUM_THREADS"))  # noqa: B009 (untyped module)
    set_num_threads(min(n, most))
    try:
        yield
    finally:
        set_num_threads(old)
