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

from bnlab.data._args import as_generator, check_flag, check_rng_state, require_keys

__all__ = ["BatchIterator"]


class BatchIterator:
    """Iterate over ``(x[idx], y[idx])`` mini-batches of ``batch_size`` along axis 0.

    Every epoch uses a fresh permutation drawn from one ``numpy.random.Generator`` seeded by
    ``seed`` (an int, None or a Generator), so the same seed gives the same batches.
    ``y`` may be None or any array with the same first axis (class indices, one-hot rows,
    regression targets): it is sliced, not inspected (the loss checks labels).
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
        drop_last = check_flag(drop_last, "drop_last", "BatchIterator")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise TypeError(f"BatchIterator: batch_size must be an int, got {batch_size!r}")
        if batch_size < 1 or (drop_last and batch_size > n):
            raise ValueError(
                f"BatchIterator: batch_size must be in [1, {n}] with drop_last=True "
                f"(or >= 1 otherwise) for {n} samples, got {batch_size}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"BatchIterator: transform must be callable or None, got {transform!r}")
        rng = as_generator(seed, "BatchIterator")
        self.n, self.batch_size = n, int(batch_size)
        self.shuffle = check_flag(shuffle, "shuffle", "BatchIterator")
        self.drop_last, self.transform = drop_last, transform
        self.rng = rng
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
        """Restore :meth:`state_dict`; the data size and batch size must be the same.

        Everything is validated before anything (the transform's state included) changes.
        """
        where = "BatchIterator.load_state_dict"
        require_keys(state, ("rng", "epoch", "pos", "order", "n", "batch_size"), where)
        try:
            n, bs = int(state["n"]), int(state["batch_size"])
            epoch, pos = int(state["epoch"]), int(state["pos"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: n, batch_size, epoch and pos must be integers") from None
        if n != self.n or bs != self.batch_size:
            raise ValueError(
                f"{where}: the state is for {state['n']} samples in batches of "
                f"{state['batch_size']}, this iterator has {self.n} in batches of "
                f"{self.batch_size}"
            )
        order = np.asarray(state["order"])
        if order.size not in (0, self.n) or (order.size and order.dtype.kind not in "iu"):
            raise ValueError(
                f"{where}: 'order' must be empty or a permutation of {self.n} integer indices, "
                f"got {order.dtype} of size {order.size}"
            )
        if order.size and not np.array_equal(np.sort(order), np.arange(self.n)):
            raise ValueError(f"{where}: 'order' is not a permutation of 0..{self.n - 1}")
        if epoch < 0 or not 0 <= pos <= self.n or (order.size == 0 and pos != 0):
            raise ValueError(
                f"{where}: epoch {epoch} and position {pos} must satisfy epoch >= 0 and "
                f"0 <= pos <= {self.n} (pos 0 before the first epoch)"
            )
        check_rng_state(self.rng, state["rng"], where)
        tf: Any = self.transform
        if "transform" in state and hasattr(tf, "load_state_dict"):
            tf.load_state_dict(state["transform"])
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self._pos = epoch, pos
        self._order = None if order.size == 0 else order.astype(np.int64)
