"""Deprecated: moved to :mod:`bnlab.experiments.mnist.numbers` (importing this module warns;
its names stay for one release)."""

from __future__ import annotations

from bnlab.experiments.mnist.compat import warn_moved
from bnlab.experiments.mnist.numbers import (
    TRAINED,
    final,
    first_step_reaching,
    judge,
    size_word,
    summarize,
    versus_seeds,
)

__all__ = [
    "TRAINED",
    "final",
    "first_step_reaching",
    "judge",
    "size_word",
    "summarize",
    "versus_seeds",
]

warn_moved("mnist_sigmoid_numbers", "mnist.numbers")
