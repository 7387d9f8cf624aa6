"""Figure 1 (b, c) of Ioffe & Szegedy (2015): percentiles of one unit's sigmoid input.

:class:`ActivationMonitor` is a training callback that, every ``every`` steps, computes the
input of ``model.layers[layer_index]`` for a fixed set of examples (eval mode: BatchNorm with
its running statistics) and records the 15th, 50th and 85th percentiles of one unit's
values: the instrument of the Figure 1 experiment, a training callback like the others here.

Example (``model`` a Sequential whose layer 2 is a Sigmoid, ``x_test`` as in the README)::

    monitor = ActivationMonitor(x_test, layer_index=2, unit=0, every=500)
    Trainer(model, loss, optimizer, batches, callbacks=[monitor]).fit(5000)
    # history rows now hold p15, p50 and p85
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bnlab.layers.base import Layer
from bnlab.train.callbacks import PeriodicCallback
from bnlab.train.evaluation import forward_eval
from bnlab.train.loop import TrainState

__all__ = ["ActivationMonitor", "layer_input", "percentiles"]


def layer_input(model: Layer, x: np.ndarray, index: int, batch_size: int = 1000) -> np.ndarray:
    """The input of ``model.sublayers()[index]`` for every row of ``x``, in eval mode."""
    n = len(model.sublayers())
    if not -n <= index < n:
        raise ValueError(f"layer_input: index {index} out of range for a model of {n} layers")
    return forward_eval(model, x, batch_size, stop=index % n)


def percentiles(values: np.ndarray, qs: Sequence[float] = (15, 50, 85)) -> np.ndarray:
    """The ``qs`` percentiles of ``values`` with linear interpolation (numpy's default).

    For sorted values v_0 <= ... <= v_{n-1}, percentile q sits at position p = q/100 * (n - 1)
    and equals v_floor(p) + (p - floor(p)) * (v_ceil(p) - v_floor(p)).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("percentiles: values is empty")
    q = np.asarray(qs, dtype=np.float64)
    if np.any((q < 0) | (q > 100)):
        raise ValueError(f"percentiles: every q must lie in [0, 100], got {list(qs)}")
    pos = q / 100.0 * (v.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, v.size - 1)
    part = np.partition(v, np.unique(np.concatenate([lo, hi])))
    frac = pos - lo
    return part[lo] + frac * (part[hi] - part[lo])


class ActivationMonitor(PeriodicCallback):
    """Record percentiles of one unit's input to a chosen layer (e.g. a Sigmoid) over ``x``.

    The input of ``model.layers[layer_index]`` is computed in eval mode (BatchNorm with its
    population statistics) for every row of ``x``; column ``unit`` is summarized by its
    ``qs`` percentiles, recorded as ``p15``, ``p50``, ``p85`` (for the default qs).
    """

    def __init__(
        self,
        x: np.ndarray,
        *,
        layer_index: int,
        unit: int,
        every: int,
        qs: Sequence[float] = (15, 50, 85),
        batch_size: int = 1000,
        at_start: bool = True,
    ) -> None:
        super().__init__(every=every, at_start=at_start)
        self.x, self.layer_index, self.unit = x, layer_index, unit
        self.qs, self.batch_size = tuple(qs), batch_size

    def record(self, state: TrainState) -> None:
        """Compute the percentiles now and record them in the current history row."""
        h = layer_input(state.model, self.x, self.layer_index, self.batch_size)
        h = h.reshape(len(h), -1)
        if not 0 <= self.unit < h.shape[1]:
            raise ValueError(
                f"ActivationMonitor: unit {self.unit} out of range, layer "
                f"{self.layer_index} has {h.shape[1]} input units"
            )
        vals = percentiles(h[:, self.unit], self.qs)
        state.record(**{f"p{q:g}": float(v) for q, v in zip(self.qs, vals, strict=True)})
