"""Support for the deprecated module paths of the MNIST experiments (one release).

The old modules (``bnlab.experiments.mnist_common``, ``mnist_sigmoid``, ``mnist_lr``,
``mnist_sigmoid_figures``, ``mnist_sigmoid_numbers``, ``mnist_sigmoid_readme``,
``mnist_sigmoid_report``) warn on import with :func:`warn_moved` and keep their old
signatures, which took config dicts: :func:`as_config` turns such a dict into the config
object the new functions take.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, TypeVar

from bnlab.experiments.mnist.config import MnistConfig, MnistLrConfig, MnistSigmoidConfig

__all__ = ["as_attrs", "as_config", "config_of", "warn_moved"]

C = TypeVar("C", bound=MnistConfig)


def warn_moved(old: str, new: str) -> None:
    """DeprecationWarning: ``bnlab.experiments.OLD moved to bnlab.experiments.NEW``."""
    warnings.warn(
        f"bnlab.experiments.{old} moved to bnlab.experiments.{new}; import it from there "
        "(the old module goes away in the next release)",
        DeprecationWarning,
        stacklevel=3,
    )


def as_config(cfg: Any) -> MnistConfig:
    """``cfg`` itself if it is a config object; a dict (an old resolved config) checked as
    the config of its ``"experiment"`` (mnist-lr, else mnist-sigmoid)."""
    if isinstance(cfg, MnistConfig):
        return cfg
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected an MnistConfig or a config dict, got {type(cfg).__name__}")
    cls = MnistLrConfig if cfg.get("experiment") == "mnist-lr" else MnistSigmoidConfig
    return cls.from_dict(cfg)


def config_of(cfg: Any, cls: type[C]) -> C:
    """``cfg`` as a ``cls`` (a dict is checked by ``cls.from_dict``)."""
    if isinstance(cfg, cls):
        return cfg
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a {cls.__name__} or a config dict, got {type(cfg).__name__}")
    return cls.from_dict({**cfg, "experiment": cls.NAME})


def as_attrs(cfg: Any) -> Any:
    """A dict's keys as attributes (over the shared defaults); any other object as it is:
    for :func:`~bnlab.experiments.mnist.nets.build_net`/``load_data``, which read attributes."""
    if isinstance(cfg, Mapping):
        return SimpleNamespace(**{**MnistConfig.defaults(), **cfg})
    return cfg
