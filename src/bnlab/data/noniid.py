"""Non-i.i.d. minibatches: every batch holds examples of only two classes.

Ioffe 2017 (batch renormalization, section 4.4) trains on minibatches whose examples are not
drawn independently: here each batch of ``batch_size`` is ``batch_size / 2`` examples of each
of 2 distinct classes drawn at random. The statistics of such a batch are far from the
population's, which is what batch renorm's r and d correct.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["NonIIDBatches"]


class NonIIDBatches:
    """Endless minibatches of ``batch_size``: half from each of 2 random distinct classes.

    ``y`` holds class indices (0..C-1; a class without examples is never drawn). For every
    batch two distinct classes a, b are drawn, then ``batch_size // 2`` indices of each
    (with replacement only for a class smaller than that), then the ``batch_size`` indices
    are shuffled. One ``numpy.random.Generator`` seeded by ``seed`` draws everything, so the
    same seed gives the same batches::

        it = iter(NonIIDBatches(x, y, 32, seed=0))
        xb, yb = next(it)          # 16 examples of each of two classes
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise TypeError(f"NonIIDBatches: batch_size must be an int, got {batch_size!r}")
        if batch_size < 2 or batch_size % 2:
            raise ValueError(
                f"NonIIDBatches: batch_size must be even and >= 2 (half from each of 2 classes), "
                f"got {batch_size}"
            )
        if len(x) != len(y) or np.ndim(y) != 1:
            raise ValueError(
                f"NonIIDBatches: y must be one class index per row of x, got x of {len(x)} rows "
                f"and y of shape {np.shape(y)}"
            )
        self.x, self.y, self.half = x, y, batch_size // 2
        self.by_class = [np.flatnonzero(y == c) for c in range(int(y.max()) + 1)]
        self.by_class = [idx for idx in self.by_class if len(idx)]
        if len(self.by_class) < 2:
            raise ValueError(
                f"NonIIDBatches: y holds {len(self.by_class)} class(es); 2-class batches need "
                "examples of at least 2 classes"
            )
        self.rng = np.random.default_rng(seed)

    def indices(self) -> np.ndarray:
        """One batch's indices (a class smaller than half a batch is sampled with replacement)."""
        a, b = self.rng.choice(len(self.by_class), size=2, replace=False)
        parts = []
        for c in (a, b):
            pool = self.by_class[c]
            parts.append(self.rng.choice(pool, size=self.half, replace=len(pool) < self.half))
        return self.rng.permutation(np.concatenate(parts))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            idx = self.indices()
            yield self.x[idx], self.y[idx]
