"""Shared report rendering: JSON/CSV files, figures, Markdown and HTML."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnlab.experiments.report import Report, format_value, new_figure, plot_band, save_figure
from bnlab.experiments.rundir import RunDir, read_json, write_csv, write_json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100
        assert len(np.unique(np.asarray(im.convert("L")))) > 2  # not a blank canvas


def test_write_json_is_strict_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json(path, {"a": math.nan, "b": [np.float32(1.5), math.inf], "c": np.arange(2)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": [0, 1]}
    assert read_json(path)["b"][0] == 1.5
    assert not list(tmp_path.glob("*.tmp"))


def test_read_json_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        read_json(tmp_path / "nothere.json")


def test_write_csv_round_trip(tmp_path: Path) -> None:
    write_csv(tmp_path / "m.csv", ["step", "acc"], [[0, 0.1], [10, None]])
    rows = list(csv.reader(open(tmp_path / "m.csv", newline="")))
    assert rows == [["step", "acc"], ["0", "0.1"], ["10", ""]]


def test_format_value() -> None:
    assert format_value(0.123456) == "0.1235"
    assert format_value(None) == "—" and format_value(math.nan) == "—"
    assert format_value(7) == "7"


def test_report_markdown_and_html(tmp_path: Path) -> None:
    rep = Report("Title <x>")
    rep.heading("Numbers")
    rep.paragraph("BN is **faster** in `this` run & that one.")
    rep.bullets(["one", "two"])
    rep.table(["lr", "acc"], [[0.5, 0.98765], ["1", None]])
    rep.figure("fig_a.png", "Figure 1a")
    md, page = rep.write(tmp_path)
    text = md.read_text()
    assert text.startswith("# Title <x>")
    assert "| lr | acc |" in text and "| 0.5000 | 0.9877 |" in text and "| 1 | — |" in text
    assert "![Figure 1a](fig_a.png)" in text and "- two" in text
    html = page.read_text()
    assert "<title>Title &lt;x&gt;</title>" in html
    assert '<img src="fig_a.png"' in html
    assert "<strong>faster</strong>" in html and "<code>this</code>" in html
    assert "&amp; that" in html and '<td style="text-align:right">0.9877</td>' in html


def test_plot_band_and_save_figure_write_a_png(tmp_path: Path) -> None:
    fig, axes = new_figure(1, 2)
    steps = [0, 10, 20, 30]
    plot_band(axes[0][0], steps, [[0.1, 0.5, 0.7, 0.8], [0.1, 0.4, 0.6]], label="a")
    plot_band(axes[0][1], steps, [[0.2, None, 0.3, 0.4]], label="b")
    line = axes[0][0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [0.1, 0.45, 0.65, 0.8])  # mean of seeds there
    path = save_figure(fig, tmp_path / "f.png")
    assert_png(path)


def test_run_dir_reads_metrics_or_says_not_started_and_writes_history_csv(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.read_metrics(runs=[]) == {"status": "not started", "runs": []}
    rd.write_metrics({"status": "complete", "best": 0.9})
    assert rd.read_metrics(runs=[]) == {"status": "complete", "best": 0.9}
    hist = {"step": [0, 5], "acc": [0.1, None]}
    rd.write_history_csv(
        ["run"], [(("a",), hist), (("b",), {"step": [], "acc": []})], ["step", "acc"]
    )
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "run,step,acc",
        "a,0,0.1",
        "a,5,",
    ]


def test_html_comes_from_a_markdown_library(tmp_path: Path) -> None:
    rep = Report("Emphasis")
    rep.paragraph("An *emphasized* word, a <b>tag</b> and a pipe.")
    rep.table(["a|b", "c"], [["x", "*y*"]])
    rep.figure("f.png", "Figure *1*")
    md, page = rep.write(tmp_path)
    html = page.read_text()
    assert "<em>emphasized</em>" in html and "*emphasized*" not in html
    assert "&lt;b&gt;tag&lt;/b&gt;" in html  # raw HTML in the text is escaped, not rendered
    assert "<th>a|b</th>" in html and "<td><em>y</em></td>" in html  # the pipe stays in its cell
    assert '<img src="f.png" alt="Figure 1"' in html
    assert '<p class="caption">Figure <em>1</em></p>' in html
    assert "| a\\|b | c |" in md.read_text()
