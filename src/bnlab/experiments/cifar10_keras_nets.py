"""Deprecated: moved to :mod:`bnlab.experiments.cifar10_keras.nets` (issue 12).

Importing this module warns (DeprecationWarning) and re-exports the public names; it goes
away in the next release. ``train_epoch`` is gone: train through
:meth:`bnlab.train.Trainer.fit_epoch`.
"""

import warnings

from bnlab.experiments.cifar10_keras.nets import (
    build_model,
    build_optimizer,
    epoch_batches,
    epoch_seed,
    reseed_dropout,
)

__all__ = ["build_model", "build_optimizer", "epoch_batches", "epoch_seed", "reseed_dropout"]

warnings.warn(
    "bnlab.experiments.cifar10_keras_nets moved to bnlab.experiments.cifar10_keras.nets; "
    "import it from there",
    DeprecationWarning,
    stacklevel=2,
)
