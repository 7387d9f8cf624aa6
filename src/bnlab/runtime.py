"""The runtime's thread policy: how many threads bnlab's Numba kernels and NumPy's BLAS use.

Ground floor: imports nothing of bnlab. Every kernel asks :func:`kernel_thread_count` before a
parallel loop, so a model runs at the same speed whether its layers are called through
``Sequential``, through ``Trainer`` or in a hand-written loop. The policy, for a kernel on an
array of rank ``rank``:

1. inside :func:`kernel_threads(n) <kernel_threads>` (an explicit override): ``n``;
2. ``rank >= 3`` (images, channels-last: the kernels of a conv net) of fewer than
   ``LARGE_IMAGE`` (4 Mi) elements: :func:`image_threads`, 1 by default. A conv net
   alternates large BLAS products with large elementwise kernels (im2col/col2im, pooling,
   ReLU, BN); after each product OpenBLAS's worker threads keep spinning for about 0.1 s and
   hold the cores, so a second pool of Numba threads started in between waits for them: the
   Keras cifar10_cnn step took 135 ms with Numba on 2 threads against 83 ms on 1, on the
   2-core development machine. Numba's own worker threads spin after a parallel loop in the
   same way, and held the cores the layers' chunk threads needed next (the same step, now:
   30 ms with image kernels on 1 thread, 48-58 ms on 2). The batch-norm passes over an image
   of ``LARGE_IMAGE`` elements or more (``kernel_thread_count(rank, size)``) keep a kernel
   busy for milliseconds, and get Numba's threads (forward + backward at (64, 28, 28, 256):
   37 ms on 1 thread, 20 ms on 2); ReLU and pooling do not (the folded net's inference at
   batch 256, 8 Mi elements a layer, was 10-15% slower with them on 2 threads);
3. otherwise Numba's thread count (dense data: an MLP's products are too small for BLAS to
   start its threads).

Layers that split their work into independent pieces (Conv2D: chunks of images, or bands of
one image; Dense: one example's output columns) run them on :func:`chunk_threads` threads of
their own instead, serial kernels and BLAS on one thread in each; :func:`one_blas_thread`
keeps Conv2D's and Dense's products on one BLAS thread whenever that count is above one, so
OpenBLAS never starts spinning threads in a step.

``BNLAB_IMAGE_THREADS`` (an int) sets the default of rule 2; :func:`set_image_threads` changes
it at run time. The element-wise kernels' results do not depend on the thread count; the
batch-norm statistics are summed in one block per thread, so their rounding does.

BLAS: :func:`blas_threads` runs NumPy's BLAS on ``n`` threads inside a block (threadpoolctl
when installed, else the ``openblas_set_num_threads`` symbol of NumPy's bundled OpenBLAS via
ctypes; a no-op where neither is found); :func:`default_blas_threads_env` sets
``OPENBLAS_NUM_THREADS`` for a process that has not imported NumPy yet. :func:`numba_threads`
sets Numba's own count for the calling thread and returns the previous one.

The Numba threading layer is chosen here (:func:`configure_threading_layer`, called when
``bnlab.kernels`` is imported), once, before any thread pool starts: ``omp`` (the ``workqueue``
layer cost about 1 ms per call), else ``tbb``, else ``workqueue``; the environment variable
``NUMBA_THREADING_LAYER`` overrides. This module imports neither NumPy nor
Numba itself, so :func:`default_blas_threads_env` can still run before NumPy is loaded.

Memory (:func:`configure_allocator`, also called when ``bnlab.kernels`` is imported): every
call of a public kernel returns fresh arrays, as PyTorch's functions do. glibc's malloc serves
an array above its *mmap threshold* with fresh pages and gives freed memory above its *trim
threshold* back to the system, and it moves both thresholds with the sizes the process happened
to free before: a user's script that freed no large temporary paid a page fault per 4 KiB of
every output (a batch-norm forward + backward at (256, 1024): 480 faults, 0.98 ms instead of
0.13 ms), one that did paid none. bnlab fixes the thresholds (mmap 32 MiB, glibc's largest;
trim 256 MiB), so a call costs the same whatever ran before; arrays above 32 MiB still get
fresh pages. ``BNLAB_MALLOC=system``, or glibc's own settings in the environment
(``MALLOC_*``, ``GLIBC_TUNABLES=glibc.malloc...``), leave glibc alone; elsewhere than glibc it
is a no-op. It changes no result, only where memory comes from.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import numbers
import os
import platform
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "THREADING_LAYER",
    "blas_threads",
    "check_thread_count",
    "chunk_threads",
    "openblas_thread_calls",
    "one_blas_thread",
    "run_on_one_blas_thread",
    "configure_allocator",
    "configure_threading_layer",
    "get_num_threads",
    "default_blas_threads_env",
    "image_threads",
    "kernel_thread_count",
    "kernel_threads",
    "numba_threads",
    "run_on_threads",
    "set_image_threads",
    "set_num_threads",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _pick_threading_layer(numba: Any) -> str:
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


THREADING_LAYER: str = ""  # set by configure_threading_layer()
_NB: dict[str, Any] = {}  # numba's get/set_num_threads and NUMBA_NUM_THREADS, once configured


ALLOCATOR: str = ""  # set by configure_allocator()
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


def configure_allocator() -> str:
    """Fix glibc malloc's mmap and trim thresholds (once; see the module docstring) and return
    what was done: ``"glibc mmap 32 MiB, trim 256 MiB"``, ``"system"`` (``BNLAB_MALLOC=system``,
    or not glibc)."""
    global ALLOCATOR
    if ALLOCATOR:
        return ALLOCATOR
    choice = os.environ.get("BNLAB_MALLOC", "tuned").strip().lower() or "tuned"
    if choice not in ("tuned", "system"):
        raise ValueError(
            f"BNLAB_MALLOC={os.environ['BNLAB_MALLOC']!r}: use 'tuned' (the default: fixed "
            "malloc thresholds) or 'system' (glibc's own), or unset it"
        )
    ALLOCATOR = "system"
    user_set = any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc" in (
        os.environ.get("GLIBC_TUNABLES", "")
    )
    if choice == "tuned" and not user_set and platform.libc_ver()[0] == "glibc":
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return ALLOCATOR
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(
            _M_TRIM_THRESHOLD, _TRIM_THRESHOLD
        ):
            ALLOCATOR = f"glibc mmap {_MMAP_THRESHOLD >> 20} MiB, trim {_TRIM_THRESHOLD >> 20} MiB"
    return ALLOCATOR


def configure_threading_layer() -> str:
    """Choose Numba's threading layer (once; see the module docstring) and return it."""
    global THREADING_LAYER
    if not _NB:
        import numba

        THREADING_LAYER = _pick_threading_layer(numba)
        setattr(numba.config, "THREADING_LAYER", THREADING_LAYER)  # noqa: B010 (untyped)
        _NB["get"], _NB["set"] = numba.get_num_threads, numba.set_num_threads
        _NB["parallel"] = importlib.import_module("numba.np.ufunc.parallel")
        _NB["max"] = int(getattr(numba.config, "NUMBA_NUM_THREADS"))  # noqa: B009
    return THREADING_LAYER


