"""Rendering shared by the experiments: JSON/CSV files, figures and a Markdown + HTML report.

A :class:`Report` is a list of blocks (headings, paragraphs, bullet lists, tables, figures)
written twice: ``report.md`` and a standalone ``report.html`` whose ``<img src>`` point at the
PNG files next to it (relative paths, so the run directory can be moved or zipped whole).
matplotlib is imported only inside the plotting helpers, with the Agg backend.
"""

from __future__ import annotations

import errno
import functools
import html
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bnlab._atomic import atomic_write
from bnlab.experiments.rundir import RunDir, read_json, write_json
from bnlab.provenance import summary

__all__ = [
    "REPORT_FAILED",
    "TRAINED",
    "Report",
    "finish_axes",
    "format_value",
    "markdown_to_html",
    "new_figure",
    "pct",
    "plot_band",
    "pp",
    "renders",
    "run_report",
    "save_figure",
    "stack_curves",
    "status_text",
    "write_run_metrics",
]

# A trained MLP is above 90% on MNIST (chance 10%); below it, differences are of nets that
# have barely started and say nothing about BN's effect on training.
TRAINED = 0.9


def format_value(v: Any, digits: int = 4) -> str:
    """A table cell: floats with ``digits`` decimals, None/NaN as an em dash."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float | np.floating):
        return f"{float(v):.{digits}f}"
    return str(v)


def pct(v: Any, *, missing: str = "—") -> str:
    """An accuracy (a fraction) in percent with two decimals ("97.93%"); None/NaN: ``missing``."""
    return missing if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.2f}%"


def pp(fraction: Any, *, missing: str = "—") -> str:
    """A difference of accuracies (a fraction) in signed percentage points ("+0.45 pp")."""
    if fraction is None or not math.isfinite(float(fraction)):
        return missing
    return f"{100 * float(fraction):+.2f} pp"


def status_text(metrics: dict[str, Any], after: str, wall_includes: str) -> str:
    """A report's first line: "Status: **complete** AFTER, wall time N s (WALL_INCLUDES; ...)."
    with the compilation caveat, and a warning when the run is partial."""
    text = f"Status: **{metrics.get('status', 'unknown')}**" + (f" {after}" if after else "")
    wall = metrics.get("wall_time_s")
    if isinstance(wall, int | float):
        text += (
            f", wall time {wall:.0f} s ({wall_includes}; the first run after an install also "
            "compiles the Numba kernels, about a minute)"
        )
    if metrics.get("status") != "complete":
        text += "; the numbers below are those of a partial run"
    return text + "."


REPORT_FAILED = "report failed"  # metrics.json's status: trained to the end, report not written
_R = TypeVar("_R")


def renders(render: Callable[[str | Path], _R]) -> Callable[[str | Path], _R]:
    """An experiment's ``render(run_dir)`` that records its own failure (a full disk).

    A run is "complete" only with its report: if ``render`` raises an OSError (a full disk,
    permissions), ``metrics.json`` gets the reason as ``report_error`` and a "complete" status
    becomes :data:`REPORT_FAILED`; the OSError comes back naming the file, saying that the
    results are intact and that ``bnlab report RUN_DIR`` finishes the report (which sets the
    status back to "complete"). Other errors (a file edited by hand) change no file.
    """

    @functools.wraps(render)
    def render_recorded(run_dir: str | Path) -> _R:
        path = Path(run_dir) / "metrics.json"
        metrics = read_json(path) if path.is_file() else None
        try:
            if isinstance(metrics, dict) and metrics.get("status") == REPORT_FAILED:
                metrics = {**metrics, "status": "complete"}
                metrics.pop("report_error", None)
                write_json(path, metrics)
            return render(run_dir)
        except OSError as e:  # the environment (a full disk): the files' content is fine
            recorded = _record_report_error(path, metrics, e)
            if e.errno is None:
                raise
            fix = "free disk space" if e.errno == errno.ENOSPC else "fix that"
            raise type(e)(
                e.errno,
                f"the report of {run_dir} was not finished: {e.strerror}. The run's results "
                f"are intact (metrics, checkpoints); {recorded}. {fix.capitalize()}, then run "
                f"`bnlab report {run_dir}` to finish the report",
            ) from None

    return render_recorded


def _record_report_error(path: Path, metrics: Any, e: OSError) -> str:
    """Write ``e`` into ``metrics.json`` as ``report_error`` (status "complete" ->
    :data:`REPORT_FAILED`); says what was recorded."""
    if not isinstance(metrics, dict):
        return "there is no metrics.json to record it in"
    failed = {**metrics, "report_error": f"{type(e).__name__}: {e}"}
    if failed.get("status") == "complete":
        failed["status"] = REPORT_FAILED
    try:
        write_json(path, failed)
    except OSError:
        return f"{path} could not record it either (its status is {metrics.get('status')!r})"
    return f"{path} says status {failed['status']!r}"


def run_report(
    run_dir: str | Path, title: str, entry: str, wall_includes: str
) -> tuple[RunDir, dict[str, Any], dict[str, Any], Report]:
    """``(run_dir, config, metrics, report)`` of a run of ENTRYs (``metrics[ENTRY + "s"]``;
    ``{"status": "not started", ENTRYs: []}`` before training wrote any): the report titled
    ``title`` starts with the run's status (:func:`status_text`) and its number of ENTRYs."""
    rd = RunDir(run_dir)
    cfg, metrics = rd.read_json("config.json"), rd.read_metrics(**{f"{entry}s": []})
    rep = Report(title)
    count = f"({len(metrics[entry + 's'])} {entry}(s))"
    rep.paragraph(status_text(metrics, count, wall_includes))
    return rd, cfg, metrics, rep


