"""Floor 5: the ``bnlab`` command. Nothing imports it.

    bnlab experiments                          list the experiments
    bnlab run EXPERIMENT [options] --out DIR   run one; ``bnlab run EXPERIMENT --help``
    bnlab report DIR                           re-render a finished or interrupted run

Ctrl-C during ``bnlab run`` leaves a valid partial run (config, metrics so far, status
"interrupted", report) and exits with status 130 (also when it lands inside a Numba kernel).

Errors are one line on stderr: exit status 2 for what the user gave (an option value, a path,
the content of a file named on the command line: ValueError and the not-found kind of
OSError), 1 for what went wrong while running (a full disk, a read-only filesystem, a run
directory in use by another run, a missing optional package). A misspelt option prints the
usage of the subcommand it was given to, with a suggestion. Every ``--help`` shows defaults.

Adding a subcommand: write ``def _add_NAME(sub) -> None`` that calls ``sub.add_parser(NAME,
...)`` and sets ``func=handler`` (``handler(args) -> int`` exit status), then append
``("NAME", _add_NAME)`` to ``SUBCOMMANDS`` below. ``recalibrate`` and ``export`` are reserved
for the deployment helpers.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import sys
from argparse import SUPPRESS
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bnlab import __version__

# argparse keys that belong to the command line, not to an experiment's config
_CLI_KEYS = {"command", "experiment", "out", "force", "func"}

SubParsers = Any  # argparse._SubParsersAction, which is private

# optional packages -> the extra that installs them (pyproject.toml)
_EXTRAS = {
    "matplotlib": "experiments",
    "tqdm": "experiments",
    "PIL": "experiments",
    "markdown_it": "experiments",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "mpi4py": "mpi",
}
# what each command needs beyond NumPy and Numba, checked before it starts
_REQUIRES = {
    "run": ("matplotlib", "markdown_it"),
    "report": ("matplotlib", "markdown_it"),
    "export": ("onnx",),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless it has no default worth showing
    (None, a flag, or a help text that already gives it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)
        if "%(default)" in text or "default:" in text or action.default in (None, SUPPRESS):
            return text
        if isinstance(action, flags) or not action.option_strings:
            return text
        d = action.default
        sep = " " if action.nargs is not None else ","  # nargs lists vs one "a,b" value
        shown = sep.join(map(str, d)) if isinstance(d, list | tuple) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose unknown options are reported by the (sub)command that got
    them, with its usage and the closest known option, instead of by the top level."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self._unrecognized(extras))
        return ns, extras

    def _unrecognized(self, extras: Sequence[str]) -> str:
        msg = "unrecognized arguments: " + " ".join(extras)
        known = [s for a in self._actions for s in a.option_strings]
        for arg in extras:
            if arg.startswith("-"):
                close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1, cutoff=0.6)
                if close:
                    return f"{msg} (did you mean {close[0]}?)"
        return msg


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
    from bnlab.experiments.report import (
        check_out_dir,
        expect_new_run_dir,
        is_interrupt,
        run_started,
    )

    module = experiments.get(args.experiment)
    _check_data_parallel(args.experiment)
    out = check_out_dir(Path(args.out) if args.out else Path("runs") / args.experiment)
    has_resume = hasattr(args, "resume")
    resume = bool(getattr(args, "resume", False))
    if (out / "config.json").exists() and not (args.force or resume) and _is_root():
        print(
            f"bnlab: error: {out} already holds a run (config.json); choose another --out or "
            "pass --force to overwrite it" + (" or --resume to continue it" if has_resume else ""),
            file=sys.stderr,
        )
        return 2
    if not (args.force or resume):
        expect_new_run_dir(out)
    config = {k: v for k, v in vars(args).items() if k not in _CLI_KEYS}
    try:
        result = module.run(config, out)
    except BaseException as e:
        if not is_interrupt(e):
            raise
        return _interrupted(out, run_started(out))
    finally:
        expect_new_run_dir(out, False)
    if _is_root():
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
        ep = exp_sub.add_parser(
            name, help=helptext, description=module.DESCRIPTION, formatter_class=_HelpFormatter
        )
        module.add_arguments(ep)
        ep.add_argument("--out", default=None, help=f"run directory (default: runs/{name})")
        ep.add_argument("--force", action="store_true", help="overwrite a run already in --out")
        ep.set_defaults(func=_cmd_run)


def _cmd_report(args: argparse.Namespace) -> int:
    from bnlab import experiments
    from bnlab.experiments.report import RunFilesError, read_json, render_generic

    run_dir = Path(args.dir)
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
    name = config.get("experiment")
    module = experiments.get(name) if name in experiments.available() else None
    render = getattr(module, "render", None)
    try:
        page = render(run_dir) if render is not None else render_generic(run_dir)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise RunFilesError(
            f"cannot render {run_dir}: config.json or metrics.json lacks what {name} writes "
            f"({type(e).__name__}: {e}); were they edited, or written by another version?"
        ) from e
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
    parser = _Parser(
        prog="bnlab",
        description="bnlab: batch normalization from first principles. Run the experiments of "
        "the batch normalization papers and render their reports.",
    )
    parser.add_argument("--version", action="version", version=f"bnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, add in SUBCOMMANDS:
        add(sub)
    _defaults_in_help(parser)
    return parser


def _defaults_in_help(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand's --help its option defaults (also the ones added elsewhere)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                p.formatter_class = _HelpFormatter
                _defaults_in_help(p)


def _missing_packages(command: str) -> list[str]:
    return [m for m in _REQUIRES.get(command, ()) if importlib.util.find_spec(m) is None]


def _extra_hint(module: str) -> str:
    extra = _EXTRAS.get(module.split(".")[0])
    return f"pip install 'bnlab[{extra}]'" if extra else f"pip install {module}"


def _limit_blas_threads(argv: Sequence[str]) -> None:
    """Default OPENBLAS_NUM_THREADS to 1 for the small-matrix experiments (see
    ``bnlab.experiments.SINGLE_THREAD_BLAS``); only effective before NumPy is imported."""
    from bnlab.experiments import SINGLE_THREAD_BLAS
    from bnlab.runtime import default_blas_threads_env

    if len(argv) >= 2 and argv[0] == "run" and argv[1] in SINGLE_THREAD_BLAS:
        default_blas_threads_env(1)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnlab`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _limit_blas_threads(argv)
    from bnlab.experiments.report import install_sigint_handler

    restore_sigint = install_sigint_handler()
    try:
        from bnlab.parallel import guard_job

        # under mpiexec: a failure on one rank ends every rank (see bnlab.parallel.guard_job)
        return guard_job(lambda: _main(argv))
    except KeyboardInterrupt:  # Ctrl-C before a command started (building the parser)
        print("\nbnlab: interrupted", file=sys.stderr)
        return 130
    finally:
        restore_sigint()


def _check_data_parallel(name: str) -> None:
    """Under mpiexec with several ranks, only the experiments of DATA_PARALLEL may run."""
    from bnlab.comm import world
    from bnlab.experiments import DATA_PARALLEL

    if name not in DATA_PARALLEL and world().size > 1:
        raise ValueError(
            f"{name} does not train data-parallel; run it without mpiexec (under mpiexec: "
            f"{', '.join(sorted(DATA_PARALLEL))})"
        )


def _is_root() -> bool:
    """True in one process and on rank 0 under mpiexec (the rank that checks --out)."""
    from bnlab.parallel import is_root

    return is_root()


def _error(text: object, status: int) -> int:
    from bnlab.parallel import rank_prefix

    print(f"bnlab: {rank_prefix()}error: {text}", file=sys.stderr)
    return status


def _main(argv: list[str]) -> int:
    from bnlab.experiments.report import RunDirBusyError, is_interrupt

    parser = build_parser()
    args = parser.parse_args(argv)
    missing = _missing_packages(args.command)
    if missing:
        need = ", ".join(missing)
        return _error(f"`bnlab {args.command}` needs {need}: {_extra_hint(missing[0])}", 1)
    try:
        return int(args.func(args))
    except ModuleNotFoundError as e:
        if not e.name:  # a message of ours, that names the extra already
            return _error(e, 1)
        return _error(f"a package is missing ({e}): {_extra_hint(e.name)}", 1)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
    ) as e:
        return _error(e, 2)
    except (OSError, RunDirBusyError, FloatingPointError) as e:  # FloatingPointError: diverged
        return _error(e, 1)
    except BaseException as e:
        if is_interrupt(e):
            print("\nbnlab: interrupted", file=sys.stderr)
            return 130
        raise


if __name__ == "__main__":
    sys.exit(main())
