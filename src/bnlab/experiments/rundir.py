"""The run directory of an experiment: its files, its lock, and how a run ends.

Files are written atomically (``bnlab._atomic``: a crash or Ctrl-C leaves the old file or the
new one). :func:`start_run_dir` takes the directory's lock (:func:`lock_run_dir`), deletes the
previous run's files (only those bnlab wrote: :mod:`bnlab.experiments.manifest`) and writes
``config.json`` with the run's provenance (:mod:`bnlab.provenance`), or for a resumed run keeps
the files. :class:`RunDir` is all of this as one object; :func:`run_status` reports
"complete", "interrupted" (Ctrl-C or SIGTERM, :func:`is_interrupt`) or "failed" to the experiment.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnlab import provenance
from bnlab._atomic import atomic_write
from bnlab.experiments import manifest

__all__ = ["LOCK_NAME", "RunDir", "RunDirBusyError", "RunFilesError", "check_out_dir"]
__all__ += ["expect_new_run_dir", "install_sigint_handler", "is_interrupt", "lock_run_dir"]
__all__ += ["raise_if_interrupted", "read_json", "release_run_dir", "run_started", "run_status"]
__all__ += ["start_run_dir", "write_csv", "write_json"]


def _jsonable(obj: Any) -> Any:
    """``obj`` with NaN/Inf floats as None and NumPy scalars/arrays as Python values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (NaN/Inf become null) atomically (``bnlab._atomic``)."""
    data = (json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n").encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


LOCK_NAME = ".bnlab-run.lock"
# run directories this process holds the lock of (-> lock fd, its files then: manifest), whose
# config.json it wrote, that a run started in, and that must stay without a run
_HELD: dict[str, tuple[int, dict[str, manifest.Stat]]] = {}
_OURS: set[str] = set()
_STARTED: set[str] = set()
_MUST_BE_NEW: set[str] = set()


def expect_new_run_dir(out_dir: str | Path, expect: bool = True) -> None:
    """Make :func:`start_run_dir` refuse ``out_dir`` if a run started in it meanwhile
    (``bnlab run`` without ``--force``); ``expect=False`` undoes it."""
    (_MUST_BE_NEW.add if expect else _MUST_BE_NEW.discard)(str(Path(out_dir).resolve()))


class RunDirBusyError(RuntimeError):
    """Another process is running an experiment in the same run directory."""


def check_out_dir(out_dir: str | Path) -> Path:
    """Raise NotADirectoryError if ``out_dir`` or one of its parents is an existing file."""
    out = Path(out_dir)
    for p in (out, *out.parents):
        if p.is_symlink() and not p.exists():  # mkdir would say "[Errno 17] File exists"
            raise FileNotFoundError(f"--out {out}: {p} is a symlink to a missing {os.readlink(p)}")
        if p.exists() and not p.is_dir():
            what = "is a file" if p == out else f"is under {p}, which is a file"
            raise NotADirectoryError(f"--out {out} {what}; choose a directory for --out")
    return out


def lock_run_dir(out_dir: str | Path) -> None:
    """Create ``out_dir`` and hold an exclusive lock on it until :func:`release_run_dir`
    (or the end of the process): ``fcntl.flock`` on ``out_dir/.bnlab-run.lock``, which holds
    the pid of the holder. A second run in the same directory gets a :class:`RunDirBusyError`
    naming that pid before it changes anything. Re-entrant within one process."""
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = str(out.resolve())
    if key in _HELD:
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(out / LOCK_NAME).st_ino:  # its holder just ended
            raise OSError("the lock file was replaced")
    except OSError:
        holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise RunDirBusyError(
            f"{out} is in use by another bnlab run (pid {holder}); wait for it to end or stop "
            "it, or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    _HELD[key] = fd, manifest.snapshot(out)
    _STARTED.add(key)


def release_run_dir(out_dir: str | Path) -> None:
    """Record the files the run wrote (:func:`bnlab.experiments.manifest.record`) and its
    end time (``provenance.ended`` in config.json), remove the lock file and release it (a
    no-op if this process holds none). On a full disk the end time is left out and the
    manifest named on stderr: the run's own error is what the user must see."""
    out = Path(out_dir)
    key = str(out.resolve())
    if key not in _HELD:
        return
    fd, before = _HELD.pop(key)
    try:  # bookkeeping: on a full disk it must not hide the run's own error
        if key in _OURS and (out / "config.json").is_file():  # this process's run's config
            _OURS.discard(key)
            cfg = read_json(out / "config.json")
            cfg["provenance"]["ended"] = provenance.now()
            with contextlib.suppress(OSError):
                write_json(out / "config.json", cfg)
        try:
            manifest.record(out, before)
        except OSError as e:
            _note(out, "its files could not be recorded (a later --force keeps them)", [str(e)])
    finally:
        (out / LOCK_NAME).unlink(missing_ok=True)  # while held: no other run can hold it
        os.close(fd)


