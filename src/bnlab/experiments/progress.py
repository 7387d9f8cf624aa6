"""A progress display for the experiments that needs no third-party package.

On a terminal it is one line redrawn in place (at most 10 times a second)::

    mnist-sigmoid: 1200/6000 [00:14<00:58, 83.1 step/s] lr0.1 plain 0.9012 bn 0.9431

When stderr is not a terminal (CI, ``make demo > log``) it writes a plain line at most every
``interval`` seconds (10 by default) and one at the end, instead of hundreds of
carriage-return updates. When Numba starts compiling during the first step (a first run, or a
changed kernel: compiled kernels are cached on disk) it says so (``first_note``), and only
then; the ETA is measured from the end of the first step, so compilation does not inflate it.

With it, the course of a run: :func:`recording` (the status written first and however the run
ends, the bar closed, the report rendered), :func:`run_in_turn` (entries trained one after
the other, a diverged one kept with its error) and :class:`EpochTraining` (a net trained epoch
by epoch under a bar, on one process or data-parallel).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from bnlab.comm import world
from bnlab.experiments.config import ExperimentConfig
from bnlab.experiments.report import write_run_metrics
from bnlab.experiments.rundir import RunDir, raise_if_interrupted
from bnlab.train import (
    Callback,
    Trainer,
    TrainState,
    check_agree,
    evaluate,
    for_experiment,
    is_root,
)

__all__ = ["COMPILING", "BarCallback", "EpochTraining", "Progress", "recording", "run_in_turn"]
__all__ += ["root_only", "shared_run_dir"]

COMPILING = "compiling Numba kernels (first run only)..."
_WATCHING: list[Progress] = []  # bars whose first_note a Numba compilation would show now


def _watch_compiles(bar: Progress) -> None:
    """Show ``bar``'s first note when Numba really compiles (its "numba:compile" event fires
    on a cache miss only) before the bar's first update."""
    from numba.core import event

    class Listener(event.Listener):
        def on_start(self, ev: Any) -> None:
            while _WATCHING:
                _WATCHING.pop().show_note()

        def on_end(self, ev: Any) -> None:
            pass

    if not _WATCHING and not getattr(_watch_compiles, "registered", False):
        event.register("numba:compile", Listener())
        _watch_compiles.registered = True  # type: ignore[attr-defined]
    _WATCHING.append(bar)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    h, m = divmod(s, 3600)
    return f"{h}:{m // 60:02d}:{m % 60:02d}" if h else f"{m // 60:02d}:{m % 60:02d}"


