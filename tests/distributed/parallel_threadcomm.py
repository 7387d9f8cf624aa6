"""A world of P ranks inside one process (one thread per rank), for testing the maths of
bnlab.train.DataParallel without MPI. Collectives meet at a barrier; sums in rank order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from bnlab.comm import Communicator


class _Hub:
    def __init__(self, size: int) -> None:
        self.size = size
        self.slots: list[Any] = [None] * size
        self.barrier = threading.Barrier(size, timeout=60)


class ThreadComm(Communicator):
    """Rank ``rank`` of a :class:`_Hub` shared by ``size`` threads."""

    def __init__(self, hub: _Hub, rank: int) -> None:
        self.hub, self.rank, self.size = hub, rank, hub.size

    def _exchange(self, value: Any) -> list[Any]:
        self.hub.slots[self.rank] = value
        self.hub.barrier.wait()
        out = list(self.hub.slots)
        self.hub.barrier.wait()
        return out

    def allreduce(self, buf: np.ndarray) -> None:
        parts = self._exchange(buf.copy())
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        buf[...] = total

    def allgather(self, send: np.ndarray, recv: np.ndarray) -> None:
        recv[...] = np.stack(self._exchange(send.copy()))

    def bcast(self, buf: np.ndarray, root: int = 0) -> None:
        buf[...] = self._exchange(buf.copy())[root]

    def allgather_object(self, obj: Any) -> list[Any]:
        return self._exchange(obj)

    def barrier(self) -> None:
        self.hub.barrier.wait()

    def abort(self, code: int = 1) -> NoReturn:
        raise SystemExit(code)


def run_ranks(size: int, fn: Callable[[ThreadComm], Any]) -> list[Any]:
    """``[fn(comm_0), ..., fn(comm_{P-1})]``, each in its own thread; exceptions are returned."""
    hub = _Hub(size)
    results: list[Any] = [None] * size

    def target(rank: int) -> None:
        try:
            results[rank] = fn(ThreadComm(hub, rank))
        except BaseException as exc:  # noqa: B036 - handed to the test
            results[rank] = exc
            hub.barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results
