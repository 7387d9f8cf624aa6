"""Issue 23, guard_job: a rank whose command returns a non-zero status (the CLI's one-line
refusals: ConfigMismatchError, a bad value) follows the rule of a raising rank: ranks that fail
together return together (each message reaches the launcher), one failing alone aborts."""

from __future__ import annotations

from typing import NoReturn

import pytest

from bnlab.train import faults


class _Comm:
    size, rank = 2, 1

    def __init__(self, meets: bool) -> None:
        self.meets = meets
        self.calls: list[str] = []

    def meet(self, seconds: float) -> bool:
        self.calls.append(f"meet {seconds}")
        return self.meets

    def abort(self, code: int = 1) -> NoReturn:
        self.calls.append(f"abort {code}")
        raise SystemExit(code)


def _guard(monkeypatch: pytest.MonkeyPatch, comm: _Comm, status: int) -> int:
    monkeypatch.setattr(faults, "launcher_world_size", lambda: 2)
    monkeypatch.setattr(faults, "world", lambda: comm)
    monkeypatch.setattr(faults.signal, "signal", lambda *a: None)
    monkeypatch.setattr(faults, "_PREFIX", faults._PREFIX)  # guard_job sets it: put it back
    return faults.guard_job(lambda: status)


def test_ranks_returning_a_failure_together_exit_together(monkeypatch) -> None:
    comm = _Comm(meets=True)
    assert _guard(monkeypatch, comm, 2) == 2
    assert comm.calls == [f"meet {faults.FAIL_WAIT_S}"]  # no MPI_Abort


def test_a_rank_failing_alone_still_aborts_the_job(monkeypatch) -> None:
    comm = _Comm(meets=False)
    with pytest.raises(SystemExit) as info:
        _guard(monkeypatch, comm, 1)
    assert info.value.code == 1 and comm.calls == [f"meet {faults.FAIL_WAIT_S}", "abort 1"]


def test_success_neither_meets_nor_aborts(monkeypatch) -> None:
    comm = _Comm(meets=False)
    assert _guard(monkeypatch, comm, 0) == 0 and comm.calls == []