def write_run_metrics(
    rd: RunDir,
    cfg: dict[str, Any],
    schema: str,
    status: str,
    wall: float,
    entries: list[dict[str, Any]],
    keys: Sequence[str],
    *,
    column: str = "net",
    **extra: Any,
) -> None:
    """``metrics.json`` ``{schema, experiment, status, wall_time_s, **extra, COLUMNs:
    entries}`` and ``metrics.csv``: a row per entry and record of its ``history`` (lists
    under ``keys``, ``"step"`` first), the entry's ``name`` in column ``column`` first, a list
    value joined with ';' (6 significant digits)."""
    head = {"schema": schema, "experiment": cfg["experiment"], "status": status}
    rd.write_metrics({**head, "wall_time_s": round(wall, 3), **extra, f"{column}s": entries})
    rows = [
        [e["name"], *(_csv_cell(e["history"][k][i]) for k in keys)]
        for e in entries
        for i in range(len(e["history"]["step"]))
    ]
    rd.write_csv("metrics.csv", [column, *keys], rows)


def _csv_cell(v: Any) -> Any:
    return ";".join(f"{x:.6g}" for x in v) if isinstance(v, list) else v


# -- the document --------------------------------------------------------------------------------

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
    "line-height:1.45}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}"
    "td[style*=right]{white-space:nowrap}img{max-width:100%}"
    "p.caption{font-size:.9em;color:#444;margin-top:0}code{background:#f3f3f3}"
)


