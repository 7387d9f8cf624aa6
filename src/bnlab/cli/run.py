"""``bnlab experiments``, ``bnlab run EXPERIMENT`` and ``bnlab report DIR``.

Each experiment is a :class:`bnlab.experiments.Experiment` of the registry: its ``description``
for the listing, its config class (``config``) for the options of ``bnlab run NAME``: one flag
per field of the class (:func:`add_options`, ``dest`` = the config key), parsed into the
config by ``config.from_dict`` (the command line's own ``--out``/``--force`` left out), which
``run(config, out_dir)`` trains into the run directory; ``render(run_dir)`` is ``bnlab
report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnlab.cli.parser import HelpFormatter, SubParsers, add_command

if TYPE_CHECKING:
    from bnlab.experiments.config import Opt

__all__ = [
    "add_experiments",
    "add_options",
    "add_report",
    "add_run",
    "check_data_parallel",
    "is_root",
]

# argparse keys that belong to the command line, not to an experiment's config
_CLI_KEYS = {"command", "experiment", "out", "force", "func"}


def add_options(p: argparse.ArgumentParser, opts: Mapping[str, Opt]) -> None:
    """The flags of an experiment's options (:meth:`ExperimentConfig.options`), ``dest`` = the
    config key: a bool default makes a flag (``negate``: it stores False), ``nargs`` a list,
    ``parse`` (else the check's kind, else str) converts the text; ``cli=False`` options are
    config keys only."""
    for key, o in opts.items():
        if not o.cli:
            continue
        if isinstance(o.default, bool):
            if o.negate:
                p.add_argument(o.negate, dest=key, action="store_false", help=o.help)
            else:
                p.add_argument(o.name(key), dest=key, action="store_true", help=o.help)
            continue
        kind = o.parse or (o.check.kind if o.check is not None else str)
        kw: dict[str, Any] = {"dest": key, "type": kind, "default": o.default, "help": o.help}
        if o.nargs:
            kw["nargs"] = o.nargs
        if o.choices:
            kw["choices"] = o.choices
        if o.required:
            kw["required"] = True
        p.add_argument(o.name(key), **kw)


def cmd_experiments(args: argparse.Namespace) -> int:
    """Print each experiment's name and one-line description."""
    from bnlab import experiments

    names = experiments.available()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {experiments.get(name).description}")
    return 0


def add_experiments(sub: SubParsers) -> None:
    add_command(
        sub,
        "experiments",
        cmd_experiments,
        "list the experiments",
        "List the experiments `bnlab run` knows, with a one-line description each.",
    )


def check_data_parallel(name: str) -> None:
    """Under mpiexec with several ranks, only the experiments that train data-parallel may
    run."""
    from bnlab import experiments
    from bnlab.comm import world

    if not experiments.get(name).data_parallel and world().size > 1:
        them = [n for n in experiments.available() if experiments.get(n).data_parallel]
        raise ValueError(
            f"{name} does not train data-parallel; run it without mpiexec (under mpiexec: "
            f"{', '.join(them)})"
        )


def is_root() -> bool:
    """True in one process and on rank 0 under mpiexec (the rank that checks --out)."""
    from bnlab.train import is_root as root

    return root()


def cmd_run(args: argparse.Namespace) -> int:
    """Run one experiment into ``--out``; 2 if a run is there already (no --force/--resume),
    130 on Ctrl-C (the partial run stays renderable)."""
    from bnlab import experiments
    from bnlab.experiments.rundir import (
        check_out_dir,
        expect_new_run_dir,
        is_interrupt,
        run_started,
    )

    experiment = experiments.get(args.experiment)
    check_data_parallel(args.experiment)
    out = check_out_dir(Path(args.out) if args.out else Path("runs") / args.experiment)
    has_resume = hasattr(args, "resume")
    resume = bool(getattr(args, "resume", False))
    if (out / "config.json").exists() and not (args.force or resume) and is_root():
        print(
            f"bnlab: error: {out} already holds a run (config.json); choose another --out or "
            "pass --force to overwrite it" + (" or --resume to continue it" if has_resume else ""),
            file=sys.stderr,
        )
        return 2
    config = experiment.config.from_dict(
        {k: v for k, v in vars(args).items() if k not in _CLI_KEYS}
    )
    if not resume and out.is_dir() and is_root():  # files bnlab did not write: refuse early
        from bnlab.experiments.manifest import check_takeover

        check_takeover(out)
    if not (args.force or resume):
        expect_new_run_dir(out)
    try:
        result = experiment.run(config, out)
    except BaseException as e:
        if not is_interrupt(e):
            raise
        return _interrupted(out, run_started(out))
    finally:
        expect_new_run_dir(out, False)
    if is_root():
        print(f"bnlab: done. Report: {Path(result) / 'report.html'} (and report.md)")
    return 0


def _interrupted(out: Path, started: bool) -> int:
    """Say where the partial run is (or that nothing was written); the exit status 130."""
    if started:
        print(
            f"\nbnlab: interrupted; the partial run is in {out} (report: "
            f"{out / 'report.html'}; `bnlab report {out}` re-renders it)",
            file=sys.stderr,
        )
    else:
        print(
            f"\nbnlab: interrupted before the run started; {out} was not changed",
            file=sys.stderr,
        )
    return 130


def add_run(sub: SubParsers) -> None:
    from bnlab import experiments

    p = sub.add_parser(
        "run",
        help="run an experiment",
        description="Run an experiment; `bnlab run EXPERIMENT --help` lists its options.",
    )
    exp_sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name in experiments.available():
        experiment = experiments.get(name)
        # argparse %-formats help strings: a literal % (as in "77%") must be doubled
        text = experiment.description
        ep = exp_sub.add_parser(
            name, help=text.replace("%", "%%"), description=text, formatter_class=HelpFormatter
        )
        add_options(ep, experiment.config.options())
        ep.add_argument("--out", default=None, help=f"run directory (default: runs/{name})")
        ep.add_argument("--force", action="store_true", help="overwrite a run already in --out")
        ep.set_defaults(func=cmd_run)


def _read_run_files(run_dir: Path) -> dict[str, Any]:
    """config.json of a run directory (a JSON object), after checking metrics.json if any."""
    from bnlab.experiments.rundir import RunFilesError, read_json

    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is a file; pass a run directory (`bnlab run --out`)")
    config = read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        raise RunFilesError(
            f"{run_dir / 'config.json'} holds a JSON {type(config).__name__}, not the object "
            "of a bnlab run's config; is this a bnlab run directory?"
        )
    mpath = run_dir / "metrics.json"
    if mpath.is_file():
        metrics = read_json(mpath)
        if not isinstance(metrics, dict) or "status" not in metrics:
            shown = json.dumps(metrics)[:60]
            raise RunFilesError(
                f"{mpath} is not a bnlab metrics file (expected a JSON object with 'status' and "
                f"the experiment's results, got {shown}); re-run the experiment or restore it"
            )
    return config


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render a run directory's figures and report from its config and metrics files."""
    from bnlab import experiments
    from bnlab.experiments.rundir import RunFilesError

    run_dir = Path(args.dir)
    config = _read_run_files(run_dir)
    name = config.get("experiment")
    if not isinstance(name, str) or name not in experiments.available():
        raise RunFilesError(
            f"{run_dir / 'config.json'} names experiment {name!r}, which bnlab does not know "
            f"(known: {', '.join(experiments.available())}); is this a bnlab run directory?"
        )
    try:
        experiments.get(name).render(run_dir)
    except RunFilesError:
        raise
    except (LookupError, TypeError, AttributeError, ValueError, ArithmeticError) as e:
        raise RunFilesError(
            f"cannot render {run_dir}: config.json or metrics.json is not what {name} writes "
            f"({type(e).__name__}: {str(e)[:200]}); were they edited, or written by another "
            "version?"
        ) from e
    print(f"bnlab: report written: {run_dir / 'report.html'} (and report.md)")
    if isinstance(config.get("provenance"), dict):
        from bnlab.provenance import summary

        print(f"bnlab: run with {summary(config['provenance'])}")
    return 0


def add_report(sub: SubParsers) -> None:
    p = add_command(
        sub,
        "report",
        cmd_report,
        "re-render the report of a run",
        "Re-draw the figures and rewrite report.md/report.html of a finished or "
        "interrupted run directory from its config.json and metrics.json.",
    )
    p.add_argument("dir", metavar="DIR", help="the run directory (`bnlab run ... --out DIR`)")
