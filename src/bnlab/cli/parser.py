"""The argparse pieces of the ``bnlab`` command: a parser whose unknown options are reported by
the subcommand that got them (with a suggestion), and a help formatter that shows defaults.

Every option's ``--help`` line ends in ``(default: X)`` unless the default says nothing:
None (the help text says what happens instead), a flag (``--force``, ``--no-progress``: its
default is "not given", and "(default: True)" of a ``store_false`` flag would read as if the
flag were on), or a help text that gives the default already.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from argparse import SUPPRESS
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = [
    "HelpFormatter",
    "Parser",
    "SubParsers",
    "add_command",
    "defaults_in_help",
    "subparsers_of",
]

SubParsers = Any  # argparse._SubParsersAction, which is private


def add_command(
    sub: SubParsers,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """Subcommand ``bnlab NAME``: ``help`` is its line in ``bnlab --help``, ``description``
    heads its own ``--help``; ``func(args)`` runs it (its exit status)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description)
    p.set_defaults(func=func)
    return p


def _is_flag(action: argparse.Action) -> bool:
    """An option that takes no value (store_true/false/const, count, BooleanOptionalAction)."""
    return action.nargs == 0 or isinstance(action, argparse._CountAction)


def _flag_help(action: argparse.Action, text: str) -> str:
    """A flag's help without argparse's own "(default: True)": BooleanOptionalAction appends
    one (Python < 3.14); the default of ``--x/--no-x`` is shown as the form in effect."""
    text = text.replace(" (default: %(default)s)", "")
    if isinstance(action, argparse.BooleanOptionalAction) and isinstance(action.default, bool):
        on, off = action.option_strings[:2]
        return f"{text} (default: {on if action.default else off})"
    return text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless it has no default worth showing
    (None, a flag, or a help text that already gives it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if _is_flag(action):
            return _flag_help(action, text)
        if "%(default)" in text or "default:" in text or action.default in (None, SUPPRESS):
            return text
        if not action.option_strings:
            return text
        d = action.default
        sep = " " if action.nargs is not None else ","  # nargs lists vs one "a,b" value
        shown = sep.join(map(str, d)) if isinstance(d, list | tuple) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose unknown options are reported by the (sub)command that got
    them, with its usage and the closest known option, instead of by the top level."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self._unrecognized(extras))
        return ns, extras

    def error(self, message: str) -> NoReturn:
        """Usage and ``prog: error: message``, status 2; under mpiexec rank 0 alone shows the
        usage and every rank one line ``bnlab: [rank r/P] error: ...`` (bnlab.train.guard_job
        ends the job)."""
        from bnlab.train import rank_prefix

        prefix = rank_prefix()
        if not prefix:
            super().error(message)
        if prefix.startswith("[rank 0/"):
            self.print_usage(sys.stderr)
        self.exit(2, f"bnlab: {prefix}error: {self.prog}: {message}\n")

    def _unrecognized(self, extras: Sequence[str]) -> str:
        msg = "unrecognized arguments: " + " ".join(extras)
        known = [s for a in self._actions for s in a.option_strings]
        for arg in extras:
            if arg.startswith("-"):
                close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1, cutoff=0.6)
                if close:
                    return f"{msg} (did you mean {close[0]}?)"
        return msg


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``name -> parser`` of the subcommands of ``parser`` (empty when it has none)."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def defaults_in_help(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand's --help its option defaults (also the ones added elsewhere)."""
    for p in subparsers_of(parser).values():
        p.formatter_class = HelpFormatter
        defaults_in_help(p)
