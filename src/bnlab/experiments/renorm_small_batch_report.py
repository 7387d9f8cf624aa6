"""Deprecated: the report of ``renorm-small-batch`` is :mod:`bnlab.experiments.renorm.report`.

This module re-exports its public names for one release; ``write_metrics`` still accepts a
run directory path.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from bnlab.experiments.renorm import report as _report
from bnlab.experiments.renorm.report import (
    HISTORY_KEYS,
    PAPER,
    SCHEMA,
    TRAINED,
    findings,
    render,
    summary_rows,
)
from bnlab.experiments.rundir import RunDir

__all__ = [
    "HISTORY_KEYS",
    "PAPER",
    "SCHEMA",
    "TRAINED",
    "findings",
    "render",
    "summary_rows",
    "write_metrics",
]

warnings.warn(
    "bnlab.experiments.renorm_small_batch_report moved to bnlab.experiments.renorm.report; "
    "import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def write_metrics(
    out: str | Path | RunDir,
    cfg: dict[str, Any],
    schedule: dict[str, int],
    runs: list[dict[str, Any]],
    status: str,
    wall: float,
) -> None:
    """:func:`bnlab.experiments.renorm.report.write_metrics` into a path or a RunDir."""
    rd = out if isinstance(out, RunDir) else RunDir(out)
    _report.write_metrics(rd, cfg, schedule, runs, status, wall)
