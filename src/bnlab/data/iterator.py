"""Mini-batches with seeded shuffling, resumable bit for bit.

>>> it = BatchIterator(np.arange(10.0)[:, None], np.arange(10), 4, seed=0, drop_last=True)
>>> [len(yb) for xb, yb in it]          # one epoch
[4, 4]
>>> xb, yb = next(it.batches())         # step-based training: an endless stream of batches
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["BatchIterator"]


class BatchIterator:
    """Iterate over ``(x[idx], y[idx])`` mini-batches of ``batch_size`` along axis 0.

    Every epoch uses a fresh permutation drawn from one ``numpy.random.Generator`` seeded by
    ``seed`` (an int, None or a Generator), so the same seed gives the same batches.
    ``drop_last=True`` drops the final incomplete batch of each epoch (the samples left out
    differ from epoch to epoch when shuffling). ``transform`` (e.g. an
    :class:`~bnlab.data.augment.ImageAugmenter`) is applied to each ``xb``.

    ``for xb, yb in it`` runs to the end of the current epoch (starting a new one if the last
    finished); :meth:`batches` yields forever, across epochs. ``state_dict()`` captures the
    generator state, the current permutation and the position in it (and the transform's
    state if it has one), so a restored iterator continues with exactly the same batches.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | np.random.Generator | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.x = np.asarray(x)
        self.y = None if y is None else np.asarray(y)
        n = self.x.shape[0] if self.x.ndim else 0
        if self.x.ndim == 0 or n == 0:
            raise ValueError(f"BatchIterator: x must hold at least one sample, got {self.x.shape}")
        if self.y is not None and (self.y.ndim == 0 or self.y.shape[0] != n):
            raise ValueError(
                f"BatchIterator: x and y must have the same number of samples (axis 0), got x "
                f"{self.x.shape} and y {self.y.shape}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise TypeError(f"BatchIterator: batch_size must be an int, got {batch_size!r}")
        if batch_size < 1 or (drop_last and batch_size > n):
            raise ValueError(
                f"BatchIterator: batch_size must be in [1, {n}] with drop_last=True "
                f"(or >= 1 otherwise) for {n} samples, got {batch_size}"
            )
        self.n, self.batch_size = n, int(batch_size)
        self.shuffle, self.drop_last, self.transform = bool(shuffle), bool(drop_last), transform
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.epoch = 0  # epochs started so far
        self._order: np.ndarray | None = None
        self._pos = 0

    def __len__(self) -> int:
        """Batches per epoch: ``n // batch_size`` if ``drop_last`` else ``ceil(n / batch_size)``."""
        full, rest = divmod(self.n, self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)

    @property
    def _end(self) -> int:
        return self.n - self.n % self.batch_size if self.drop_last else self.n

    def _start_epoch_if_done(self) -> None:
        if self._order is None or self._pos >= self._end:
            self._order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
            self._pos = 0
            self.epoch += 1

    def next_batch(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The next batch, starting a new epoch when the current one is exhausted."""
        self._start_epoch_if_done()
        assert self._order is not None
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += idx.size
        xb = self.x[idx]
        yb = None if self.y is None else self.y[idx]
        if self.transform is not None:
            xb = self.transform(xb)
        return xb, yb

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        self._start_epoch_if_done()
        while self._pos < self._end:
            yield self.next_batch()

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield batches forever (epoch after epoch), for step-based training loops."""
        while True:
            yield self.next_batch()

    # -- serialization ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Generator state, epoch, position and current permutation (plus the transform's)."""
        state: dict[str, Any] = {
            "rng": self.rng.bit_generator.state,
            "epoch": self.epoch,
            "pos": self._pos,
            "order": np.zeros(0, np.int64) if self._order is None else self._order.copy(),
            "n": self.n,
            "batch_size": self.batch_size,
        }
        tf: Any = self.transform
        if hasattr(tf, "state_dict"):
            state["transform"] = tf.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the data size and batch size must be the same."""
        where = "BatchIterator.load_state_dict"
        if int(state["n"]) != self.n or int(state["batch_size"]) != self.batch_size:
            raise ValueError(
                f"{where}: the state is for {state['n']} samples in batches of "
                f"{state['batch_size']}, this iterator has {self.n} in batches of "
                f"{self.batch_size}"
            )
        order = np.asarray(state["order"], dtype=np.int64)
        if order.size not in (0, self.n):
            raise ValueError(f"{where}: 'order' has {order.size} entries, expected {self.n}")
        tf: Any = self.transform
        if "transform" in state and hasattr(tf, "load_state_dict"):
            tf.load_state_dict(state["transform"])
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self._pos = int(state["epoch"]), int(state["pos"])
        self._order = None if order.size == 0 else order.copy()
