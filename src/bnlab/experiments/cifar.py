"""What the CIFAR-10 experiments share (cifar10-keras, cifar10-resnet, batch-size): the data
named by ``--data`` (or ``$BNLAB_CIFAR``) loaded and checked
(:func:`~bnlab.experiments.config.check_batch`), the ``--resume`` check of a run directory,
the course of a run, and the first lines of a report. Light to import (no training floor):
the reports import it too."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bnlab.comm import world
from bnlab.data.cifar_source import CifarData, load_cifar10_data, resolve_data_path
from bnlab.data.sources import describe_source
from bnlab.experiments.rundir import RunDir, lock_run_dir, read_json, release_run_dir, run_status

if TYPE_CHECKING:  # the config module imports the training floor: not needed by reports
    from bnlab.experiments.config import ExperimentConfig

__all__ = ["load", "read_run", "recorded", "resumed_config", "subsets_note"]

C = TypeVar("C", bound="ExperimentConfig")


def load(cfg: C, name: str) -> tuple[C, dict[str, Any], CifarData]:
    """``(config, record, data)``: ``cfg.data`` loaded with its train/test subsets (0 or None:
    all; progress shown on rank 0 only) and checked against them (``cfg.check_data``); the
    config with the path found; ``record``, what ``config.json`` holds (its ``to_dict()`` and
    the ``data_source``)."""
    c: Any = cfg  # a CIFAR experiment's: data, train_subset, test_subset, progress, check_data
    path = resolve_data_path(c.data, where=name)
    source = describe_source(path)
    data = load_cifar10_data(
        path, source, c.train_subset or None, c.test_subset or None,
        progress=None if c.progress and world().is_root else False, where=name,
    )  # fmt: skip
    c.check_data(len(data.y_train), len(data.y_test))
    cfg = cfg.replace(data=str(path))
    return cfg, {**cfg.to_dict(), "data_source": source}, data


def resumed_config(
    cfg: ExperimentConfig, record: dict[str, Any], out: Path, name: str
) -> dict[str, Any] | None:
    """The ``config.json`` of run directory ``out`` that ``--resume`` continues (None if there
    is none), after locking ``out`` (rank 0, the rank that writes) and checking that the run
    had the same ``cfg.resume_keys()`` as ``record``: a ValueError names those that differ."""
    path = out / "config.json"
    if not path.is_file():
        return None
    if world().is_root:
        lock_run_dir(out)
    old = read_json(path)
    if not isinstance(old, dict):
        raise ValueError(f"{name} --resume: {path} is not a bnlab config")
    diff = [k for k in cfg.resume_keys() if old.get(k) != record[k]]
    if diff:
        raise ValueError(
            f"{name} --resume: {out} was run with different {diff}: "
            f"{ {k: old.get(k) for k in diff} }; use a new --out or the same options"
        )
    return old


@contextlib.contextmanager
def recorded(
    out: Path,
    snapshot: Callable[[str], None],
    render: Callable[[Path], Any],
    trainers: Sequence[Any] = (),
) -> Iterator[None]:
    """The body of a run in ``out`` (taken by ``start_run_dir``): ``snapshot("running")``
    first; however the body ends (:func:`~bnlab.experiments.rundir.run_status`),
    ``snapshot(status)`` and on rank 0 ``render(out)``, then, whatever they raised, every
    trainer's ``end()`` and the directory released."""

    def finish(status: str) -> None:
        try:
            snapshot(status)
            if world().is_root:
                render(out)
        finally:
            for trainer in trainers:
                trainer.end()
            release_run_dir(out)

    with run_status(finish):
        snapshot("running")
        yield


def read_run(
    run_dir: str | Path, **empty: Any
) -> tuple[RunDir, dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """``(run directory, config, metrics, data source, data tag)`` of a CIFAR run, for its
    report; ``empty``: the metrics of a run that wrote none yet (:meth:`RunDir.read_metrics`)."""
    rd = RunDir(run_dir)
    cfg = rd.read_json("config.json")
    metrics = rd.read_metrics(**empty)
    src: dict[str, Any] = metrics.get("data") or cfg.get("data_source") or {}
    return rd, cfg, metrics, src, src.get("tag", "CIFAR-10")


def subsets_note(cfg: dict[str, Any], source: str) -> list[str]:
    """The report's note on a run trained on subsets (not comparable with ``source``), or []."""
    if not (cfg.get("train_subset") or cfg.get("test_subset")):
        return []
    return [
        f"Subsets: {cfg.get('train_subset') or 'all'} training and "
        f"{cfg.get('test_subset') or 'all'} test images; not comparable with the {source}."
    ]
