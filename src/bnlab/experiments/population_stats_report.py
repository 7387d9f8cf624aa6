"""Deprecated: the reports of ``population-stats`` and ``population-stats-epochs`` are
:mod:`bnlab.experiments.population.report` now; this module re-exports its public names for
one release."""

from __future__ import annotations

import warnings

from bnlab.experiments.population.report import TRAINED, pct, pp, render, render_epochs

__all__ = ["TRAINED", "pct", "pp", "render", "render_epochs"]

warnings.warn(
    "bnlab.experiments.population_stats_report moved to bnlab.experiments.population.report; "
    "import it from there",
    DeprecationWarning,
    stacklevel=2,
)
