"""Floor 5: the ``bnlab`` command. Nothing imports it.

    bnlab experiments                          list the experiments
    bnlab run EXPERIMENT [options] --out DIR   run one; ``bnlab run EXPERIMENT --help``
    bnlab report DIR                           re-render a finished or interrupted run

Ctrl-C during ``bnlab run`` leaves a valid partial run (config, metrics so far, status
"interrupted", report) and exits with status 130.

Adding a subcommand: write ``def _add_NAME(sub) -> None`` that calls ``sub.add_parser(NAME,
...)`` and sets ``func=handler`` (``handler(args) -> int`` exit status), then append
``("NAME", _add_NAME)`` to ``SUBCOMMANDS`` below. ``recalibrate`` and ``export`` are reserved
for the deployment helpers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bnlab import __version__

# argparse keys that belong to the command line, not to an experiment's config
_CLI_KEYS = {"command", "experiment", "out", "force", "func"}

SubParsers = Any  # argparse._SubParsersAction, which is private


def _cmd_experiments(args: argparse.Namespace) -> int:
    from bnlab import experiments

    names = experiments.available()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {experiments.get(name).DESCRIPTION}")
    return 0


def _add_experiments(sub: SubParsers) -> None:
    p = sub.add_parser(
        "experiments",
        help="list the experiments",
        description="List the experiments `bnlab run` knows, with a one-line description each.",
    )
    p.set_defaults(func=_cmd_experiments)


def _cmd_run(args: argparse.Namespace) -> int:
    from bnlab import experiments

    module = experiments.get(args.experiment)
    out = Path(args.out) if args.out else Path("runs") / args.experiment
    if (out / "config.json").exists() and not args.force:
        print(
            f"bnlab: error: {out} already holds a run (config.json); choose another --out or "
            "pass --force to overwrite it",
            file=sys.stderr,
        )
        return 2
    config = {k: v for k, v in vars(args).items() if k not in _CLI_KEYS}
    try:
        result = module.run(config, out)
    except KeyboardInterrupt:
        print(
            f"\nbnlab: interrupted; the partial run is in {out} (report: {out / 'report.html'}; "
            f"`bnlab report {out}` re-renders it)",
            file=sys.stderr,
        )
        return 130
    print(f"bnlab: done. Report: {Path(result) / 'report.html'} (and report.md)")
    return 0


def _add_run(sub: SubParsers) -> None:
    from bnlab import experiments

    p = sub.add_parser(
        "run",
        help="run an experiment",
        description="Run an experiment; `bnlab run EXPERIMENT --help` lists its options.",
    )
    exp_sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name in experiments.available():
        module = experiments.get(name)
        # argparse %-formats help strings: a literal % (as in "77%") must be doubled
        helptext = module.DESCRIPTION.replace("%", "%%")
        ep = exp_sub.add_parser(name, help=helptext, description=module.DESCRIPTION)
        module.add_arguments(ep)
        ep.add_argument("--out", default=None, help="run directory (default: runs/EXPERIMENT)")
        ep.add_argument("--force", action="store_true", help="overwrite a run already in --out")
        ep.set_defaults(func=_cmd_run)


def _cmd_report(args: argparse.Namespace) -> int:
    from bnlab import experiments
    from bnlab.experiments.report import read_json, render_generic

    run_dir = Path(args.dir)
    config = read_json(run_dir / "config.json")
    name = config.get("experiment")
    module = experiments.get(name) if name in experiments.available() else None
    render = getattr(module, "render", None)
    page = render(run_dir) if render is not None else render_generic(run_dir)
    print(f"bnlab: report written: {page} (and report.md)")
    return 0


def _add_report(sub: SubParsers) -> None:
    p = sub.add_parser(
        "report",
        help="re-render the report of a run",
        description="Re-draw the figures and rewrite report.md/report.html of a finished or "
        "interrupted run directory from its config.json and metrics.json.",
    )
    p.add_argument("dir", metavar="DIR", help="the run directory (`bnlab run ... --out DIR`)")
    p.set_defaults(func=_cmd_report)


def _deploy_command(add_name: str, sub: SubParsers) -> None:
    """``bnlab recalibrate`` / ``bnlab export``, implemented in bnlab.deploy.cli_commands."""
    from bnlab.deploy import cli_commands

    getattr(cli_commands, add_name)(sub)


# (name, add_parser_fn) registrations, in the order `bnlab --help` lists them. Another helper
# adds a subcommand (e.g. "recalibrate", "export") by appending one entry here.
SUBCOMMANDS: list[tuple[str, Callable[[SubParsers], None]]] = [
    ("experiments", _add_experiments),
    ("run", _add_run),
    ("report", _add_report),
    ("recalibrate", lambda sub: _deploy_command("add_recalibrate", sub)),
    ("export", lambda sub: _deploy_command("add_export", sub)),
]


def build_parser() -> argparse.ArgumentParser:
    """The ``bnlab`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="bnlab",
        description="bnlab: batch normalization from first principles. Run the experiments of "
        "the batch normalization papers and render their reports.",
    )
    parser.add_argument("--version", action="version", version=f"bnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, add in SUBCOMMANDS:
        add(sub)
    return parser


def _limit_blas_threads(argv: Sequence[str]) -> None:
    """Default OPENBLAS_NUM_THREADS to 1 for the small-matrix experiments (see
    ``bnlab.experiments.SINGLE_THREAD_BLAS``); only effective before NumPy is imported."""
    from bnlab.experiments import SINGLE_THREAD_BLAS

    if len(argv) >= 2 and argv[0] == "run" and argv[1] in SINGLE_THREAD_BLAS:
        if "numpy" not in sys.modules:
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnlab`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _limit_blas_threads(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"bnlab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