class Progress:
    """Counts ``total`` units of work; ``update``, ``set_postfix``, ``close`` (tqdm's names)."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "step",
        enabled: bool = True,
        stream: IO[str] | None = None,
        interval: float = 10.0,
        first_note: str | None = COMPILING,
    ) -> None:
        self.total, self.desc, self.unit, self.enabled = int(total), desc, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if callable(isatty) else False
        self.interval = 0.1 if self.tty else float(interval)
        self.n = 0
        self.postfix = ""
        self.t_start = time.perf_counter()
        self.t_first: float | None = None  # end of the first update: the ETA's origin
        self.n_first = 0
        self.t_shown = -math.inf
        self.closed = False
        self.note = first_note
        if enabled and first_note:
            _watch_compiles(self)

    def show_note(self) -> None:
        """Show ``first_note`` (Numba is compiling) once."""
        if self.enabled and self.note and not self.closed:
            self._emit(f"{self.desc}: {self.n}/{self.total} {self.note}", final=not self.tty)
        self.note = None

    def _line(self) -> str:
        now = time.perf_counter()
        elapsed = now - self.t_start
        rate, eta = math.nan, math.nan
        if self.t_first is not None and self.n > self.n_first and now > self.t_first:
            rate = (self.n - self.n_first) / (now - self.t_first)
            eta = (self.total - self.n) / rate
        speed = f"{rate:.3g} {self.unit}/s" if math.isfinite(rate) else f"? {self.unit}/s"
        text = f"{self.desc}: {self.n}/{self.total} [{_clock(elapsed)}<{_clock(eta)}, {speed}]"
        return f"{text} {self.postfix}".rstrip()

    def _emit(self, text: str, *, final: bool) -> None:
        try:
            if self.tty:
                self.stream.write("\r" + text + "\x1b[K" + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop the run
            self.enabled = False

    def _maybe_show(self) -> None:
        now = time.perf_counter()
        if now - self.t_shown >= self.interval:
            self.t_shown = now
            self._emit(self._line(), final=False)

    def update(self, n: int = 1) -> None:
        """``n`` more units done (raises KeyboardInterrupt if a Ctrl-C was swallowed)."""
        raise_if_interrupted()
        self.n += int(n)
        if self.t_first is None:
            self.t_first, self.n_first = time.perf_counter(), self.n
            if self in _WATCHING:
                _WATCHING.remove(self)
        if self.enabled:
            self._maybe_show()

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = False) -> None:
        """Text after the counts, e.g. the latest accuracy; ``{"bn": "0.95"}`` -> "bn=0.95"."""
        self.postfix = " ".join(f"{k}={v}" for k, v in (values or {}).items())
        if refresh and self.enabled:
            self._maybe_show()

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        """Text after the counts, as given."""
        self.postfix = text
        if refresh and self.enabled:
            self._maybe_show()

    def close(self) -> None:
        """Show the final state once (a line of its own)."""
        if self.closed:
            return
        self.closed = True
        if self in _WATCHING:
            _WATCHING.remove(self)
        if self.enabled:
            self._emit(self._line(), final=True)


class BarCallback(Callback):
    """A training callback that advances ``bar`` (a :class:`Progress`, or None: nothing) by one
    after every step; ``bar`` may be set between epochs."""

    def __init__(self, bar: Progress | None = None) -> None:
        self.bar = bar

    def on_step_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.update(1)


class EpochTraining:
    """A net trained epoch by epoch: its :class:`~bnlab.train.Trainer` (``loss_fn``, the
    optimizer ``optimizer(model)``, a :class:`BarCallback`) on the process's world
    (:func:`~bnlab.train.for_experiment` with the run's ``record``: under mpiexec SyncBN and a
    DataParallel ``dp``, else ``dp`` None) and its ``history``, a list per key of ``keys``."""

    def __init__(
        self,
        model: Any,
        record: dict[str, Any],
        loss_fn: Any,
        optimizer: Callable[[Any], Any],
        keys: Sequence[str] = (),
    ) -> None:
        model, self.dp = for_experiment(model, record)
        self.bar = BarCallback()
        self.trainer = Trainer(
            model, loss_fn, optimizer(model), callbacks=[self.bar], parallel=self.dp
        )
        self.history: dict[str, list[Any]] = {k: [] for k in keys}

    def fit_epoch(
        self, batches: Iterable[Any], n: int, label: str, show: bool, note: str | None = None
    ) -> dict[str, Any]:
        """:meth:`Trainer.fit_epoch` over ``batches`` (``n`` of them) under a bar ``label``
        (shown if ``show``, with ``note`` if Numba compiles); the epoch's logs."""
        self.bar.bar = Progress(n, label, unit="batch", enabled=show, first_note=note)
        try:
            row: dict[str, Any] = self.trainer.fit_epoch(batches)
        finally:
            self.bar.bar.close()
            self.bar.bar = None
        return row

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, float]:
        """:func:`~bnlab.train.evaluate` with the loss (under mpiexec every rank evaluates its
        share of the test set, with rank 0's statistics)."""
        run_eval = evaluate if self.dp is None else self.dp.evaluate
        model, loss_fn = self.trainer.model, self.trainer.loss_fn
        return run_eval(model, x, y, batch_size, loss_fn=loss_fn)

    def run_epoch(
        self, epoch: int, batches: Iterable[Any], n: int, label: str, show: bool, test: Any
    ) -> dict[str, Any]:
        """Epoch ``epoch`` (:meth:`fit_epoch`), then :meth:`evaluate` on ``test``, ``(x, y,
        batch_size)``; its row (the logs with ``epoch``, ``iterations``, ``lr``, ``test_loss``,
        ``test_accuracy`` and the seconds ``train_time_s``, ``eval_time_s``, ``epoch_time_s``)
        is appended to the history and returned."""
        note = "(the first batches compile Numba kernels, first run only)" if epoch == 1 else None
        t0 = time.perf_counter()
        row = self.fit_epoch(batches, n, label, show, note)
        t1 = time.perf_counter()
        ev = self.evaluate(*test)
        t2 = time.perf_counter()
        opt = self.trainer.optimizer
        row.update(epoch=epoch, iterations=int(opt.iterations), lr=opt.current_lr())
        row.update(test_loss=ev["loss"], test_accuracy=ev["accuracy"])
        row.update(train_time_s=t1 - t0, eval_time_s=t2 - t1, epoch_time_s=t2 - t0)
        for k, values in self.history.items():
            values.append(row[k])
        return row


def _nothing(*args: Any) -> None:
    return None


