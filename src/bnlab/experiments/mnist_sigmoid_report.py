"""Deprecated: the report of ``mnist-sigmoid`` moved to :mod:`bnlab.experiments.mnist.report`;
the paragraphs it shared with ``mnist-lr`` to :mod:`bnlab.experiments.mnist.text`, the numbers
to :mod:`bnlab.experiments.mnist.numbers`, the figures to :mod:`bnlab.experiments.mnist.figures`.
Importing this module warns; its names stay for one release, with their old arguments (config
dicts, run directory paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnlab.experiments.mnist import readme as _readme
from bnlab.experiments.mnist import report as _report
from bnlab.experiments.mnist import text as _text
from bnlab.experiments.mnist.compat import as_config, config_of, warn_moved
from bnlab.experiments.mnist.config import MnistSigmoidConfig
from bnlab.experiments.mnist.figures import COLOR, LABEL
from bnlab.experiments.mnist.numbers import (
    curves,
    final,
    first_step_reaching,
    judge,
    mean_curve,
    summarize,
)
from bnlab.experiments.mnist.readme import README_RUN
from bnlab.experiments.mnist.report import (
    PAPER_SOURCE,
    advantage_sentence,
    comparison_rows,
    final_table,
    suggest_rates,
)
from bnlab.experiments.mnist.text import acc_cell, accuracy_caption, short_run_note, status_text
from bnlab.experiments.report import pct, pp
from bnlab.experiments.rundir import RunDir

__all__ = [
    "COLOR",
    "LABEL",
    "PAPER_SOURCE",
    "README_RUN",
    "acc_cell",
    "accuracy_caption",
    "advantage_sentence",
    "comparison_rows",
    "curves",
    "fig_accuracy",
    "final",
    "final_table",
    "first_step_reaching",
    "judge",
    "mean_curve",
    "pct",
    "pp",
    "readme_paragraph",
    "render_full",
    "render_sweep",
    "setup_paragraph",
    "short_run_note",
    "status_text",
    "suggest_rates",
    "summarize",
]

warn_moved("mnist_sigmoid_report", "mnist.report")


def fig_accuracy(run_dir: Path, metrics: dict[str, Any], filename: str = "fig_accuracy.png") -> str:
    """Figure 1a into ``run_dir/filename``, which must be ``fig_NAME.png``."""
    from bnlab.experiments.mnist import figures

    if not (filename.startswith("fig_") and filename.endswith(".png")):
        raise ValueError(f"fig_accuracy: filename must be fig_NAME.png, got {filename!r}")
    return figures.fig_accuracy(RunDir(run_dir), metrics, name=filename[4:-4])


def setup_paragraph(cfg: Any) -> str:
    """:func:`bnlab.experiments.mnist.text.setup_paragraph` of a config dict or object."""
    return _text.setup_paragraph(as_config(cfg))


def readme_paragraph(cfg: Any, metrics: dict[str, Any]) -> str:
    """:func:`bnlab.experiments.mnist.readme.readme_paragraph` of a config dict or object."""
    return _readme.readme_paragraph(config_of(cfg, MnistSigmoidConfig), metrics)


def render_full(run_dir: Path, cfg: Any, metrics: dict[str, Any]) -> None:
    """:func:`bnlab.experiments.mnist.report.render_full` into ``run_dir``."""
    _report.render_full(RunDir(run_dir), config_of(cfg, MnistSigmoidConfig), metrics)


def render_sweep(run_dir: Path, cfg: Any, metrics: dict[str, Any]) -> None:
    """:func:`bnlab.experiments.mnist.report.render_sweep` into ``run_dir``."""
    _report.render_sweep(RunDir(run_dir), config_of(cfg, MnistSigmoidConfig), metrics)
