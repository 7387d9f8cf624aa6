"""The entry point: the parser of every subcommand, the BLAS thread default, the missing-package
check, and the mapping of errors to one line on stderr and an exit status.

Exit status 2 for what the user gave (an option value, a path, the content of a file named on
the command line: ValueError and the not-found kind of OSError), 1 for what went wrong while
running (a full disk, a read-only filesystem, a run directory in use by another run, a
missing optional package, a diverged run), 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence

from bnlab import __version__
from bnlab.cli.deploy import add_export, add_recalibrate
from bnlab.cli.parser import Parser, SubParsers, defaults_in_help
from bnlab.cli.run import add_experiments, add_report, add_run

__all__ = ["SUBCOMMANDS", "build_parser", "expand_paths", "main"]

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
# the pip names of those modules
_PACKAGES = {
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "PIL": "Pillow",
    "markdown_it": "markdown-it-py",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "mpi4py": "mpi4py mpich",
}
# what each command needs beyond NumPy and Numba, checked before it starts
_REQUIRES = {
    "run": ("matplotlib", "markdown_it"),
    "report": ("matplotlib", "markdown_it"),
    "export": ("onnx",),
}

# (name, add_parser_fn) registrations, in the order `bnlab --help` lists them. A new
# subcommand is one entry here: ``add(sub)`` calls ``sub.add_parser(NAME, ...)`` and sets
# ``func=handler`` (``handler(args) -> int``, the exit status).
SUBCOMMANDS: list[tuple[str, Callable[[SubParsers], None]]] = [
    ("experiments", add_experiments),
    ("run", add_run),
    ("report", add_report),
    ("recalibrate", add_recalibrate),
    ("export", add_export),
]


def build_parser() -> argparse.ArgumentParser:
    """The ``bnlab`` argument parser with every registered subcommand."""
    parser = Parser(
        prog="bnlab",
        description="bnlab: batch normalization from first principles. Run the experiments of "
        "the batch normalization papers and render their reports.",
    )
    parser.add_argument("--version", action="version", version=f"bnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, add in SUBCOMMANDS:
        add(sub)
    defaults_in_help(parser)
    return parser


def _expand(value: object) -> object:
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, str) and (value.startswith("~") or "$" in value):
        return os.path.expanduser(os.path.expandvars(value))
    return value


def expand_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Every option value (and list item) starting with ``~`` or holding ``$VAR``/``${VAR}``
    expanded, as a shell would (a quoted ``'~/runs'`` too): ``~`` and ``~user`` by
    :func:`os.path.expanduser`, set variables by :func:`os.path.expandvars` (an unset one is
    left as written). The one place where the command's paths are expanded."""
    for key, value in vars(args).items():
        setattr(args, key, _expand(value))
    return args


def _missing_packages(command: str) -> list[str]:
    return [m for m in _REQUIRES.get(command, ()) if importlib.util.find_spec(m) is None]


def _extra_hint(module: str) -> str:
    """How to install what ``module`` belongs to, from a wheel and from a clone."""
    extra = _EXTRAS.get(module.split(".")[0])
    if extra is None:
        return f"pip install {module}"
    packages = " ".join(_PACKAGES[m] for m, e in _EXTRAS.items() if e == extra)
    return f"pip install {packages} (or, from a clone of bnlab: pip install -e '.[{extra}]')"


def _limit_blas_threads(argv: Sequence[str]) -> None:
    """Default OPENBLAS_NUM_THREADS to 1 for the small-matrix experiments (see
    ``bnlab.experiments.Experiment.single_thread_blas``); only effective before NumPy is
    imported."""
    from bnlab.experiments import EXPERIMENTS
    from bnlab.runtime import default_blas_threads_env

    if len(argv) >= 2 and argv[0] == "run" and argv[1] in EXPERIMENTS:
        if EXPERIMENTS[argv[1]].single_thread_blas:
            default_blas_threads_env(1)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnlab`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # a bad BNLAB_* environment variable is refused when the runtime is imported
        _limit_blas_threads(argv)
        from bnlab.experiments.rundir import install_sigint_handler
        from bnlab.kernels import _numba  # noqa: F401 (reads BNLAB_MALLOC)
    except ValueError as e:
        print(f"bnlab: error: {e}", file=sys.stderr)
        return 2
    restore_sigint = install_sigint_handler()
    try:
        from bnlab.train import guard_job

        # under mpiexec: a failure on one rank ends every rank (see bnlab.train.guard_job)
        return guard_job(lambda: _main(argv))
    except KeyboardInterrupt:  # Ctrl-C before a command started (building the parser)
        print("\nbnlab: interrupted", file=sys.stderr)
        return 130
    finally:
        restore_sigint()


def _error(text: object, status: int) -> int:
    from bnlab.train.faults import rank_prefix, say

    say(f"bnlab: {rank_prefix()}error: {text}")
    return status


def _main(argv: list[str]) -> int:
    from bnlab.comm import WorldSizeError
    from bnlab.experiments.rundir import RunDirBusyError, is_interrupt
    from bnlab.train import ConfigMismatchError

    parser = build_parser()
    args = expand_paths(parser.parse_args(argv))
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
    except (OSError, RunDirBusyError, FloatingPointError, WorldSizeError, ConfigMismatchError) as e:
        return _error(e, 1)
    except BaseException as e:
        if is_interrupt(e):
            print("\nbnlab: interrupted", file=sys.stderr)
            return 130
        raise
