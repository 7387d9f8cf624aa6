"""Every benchmark's output ends with what produced it (benchmarks/harness.py)."""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path

import pytest

from bnlab import provenance

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("harness", ROOT / "benchmarks/harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["harness"]


def test_the_line_names_the_commit_versions_threads_cpu_and_torch(harness, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    line = harness.provenance_line()
    p = provenance.collect(world_size=1)
    commit = p["bnlab"]["commit"]
    assert commit is None or commit[:10] in line
    for part in (f"NumPy {p['packages']['numpy']}", f"Numba {p['packages']['numba']}",
                 f"PyTorch {metadata.version('torch')}", "OMP_NUM_THREADS=1", "thread(s)",
                 f"CPU {p['cpu']['model']}"):  # fmt: skip
        assert part in line, part


def test_a_benchmarks_child_prints_nothing_more(harness, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_x.py", "--child", "ours"])
    harness.print_provenance()
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "argv", ["bench_x.py"])
    harness.print_provenance()
    assert capsys.readouterr().out.startswith("\nProduced by: bnlab ")
