"""ExperimentConfig: one declaration gives the flags, the defaults, the checks and config.json."""

from __future__ import annotations

import argparse
import dataclasses
from typing import ClassVar

import pytest

from bnlab.cli.run import add_options
from bnlab.experiments.config import Check, ExperimentConfig, inherit, option


@dataclasses.dataclass(frozen=True)
class Toy(ExperimentConfig):
    NAME: ClassVar[str] = "toy"
    EXTRA_KEYS: ClassVar[tuple[str, ...]] = ("data_source",)
    steps: int = option(100, "SGD steps", Check(int, 1))
    hidden: list[int] = option([10], "hidden widths", Check(int, 1), nargs="+")
    progress: bool = option(True, "no progress bar", negate="--no-progress")
    kind: str = option("a", "which", choices=("a", "b"))

    def validate(self) -> None:
        if self.steps < len(self.hidden):
            raise ValueError("toy: --steps must be at least the number of hidden layers")


@dataclasses.dataclass(frozen=True)
class Toy2(Toy):
    NAME: ClassVar[str] = "toy2"
    steps: int = inherit(Toy, "steps", 7)


def test_defaults_and_to_dict() -> None:
    cfg = Toy.from_dict({"steps": 5, "data_source": {"x": 1}})
    assert cfg.to_dict() == {
        "steps": 5, "hidden": [10], "progress": True, "kind": "a", "experiment": "toy",
    }  # fmt: skip
    assert Toy.from_dict({"steps": None}).steps == 100


def test_default_lists_are_not_shared() -> None:
    a, b = Toy.from_dict(), Toy.from_dict()
    a.hidden.append(3)
    assert b.hidden == [10] and Toy.defaults()["hidden"] == [10]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"steps": 0}, "--steps must be an integer >= 1, got 0"),
        ({"steps": 1.5}, "--steps"),
        ({"stpes": 3}, "unknown config keys ['stpes']"),
        ({"hidden": []}, "--hidden must be a non-empty list"),
        ({"kind": "c"}, "--kind must be one of a, b"),
        ({"experiment": "other"}, "bnlab run other"),
        ({"steps": 1, "hidden": [3, 3]}, "at least the number of hidden layers"),
    ],
)
def test_bad_values_raise_naming_the_flag(bad: dict, words: str) -> None:
    with pytest.raises(ValueError, match="toy") as e:
        Toy.from_dict(bad)
    assert words in str(e.value)


def test_inherit_changes_only_the_default() -> None:
    assert Toy2.from_dict().steps == 7
    assert Toy2.options()["steps"].help == Toy.options()["steps"].help
    with pytest.raises(ValueError, match="toy2: --steps"):
        Toy2.from_dict({"steps": 0})


def test_flags_come_from_the_fields() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_options(p, Toy2.options())
    assert "(default: 7)" in p.format_help()
    cfg = Toy2.from_dict(vars(p.parse_args(["--steps", "3", "--no-progress", "--hidden", "2"])))
    assert (cfg.steps, cfg.progress, cfg.hidden) == (3, False, [2])


def test_replace_is_checked_and_frozen() -> None:
    cfg = Toy.from_dict()
    assert cfg.replace(steps=9).steps == 9 and cfg.steps == 100
    with pytest.raises(ValueError, match="--steps"):
        cfg.replace(steps=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3  # type: ignore[misc]


def test_of_takes_a_config_or_a_dict() -> None:
    cfg = Toy.from_dict({"steps": 5})
    assert Toy.of(cfg) is cfg
    assert Toy.of({"steps": 6}).steps == 6 and Toy.of(None).steps == 100
    with pytest.raises(ValueError, match="--steps"):
        Toy.of({"steps": 0})
    with pytest.raises(TypeError, match="expected a Toy or a config dict, got int"):
        Toy.of(3)  # type: ignore[arg-type]
