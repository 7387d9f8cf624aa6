"""Deprecated: moved to :mod:`bnlab.data.cifar_source` (where the data is, loading it) and
:mod:`bnlab.data.sources` (what kind of copy it is), issue 12.

Importing this module warns (DeprecationWarning) and re-exports the public names; it goes
away in the next release. ``load`` is :func:`bnlab.data.cifar_source.load_cifar10_data`.
"""

import warnings

from bnlab.data.cifar_source import (
    ENV_DATA,
    FORMATS_HELP,
    CifarData,
    DataNotFoundError,
    load_cifar10_data,
    resolve_data_path,
)
from bnlab.data.sources import describe_source, jpeg_quality

__all__ = [
    "ENV_DATA",
    "FORMATS_HELP",
    "CifarData",
    "DataNotFoundError",
    "describe_source",
    "jpeg_quality",
    "load",
    "resolve_data_path",
]

load = load_cifar10_data

warnings.warn(
    "bnlab.experiments.cifar10_keras_data moved to bnlab.data.cifar_source; import it from "
    "there (describe_source and jpeg_quality from bnlab.data.sources)",
    DeprecationWarning,
    stacklevel=2,
)
