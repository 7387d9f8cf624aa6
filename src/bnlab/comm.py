"""Ground floor: the communicator, a thin wrapper over mpi4py with a one-process fallback.

Everything bnlab sends between processes goes through four buffer collectives on NumPy
arrays (no pickling, no copies: mpi4py's upper-case API hands the array's memory to MPI):

* :meth:`Communicator.allreduce` sums a buffer over all ranks, in place;
* :meth:`Communicator.allgather` stacks every rank's buffer into ``recv[rank]``, in rank order;
* :meth:`Communicator.bcast` copies rank ``root``'s buffer to every rank, in place;
* :meth:`Communicator.allgather_object` (small Python values: checksums, error messages).

:func:`world` returns the process's communicator: a :class:`SelfComm` (rank 0 of 1, no MPI
needed, mpi4py not even imported) when the process was not started by an MPI launcher, else an
:class:`MPIComm` over ``MPI.COMM_WORLD``. It checks that the world MPI reports has the size the
launcher announced: an ``mpiexec`` from another MPI than the one mpi4py loaded starts N
separate one-rank jobs, each believing it is alone, and would silently train N copies.

This module imports nothing of bnlab.

Example::

    >>> import numpy as np
    >>> from bnlab.comm import world
    >>> comm = world()                # rank 0 of 1 outside mpiexec
    >>> buf = np.array([1.0, 2.0])
    >>> comm.allreduce(buf)           # in place; a no-op for one process
    >>> comm.rank, comm.size, buf.tolist()
    (0, 1, [1.0, 2.0])
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, NoReturn

import numpy as np

__all__ = [
    "Communicator",
    "MPIComm",
    "SelfComm",
    "WorldSizeError",
    "launcher_world_size",
    "world",
]

# environment variables by which launchers announce the world size (MPICH's Hydra and Intel
# MPI set PMI_SIZE, Open MPI sets OMPI_COMM_WORLD_SIZE) or that the process is one of a job
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_LOCALNRANKS")
ABORT_GRACE_S = 0.3  # MPIComm.abort: pause between the last flush and MPI_Abort


class WorldSizeError(RuntimeError):
    """The MPI world is not the one that was asked for (wrong launcher, wrong ``-n``)."""


class Communicator:
    """The collectives bnlab uses. Buffers are C-contiguous NumPy arrays of a numeric dtype."""

    rank: int = 0
    size: int = 1

    def allreduce(self, buf: np.ndarray) -> None:
        """Replace ``buf`` by its elementwise sum over all ranks (the same bits on every rank)."""
        raise NotImplementedError

    def allgather(self, send: np.ndarray, recv: np.ndarray) -> None:
        """Fill ``recv`` (shape ``(size,) + send.shape``) with every rank's ``send``, rank order."""
        raise NotImplementedError

    def bcast(self, buf: np.ndarray, root: int = 0) -> None:
        """Overwrite ``buf`` on every rank with rank ``root``'s ``buf``."""
        raise NotImplementedError

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (small picklable values only), in rank order."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every rank has called it."""
        raise NotImplementedError

    def meet(self, seconds: float) -> bool:
        """A barrier that gives up: True if every rank called ``meet`` within ``seconds`` of
        this one (on a communicator of its own, so it never pairs with a training collective),
        False otherwise; the way to tell an early exit shared by all ranks from one rank's."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> NoReturn:
        """End every rank of the job now with exit status ``code`` (never returns)."""
        raise NotImplementedError

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that writes files and shows progress."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


def _check_buffers(send: np.ndarray, recv: np.ndarray, size: int) -> None:
    if recv.shape != (size,) + send.shape or recv.dtype != send.dtype:
        raise ValueError(
            f"allgather: recv must have shape {(size,) + send.shape} and dtype {send.dtype}, "
            f"got shape {recv.shape} and dtype {recv.dtype}"
        )


class SelfComm(Communicator):
    """A world of one process: every collective is a local copy or nothing."""

    rank = 0
    size = 1

    def allreduce(self, buf: np.ndarray) -> None:
        return None

    def allgather(self, send: np.ndarray, recv: np.ndarray) -> None:
        _check_buffers(send, recv, 1)
        recv[0] = send

    def bcast(self, buf: np.ndarray, root: int = 0) -> None:
        if root != 0:
            raise ValueError(f"bcast: root must be 0 in a world of one, got {root}")

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        return None

    def meet(self, seconds: float) -> bool:
        return True

    def abort(self, code: int = 1) -> NoReturn:
        sys.stderr.flush()
        os._exit(code)


class MPIComm(Communicator):
    """An mpi4py communicator (``MPI.COMM_WORLD`` by default) behind the same four calls."""

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        self._exit_comm = self.comm.Dup()  # for meet(): collective, like this constructor

    def allreduce(self, buf: np.ndarray) -> None:
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)

    def allgather(self, send: np.ndarray, recv: np.ndarray) -> None:
        _check_buffers(send, recv, self.size)
        self.comm.Allgather(send, recv)

    def bcast(self, buf: np.ndarray, root: int = 0) -> None:
        self.comm.Bcast(buf, root=root)

    def allgather_object(self, obj: Any) -> list[Any]:
        return list(self.comm.allgather(obj))

    def barrier(self) -> None:
        self.comm.Barrier()

    def meet(self, seconds: float) -> bool:
        request, deadline = self._exit_comm.Ibarrier(), time.monotonic() + seconds
        while not request.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def abort(self, code: int = 1) -> NoReturn:
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)  # let the launcher forward what this rank printed last
        self.comm.Abort(code)
        os._exit(code)  # Abort does not return; this line satisfies the type checker


def launcher_world_size(environ: dict[str, str] | None = None) -> int | None:
    """The world size an MPI launcher announced in the environment, or None if not launched."""
    env = os.environ if environ is None else environ
    if not any(v in env for v in _RANK_VARS + _SIZE_VARS):
        return None
    for var in _SIZE_VARS:
        if var not in env:
            continue
        value = env[var].strip()
        if not (value.isascii() and value.isdigit() and int(value) >= 1):
            raise WorldSizeError(
                f"the MPI launcher variable {var}={env[var]!r} is not a positive process count; "
                f"unset {var} to run in one process, or start the job with the venv's mpiexec"
            )
        return int(value)
    return None


_WORLD: Communicator | None = None


def world(expected_size: int | None = None) -> Communicator:
    """The process's communicator, created on first use and the same object afterwards.

    Not started by an MPI launcher: a :class:`SelfComm` (mpi4py is not imported). Started by
    one: an :class:`MPIComm`; raises :class:`WorldSizeError` when MPI's world size differs
    from the launcher's (an ``mpiexec`` of another MPI) or from ``expected_size``, and
    ImportError naming what to install when mpi4py is missing.
    """
    global _WORLD
    if expected_size is not None and (
        isinstance(expected_size, bool) or not isinstance(expected_size, int) or expected_size < 1
    ):
        raise ValueError(f"world: expected_size must be a positive int, got {expected_size!r}")
    if _WORLD is None:
        _WORLD = _make_world()
    if expected_size is not None and _WORLD.size != expected_size:
        raise WorldSizeError(
            f"the MPI world has {_WORLD.size} process(es), expected {expected_size}; launch with "
            f"`mpiexec -n {expected_size}` from the same MPI that mpi4py uses (the venv's own "
            "mpiexec for the mpich wheel)"
        )
    return _WORLD


def _make_world() -> Communicator:
    announced = launcher_world_size()
    if announced is None and not any(v in os.environ for v in _RANK_VARS):
        return SelfComm()
    try:
        comm = MPIComm()
    except ImportError as exc:
        raise ImportError(
            "this process was started by an MPI launcher but mpi4py is not installed: pip "
            "install mpi4py mpich (or, from a clone of bnlab: pip install -e '.[mpi]')"
        ) from exc
    if announced is not None and comm.size != announced:
        raise WorldSizeError(
            f"the launcher started {announced} processes but MPI reports a world of {comm.size}: "
            "mpiexec belongs to a different MPI than the one mpi4py loaded, so every process "
            "would train alone. Use the mpiexec of mpi4py's MPI (for the mpich wheel: the "
            "venv's bin/mpiexec; check with `python -m mpi4py --mpi-library`)"
        )
    return comm


def _reset_world_for_tests() -> None:
    """Forget the cached world (tests only)."""
    global _WORLD
    _WORLD = None
