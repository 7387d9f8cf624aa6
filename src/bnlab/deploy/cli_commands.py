"""Deprecated: ``bnlab.deploy.cli_commands`` was argparse code on the deploy floor; it moved.

- ``load_inputs`` (the training inputs named by ``--data``) is
  :func:`bnlab.deploy.inputs.load_inputs`;
- ``add_recalibrate``, ``add_export``, ``cmd_recalibrate`` and ``cmd_export`` (the
  ``bnlab recalibrate``/``bnlab export`` subcommands) are in :mod:`bnlab.cli.deploy`.

Importing this module warns (DeprecationWarning) and still gives the old names for one
release. The command-line names are looked up only when used, so that this floor-3 module
does not import the floor-5 command at import time.
"""

from __future__ import annotations

import warnings
from typing import Any

from bnlab.deploy.inputs import load_inputs

_CLI_NAMES = ("add_recalibrate", "add_export", "cmd_recalibrate", "cmd_export")
__all__ = [*_CLI_NAMES, "load_inputs"]

warnings.warn(
    "bnlab.deploy.cli_commands moved: load_inputs to bnlab.deploy.inputs, and add_recalibrate, "
    "add_export, cmd_recalibrate, cmd_export to bnlab.cli.deploy; import them from there "
    "(this module goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """The subcommand functions, from their new home :mod:`bnlab.cli.deploy`."""
    if name in _CLI_NAMES:
        from bnlab.cli import deploy  # floor 5, imported only for the old names

        return getattr(deploy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
