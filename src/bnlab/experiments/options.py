"""An experiment's options, and checking its config before anything touches the run directory.

Every experiment has a table ``CHECKS`` of ``config key -> Check`` and calls
:func:`check_config` (plus the checks of what depends on the data or the model size) before
:func:`bnlab.experiments.report.start_run_dir`. Experiments whose options are a table of
:class:`Opt` (``OPTIONS``) derive everything else from it, one source per option:
``add_options`` gives the ``bnlab run`` flags (the default shown by ``--help``),
:func:`defaults_of` the ``DEFAULTS`` written to ``config.json``, :func:`checks_of` ``CHECKS``.
A bad value raises ValueError naming the command-line flag, the accepted range, the value
given and, where there is one, the fix: so ``bnlab run ... --force`` with a bad option leaves
the old run as it was, and a bad option never leaves a half-made run directory behind.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bnlab.train import BN_SYNC_MODES

__all__ = [
    "BN_SYNC",
    "Check",
    "MAX_MODEL_BYTES_ENV",
    "Opt",
    "add_options",
    "check_choices",
    "checks_of",
    "defaults_of",
    "check_config",
    "check_count",
    "check_model_bytes",
    "check_unknown",
    "flag",
    "mlp_params",
]

MAX_MODEL_BYTES_ENV = "BNLAB_MAX_MODEL_BYTES"
_DEFAULT_MAX_MODEL_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Check:
    """What one config value must be: an int or a finite float in ``[lo, hi]``.

    ``lo_open``/``hi_open`` make a bound strict (``lo < v``); ``optional`` allows None;
    ``many`` means a non-empty list of such values (``allow_empty``: possibly empty);
    ``flag`` overrides the ``--key-name``
    shown in messages; ``hint`` is appended to the message (what the value means, the fix).
    """

    kind: type = int
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False
    many: bool = False
    allow_empty: bool = False
    flag: str | None = None
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


def _as_number(v: Any) -> Any:
    """NumPy scalars as Python numbers (a config may come from code, not argparse)."""
    item = getattr(v, "item", None)
    return item() if callable(item) and not isinstance(v, list | tuple) else v


def check_config(cfg: Mapping[str, Any], checks: Mapping[str, Check], where: str) -> None:
    """Raise ValueError for the first value of ``cfg`` that ``checks`` rejects."""
    for key, c in checks.items():
        v = cfg.get(key)
        name = c.flag or flag(key)
        tail = f"; {c.hint}" if c.hint else ""
        if v is None:
            if c.optional:
                continue
            raise ValueError(f"{where}: {name} must be {c.expected()}, got None{tail}")
        if c.many:
            if isinstance(v, str) or not isinstance(v, Sequence) or not (v or c.allow_empty):
                raise ValueError(
                    f"{where}: {name} must be a non-empty list of {c.expected()}, got {v!r}{tail}"
                )
            bad = [x for x in map(_as_number, v) if not c.ok(x)]
            if bad:
                raise ValueError(
                    f"{where}: every {name} value must be {c.expected()}, got {bad[0]!r} "
                    f"in {list(v)}{tail}"
                )
        elif not c.ok(_as_number(v)):
            raise ValueError(f"{where}: {name} must be {c.expected()}, got {v!r}{tail}")


def check_unknown(config: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    """Raise ValueError for config keys an experiment does not have (a misspelt key)."""
    unknown = sorted(set(config) - set(known) - {"experiment"})
    if unknown:
        raise ValueError(f"{where}: unknown config keys {unknown}; known: {sorted(known)}")


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


@dataclass(frozen=True)
class Opt:
    """One option of an experiment: its default, its help text and what it must be.

    A bool default makes a flag: ``negate="--no-progress"`` stores False, otherwise
    ``--key`` stores True. ``nargs`` ("+", "*") makes a list; ``flag`` overrides ``--key``;
    ``parse`` converts the command-line text (default: the check's kind, else str);
    ``cli=False`` keeps an option out of the command line (a config key only).
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


# the data-parallel experiments' --bn-sync, declared once
BN_SYNC = Opt(
    "global",
    "under mpiexec: global = synchronized BN over all ranks (the one-process run), "
    "local = each rank normalizes its own shard (PyTorch DDP without SyncBatchNorm)",
    choices=BN_SYNC_MODES,
)


def add_options(p: argparse.ArgumentParser, opts: Mapping[str, Opt]) -> None:
    """The argparse options of ``opts`` (``dest`` = the config key)."""
    for key, o in opts.items():
        name = o.flag or flag(key)
        if not o.cli:
            continue
        if isinstance(o.default, bool):
            if o.negate:
                p.add_argument(o.negate, dest=key, action="store_false", help=o.help)
            else:
                p.add_argument(name, dest=key, action="store_true", help=o.help)
            continue
        kind = o.parse or (o.check.kind if o.check is not None else str)
        kw: dict[str, Any] = {"dest": key, "type": kind, "default": o.default, "help": o.help}
        if o.nargs:
            kw["nargs"] = o.nargs
        if o.choices:
            kw["choices"] = o.choices
        if o.required:
            kw["required"] = True
        p.add_argument(name, **kw)


def defaults_of(opts: Mapping[str, Opt]) -> dict[str, Any]:
    """``config key -> default`` (copies: a default list is never shared)."""
    return {k: copy.deepcopy(o.default) for k, o in opts.items()}


def checks_of(opts: Mapping[str, Opt]) -> dict[str, Check]:
    """``config key -> Check`` of the options that have one, with their flag for messages."""
    out = {}
    for k, o in opts.items():
        if o.check is not None:
            c = o.check
            if o.flag and not c.flag:
                c = dataclasses.replace(c, flag=o.flag)
            if o.nargs and not c.many:
                c = dataclasses.replace(c, many=True, allow_empty=o.nargs == "*")
            out[k] = c
    return out


def check_choices(cfg: Mapping[str, Any], opts: Mapping[str, Opt], where: str) -> None:
    """Raise ValueError for a value outside its option's ``choices`` (argparse checks them on
    the command line; this checks a config given in code)."""
    for key, o in opts.items():
        if o.choices and cfg.get(key) not in o.choices:
            raise ValueError(
                f"{where}: {o.flag or flag(key)} must be one of {', '.join(o.choices)}, "
                f"got {cfg.get(key)!r}"
            )
