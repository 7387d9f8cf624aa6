"""Deprecated: moved to :mod:`bnlab.experiments.cifar10_keras.report` (issue 12).

Importing this module warns (DeprecationWarning) and re-exports the public names; it goes
away in the next release.
"""

import warnings

from bnlab.experiments.cifar10_keras.report import POST, render

__all__ = ["POST", "render"]

warnings.warn(
    "bnlab.experiments.cifar10_keras_report moved to bnlab.experiments.cifar10_keras.report; "
    "import it from there",
    DeprecationWarning,
    stacklevel=2,
)
