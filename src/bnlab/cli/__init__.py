"""Floor 5: the ``bnlab`` command. Nothing imports it.

    bnlab experiments                          list the experiments
    bnlab run EXPERIMENT [options] --out DIR   run one; ``bnlab run EXPERIMENT --help``
    bnlab report DIR                           re-render a finished or interrupted run
    bnlab recalibrate CHECKPOINT --data D ...  recompute BN population statistics (Algorithm 2)
    bnlab export CHECKPOINT MODEL.onnx         export to ONNX

``python -m bnlab ...`` is the same command. Ctrl-C during ``bnlab run`` leaves a valid
partial run (config, metrics so far, status "interrupted", report) and exits with status 130
(also when it lands inside a Numba kernel).

Errors are one line on stderr: exit status 2 for what the user gave (an option value, a path,
the content of a file named on the command line: ValueError and the not-found kind of
OSError), 1 for what went wrong while running (a full disk, a read-only filesystem, a run
directory in use by another run, a missing optional package). A misspelt option prints the
usage of the subcommand it was given to, with a suggestion. Every ``--help`` shows defaults.

The modules, by concern:

- :mod:`bnlab.cli.parser`: the ArgumentParser subclass (misspelt-flag suggestions) and the
  help formatter (defaults in ``--help``);
- :mod:`bnlab.cli.run`: ``experiments``, ``run`` and ``report``;
- :mod:`bnlab.cli.deploy`: ``recalibrate`` and ``export``;
- :mod:`bnlab.cli.entry`: :func:`main`, :func:`build_parser` and ``SUBCOMMANDS`` (append
  ``(NAME, add)`` there to add a subcommand), error handling and exit statuses, the BLAS
  thread default.
"""

from bnlab.cli.entry import SUBCOMMANDS, build_parser, main

__all__ = ["SUBCOMMANDS", "build_parser", "main"]
