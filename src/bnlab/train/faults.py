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

from bnlab.comm import WorldSizeError, launcher_world_size, world
from bnlab.train.consistency import ConfigMismatchError

__all__ = ["KNOWN_ERRORS", "guard_job", "rank_prefix", "report_error", "say"]

_PREFIX = ""


def rank_prefix() -> str:
    """``"[rank r/P] "`` inside :func:`guard_job` with P > 1 ranks, else ``""`` (for messages)."""
    return _PREFIX


# errors whose message says it all: one line per failing rank, no traceback
KNOWN_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, OSError, ImportError, FloatingPointError, WorldSizeError, ConfigMismatchError,
)  # fmt: skip
EARLY_EXIT_WAIT_S = 10.0  # how long a rank that exits early waits for the others to do so
FAIL_WAIT_S = 2.0  # how long a failing rank waits for the others to fail too before aborting


def say(text: str) -> None:
    """``text`` and its newline on stderr in one write: under mpiexec, ranks that print at the
    same moment would otherwise interleave (``print`` writes the text and the newline
    separately, and stderr writes through)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def report_error(exc: BaseException, prefix: str = "") -> None:
    """``exc`` on stderr: ``bnlab: [rank r/P] error: message`` for :data:`KNOWN_ERRORS`, else
    the traceback (prefixed) followed by that line naming the unexpected type."""
    if not isinstance(exc, KNOWN_ERRORS):
        text = "".join(traceback.format_exception(exc)).rstrip()
        say("\n".join(prefix + line for line in text.splitlines()))
        exc_text = f"unexpected {type(exc).__name__}: {exc}"
    else:
        exc_text = str(exc)
    say(f"bnlab: {prefix}error: {exc_text}")


def _status_of(exc: BaseException) -> int:
    """The exit status of ``exc``, its message printed (argparse printed its own already)."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, SystemExit):
        if isinstance(exc.code, str):
            say(f"bnlab: {_PREFIX}error: {exc.code}")
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    report_error(exc, _PREFIX)
    return 1


def guard_job(fn: Callable[[], int]) -> int:
    """Run ``fn() -> exit status`` so that a failure on one rank ends the whole MPI job.

    In one process (no MPI launcher, or a world of one) this is just ``fn()``. With P > 1
    ranks: ranks other than 0 ignore SIGINT (Hydra's mpiexec forwards Ctrl-C to every rank;
    rank 0, which writes the run directory, gets it within one step, since the others keep
    reaching the collectives it waits in, and writes the partial run); a non-zero status or
    an exception on any rank prints that rank's message (:func:`report_error`: one line
    prefixed ``[rank r/P]`` for the known kinds). If every rank fails within
    :data:`FAIL_WAIT_S` of the others (a collective check such as
    :func:`~bnlab.train.consistency.check_agree` raises on all of them), each rank returns its
    status and the launcher forwards every message; otherwise the failing rank calls
    ``comm.abort(status)``, which ends every rank, blocked collectives included, within a few
    seconds and makes mpiexec exit with that status. An early ``SystemExit(0)`` (``--help``)
    must be shared by every rank within :data:`EARLY_EXIT_WAIT_S` (``comm.meet``), else the
    job is aborted: a rank gone with status 0 would leave the others in a collective forever.
    A launcher environment without a working MPI (:class:`WorldSizeError`, no mpi4py) is one
    line and status 1.
    """
    global _PREFIX
    try:
        comm = None if launcher_world_size() in (None, 1) else world()
    except (WorldSizeError, ImportError) as exc:  # MPI is not there: each rank says so
        report_error(exc)
        return 1
    if comm is None or comm.size == 1:
        return fn()
    _PREFIX = f"[rank {comm.rank}/{comm.size}] "
    if comm.rank != 0:  # rank 0 ends the job after writing the partial run (abort)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        status = int(fn())
    except BaseException as exc:  # noqa: B036 - any exit path must end the whole job
        code = _status_of(exc)
        sys.stderr.flush()
        # every rank failed or exited together (a collective check, --help): each exits with
        # its status, so the launcher forwards every rank's message; MPI_Abort would kill the
        # others before their output is through the launcher's pipes (seen under load)
        if comm.meet(EARLY_EXIT_WAIT_S if code == 0 else FAIL_WAIT_S):
            if isinstance(exc, SystemExit) and code == 0:
                raise
            return code
        if code == 0:
            say(
                f"bnlab: {_PREFIX}error: this rank ended early (status 0) while the others went "
                "on; ending the job"
            )
            code = 1
        comm.abort(code)
    if status != 0:  # the CLI's one-line refusals return their status: the same rule
        sys.stderr.flush()
        if not comm.meet(FAIL_WAIT_S):
            comm.abort(status)
    return status
