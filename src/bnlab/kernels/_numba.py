"""Numba configuration for every bnlab kernel: import ``njit``, ``prange`` from here.

The threading layer is chosen once, before the first parallel kernel runs: ``omp`` (the
``workqueue`` layer cost about 1 ms per call on the development machine), falling back to
``tbb`` and then to ``workqueue`` when no OpenMP runtime can be loaded. Set the environment
variable ``NUMBA_THREADING_LAYER`` to override.
"""

from __future__ import annotations

import importlib
import os

import numba
from numba import get_num_threads, njit, prange

__all__ = ["njit", "prange", "get_num_threads", "THREADING_LAYER"]


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
