"""How much of a run's wall time was Numba compiling kernels (so reports can leave it out).

A first run after an install compiles every kernel it calls (tens of seconds; the results are
cached, later runs load them). Wall times that include it are not comparable with those that
do not: the first of two identical runs took 70 s, the second 14 s. :func:`numba_compile_time`
measures the compilation inside a block with Numba's own ``numba:compile`` events (a cache load
is not a compile; nested compilations count once).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["CompileTime", "numba_compile_time"]


@dataclass
class CompileTime:
    """Seconds of Numba compilation measured by :func:`numba_compile_time`."""

    seconds: float = 0.0


@contextmanager
def numba_compile_time() -> Iterator[CompileTime]:
    """Measure the seconds Numba spends compiling inside the block.

    ``with numba_compile_time() as ct: work()`` leaves the total in ``ct.seconds`` (0.0 when
    everything came from the cache, or when the block raised before finishing).
    """
    from numba.core import event

    out = CompileTime()

    def add(duration: float) -> None:
        out.seconds += float(duration)

    with event.install_timer("numba:compile", add):
        yield out
