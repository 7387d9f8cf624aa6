"""The experiments' progress display: no tqdm needed, few lines off a terminal, an honest ETA."""

from __future__ import annotations

import io

import pytest

from bnlab.experiments import progress
from bnlab.experiments.progress import Progress


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", c)
    return c


def test_off_a_terminal_a_plain_line_every_interval_at_most(clock: _Clock) -> None:
    out = io.StringIO()
    bar = Progress(6000, "demo", stream=out, interval=10.0)
    for _ in range(6000):  # 6000 steps over 93.75 s (1/64 s each: exact in binary)
        clock.t += 1 / 64
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert progress.COMPILING not in text  # nothing was compiled
    assert 9 <= len(lines) <= 12  # the first step, one per 10 s, the end
    assert lines[-1] == "demo: 6000/6000 [01:33<00:00, 64 step/s]"


def test_eta_starts_after_the_first_step(clock: _Clock) -> None:
    """80 s of compilation in step 1 must not give `0/6000 [01:20<133:49:27]`."""
    out = io.StringIO()
    bar = Progress(6000, "demo", stream=out, interval=0.0)
    clock.t = 80.0
    bar.update(1)
    assert "<?, ? step/s]" in out.getvalue().splitlines()[-1]
    for _ in range(128):
        clock.t += 1 / 64
        bar.update(1)
    last = out.getvalue().splitlines()[-1]
    # 128 steps in 2 s after the first: 64 step/s, 5871 steps left: 91.7 s
    assert last == "demo: 129/6000 [01:22<01:31, 64 step/s]", last


def test_on_a_terminal_the_line_is_redrawn(clock: _Clock) -> None:
    out = _Tty()
    bar = Progress(10, "demo", stream=out)
    for _ in range(10):
        clock.t += 1.0
        bar.update(1)
    bar.set_postfix({"bn": "0.95"})
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") >= 10
    assert text.rstrip("\n").endswith("demo: 10/10 [00:10<00:00, 1 step/s] bn=0.95\x1b[K")


def test_disabled_writes_nothing(clock: _Clock) -> None:
    out = io.StringIO()
    bar = Progress(5, "demo", stream=out, enabled=False)
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""


def test_the_compile_note_only_when_numba_compiles() -> None:
    """The note shows when a kernel really compiles in the first step, not otherwise."""
    import numba

    out = io.StringIO()
    bar = Progress(3, "demo", stream=out)
    numba.njit(lambda x: x + 1)(1)  # a new function: compiled (no cache)
    bar.update(1)
    numba.njit(lambda x: x + 2)(1)  # compiled after the first step: no note
    bar.update(2)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "demo: 0/3 " + progress.COMPILING
    assert sum(progress.COMPILING in line for line in lines) == 1
