"""Exact population statistics for inference: Algorithm 2 of Ioffe & Szegedy (2015), steps 8-12.

A network trained with batch normalization keeps moving averages of the batch statistics; those
lag behind the weights (momentum 0.1 remembers roughly the last 10 steps, each taken with older
weights). Algorithm 2 replaces them, with the weights fixed, by the statistics of the whole
training set as seen through the final network::

    E[x]   = mean over batches B of mu_B
    Var[x] = m / (m - 1) * mean over batches B of sigma_B^2

where ``mu_B`` and ``sigma_B^2`` (biased) are the statistics of one BN layer's input on batch B
in training mode, and ``m`` is the number of values per channel in one batch (N for dense
activations, N*H*W for NHWC images). Inference then uses
``y = gamma * (x - E[x]) / sqrt(Var[x] + eps) + beta``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnlab.deploy._walk import (
    describe,
    iter_paths,
    restore_modes,
    save_modes,
    tracks_running_stats,
)
from bnlab.kernels import BatchNormCache
from bnlab.layers._normalization import BatchNormBase
from bnlab.layers.base import Layer

__all__ = [
    "batch_norm_layers",
    "recompute_population_stats",
    "PopulationStatsSummary",
    "shuffled_batches",
    "tracks_running_stats",
]


@dataclass
class PopulationStatsSummary:
    """What :func:`recompute_population_stats` did.

    ``num_batches``/``num_examples``: what went through the model; ``layers``: the BN layers
    updated, by path (the prefix of their state_dict keys: ``"1"`` is ``model.layers[1]``,
    ``"2.0"`` a layer in a nested Sequential; a lone BN layer by its name);
    ``values_per_channel``: m of each such layer summed over all batches; ``skipped``: BN
    layers without running statistics (``track_running_stats=False``).
    """

    num_batches: int = 0
    num_examples: int = 0
    layers: list[str] = field(default_factory=list)
    values_per_channel: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class _Accumulator:
    """Streaming sums for one BN layer: sum of batch means and of unbiased batch variances.

    The batch statistics are the layer's own: the ``(count, mean, biased var)`` per ghost batch
    that its training forward pass computed with :func:`bnlab.kernels.moments` (float64, one
    fused pass) and normalized with. Nothing is recomputed here. They are averaged, not merged
    with :func:`bnlab.kernels.merge_moments`: Algorithm 2's Var[x] is the mean of the batch
    variances, while merging gives the variance of the union, which adds the variance of the
    batch means.
    """

    def __init__(self, bn: BatchNormBase, label: str) -> None:
        self.bn = bn
        self.label = label
        self.count = 0
        self.values = 0
        self.sum_mean: np.ndarray | None = None
        self.sum_var: np.ndarray | None = None
        self._seen: object = _last_pass(bn)

    def collect(self) -> None:
        """Add the statistics of the layer's latest forward pass (if it ran since the last)."""
        cache = _last_pass(self.bn)
        if cache is None or cache is self._seen:
            return  # not reached by this forward pass
        self._seen = cache
        if len(cache.count) == 0 or cache.count.min() < 2:
            m = int(cache.count.min()) if len(cache.count) else 0
            raise ValueError(
                f"recompute_population_stats: {self.label}: a batch gives m={m} value(s) per "
                f"channel (input shape {cache.shape}); the unbiased variance m/(m-1) needs "
                "m >= 2: use batches of 2 or more examples"
            )
        for m_b, mean, var in zip(cache.count.tolist(), cache.mean, cache.var, strict=True):
            if self.sum_mean is None or self.sum_var is None:
                self.sum_mean, self.sum_var = np.zeros_like(mean), np.zeros_like(var)
            self.sum_mean += mean
            self.sum_var += var * (m_b / (m_b - 1))
            self.count += 1
            self.values += m_b


def _last_pass(bn: BatchNormBase) -> BatchNormCache | None:
    """What ``bn``'s latest forward pass kept (its batch statistics in training mode)."""
    return bn.last_pass


def _batch_input(batch: Any) -> np.ndarray:
    """The model input of a batch: the array itself, or the first element of an (x, y) pair."""
    if isinstance(batch, tuple | list):
        if not batch:
            raise ValueError("recompute_population_stats: got an empty tuple as a batch")
        batch = batch[0]
    return np.asarray(batch)


def batch_norm_layers(model: Layer) -> list[tuple[str, BatchNormBase]]:
    """``(path, layer)`` of every BN layer of ``model`` (also inside containers), in order;
    ``tracks_running_stats(layer)`` tells which have population statistics to recompute."""
    return [(p or bn.name, bn) for p, bn in iter_paths(model) if isinstance(bn, BatchNormBase)]