def get_num_threads() -> int:
    """Numba's thread count for the calling thread (configures the threading layer first).

    Once Numba's public ``get_num_threads`` has launched its threads, the threading layer's
    own getter answers (0.13 us against 0.84 us a call; every kernel asks, about 30 times in
    an MLP step); a non-positive answer falls back to the public call."""
    fast = _NB.get("fast")
    if fast is not None:
        n = int(fast())
        if n > 0:
            return n
    if not _NB:
        configure_threading_layer()
    n = int(_NB["get"]())
    _NB["fast"] = getattr(_NB["parallel"], "_get_num_threads", None)  # set by the launch
    return n


def set_num_threads(n: int) -> None:
    """Set Numba's count for the calling thread, capped at NUMBA_NUM_THREADS."""
    if not _NB:
        configure_threading_layer()
    _NB["set"](max(1, min(int(n), _NB["max"])))


def check_thread_count(n: object, who: str) -> int | None:
    """``n`` as an int (a NumPy integer too), or None; ValueError unless it is >= 1 (not a
    bool, float or string)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
        raise ValueError(f"{who} must be a positive int or None, got {n!r}")
    return None if n is None else int(n)


def _env_image_threads() -> int:
    raw = os.environ.get("BNLAB_IMAGE_THREADS", "1")
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(
            f"BNLAB_IMAGE_THREADS must be a positive int, got {raw!r}; unset it for the default 1"
        ) from None
    check_thread_count(n, "BNLAB_IMAGE_THREADS")
    return n


_IMAGE_THREADS = [_env_image_threads()]
_local = threading.local()  # .override: the n of the innermost kernel_threads(n) block


def image_threads() -> int:
    """Threads for kernels on rank >= 3 (image) data outside an explicit override."""
    return _IMAGE_THREADS[0]


def set_image_threads(n: int) -> int:
    """Set :func:`image_threads` for the whole process; returns the previous value."""
    check_thread_count(n, "set_image_threads: n")
    old, _IMAGE_THREADS[0] = _IMAGE_THREADS[0], int(n)
    return old


LARGE_IMAGE = 1 << 22  # elements from which image kernels get Numba's threads (rule 2)


def kernel_thread_count(rank: int, size: int = 0) -> int:
    """How many threads a parallel kernel on ``size`` elements of rank ``rank`` uses (see the
    module doc).

    >>> with kernel_threads(1):
    ...     kernel_thread_count(2)
    1
    """
    n = int(get_num_threads())
    if getattr(_local, "override", None) is not None or rank < 3 or size >= LARGE_IMAGE:
        return n
    return min(n, image_threads())


def run_on_threads(n: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with Numba's thread count set to ``n`` (restored after; ~3 us per change)."""
    old = int(get_num_threads())
    if n == old:
        return fn(*args)
    set_num_threads(n)
    try:
        return fn(*args)
    finally:
        set_num_threads(old)