def root_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` on rank 0 (and in one process), a function doing nothing on the other ranks of
    a data-parallel run: the writes of the run directory."""
    return fn if is_root() else _nothing


def shared_run_dir(out_dir: str | Path, settings: dict[str, Any], where: str) -> RunDir:
    """The run directory ``out_dir`` of a run on the process's world (:func:`bnlab.comm.world`):
    the ranks check that they see the same ``--out`` and config (every rank refuses together
    before anything changes, :func:`~bnlab.train.check_agree`; a ``batch_size`` smaller than
    the world is refused likewise), then rank 0 takes it over
    (:meth:`RunDir.start`) and the other ranks hold a :class:`RunDir` they do not write."""
    comm, batch = world(), settings.get("batch_size")
    check_agree(comm, {"--out": str(Path(out_dir).resolve()), "config": settings}, where=where)
    if isinstance(batch, int) and batch < comm.size:  # every rank refuses, nothing written
        raise ValueError(
            f"{where}: --batch-size {batch} cannot feed the {comm.size} processes of this job "
            f"(every rank needs at least one example); use --batch-size >= {comm.size} or "
            f"fewer processes"
        )
    return RunDir.start(out_dir, settings) if is_root() else RunDir(out_dir)


@contextlib.contextmanager
def recording(
    rd: RunDir, bar: Progress, write: Callable[[str], None], render: Callable[[Path], Any]
) -> Iterator[None]:
    """The body of a run in ``rd``: ``write("running")`` first; however the body ends
    (:meth:`RunDir.status`), the bar closes, ``write(status)`` records the (possibly partial)
    results and ``render(rd.path)`` draws the report (on rank 0 only: :func:`root_only`)."""
    write, render = root_only(write), root_only(render)

    def finish(status: str) -> None:
        bar.close()
        write(status)
        render(rd.path)

    with rd.status(finish):
        write("running")
        yield


def run_in_turn(
    out_dir: str | Path,
    cfg: ExperimentConfig,
    specs: Sequence[dict[str, Any]],
    train: Callable[[dict[str, Any], dict[str, list[Any]], Progress, Callable[[], None]], None],
    report: Any,
    *,
    column: str = "net",
    threads: contextlib.AbstractContextManager[Any] | None = None,
    **extra: Any,
) -> Path:
    """Train the entries ``specs`` (dicts with a ``name``) one after the other into
    ``out_dir`` (:func:`shared_run_dir`: under mpiexec rank 0 writes it); returns it.

    Each becomes ``{**spec, "error", "time_s", "history": {key: [] for report.HISTORY_KEYS}}``
    and ``train(spec, history, bar, on_record)`` fills its history (``on_record()`` writes
    the partial run at most every 2 s); a FloatingPointError (a diverged run) is kept as its
    ``error``. The metrics files (:func:`~bnlab.experiments.report.write_run_metrics` with
    ``report.SCHEMA``, ``column``, ``extra``) are written after every entry and however the
    run ends, then ``report.render(out_dir)``; ``threads`` (a context) is held throughout.
    """
    settings, steps = cfg.to_dict(), int(getattr(cfg, "steps", 0) or 0)
    entries: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    last = [t0]
    show = bool(getattr(cfg, "progress", True)) and is_root()
    bar = Progress(steps * len(specs), cfg.NAME, enabled=show)

    with shared_run_dir(out_dir, settings, cfg.NAME) as rd:

        @root_only
        def write(status: str) -> None:
            last[0], keys = time.perf_counter(), report.HISTORY_KEYS
            wall, schema = last[0] - t0, report.SCHEMA
            write_run_metrics(
                rd, settings, schema, status, wall, entries, keys, column=column, **extra
            )

        def on_record() -> None:  # the partial run, for a reader meanwhile
            if time.perf_counter() - last[0] >= 2.0:
                write("running")

        with recording(rd, bar, write, report.render), threads or contextlib.nullcontext():
            for spec in specs:
                t, done = time.perf_counter(), bar.n
                entry: dict[str, Any] = {**spec, "error": None, "time_s": None}
                entry["history"] = {k: [] for k in report.HISTORY_KEYS}
                entries.append(entry)
                try:
                    with np.errstate(over="ignore", invalid="ignore"):
                        train(spec, entry["history"], bar, on_record)
                except FloatingPointError as e:
                    entry["error"] = str(e)
                finally:
                    entry["time_s"] = round(time.perf_counter() - t, 3)
                bar.update(done + steps - bar.n)  # a diverged run stops early
                write("running")
    return rd.path
