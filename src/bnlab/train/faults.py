"""Faults in an MPI job: one rank's failure, or Ctrl-C, ends every rank, never a hang.

MPI offers no way out of a collective whose partner is gone: a rank that raises leaves the
others waiting forever (measured with MPICH: a rank exiting with status 3 before a barrier
left the job hanging). :func:`guard_job` turns every failure into ``MPI_Abort``.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable

from bnlab.comm import launcher_world_size, world

__all__ = ["guard_job", "rank_prefix"]

_PREFIX = ""


def rank_prefix() -> str:
    """``"[rank r/P] "`` inside :func:`guard_job` with P > 1 ranks, else ``""`` (for messages)."""
    return _PREFIX


def guard_job(fn: Callable[[], int]) -> int:
    """Run ``fn() -> exit status`` so that a failure on one rank ends the whole MPI job.

    In one process (no MPI launcher, or a world of one) this is just ``fn()``. With P > 1
    ranks: ranks other than 0 ignore SIGINT (Hydra's mpiexec forwards Ctrl-C to every rank;
    rank 0, which writes the run directory, gets it within one step, since the others keep
    reaching the collectives it waits in, and writes the partial run); a non-zero status or
    an exception on any rank prints that rank's message, prefixed ``[rank r/P]``, and calls
    ``comm.abort(status)``, which ends every rank, blocked collectives included, within
    about a second and makes mpiexec exit with that status.
    """
    global _PREFIX
    if launcher_world_size() in (None, 1):
        return fn()
    comm = world()
    if comm.size == 1:
        return fn()
    _PREFIX = f"[rank {comm.rank}/{comm.size}] "
    if comm.rank != 0:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        status = int(fn())
    except BaseException as exc:  # noqa: B036 - any exit path must end the whole job
        code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
        if isinstance(exc, KeyboardInterrupt):
            code = 130
        elif not (isinstance(exc, SystemExit) and code == 0):
            text = "".join(traceback.format_exception(exc)).rstrip()
            print("\n".join(_PREFIX + line for line in text.splitlines()), file=sys.stderr)
        if code == 0:
            raise
        comm.abort(code)
    if status != 0:
        comm.abort(status)
    return status
