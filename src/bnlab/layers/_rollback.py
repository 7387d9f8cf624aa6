"""Undo what a failed forward pass changed: a snapshot of the running statistics and random
generators below a list of layers, and putting it back (used by :class:`Sequential`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from bnlab.layers.base import Layer

__all__ = ["restore", "snapshot"]

_Saved = tuple[list[tuple[dict[str, np.ndarray], str, np.ndarray, np.ndarray]], list[Any]]


def _leaves(layers: list[Layer]) -> Iterator[Layer]:
    for layer in layers:
        inner = layer.sublayers()
        if inner:
            yield from _leaves(inner)
        else:
            yield layer


def snapshot(layers: list[Layer]) -> _Saved:
    """Copies of every buffer (running statistics: small) and generator state below
    ``layers``, to be put back by :func:`restore` if a forward pass fails."""
    buffers, gens = [], []
    for leaf in _leaves(layers):
        if not leaf.training:  # eval mode updates no statistics and draws no masks
            continue
        store = leaf.buffers
        for k, v in store.items():
            buffers.append((store, k, v, v.copy()))
        if type(leaf).generators is not _NO_GENERATORS:  # the base class's: {}
            for g in leaf.generators().values():
                gens.append((g, g.bit_generator.state))
    return buffers, gens


_NO_GENERATORS = Layer.generators


def restore(saved: _Saved) -> None:
    buffers, gens = saved
    for store, k, ref, copy in buffers:
        ref[...] = copy
        store[k] = ref
    for g, state in gens:
        g.bit_generator.state = state
