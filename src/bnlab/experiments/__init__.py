"""Floor 4: the published experiments, each a package of the same three modules.

``bnlab.experiments.<package>`` holds

- ``config.py``: ``CONFIG``, its :class:`~bnlab.experiments.config.ExperimentConfig` subclass
  (every option once: flag, default, check, ``config.json`` key);
- ``run.py``: ``run(config, out_dir) -> Path`` trains, writes ``config.json``,
  ``metrics.json`` and the report into ``out_dir`` and returns it (``config`` is a ``CONFIG``
  or a dict, missing keys take defaults);
- ``report.py``: ``render(run_dir) -> None`` re-renders figures and report from the files of
  a finished or interrupted run (``bnlab report``);

plus whatever private helpers it needs. The framework beside them: :mod:`.config`,
:mod:`.rundir`, :mod:`.report`, :mod:`.tables`, :mod:`.progress`, :mod:`.timing`; the code the
MNIST experiments share is :mod:`bnlab.experiments.mnist`, the CIFAR-10 ones' :mod:`.cifar`.

To add an experiment, write its package and add one line to ``_REGISTRY`` below, e.g.
``Experiment("covariate-shift", "one-line description")`` for ``covariate_shift/``; its
modules are imported only when used, so ``import bnlab.experiments`` stays light (no NumPy).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bnlab.experiments.config import ExperimentConfig

__all__ = ["EXPERIMENTS", "Experiment", "available", "get"]


@dataclass(frozen=True)
class Experiment:
    """One registered experiment: ``bnlab run NAME`` runs ``package``'s modules.

    ``data_parallel``: it trains data-parallel under mpiexec (``bnlab run`` refuses the
    others there, whose ranks would each run the whole experiment into the same directory).
    ``single_thread_blas``: its matrices are small (an MLP at batch 60), so ``bnlab run``
    starts it with OPENBLAS_NUM_THREADS=1 unless the user set it: BLAS threads buy nothing at
    these sizes, and on a busy 2-core machine OpenBLAS's spinning threads made an MLP step 15x
    slower (measured).
    """

    name: str
    description: str
    data_parallel: bool = False
    single_thread_blas: bool = False

    @property
    def package(self) -> str:
        """The experiment's package: ``bnlab.experiments.`` + the name with ``_`` for ``-``."""
        return f"{__name__}.{self.name.replace('-', '_')}"

    def module(self, part: str) -> ModuleType:
        """The package's module ``part`` ("config", "run" or "report"), imported now."""
        return importlib.import_module(f"{self.package}.{part}")

    @property
    def config(self) -> type[ExperimentConfig]:
        """The experiment's config class (``config.CONFIG``)."""
        cls: type[ExperimentConfig] = self.module("config").CONFIG
        return cls

    @property
    def run(self) -> Callable[[Any, str | Path], Path]:
        """``run(config, out_dir) -> run_dir``."""
        fn: Callable[[Any, str | Path], Path] = self.module("run").run
        return fn

    @property
    def render(self) -> Callable[[str | Path], None]:
        """``render(run_dir)``: figures and report from the run directory's files."""
        fn: Callable[[str | Path], None] = self.module("report").render
        return fn


_REGISTRY = [
    Experiment(
        "mnist-sigmoid",
        "Ioffe & Szegedy 2015, Figure 1: sigmoid MLP on MNIST with and without BN",
        data_parallel=True,
        single_thread_blas=True,
    ),
    Experiment(
        "mnist-lr",
        "BN-x5 / BN-x30: the sigmoid MLP at 1x, 5x and 30x a base learning rate",
        data_parallel=True,
        single_thread_blas=True,
    ),
    Experiment(
        "cifar10-keras",
        "Keras cifar10_cnn on CIFAR-10 without and with BN (77% -> 87% claim)",
        data_parallel=True,
    ),
    Experiment(
        "cifar10-resnet",
        "He et al. 2016: ResNet-20 on CIFAR-10 (8.75% error); a short schedule by default",
        data_parallel=True,
    ),
    Experiment(
        "batch-size",
        "Wu & He 2018, Figure 1: test error vs batch size for BN, renorm, GN, LN and SyncBN",
        data_parallel=True,
        single_thread_blas=True,
    ),
    Experiment(
        "population-stats",
        "BN MLP on MNIST: test accuracy with moving averages vs Algorithm 2 statistics",
    ),
    Experiment(
        "population-stats-epochs",
        "Per checkpoint (e.g. per epoch): test accuracy, moving averages vs Algorithm 2",
    ),
    Experiment(
        "renorm-small-batch",
        "Ioffe 2017: batch renorm vs batch norm on microbatches of 2/4 and non-i.i.d. MNIST",
        single_thread_blas=True,
    ),
    Experiment(
        "naive-normalization",
        "Ioffe & Szegedy 2015, section 2: normalizing outside the gradient lets biases explode",
        data_parallel=True,
    ),
    Experiment(
        "scale-invariance",
        "BN(aW u) = BN(W u): the same trajectory from aW with lr a^2, and the shrinking step",
        data_parallel=True,
    ),
    Experiment(
        "covariate-shift",
        "Santurkar et al. 2018: noisy BN, internal covariate shift, loss-landscape smoothness",
        data_parallel=True,
    ),
]
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in _REGISTRY}


def available() -> list[str]:
    """Names of the registered experiments, sorted."""
    return sorted(EXPERIMENTS)


def get(name: str) -> Experiment:
    """Experiment ``name``; a ValueError lists the known names otherwise."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; known experiments: {', '.join(available())}"
        ) from None