@contextmanager
def kernel_threads(n: int | None) -> Iterator[None]:
    """Run bnlab's parallel kernels on at most ``n`` threads inside the block (an override).

    ``None`` leaves the policy as it is. The previous setting is restored on exit, also when
    the block raises. Numba's count is per calling thread, so other threads are unaffected.

    >>> with kernel_threads(1):
    ...     get_num_threads()
    1
    """
    n = check_thread_count(n, "kernel_threads: n")
    if n is None:
        yield
        return
    old, old_override = get_num_threads(), getattr(_local, "override", None)
    set_num_threads(n)
    _local.override = n
    try:
        yield
    finally:
        _local.override = old_override
        set_num_threads(old)


def numba_threads(n: int) -> int:
    """Set Numba's thread count for the calling thread (capped at NUMBA_NUM_THREADS); returns
    the previous count."""
    check_thread_count(n, "numba_threads: n")
    old = int(get_num_threads())
    set_num_threads(n)
    return old


def chunk_threads() -> int:
    """How many threads run a layer's independent chunks of images (:mod:`bnlab.kernels.winograd`),
    each chunk serially and with BLAS on one thread inside it: the explicit override of
    :func:`kernel_threads` if any, else Numba's thread count. Unlike rule 2 of the policy these
    threads never wait for OpenBLAS's spinning ones (BLAS starts none while they run).
    (``kernel_thread_count(2)``, which is Numba's count for the calling thread: an override
    sets that count too; asked on every layer call, so asked directly.)"""
    return get_num_threads()


# -- BLAS ---------------------------------------------------------------------------------------
def _openblas() -> tuple[Any, Callable[[], int], Callable[[int], None]] | None:
    """NumPy's bundled scipy-openblas via ctypes: (lib, get, set), or None if not found."""
    try:
        import numpy as np

        libdir = Path(np.__file__).parent.parent / "numpy.libs"
        for path in sorted(libdir.glob("libscipy_openblas*.so*")):
            lib = ctypes.CDLL(str(path))
            for suffix in ("64_", ""):
                get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
                put = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
                if get is not None and put is not None:  # typed: called without wrappers
                    get.argtypes, get.restype = [], ctypes.c_int
                    put.argtypes, put.restype = [ctypes.c_int], None
                    return lib, get, put
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=1)
def openblas_thread_calls() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """NumPy's bundled OpenBLAS thread count as ``(get, set)``, typed ctypes functions (found
    once, ~0.2-0.3 us a call), or None where it is not found."""
    found = _openblas()
    return None if found is None else (found[1], found[2])


def run_on_one_blas_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with NumPy's OpenBLAS on one thread, restored after (no-op
    where OpenBLAS's thread count cannot be set cheaply: a call costs ~1 us here, where
    threadpoolctl would cost a millisecond)."""
    calls = openblas_thread_calls()
    old = calls[0]() if calls else 1
    if old == 1 or calls is None:
        return fn(*args, **kwargs)
    calls[1](1)
    try:
        return fn(*args, **kwargs)
    finally:
        calls[1](old)


def one_blas_thread(method: F) -> F:
    """Decorator: ``method``'s BLAS products run on one thread when :func:`chunk_threads` > 1.

    bnlab's layers then parallelize over pieces of their work themselves (Conv2D: chunks of
    images, bands of an image; Dense: one example's output columns): OpenBLAS's own threads,
    once started, keep spinning for about 0.1 s and hold the cores that the chunk threads
    and the next layer's kernels need (measured: the Keras cifar10_cnn step with BN 45 ->
    38 ms on 2 cores). So no layer starts them in a step. The one exception: an object's
    ``blas_on_one_thread(data)`` may say no (Dense, one example: a matrix-vector product bound
    by memory, where BLAS's threads measured faster than the layer's own at batch 1).
    """

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        wants = getattr(args[0], "blas_on_one_thread", None)
        if chunk_threads() <= 1 or (wants is not None and not wants(args[1])):
            return method(*args, **kwargs)
        return run_on_one_blas_thread(method, *args, **kwargs)

    return wrapped  # type: ignore[return-value]


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run NumPy's BLAS on ``n`` threads inside the block, restored after.

    For small matrix products (a 100-unit MLP on 32 examples) threads cost more than they save:
    with other processes busy, OpenBLAS's threads made each step ~8x slower on the 2-core
    development machine. Uses ctypes on NumPy's bundled OpenBLAS where found, else
    threadpoolctl if installed; does nothing where neither is available.
    """
    check_thread_count(n, "blas_threads: n")
    calls = openblas_thread_calls()
    if calls is not None:
        old = calls[0]()
        calls[1](int(n))
        try:
            yield
        finally:
            calls[1](old)
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def default_blas_threads_env(n: int) -> bool:
    """Default ``OPENBLAS_NUM_THREADS`` to ``n`` for this process; True if it can still take
    effect (NumPy not imported yet), False otherwise (then use :func:`blas_threads`)."""
    import sys

    check_thread_count(n, "default_blas_threads_env: n")
    if "numpy" in sys.modules:
        return False
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(int(n)))
    return True
