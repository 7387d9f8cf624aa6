"""benchmarks/check_readme.py: the README's experiments rerun give the recorded tables.

The CI-sized check runs in `make test` (about a minute on 2 cores): each short experiment
with its ``ci`` command, compared digit for digit with ``benchmarks/readme_numbers.json``. The
numbers are bit-reproducible only in the environment they were recorded in (same packages,
CPU kind, thread counts: OpenBLAS picks kernels by CPU); elsewhere the test checks that the
same command run twice gives the same table (determinism) unless BNLAB_README_STRICT=1.
The full-size check (the README's own commands, minutes) runs with BNLAB_CHECK_README=1.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bnlab.provenance import collect

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def check_readme() -> Any:
    spec = importlib.util.spec_from_file_location(
        "check_readme", ROOT / "benchmarks/check_readme.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _environment(p: dict[str, Any]) -> dict[str, Any]:
    """What decides the bits: versions, the BLAS build, Numba's layer and threads, the CPU."""
    return {
        "python": p.get("python"),
        "packages": p.get("packages"),
        "blas": {k: (p.get("blas") or {}).get(k) for k in ("name", "version")},
        "numba": p.get("numba"),
        "cpu": {k: (p.get("cpu") or {}).get(k) for k in ("model", "vector_extensions")},
    }


def test_the_record_states_every_ci_command(check_readme: Any) -> None:
    record = json.loads(check_readme.RECORD.read_text(encoding="utf-8"))
    for name, args in check_readme.COMMANDS["ci"].items():
        assert record["ci"][name]["command"] == check_readme.command(name, args)
        assert record["ci"][name]["table"].startswith("| ")


@pytest.mark.slow
def test_ci_sized_runs_reproduce_the_recorded_tables(check_readme: Any, tmp_path: Path) -> None:
    record = json.loads(check_readme.RECORD.read_text(encoding="utf-8"))["ci"]
    name = "population-stats"  # one experiment keeps the test near a minute; the script does all
    args = check_readme.COMMANDS["ci"][name]
    same_env = _environment(record[name]["provenance"]) == _environment(collect())
    if same_env or os.environ.get("BNLAB_README_STRICT") == "1":
        assert check_readme.check("ci", [name], tmp_path, docs=False) == []
    else:  # another CPU or package set: the digits may differ, determinism may not
        first, _ = check_readme.run_table(name, args, tmp_path / "a")
        second, _ = check_readme.run_table(name, args, tmp_path / "b")
        assert first == second


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("BNLAB_CHECK_README") != "1",
    reason="the README's full-size commands take minutes: set BNLAB_CHECK_README=1",
)
def test_full_size_readme_numbers_are_true(check_readme: Any) -> None:
    assert check_readme.main(["check", "--size", "full"]) == 0