@atexit.register
def _release_all() -> None:  # a run that did not release its directory still ends cleanly
    for key in list(_HELD):
        release_run_dir(key)


def run_started(out_dir: str | Path) -> bool:
    """True if a run of this process took ``out_dir`` over (:func:`lock_run_dir`): from then
    on the directory holds this run's config, and after Ctrl-C its partial results."""
    return str(Path(out_dir).resolve()) in _STARTED


def start_run_dir(
    out_dir: str | Path, cfg: dict[str, Any], *, resume: dict[str, Any] | None = None
) -> Path:
    """Lock ``out_dir`` (:func:`lock_run_dir`), delete the previous run's files (those
    bnlab wrote: :mod:`bnlab.experiments.manifest`; others stay, named in one line on stderr,
    unless their names are a run's: then FileExistsError) and write ``config.json``: ``cfg``
    with ``"provenance"`` (:func:`bnlab.provenance.collect`, given ``cfg["batch_size"]``).

    ``resume`` (the run's recorded config): keep the files, move its provenance to
    ``provenance.earlier``, name what changed since in one line on stderr. Call this after
    every check, so that bad input leaves a run untouched; release the lock at the end.
    """
    out = Path(out_dir)
    lock_run_dir(out)
    try:
        if str(out.resolve()) in _MUST_BE_NEW and (out / "config.json").exists():
            raise FileExistsError(
                f"{out} holds a run now (another run started in it meanwhile); choose another "
                "--out or pass --force to overwrite it"
            )
        prov = provenance.collect(batch_size=cfg.get("batch_size"))
        if resume is None:
            _note(out, "left files bnlab did not write", manifest.check_takeover(out))
            manifest.clear(out)
        else:
            old = resume.get("provenance")
            _note(out, "resumed in another environment", provenance.differences(old, prov))
            prov["earlier"] = [*old.pop("earlier", []), old] if isinstance(old, dict) else []
        write_json(out / "config.json", {**cfg, "provenance": prov})
        _OURS.add(str(out.resolve()))
    except BaseException:
        release_run_dir(out)
        raise
    return out


def _note(out: Path, what: str, items: Sequence[str]) -> None:
    """One line on stderr: ``bnlab: OUT: WHAT: a; b; c`` (nothing when ``items`` is empty)."""
    if items:
        print(f"bnlab: warning: {out}: {what}: {'; '.join(items)}", file=sys.stderr)