def recompute_population_stats(model: Layer, batches: Iterable[Any]) -> PopulationStatsSummary:
    """Set every BN layer's running statistics to the population statistics (Algorithm 2).

    With the weights fixed, each batch of ``batches`` (arrays ``x`` or ``(x, y)`` pairs, e.g. a
    :class:`bnlab.data.BatchIterator` over the training set) goes through ``model`` in training
    mode; for every BN layer (any :class:`~bnlab.layers._normalization.BatchNormBase`, found
    inside Sequential containers too) the per-channel mean and biased variance of its input,
    as the layer itself computed them (float64), are accumulated, no batch being kept. Then::

        running_mean = (1/B) * sum_b mu_b
        running_var  = (1/B) * sum_b m_b/(m_b - 1) * sigma_b^2   (= m/(m-1) * mean sigma_b^2)

    over the B batches (with ``virtual_batch_size`` set, the virtual batches). The layers' own
    moving-average updates during the pass are undone (their buffers are restored first, and
    ``num_batches_tracked`` is left as it was), every layer's train/eval mode is put back, and
    on an exception nothing is changed. BN layers with ``track_running_stats=False`` are skipped.

    Dropout layers run in training mode too, as in the training network of Algorithm 2; their
    generators are put back afterwards, so the pass leaves a resumed run's masks unchanged.

    Returns:
        A :class:`PopulationStatsSummary`.
    """
    found = batch_norm_layers(model)
    summary = PopulationStatsSummary()
    summary.skipped = [key for key, bn in found if not tracks_running_stats(bn)]
    keys = [key for key, bn in found if tracks_running_stats(bn)]
    bns = [bn for _, bn in found if tracks_running_stats(bn)]
    if not bns:
        raise ValueError(
            "recompute_population_stats: the model has no BatchNorm layer with running "
            f"statistics (skipped: {summary.skipped}); nothing to recompute"
        )
    accs = [_Accumulator(bn, describe(key, bn)) for key, bn in zip(keys, bns, strict=True)]
    _training_pass(model, bns, batches, accs, summary)
    if summary.num_batches == 0:
        raise ValueError("recompute_population_stats: batches is empty; nothing was changed")
    for acc in accs:
        if acc.count == 0 or acc.sum_mean is None or acc.sum_var is None:
            raise RuntimeError(
                f"recompute_population_stats: {acc.label} was never reached by the forward "
                "pass; is it part of the model's forward?"
            )
    for key, bn, acc in zip(keys, bns, accs, strict=True):
        assert acc.sum_mean is not None and acc.sum_var is not None
        _write(bn, "running_mean", acc.sum_mean / acc.count)
        _write(bn, "running_var", acc.sum_var / acc.count)
        summary.layers.append(key)
        summary.values_per_channel[key] = acc.values
    return summary


def _training_pass(
    model: Layer,
    bns: list[BatchNormBase],
    batches: Iterable[Any],
    accs: list[_Accumulator],
    summary: PopulationStatsSummary,
) -> None:
    """Forward every batch in training mode, collecting each BN's statistics; then (also on
    an exception) put back the BN buffers, the generators' states and every layer's mode."""
    modes = save_modes(model)
    saved = [{k: np.array(v, copy=True) for k, v in bn.buffers.items()} for bn in bns]
    gens = model.generators()
    gen_states = {k: g.bit_generator.state for k, g in gens.items()}
    try:
        model.train()
        for batch in batches:
            x = _batch_input(batch)
            model.forward(x)
            for acc in accs:
                acc.collect()
            summary.num_batches += 1
            summary.num_examples += int(x.shape[0])
    finally:
        for bn, buffers in zip(bns, saved, strict=True):
            for k, v in buffers.items():
                _write(bn, k, v)
        for k, state in gen_states.items():  # Dropout's masks: the pass draws, the model keeps
            gens[k].bit_generator.state = state
        restore_modes(modes)


def shuffled_batches(
    x: np.ndarray, batch_size: int, *, limit: int | None = None, seed: int = 0
) -> Iterator[np.ndarray]:
    """Algorithm 2's training mini-batches: equal batches of a random subset of ``x``.

    ``limit`` examples (all when None) are drawn without replacement in an order fixed by
    ``seed`` and cut into batches of ``batch_size``; the incomplete last batch is dropped so
    every batch has the same m. The draw is random, not the first rows, because training sets
    are often stored sorted by class (image folders are): a batch of one class has statistics
    far from the population's, and the first 10,000 rows of such a set hold two classes only.

    Raises:
        ValueError: ``batch_size`` < 2 (m/(m-1) needs m >= 2) or fewer examples than one batch.
    """
    m = int(batch_size)
    if m < 2:
        raise ValueError(f"shuffled_batches: batch_size must be >= 2 (m/(m-1)), got {batch_size}")
    n = len(x) if limit is None else min(int(limit), len(x))
    if n < m:
        raise ValueError(
            f"shuffled_batches: {n} examples are fewer than one batch of {m}; "
            "lower the batch size or pass more data"
        )
    order = np.random.default_rng(seed).permutation(len(x))[: n - n % m]
    return (x[np.sort(order[i : i + m])] for i in range(0, len(order), m))


def _write(layer: Layer, key: str, value: np.ndarray) -> None:
    """Write a buffer in place (keeps the array other holders, e.g. Sequential, point at)."""
    buf = layer.buffers[key]
    if isinstance(buf, np.ndarray) and buf.shape == np.shape(value) and buf.flags.writeable:
        buf[...] = value
    else:
        layer.buffers[key] = np.array(value, dtype=np.asarray(buf).dtype, copy=True)
