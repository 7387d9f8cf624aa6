"""Same seed, same bits: run short experiments into a directory, compare two such directories.

A refactoring that claims "behaviour unchanged" shows it with this script (issue 12): run the
short experiments before and after the change, then compare every ``metrics.json`` exactly.

Usage (from the repository root)::

    # run the short experiments with the working tree's bnlab into /tmp/after
    .venv/bin/python benchmarks/compare_runs.py run /tmp/after

    # the same with the committed code of a revision (exported with `git archive` into a
    # temporary directory and put first on PYTHONPATH; the working tree is not touched)
    .venv/bin/python benchmarks/compare_runs.py run /tmp/before --rev HEAD~5

    # the same with another source tree (e.g. a revision with one patch applied on top)
    .venv/bin/python benchmarks/compare_runs.py run /tmp/patched --src /tmp/checkout/src

    # add the CIFAR-10 run (1 epoch on 1,024 training images) given the data
    .venv/bin/python benchmarks/compare_runs.py run /tmp/after \
        --cifar ../shared/data/cifar10-jpeg-q75.tar.gz

    # compare: exit status 0 when every metrics.json matches, 1 otherwise
    .venv/bin/python benchmarks/compare_runs.py compare /tmp/before /tmp/after

``run --only NAME ...`` runs a subset (names: see :data:`RUNS`, which must be registered
experiments of :mod:`bnlab.experiments`); ``compare --only NAME ...`` compares only those runs
(e.g. a subset run against a full one). ``compare`` parses both files
and drops the wall-time fields (keys ending in ``_s``: ``wall_time_s``, ``time_s``,
``compile_s``; they differ from run to run by nature), then compares the rest as canonical JSON
text. Python writes floats with ``repr``, which round-trips exactly, so equal text means equal
bits. It also says whether the raw files are byte-identical (they are not when a wall time is
in them). A missing run on either side is a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: name -> arguments after `bnlab run` (each writes its run directory to DIR/name)
RUNS: dict[str, list[str]] = {
    "mnist-sigmoid": ["mnist-sigmoid", "--steps", "600"],
    "renorm-small-batch": [
        "renorm-small-batch",
        "--steps",
        "300",
        "--train-subset",
        "6000",
        "--test-subset",
        "2000",
    ],
    "mnist-lr": ["mnist-lr", "--steps", "300", "--multipliers", "1", "5"],
    "population-stats": [
        "population-stats",
        "--steps",
        "300",
        "--recal-examples",
        "3000",
        "--test-subset",
        "2000",
    ],
}
CIFAR_RUN = ["cifar10-keras", "--epochs", "1", "--train-subset", "1024"]


def _export(rev: str, into: Path) -> Path:
    """``src/`` of git revision ``rev`` extracted under ``into``; returns that ``src``."""
    proc = subprocess.Popen(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
        tf.extractall(into, filter="data")
    if proc.wait() != 0:
        raise SystemExit(f"compare_runs: `git archive {rev}` failed (is {rev!r} a revision?)")
    return into / "src"


def _command(args: list[str], out: Path) -> list[str]:
    code = "import sys; from bnlab.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "run", *args, "--no-progress", "--force", "--out", str(out)]


def run_all(directory: Path, names: list[str], *, cifar: str | None, src: Path | None) -> int:
    """Run every named experiment into ``directory/NAME``; returns the number that failed."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    runs = {name: RUNS[name] for name in names}
    if cifar is not None:
        runs["cifar10-keras"] = [*CIFAR_RUN, "--data", cifar]
    directory.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name, args in runs.items():
        t0 = time.perf_counter()
        proc = subprocess.run(_command(args, directory / name), env=env, cwd=directory)
        took = time.perf_counter() - t0
        print(f"{name}: exit {proc.returncode} in {took:.0f} s", flush=True)
        failed += proc.returncode != 0
    return failed


def _drop_times(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_times(v) for k, v in obj.items() if not str(k).endswith("_s")}
    if isinstance(obj, list):
        return [_drop_times(v) for v in obj]
    return obj


def compare(a: Path, b: Path, only: list[str] | None = None) -> bool:
    """Print one line per run found in either directory (or per name of ``only``); True when
    all metrics match."""
    names = only or sorted({p.parent.name for d in (a, b) for p in d.glob("*/metrics.json")})
    if not names:
        print(f"compare_runs: no */metrics.json under {a} or {b}")
        return False
    ok = True
    for name in names:
        fa, fb = a / name / "metrics.json", b / name / "metrics.json"
        if not (fa.is_file() and fb.is_file()):
            print(f"{name}: MISSING in {a if not fa.is_file() else b}")
            ok = False
            continue
        raw_same = fa.read_bytes() == fb.read_bytes()
        ta, tb = (json.dumps(_drop_times(json.loads(f.read_text()))) for f in (fa, fb))
        if ta == tb:
            note = "byte-identical file" if raw_same else "identical except wall times"
            print(f"{name}: SAME ({note})")
        else:
            ok = False
            first = next(i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y)
            print(f"{name}: DIFFERENT at char {first}: {ta[first - 60 : first + 60]!r}")
            print(f"{' ' * len(name)}            vs: {tb[first - 60 : first + 60]!r}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the short experiments into DIR/NAME")
    p_run.add_argument("directory", type=Path)
    p_run.add_argument("--only", nargs="+", choices=sorted(RUNS), default=sorted(RUNS))
    p_run.add_argument("--cifar", help="CIFAR-10 data for cifar10-keras (else skipped)")
    which = p_run.add_mutually_exclusive_group()
    which.add_argument("--rev", help="run the code of this git revision instead of src/")
    which.add_argument("--src", type=Path, help="run the bnlab package under this src/ dir")
    p_cmp = sub.add_parser("compare", help="compare DIR_A/*/metrics.json with DIR_B's")
    p_cmp.add_argument("a", type=Path)
    p_cmp.add_argument("b", type=Path)
    p_cmp.add_argument("--only", nargs="+", help="compare only these runs")
    args = parser.parse_args(argv)
    if args.command == "compare":
        return 0 if compare(args.a, args.b, args.only) else 1
    cifar = str(Path(args.cifar).resolve()) if args.cifar else None
    directory = args.directory.resolve()
    if args.rev is None:
        src = None if args.src is None else args.src.resolve()
        return 1 if run_all(directory, args.only, cifar=cifar, src=src) else 0
    with tempfile.TemporaryDirectory(prefix="compare_runs-") as tmp:
        src = _export(args.rev, Path(tmp))
        return 1 if run_all(directory, args.only, cifar=cifar, src=src) else 0


if __name__ == "__main__":
    sys.exit(main())