class RunFilesError(ValueError):
    """A run directory's file does not hold what bnlab writes there (not JSON, wrong shape)."""


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing file raises FileNotFoundError naming it, a file that is
    not JSON a :class:`RunFilesError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is this a bnlab run directory?")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFilesError(f"{path} is not valid JSON ({e}); was it truncated or edited?") from e


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV file with ``header`` and ``rows`` (None is written as an empty cell),
    atomically like :func:`write_json`."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(["" if v is None else v for v in row] for row in rows)
    data = buf.getvalue().encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


# set by the SIGINT handler of install_sigint_handler(): Ctrl-C was pressed in this process
_SIGINT_SEEN = threading.Event()


def _on_sigint(signum: int, frame: Any) -> None:
    _SIGINT_SEEN.set()
    raise KeyboardInterrupt("SIGTERM" if signum == signal.SIGTERM else "")


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed but its KeyboardInterrupt was lost.

    Python swallows an exception raised in a weakref callback or ``__del__`` ("Exception
    ignored in ..."), and a Ctrl-C delivered there would let the run go on to the end; the
    experiments' per-step progress calls this so that the interrupt still ends the run.
    """
    if _SIGINT_SEEN.is_set():
        raise KeyboardInterrupt("Ctrl-C (its first KeyboardInterrupt was swallowed by Python)")


def install_sigint_handler() -> Callable[[], None]:
    """Make Ctrl-C (and SIGTERM) raise KeyboardInterrupt and also set a flag that
    :func:`is_interrupt` checks; returns a function restoring the previous handler."""
    _SIGINT_SEEN.clear()
    stack = contextlib.ExitStack()
    stack.enter_context(_sigint_handler(_on_sigint))
    return stack.close


def is_interrupt(exc: BaseException) -> bool:
    """True for a KeyboardInterrupt, for an exception caused by one (a Ctrl-C that lands
    inside a Numba kernel surfaces as ``SystemError: CPUDispatcher(...) returned a result with
    an exception set`` whose ``__context__`` is the KeyboardInterrupt), and for any exception
    raised after the handler of :func:`install_sigint_handler` saw a Ctrl-C."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return _SIGINT_SEEN.is_set()


@contextlib.contextmanager
def _sigint_handler(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for Ctrl-C and SIGTERM inside the block (in the main thread only: no other
    thread can set one)."""
    main = threading.current_thread() is threading.main_thread()
    sigs = (signal.SIGINT, signal.SIGTERM) if main else ()
    old = [signal.signal(sig, handler) for sig in sigs]
    old_hook = sys.unraisablehook

    def quiet_interrupt(unraisable: Any) -> None:
        # A Ctrl-C that lands in a __del__ (Numba compiling: llvmlite's) is swallowed by Python
        # with a printed traceback; the flag already ends the run (raise_if_interrupted).
        if not (_SIGINT_SEEN.is_set() and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            old_hook(unraisable)

    sys.unraisablehook = quiet_interrupt
    try:
        yield
    finally:
        sys.unraisablehook = old_hook
        for sig, previous in zip(sigs, old, strict=True):
            signal.signal(sig, previous)


@contextlib.contextmanager
def run_status(on_exit: Callable[[str], None]) -> Iterator[None]:
    """Run an experiment's body and report how it ended to ``on_exit``, whatever happens.

    The status is "complete", "interrupted" (Ctrl-C, see :func:`is_interrupt`) or "failed";
    ``on_exit`` writes the metrics and report of the (possibly partial) run, which
    ``bnlab report`` can render again, with Ctrl-C deferred until it returns. Exceptions
    propagate after ``on_exit`` ran; an interrupt always as KeyboardInterrupt.
    """
    status = "failed"
    try:
        yield
        raise_if_interrupted()  # a Ctrl-C whose KeyboardInterrupt Python swallowed
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        if not is_interrupt(e):
            raise
        status = "interrupted"
        raise KeyboardInterrupt(f"interrupted ({type(e).__name__}: {e})") from e
    finally:
        with _sigint_handler(lambda signum, frame: _SIGINT_SEEN.set()):  # not cut short
            on_exit(status)


class RunDir:
    """An experiment's run directory, taken over by this process (:meth:`start`, after the
    config was checked); every file is written atomically under ``path``. Use it as a context
    manager (or call :meth:`release`) to give the lock back::

        with RunDir.start(out, cfg.to_dict()) as rd, rd.status(write_results):
            ...train...; rd.write_metrics(metrics)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def start(cls, path: str | Path, config: Any) -> RunDir:
        """:func:`start_run_dir`: lock, clear the previous run's files, write config.json."""
        return cls(start_run_dir(path, config))

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the directory's lock back (the files stay)."""
        release_run_dir(self.path)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` (relative to the run directory) atomically; returns its path."""
        write_json(self.path / name, obj)
        return self.path / name

    def write_metrics(self, obj: Any) -> Path:
        """Write ``metrics.json``."""
        return self.write_json("metrics.json", obj)

    def write_csv(self, name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
        """Write the CSV file ``name`` atomically; returns its path."""
        write_csv(self.path / name, header, rows)
        return self.path / name

    def write_history_csv(
        self,
        id_header: Sequence[str],
        runs: Iterable[tuple[Sequence[Any], dict[str, list[Any]]]],
        keys: Sequence[str],
    ) -> Path:
        """``metrics.csv`` of per-run histories (parallel lists under ``keys``): one row per
        run and record, the run's ``(ids, history)`` id columns first."""
        rows = [[*ids, *(h[k][i] for k in keys)] for ids, h in runs for i in range(len(h[keys[0]]))]
        return self.write_csv("metrics.csv", [*id_header, *keys], rows)

    def read_json(self, name: str) -> Any:
        """Read ``name`` (see :func:`read_json` for the errors)."""
        return read_json(self.path / name)

    def read_metrics(self, **empty: Any) -> dict[str, Any]:
        """``metrics.json``, or ``{"status": "not started", **empty}`` if training never
        wrote it."""
        path = self.path / "metrics.json"
        return read_json(path) if path.is_file() else {"status": "not started", **empty}

    def figure(self, name: str) -> Path:
        """Where figure ``name`` goes: ``fig_<name>.png`` (cleared by :meth:`start`)."""
        return self.path / f"fig_{name}.png"

    def write_report(self, report: Any) -> tuple[Path, Path]:
        """Write a :class:`bnlab.experiments.report.Report` as report.md and report.html."""
        return report.write(self.path)

    def status(self, on_exit: Callable[[str], None]) -> contextlib.AbstractContextManager[None]:
        """:func:`run_status`: ``on_exit(status)`` runs however the body ends."""
        return run_status(on_exit)
