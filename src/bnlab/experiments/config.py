"""An experiment's config as a dataclass: the single source of every option.

Each field of an :class:`ExperimentConfig` subclass is declared with :func:`option`, which
carries the default, the ``--help`` text and the :class:`~bnlab.experiments.options.Check` of
the value. From that one declaration come the ``bnlab run NAME`` flags (``add_arguments``,
default shown by ``--help``), the validation (``from_dict``: unknown keys, None means the
default, kinds, ranges, choices, then the class's own ``validate`` for values that depend on
each other) and ``config.json`` (``to_dict``). In the spirit of a Keras layer, whose
``__init__`` arguments and ``get_config`` are one list::

    @dataclass(frozen=True)
    class ToyConfig(ExperimentConfig):
        NAME: ClassVar[str] = "toy"
        steps: int = option(100, "SGD steps", Check(int, 1))
        hidden: list[int] = option([10], "hidden widths", Check(int, 1), nargs="+")

    cfg = ToyConfig.from_dict({"steps": 5})     # ValueError for {"steps": 0} or {"stpes": 5}
    cfg.steps, cfg.to_dict()["hidden"]          # 5, [10]

A subclass changes a shared option's default with :func:`inherit` (one help text, one check).
Nothing here touches the disk: a bad value raises ValueError naming the flag, the accepted
range, the value given and the fix, before an experiment creates its run directory.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from bnlab.experiments.options import (
    Opt,
    add_options,
    check_choices,
    check_config,
    check_unknown,
    checks_of,
)

__all__ = ["ExperimentConfig", "inherit", "option"]

C = TypeVar("C", bound="ExperimentConfig")
_KEY = "bnlab.option"


def _field(opt: Opt) -> Any:
    default = opt.default
    if isinstance(default, list | dict | set):
        return dataclasses.field(
            default_factory=lambda: copy.deepcopy(default), metadata={_KEY: opt}
        )
    return dataclasses.field(default=default, metadata={_KEY: opt})


def option(default: Any, help: str, check: Any = None, **kw: Any) -> Any:
    """A config field: ``default``, its ``--help`` text, its check; ``kw`` as :class:`Opt`
    (``nargs``, ``choices``, ``flag``, ``negate``, ``parse``, ``cli=False`` for a config key
    that has no flag)."""
    return _field(Opt(default, help, check, **kw))


def inherit(base: type[ExperimentConfig], key: str, default: Any) -> Any:
    """Field ``key`` of ``base`` with another default (same help text and check)."""
    return _field(dataclasses.replace(base.options()[key], default=default))


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Base of every experiment's config; subclasses are frozen dataclasses of :func:`option`
    fields and set ``NAME`` (the experiment's name, used in messages and ``config.json``).

    ``EXTRA_KEYS`` are keys a ``config.json`` may hold besides the options (facts a run
    records, such as the data source found), accepted by ``from_dict`` and dropped.
    """

    NAME: ClassVar[str] = "experiment"
    EXTRA_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def options(cls) -> dict[str, Opt]:
        """``config key -> Opt`` in declaration order."""
        return {f.name: f.metadata[_KEY] for f in dataclasses.fields(cls) if _KEY in f.metadata}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``config key -> default`` (copies: a default list is never shared)."""
        return {k: copy.deepcopy(o.default) for k, o in cls.options().items()}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The ``bnlab run NAME`` flags of every option (``dest`` = the config key)."""
        add_options(parser, cls.options())

    @classmethod
    def from_dict(cls: type[C], config: Mapping[str, Any] | None = None) -> C:
        """The config of ``config`` (missing keys and None take the default), checked.

        Raises ValueError for an unknown key, a value of the wrong kind or out of range, a
        value outside its choices, and whatever :meth:`validate` rejects.
        """
        config = dict(config or {})
        if isinstance(config.get("experiment"), str) and config["experiment"] != cls.NAME:
            raise ValueError(
                f"{cls.NAME}: this config is for experiment {config['experiment']!r}; "
                f"run it with `bnlab run {config['experiment']}`"
            )
        opts = cls.options()
        check_unknown(config, [*opts, *cls.EXTRA_KEYS, "provenance"], cls.NAME)
        values = cls.defaults()
        values.update({k: v for k, v in config.items() if k in opts and v is not None})
        values = cls.normalize(values)
        check_config(values, checks_of(opts), cls.NAME)
        check_choices(values, opts, cls.NAME)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    @classmethod
    def of(cls: type[C], config: C | Mapping[str, Any] | None) -> C:
        """``config`` itself if it is already a ``cls``, else :meth:`from_dict` of it (what an
        experiment's ``run(config, out_dir)`` accepts: its config object or a plain dict)."""
        if config is None or isinstance(config, Mapping):
            return cls.from_dict(config)
        if isinstance(config, cls):
            return config
        raise TypeError(
            f"{cls.NAME}: expected a {cls.__name__} or a config dict, got {type(config).__name__}"
        )

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Hook: convert raw values before they are checked (e.g. a comma list to a list)."""
        return values

    def validate(self) -> None:
        """Hook: raise ValueError for values that are wrong together (checked after each
        value on its own)."""

    def to_dict(self) -> dict[str, Any]:
        """The options as ``config.json`` holds them, with ``"experiment": NAME``."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["experiment"] = self.NAME
        return out

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes``, checked like :meth:`from_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})
