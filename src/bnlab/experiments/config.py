"""An experiment's config as a dataclass: the single source of every option.

Each field of an :class:`ExperimentConfig` subclass is declared with :func:`option`, which
carries the default, the ``--help`` text and the :class:`Check` of the value. From that one
declaration come the ``bnlab run NAME`` flags (built by :mod:`bnlab.cli` from
:meth:`ExperimentConfig.options`, default shown by ``--help``), the validation
(:meth:`~ExperimentConfig.from_dict`: unknown keys, None means the default, kinds, ranges,
choices, then the class's own ``validate`` for values that depend on each other) and
``config.json`` (``to_dict``). In the spirit of a Keras layer, whose ``__init__`` arguments
and ``get_config`` are one list::

    @dataclass(frozen=True)
    class ToyConfig(ExperimentConfig):
        NAME: ClassVar[str] = "toy"
        steps: int = option(100, "SGD steps", Check(int, 1))
        hidden: list[int] = option([10], "hidden widths", Check(int, 1), nargs="+")

    cfg = ToyConfig.from_dict({"steps": 5})     # ValueError for {"steps": 0} or {"stpes": 5}
    cfg.steps, cfg.to_dict()["hidden"]          # 5, [10]

A subclass changes a shared option's default with :func:`inherit` (one help text, one check).
Nothing here touches the disk: a bad value raises ValueError naming the command-line flag, the
accepted range, the value given and the fix, before an experiment creates its run directory.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from bnlab.train import BN_SYNC_MODES

__all__ = [
    "MAX_MODEL_BYTES_ENV",
    "MOMENTUM_HINT",
    "Check",
    "ExperimentConfig",
    "Opt",
    "bn_sync_option",
    "check_batch",
    "check_count",
    "check_model_bytes",
    "flag",
    "inherit",
    "mlp_params",
    "option",
]

C = TypeVar("C", bound="ExperimentConfig")
_KEY = "bnlab.option"
MAX_MODEL_BYTES_ENV = "BNLAB_MAX_MODEL_BYTES"
_DEFAULT_MAX_MODEL_BYTES = 4 * 2**30
# the help of every BN momentum option
MOMENTUM_HINT = "the weight of the new batch (PyTorch's convention: Keras' 0.99 is 0.01 here)"


@dataclass(frozen=True)
class Check:
    """What one config value must be: an int or a finite float in ``[lo, hi]``.

    ``lo_open``/``hi_open`` make a bound strict (``lo < v``); ``optional`` allows None;
    ``hint`` is appended to the message (what the value means, the fix). A list option
    (``nargs``) checks each of its values.
    """

    kind: type = int
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False
    hint: str = ""

    def expected(self) -> str:
        """The accepted values in words, e.g. "an integer >= 1" or "a number in (0, 1]"."""
        what = "an integer" if self.kind is int else "a finite number"
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            what += f" in {left}{lo:g}, {hi:g}{right}"
        elif lo is not None:
            what += f" {'>' if self.lo_open else '>='} {lo:g}"
        elif hi is not None:
            what += f" {'<' if self.hi_open else '<='} {hi:g}"
        return what

    def ok(self, v: Any) -> bool:
        """True if the single value ``v`` is of the right kind and within the bounds."""
        if isinstance(v, bool):
            return False
        if self.kind is int:
            if not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()):
                return False
        elif not isinstance(v, int | float) or not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


def flag(key: str) -> str:
    """The command-line flag of config ``key``: ``bn_momentum`` -> ``--bn-momentum``."""
    return "--" + key.replace("_", "-")


@dataclass(frozen=True)
class Opt:
    """One option of an experiment: its default, its help text and what it must be.

    For the command line (:mod:`bnlab.cli`): a bool default makes a flag (``negate=
    "--no-progress"`` stores False, otherwise ``--key`` stores True); ``nargs`` ("+", "*")
    makes a list; ``flag`` overrides ``--key`` (also in messages); ``parse`` converts the
    command-line text (default: the check's kind, else str); ``cli=False`` keeps an option
    out of the command line (a config key only).
    """

    default: Any
    help: str
    check: Check | None = None
    nargs: str | None = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None
    negate: str | None = None
    required: bool = False
    parse: Callable[[str], Any] | None = None
    cli: bool = True

    def name(self, key: str) -> str:
        """The flag that names this option in messages."""
        return self.flag or flag(key)

    def problem(self, key: str, v: Any) -> str | None:
        """What is wrong with value ``v`` of option ``key`` (None when nothing is)."""
        c, name = self.check, self.name(key)
        if self.choices and v not in self.choices:
            return f"{name} must be one of {', '.join(self.choices)}, got {v!r}"
        if c is None:
            return None
        tail = f"; {c.hint}" if c.hint else ""
        if v is None:
            return None if c.optional else f"{name} must be {c.expected()}, got None{tail}"
        if not self.nargs:
            ok = c.ok(_as_number(v))
            return None if ok else f"{name} must be {c.expected()}, got {v!r}{tail}"
        if isinstance(v, str) or not isinstance(v, Sequence) or not (v or self.nargs == "*"):
            return f"{name} must be a non-empty list of {c.expected()}, got {v!r}{tail}"
        bad = [x for x in map(_as_number, v) if not c.ok(x)]
        if bad:
            return f"every {name} value must be {c.expected()}, got {bad[0]!r} in {list(v)}{tail}"
        return None


def _as_number(v: Any) -> Any:
    """NumPy scalars as Python numbers (a config may come from code, not argparse)."""
    item = getattr(v, "item", None)
    return item() if callable(item) and not isinstance(v, list | tuple) else v


def _as_int(v: Any) -> Any:
    """A whole float as an int (a config from code: ``steps=600.0``); anything else as is."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _field(opt: Opt) -> Any:
    default = opt.default
    if isinstance(default, list | dict | set):
        return dataclasses.field(
            default_factory=lambda: copy.deepcopy(default), metadata={_KEY: opt}
        )
    return dataclasses.field(default=default, metadata={_KEY: opt})


def option(default: Any, help: str, check: Check | None = None, **kw: Any) -> Any:
    """A config field: ``default``, its ``--help`` text, its check; ``kw`` as :class:`Opt`
    (``nargs``, ``choices``, ``flag``, ``negate``, ``required``, ``parse``, ``cli=False``)."""
    return _field(Opt(default, help, check, **kw))


def bn_sync_option() -> Any:
    """The ``--bn-sync`` field of the data-parallel experiments."""
    return option(
        "global",
        "under mpiexec: global = synchronized BN over all ranks (the one-process run), "
        "local = each rank normalizes its own shard (PyTorch DDP without SyncBatchNorm)",
        choices=BN_SYNC_MODES,
    )


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
    RESUME_FREE: ClassVar[tuple[str, ...]] = ()  # options a --resume may change

    @classmethod
    def options(cls) -> dict[str, Opt]:
        """``config key -> Opt`` in declaration order."""
        return {f.name: f.metadata[_KEY] for f in dataclasses.fields(cls) if _KEY in f.metadata}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``config key -> default`` (copies: a default list is never shared)."""
        return {k: copy.deepcopy(o.default) for k, o in cls.options().items()}

    @classmethod
    def from_dict(cls: type[C], config: Mapping[str, Any] | None = None) -> C:
        """The config of ``config`` (missing keys and None take the default), checked.

        Whole floats of integer options become ints. Raises ValueError for an unknown key, a
        value of the wrong kind or out of range, a value outside its choices, and whatever
        :meth:`validate` rejects.
        """
        config = dict(config or {})
        if isinstance(config.get("experiment"), str) and config["experiment"] != cls.NAME:
            raise ValueError(
                f"{cls.NAME}: this config is for experiment {config['experiment']!r}; "
                f"run it with `bnlab run {config['experiment']}`"
            )
        opts = cls.options()
        unknown = sorted(set(config) - {*opts, *cls.EXTRA_KEYS, "experiment", "provenance"})
        if unknown:
            raise ValueError(f"{cls.NAME}: unknown config keys {unknown}; known: {sorted(opts)}")
        values = cls.defaults()
        values.update({k: v for k, v in config.items() if k in opts and v is not None})
        for key, o in opts.items():
            v = values[key]
            if o.check is not None and o.check.kind is int and v is not None:
                values[key] = [_as_int(x) for x in v] if isinstance(v, list | tuple) else _as_int(v)
        values = cls.normalize(values)
        for key, o in opts.items():
            problem = o.problem(key, values.get(key))
            if problem:
                raise ValueError(f"{cls.NAME}: {problem}")
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
        """Hook: convert raw values before they are checked (e.g. derive a default)."""
        return values

    def validate(self) -> None:
        """Hook: raise ValueError for values that are wrong together (checked after each
        value on its own)."""

    def to_dict(self) -> dict[str, Any]:
        """The options as ``config.json`` holds them, with ``"experiment": NAME``."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["experiment"] = self.NAME
        return out

    @classmethod
    def resume_keys(cls) -> tuple[str, ...]:
        """The options a resumed run must share with the run directory's ``config.json``."""
        return tuple(k for k in cls.options() if k not in cls.RESUME_FREE)

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes``, checked like :meth:`from_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})


# -- checks of values that depend on the data or the model size ----------------------------------


def mlp_params(n_in: int, hidden: Sequence[int], n_out: int) -> int:
    """Parameters of a Dense MLP ``n_in -> hidden... -> n_out`` (weights, biases, BN's 4/unit)."""
    widths = [int(n_in), *(int(w) for w in hidden), int(n_out)]
    return sum(a * b + 5 * b for a, b in zip(widths[:-1], widths[1:], strict=True))


def check_model_bytes(n_nets: int, params_per_net: int, where: str, fix: str) -> None:
    """Refuse to build ``n_nets`` nets whose float32 values (parameters, gradients and an
    optimizer slot: 12 bytes a parameter) exceed ``$BNLAB_MAX_MODEL_BYTES`` (4 GiB by
    default), instead of failing with MemoryError (or swapping) after minutes."""
    limit = int(os.environ.get(MAX_MODEL_BYTES_ENV) or _DEFAULT_MAX_MODEL_BYTES)
    need = int(n_nets) * int(params_per_net) * 12
    if need > limit:
        raise ValueError(
            f"{where}: {n_nets} net(s) of {params_per_net:,} parameters would need about "
            f"{need / 2**30:.1f} GiB (limit {limit / 2**30:.1f} GiB); {fix}, or raise the "
            f"limit with {MAX_MODEL_BYTES_ENV}=BYTES"
        )


def check_count(n: int | None, available: int, key: str, what: str, where: str) -> int:
    """``n`` examples of ``available`` (all when None); more than there are is an error."""
    if n is None:
        return available
    if int(n) > available:
        raise ValueError(
            f"{where}: {flag(key)} {n} asks for more {what} than the {available} there are; "
            f"pass at most {available} (or leave it out for all)"
        )
    return int(n)


def check_batch(cfg: Any, n_train: int, n_test: int, batch: int, flag: str, where: str) -> None:
    """``cfg``'s ``train_subset``/``test_subset`` fit the ``n_train``/``n_test`` images found
    and ``batch`` (the ``flag`` option) fits the training images used."""
    n = check_count(cfg.train_subset or None, n_train, "train_subset", "images", where)
    check_count(cfg.test_subset or None, n_test, "test_subset", "images", where)
    if int(batch) > n:
        raise ValueError(
            f"{where}: {flag} {batch} is larger than the {n} training images; pass a smaller "
            f"{flag}" + (" or a larger --train-subset" if flag == "--batch-sizes" else "")
        )
