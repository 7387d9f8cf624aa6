"""Floor 4: one module per published experiment, each a function from a config to a run directory.

Every experiment module provides

- ``DESCRIPTION``: one line, shown by ``bnlab experiments``;
- ``add_arguments(parser)``: its ``bnlab run NAME`` options (argparse);
- ``run(config, out_dir) -> Path``: trains, writes ``config.json``, ``metrics.json`` and the
  report into ``out_dir`` and returns it; ``config`` is a dict, missing keys take defaults;
- optionally ``render(run_dir)``: re-renders figures and report from the files of a finished
  or interrupted run (``bnlab report``); without it a generic report is written.

To add an experiment, add one line to ``_MODULES`` below (name -> module path); modules are
imported only when used, so ``import bnlab.experiments`` stays light.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["DATA_PARALLEL", "SINGLE_THREAD_BLAS", "available", "get"]

# name -> module (imported lazily). Other experiments register here with one line each.
_MODULES: dict[str, str] = {
    "mnist-sigmoid": "bnlab.experiments.mnist.sigmoid",
    "mnist-lr": "bnlab.experiments.mnist.lr",
    "cifar10-keras": "bnlab.experiments.cifar10_keras",
    "population-stats": "bnlab.experiments.population.stats",
    "population-stats-epochs": "bnlab.experiments.population.epochs",
    "renorm-small-batch": "bnlab.experiments.renorm.experiment",
    "naive-normalization": "bnlab.experiments.naive_normalization.run",
    "scale-invariance": "bnlab.experiments.scale_invariance.run",
    "covariate-shift": "bnlab.experiments.covariate_shift.run",
}

# Experiments whose matrices are small (an MLP at batch 60): `bnlab run` starts them with
# OPENBLAS_NUM_THREADS=1 unless the user set it. BLAS threads buy nothing at these sizes, and on
# a busy 2-core machine OpenBLAS's spinning threads made an MLP step 15x slower (measured).
SINGLE_THREAD_BLAS: frozenset[str] = frozenset({"mnist-sigmoid", "mnist-lr", "renorm-small-batch"})

# Experiments that train data-parallel under mpiexec (bnlab.parallel); `bnlab run` refuses the
# others there, whose ranks would each run the whole experiment into the same directory.
DATA_PARALLEL: frozenset[str] = frozenset({"mnist-sigmoid", "mnist-lr", "cifar10-keras"})


def available() -> list[str]:
    """Names of the registered experiments, sorted."""
    return sorted(_MODULES)


def get(name: str) -> ModuleType:
    """The module of experiment ``name``; a ValueError lists the known names otherwise."""
    try:
        path = _MODULES[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; known experiments: {', '.join(available())}"
        ) from None
    return importlib.import_module(path)