def _cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, newlines as spaces."""
    return text.replace("|", "\\|").replace("\n", " ")


# a number, percentage, difference in points, duration or ratio, maybe with a range after it
_NUMERIC = re.compile(r"[+-]?[\d,]*\.?\d+(%| pp| s|x)?( \(.*\))?|—|not reached")


def _align(rows: Sequence[Sequence[str]], j: int) -> str:
    """Markdown alignment of column ``j``: right for numbers, left for text."""
    numeric = rows and all(_NUMERIC.fullmatch(r[j]) for r in rows if j < len(r))
    return "---:" if numeric else "---"


def markdown_to_html(markdown: str, title: str) -> str:
    """A standalone HTML page of CommonMark ``markdown`` (with GFM tables), raw HTML escaped.

    Uses markdown-it-py (the ``experiments`` extra); images keep their relative ``src``.
    """
    try:
        from markdown_it import MarkdownIt
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "rendering report.html needs markdown-it-py: pip install markdown-it-py (or, from "
            "a clone of bnlab: pip install -e '.[experiments]') "
            "(report.md was written; `bnlab report RUN_DIR` renders the HTML afterwards)"
        ) from e
    md = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")
    body = md.render(markdown)
    # a paragraph that is only an emphasized line right after an image is its caption
    body = re.sub(r"(<img [^>]*></p>\n)<p><em>(.*?)</em></p>", r'\1<p class="caption">\2</p>', body)
    t = html.escape(title)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{t}</title><style>{_CSS}</style></head><body>\n{body}</body></html>\n"
    )


class Report:
    """Blocks of a report, written as Markdown and rendered to HTML by a Markdown library.

    Text is Markdown: **bold**, *emphasis*, `code` render in both files.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[format_value(v) for v in row] for row in rows]
        self.blocks.append(("table", ([str(h) for h in header], cells)))

    def figure(self, filename: str, caption: str) -> None:
        """A PNG in the run directory, referenced by its relative file name."""
        self.blocks.append(("figure", (filename, caption)))

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, data in self.blocks:
            if kind == "heading":
                out += ["#" * data[0] + " " + data[1], ""]
            elif kind == "paragraph":
                out += [data, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in data] + [""]
            elif kind == "table":
                header, rows = data
                out.append("| " + " | ".join(_cell(h) for h in header) + " |")
                out.append("|" + "|".join(_align(rows, j) for j in range(len(header))) + "|")
                out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "figure":
                alt = re.sub(r"[\[\]*`_]", "", data[1])
                out += [f"![{alt}]({data[0]})", "", f"*{data[1]}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        return markdown_to_html(self.to_markdown(), self.title)

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.html`` into ``out_dir``; returns both paths."""
        out_dir = Path(out_dir)
        md, page = out_dir / "report.md", out_dir / "report.html"
        text = _with_provenance(self.to_markdown(), out_dir)
        page_bytes = markdown_to_html(text, self.title).encode("utf-8")
        atomic_write(md, lambda f: f.write(text.encode("utf-8")))
        atomic_write(page, lambda f: f.write(page_bytes))
        return md, page


def _with_provenance(markdown: str, run_dir: Path) -> str:
    """``markdown`` with a header line after its title: what produced the run (the
    ``provenance`` of ``run_dir/config.json``, :func:`bnlab.provenance.summary`), if any."""
    cfg = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("provenance"), dict):
        return markdown
    title, _, rest = markdown.partition("\n")
    return f"{title}\n\n*Run with* {summary(cfg['provenance'])}.\n{rest}"


# -- figures -------------------------------------------------------------------------------------


def new_figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = (5.0, 3.6)) -> Any:
    """A matplotlib (Agg) figure with an nrows x ncols grid; returns ``(fig, axes_2d)``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False
    )
    return fig, axes


def finish_axes(axes: Any, *, xlabel: str = "step", legend: int | None = 8) -> None:
    """Every axis of ``axes``: the x label, a light grid and, if it has labelled artists and
    ``legend`` (a font size) is given, a legend."""
    for ax in np.ravel(axes):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if legend and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=legend)


def stack_curves(curves: Sequence[Sequence[Any]], n: int) -> np.ndarray:
    """``curves`` (one per seed, possibly of different lengths, None for a non-finite value)
    as an array of ``n`` columns, NaN where a curve is shorter (an interrupted or diverged
    run)."""
    arr = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        vals = np.array([np.nan if v is None else v for v in c[:n]], dtype=np.float64)
        arr[i, : len(vals)] = vals
    return arr


def plot_band(
    ax: Any,
    steps: Sequence[float],
    curves: Sequence[Sequence[float]],
    *,
    label: str,
    color: str | None = None,
    linestyle: str = "-",
) -> None:
    """Mean of ``curves`` (one per seed, :func:`stack_curves`) and its min-max band; the mean
    at a step is over the seeds that reached it."""
    arr = stack_curves(curves, len(steps))
    with np.errstate(all="ignore"):
        have = ~np.all(np.isnan(arr), axis=0)
        x = np.asarray(steps, dtype=np.float64)[have]
        a = arr[:, have]
        mean = np.nanmean(a, axis=0) if a.size else a.sum(axis=0)
    (line,) = ax.plot(x, mean, label=label, color=color, linestyle=linestyle)
    if len(curves) > 1 and a.size:
        ax.fill_between(
            x, np.nanmin(a, axis=0), np.nanmax(a, axis=0), color=line.get_color(), alpha=0.2
        )


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    try:  # a unique temporary per save: ranks or runs rendering the same figure never clash
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path
