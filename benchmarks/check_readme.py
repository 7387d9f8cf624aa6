"""Is the README true? Rerun its short experiments with its commands and compare the tables.

    python benchmarks/check_readme.py regenerate [--size full|ci] [--only NAME ...]
    python benchmarks/check_readme.py check      [--size full|ci] [--only NAME ...]

Both modes run the same commands (:data:`COMMANDS`, ``bnlab run NAME ARGS`` in a fresh
process each, as a user types them) and render each run's table with the functions
``benchmarks/readme_tables.py`` uses (:func:`bnlab.experiments.tables.readme_tables`).

- ``regenerate`` writes the tables, the commands and the runs' provenance (versions, BLAS,
  CPU, threads: :mod:`bnlab.provenance`) to ``benchmarks/readme_numbers.json``, the record
  the README's tables are pasted from, and prints them.
- ``check`` compares the fresh tables with the record, digit for digit, and (size ``full``)
  checks that every recorded table and its command appear verbatim in README.md or docs/*.md.
  A mismatch prints the differing lines and what differs between the recorded environment
  and this one; exit status 1.

Sizes: ``full`` are the README's own commands (minutes on 2 cores); ``ci`` are the same
experiments cut to seconds each, recorded for the CI check (``tests/test_check_readme.py``).
The claims that rest on noisy numbers (renorm-small-batch's microbatch and non-i.i.d. rows,
mnist-lr's learning-rate rows) are run over several seeds (``--seeds``: mean and min-max), at
both sizes, so the multi-seed tables are what is recorded and checked.
The numbers are bit-reproducible with the pinned set (``requirements/pinned.txt``) on the same
CPU kind and thread counts; OpenBLAS picks its kernels by CPU, so another CPU may round
differently (the check then names the CPU difference).
"""

from __future__ import annotations

import argparse
import difflib
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bnlab.experiments.tables import readme_tables
from bnlab.provenance import differences

ROOT = Path(__file__).resolve().parents[1]
RECORD = Path(__file__).with_name("readme_numbers.json")

# size -> experiment -> the arguments of `bnlab run NAME` (the README states the full ones
# beside their tables)
COMMANDS: dict[str, dict[str, list[str]]] = {
    "full": {
        "population-stats": ["--steps", "1000", "--eval-every", "250"],
        "renorm-small-batch": ["--seeds", "3"],
        "mnist-lr": ["--seeds", "3"],
        "mnist-sigmoid": ["--steps", "5000", "--lr", "0.1", "3"],
    },
    "ci": {
        "population-stats": [
            "--steps", "100", "--eval-every", "50", "--train-subset", "6000",
            "--test-subset", "1000", "--recal-examples", "1200",
        ],
        "renorm-small-batch": [
            "--steps", "100", "--seeds", "2", "--train-subset", "6000", "--test-subset", "1000",
        ],
        "mnist-lr": [
            "--steps", "100", "--seeds", "2", "--train-subset", "6000", "--test-subset", "1000",
        ],
        "mnist-sigmoid": [
            "--steps", "200", "--lr", "0.5", "--train-subset", "6000", "--test-subset", "1000",
        ],
    },
}  # fmt: skip


def command(name: str, args: list[str]) -> str:
    """The command as the README writes it."""
    return shlex.join(["bnlab", "run", name, *args])


def run_table(name: str, args: list[str], out: Path) -> tuple[str, dict[str, Any]]:
    """Run ``bnlab run NAME ARGS`` into ``out`` in a fresh process; its README table (the
    source comment left out) and its provenance."""
    argv = [sys.executable, "-m", "bnlab.cli", "run", name, *args]
    subprocess.run([*argv, "--out", str(out), "--force", "--no-progress"], check=True)
    table = readme_tables([out]).split("\n", 1)[1]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    return table, config.get("provenance") or {}


def _run_all(size: str, names: list[str], workdir: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for name in names:
        args = COMMANDS[size][name]
        print(f"check_readme: {command(name, args)}", file=sys.stderr, flush=True)
        table, prov = run_table(name, args, workdir / size / name)
        results[name] = {"command": command(name, args), "table": table, "provenance": prov}
    return results


def _load_record() -> dict[str, Any]:
    return json.loads(RECORD.read_text(encoding="utf-8")) if RECORD.is_file() else {}


def regenerate(size: str, names: list[str], workdir: Path) -> dict[str, Any]:
    """Run ``names`` at ``size`` and write their tables into the record; returns them."""
    record = _load_record()
    results = _run_all(size, names, workdir)
    record.setdefault(size, {}).update(results)
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for r in results.values():
        print(f"{r['command']}\n\n{r['table']}")
    return results


def _docs_text() -> str:
    return "\n".join(
        p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")]
    )


def check(size: str, names: list[str], workdir: Path, docs: bool = True) -> list[str]:
    """Run ``names`` at ``size``; the problems found (empty: the record holds)."""
    recorded = _load_record().get(size, {})
    missing = [n for n in names if n not in recorded]
    if missing:
        return [f"no recorded {size} numbers for {missing}: run `check_readme.py regenerate`"]
    problems = []
    text = _docs_text() if docs and size == "full" else None
    for name, now in _run_all(size, names, workdir).items():
        rec = recorded[name]
        if now["table"] != rec["table"]:
            diff = difflib.unified_diff(
                rec["table"].splitlines(), now["table"].splitlines(), "recorded", "now", lineterm=""
            )
            env = differences(rec.get("provenance"), now["provenance"]) or ["none"]
            problems.append(
                f"{rec['command']}: the table differs\n" + "\n".join(diff)
                + "\nenvironment differences from the recorded run: " + "; ".join(env)
            )  # fmt: skip
        if now["command"] != rec["command"]:
            problems.append(f"{name}: command {now['command']!r}, recorded {rec['command']!r}")
        if text is not None:
            for what in ("command", "table"):
                if rec[what].strip() not in text:
                    problems.append(f"{name}: the recorded {what} is not in README.md or docs/")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["check", "regenerate"])
    p.add_argument("--size", choices=sorted(COMMANDS), default="full")
    p.add_argument("--only", nargs="+", metavar="NAME", help="these experiments only")
    p.add_argument("--runs", type=Path, help="keep the run directories here (default: a temp dir)")
    p.add_argument("--no-docs", action="store_true", help="do not look for the tables in the docs")
    args = p.parse_args(argv)
    names = args.only or list(COMMANDS[args.size])
    unknown = sorted(set(names) - set(COMMANDS[args.size]))
    if unknown:
        p.error(f"--only: no {args.size} command for {unknown}; known: {list(COMMANDS[args.size])}")
    with tempfile.TemporaryDirectory(prefix="bnlab-readme-") as tmp:
        workdir = args.runs or Path(tmp)
        if args.mode == "regenerate":
            regenerate(args.size, names, workdir)
            return 0
        problems = check(args.size, names, workdir, docs=not args.no_docs)
    for problem in problems:
        print(f"check_readme: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_readme: the {args.size} numbers of {', '.join(names)} reproduce exactly")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
