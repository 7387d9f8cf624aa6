"""`--help` of every bnlab subcommand: defaults shown where they say something, never for a
flag; misspelt options answered by the subcommand that got them, with a suggestion."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import pytest

from bnlab import cli
from bnlab.cli.parser import HelpFormatter, Parser, subparsers_of


def _parser_at(*argv: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    for name in argv:
        parser = subparsers_of(parser)[name]
    return parser


def _help_lines(monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, str]:
    """Option -> its help line, at a width where nothing wraps."""
    monkeypatch.setenv("COLUMNS", "400")
    lines: dict[str, str] = {}
    flag = None
    for line in _parser_at(*argv).format_help().splitlines():
        parts = line.split()
        if parts and parts[0].startswith("-") and line.startswith("  -"):
            flag = parts[0].rstrip(",")
            lines[flag] = line
        elif flag is not None and line.startswith("    "):
            lines[flag] += " " + line.strip()  # the help text on the next line
        else:
            flag = None
    return lines


def _every_command() -> Iterator[tuple[str, ...]]:
    """The argv of every leaf subcommand: ("run", NAME) for each experiment, ("export",), ..."""

    def walk(parser: argparse.ArgumentParser, at: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        subs = subparsers_of(parser)
        if not subs:
            yield at
        for name, p in subs.items():
            yield from walk(p, (*at, name))

    yield from walk(cli.build_parser(), ())


def test_every_command_is_reached() -> None:
    from bnlab import experiments

    commands = set(_every_command())
    assert {("run", name) for name in experiments.available()} <= commands
    assert {("experiments",), ("report",), ("recalibrate",), ("export",)} <= commands


def test_misspelt_flag_shows_the_subcommand_usage_and_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "mnist-sigmoid", "--stpes", "3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bnlab run mnist-sigmoid")
    assert "unrecognized arguments: --stpes 3 (did you mean --steps?)" in err
    with pytest.raises(SystemExit):
        cli.main(["run", "population-stats", "--momentum", "0.1"])
    assert "(did you mean --momenta?)" in capsys.readouterr().err


def test_misspelt_flag_of_a_deploy_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["recalibrate", "m.npz", "--data", "mnist", "--bach-size", "8"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bnlab recalibrate")
    assert "(did you mean --batch-size?)" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ("run", "mnist-sigmoid"),
            {"--seeds": "1", "--eval-batch-size": "2000", "--lr": "0.1 3.0"},
        ),
        (("run", "population-stats"), {"--momenta": "0.01 0.1 0.5", "--recal-examples": "12000"}),
        (("run", "renorm-small-batch"), {"--rmax": "3.0", "--dmax": "5.0", "--micro-sizes": "4 2"}),
        (("run", "cifar10-keras"), {"--eval-batch-size": "500", "--models": "baseline,bn"}),
        (("run", "population-stats-epochs"), {"--recal-examples": "10000"}),
        (("recalibrate",), {"--batch-size": "60", "--seed": "0", "--limit": "all"}),
        (("export",), {"--input-shape": "the in_features of a first Dense layer"}),
    ],
)
def test_help_shows_every_default(
    argv: tuple[str, ...], expected: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _help_lines(monkeypatch, *argv)
    for flag, default in expected.items():
        assert f"(default: {default}" in lines[flag], lines[flag]


def test_every_option_has_help_and_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for argv in _every_command():
        lines = _help_lines(monkeypatch, *argv)
        for action in _parser_at(*argv)._actions:
            if not action.option_strings or action.option_strings[0] == "-h":
                continue
            flag = action.option_strings[0]
            assert action.help, (argv, flag)
            if action.default is not None and action.nargs != 0:
                assert "default:" in lines[flag], (argv, lines[flag])


def test_no_flag_shows_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--no-progress` (store_false, default True) must not read "(default: True)"."""
    seen = 0
    for argv in _every_command():
        lines = _help_lines(monkeypatch, *argv)
        for action in _parser_at(*argv)._actions:
            if action.option_strings and action.nargs == 0 and action.option_strings[0] != "-h":
                seen += 1
                line = lines[action.option_strings[0]]
                assert "default" not in line, (argv, line)
        for line in lines.values():
            assert "(default: True)" not in line and "(default: False)" not in line, (argv, line)
    assert seen >= 10  # --no-progress, --force, --resume, --fold, --in-place, ...
    assert "--no-progress" in _help_lines(monkeypatch, "run", "mnist-sigmoid")


@pytest.mark.parametrize(
    ("flags", "kw", "shown"),
    [
        (("--no-x",), {"action": "store_false", "dest": "x", "help": "no x"}, "no x"),
        (("--y",), {"action": "store_true", "help": "y on"}, "y on"),
        (("-v",), {"action": "count", "default": 0, "help": "louder"}, "louder"),
        (("--n",), {"type": int, "default": 3, "help": "count"}, "count (default: 3)"),
        (("--s",), {"nargs": "+", "default": [1, 2], "help": "sizes"}, "sizes (default: 1 2)"),
        (("--m",), {"default": ["a", "b"], "help": "models"}, "models (default: a,b)"),
        (("--p",), {"default": "77%", "help": "pct"}, "pct (default: 77%)"),
        (("--q",), {"default": None, "help": "q, or all"}, "q, or all"),
        (("--r",), {"default": 5, "help": "r (default: five)"}, "r (default: five)"),
    ],
)
def test_formatter(flags: tuple[str, ...], kw: dict[str, Any], shown: str) -> None:
    p = Parser(prog="t", formatter_class=HelpFormatter)
    p.add_argument(*flags, **kw)
    text = " ".join(p.format_help().split())  # the option's line is the last one
    assert text.endswith(shown), text
    assert text.count("default") == shown.count("default"), text


@pytest.mark.parametrize("default", [True, False])
def test_formatter_boolean_optional_shows_the_form_in_effect(default: bool) -> None:
    p = Parser(prog="t", formatter_class=HelpFormatter)
    p.add_argument("--z", action=argparse.BooleanOptionalAction, default=default, help="z on")
    text = " ".join(p.format_help().split())
    assert text.endswith(f"z on (default: {'--z' if default else '--no-z'})"), text
    assert "True" not in text and "False" not in text
