"""Data parallelism, the MPI strategy of :func:`bnlab.train.train_step`: :class:`DataParallel`.

Every rank holds the whole model and draws the same GLOBAL batch of n samples (the same seeded
iterator as one process); rank r of P trains on its contiguous shard of :func:`shard_bounds`
(sizes differ by at most one), and :meth:`DataParallel.reduce` sums the gradients and the
losses times the shard sizes over the ranks in ONE allreduce of a flat buffer per dtype. With
synchronized BN (:func:`prepare_model`, or no BN) P ranks follow the one-process run up to the
order of floating-point sums. With local BN each rank normalizes its own shard (PyTorch DDP
without SyncBatchNorm); the running statistics are then rank 0's, as DDP's
``broadcast_buffers`` (:meth:`DataParallel.sync_buffers`).

:meth:`DataParallel.setup` (called by ``Trainer.begin``) checks that every rank has the same
config, architecture and optimizer (:mod:`bnlab.train.consistency`; a
:class:`ConfigMismatchError` on every rank otherwise), then broadcasts rank 0's parameters,
buffers and optimizer state, so that a checkpoint (written by rank 0 alone, independent of the
world size) resumes at any world size.

Example (under ``mpiexec -n 4``; in one process ``world()`` is a world of one)::

    dp = DataParallel(world(), config=cfg)
    trainer = Trainer(model, SoftmaxCrossEntropy(), opt, BatchIterator(x, y, 60, seed=0),
                      parallel=dp, callbacks=callbacks if dp.is_root else [])
    trainer.fit(1000)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnlab.comm import Communicator, world
from bnlab.layers import Dropout, Layer, convert_sync_batchnorm
from bnlab.optim import Optimizer
from bnlab.train.consistency import (
    ConfigMismatchError,
    check_same,
    fingerprint,
    state_arrays,
    weights_digest,
)
from bnlab.train.evaluation import evaluate
from bnlab.train.step import LossFn

__all__ = [
    "BN_SYNC_MODES",
    "ConfigMismatchError",
    "DataParallel",
    "for_experiment",
    "is_root",
    "prepare_model",
    "shard_bounds",
]

BN_SYNC_MODES = ("global", "local")


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous shard of ``n`` samples over ``size`` ranks.

    With ``n = q * size + r``, ranks ``0 .. r-1`` get ``q + 1`` samples and the others ``q``:
    ``start = rank * q + min(rank, r)``. The shards tile ``[0, n)`` in rank order.

    >>> [shard_bounds(10, k, 4) for k in range(4)]
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    if size < 1 or not 0 <= rank < size or n < 0:
        raise ValueError(f"shard_bounds: need n >= 0 and 0 <= rank < size, got {n}, {rank}, {size}")
    q, r = divmod(int(n), int(size))
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def prepare_model(model: Layer, comm: Communicator, bn_sync: str = "global") -> Layer:
    """``model`` ready for data-parallel training on ``comm``: BatchNorm layers replaced by
    SyncBatchNorm for ``bn_sync="global"`` when the world has more than one rank."""
    if bn_sync not in BN_SYNC_MODES:
        raise ValueError(f"bn_sync must be one of {BN_SYNC_MODES}, got {bn_sync!r}")
    if comm.size == 1 or bn_sync == "local":
        return model
    return convert_sync_batchnorm(model, comm)


def for_experiment(model: Layer, cfg: dict[str, Any]) -> tuple[Layer, DataParallel | None]:
    """What an experiment needs to train ``model`` on the process's world (:func:`world`).

    A world of one: ``(model, None)``, the one-process run unchanged. P > 1 ranks: the model
    prepared for ``cfg["bn_sync"]`` (default "global", see :func:`prepare_model`) and a
    :class:`DataParallel` whose config check covers ``cfg``.
    """
    comm = world()
    if comm.size == 1:
        return model, None
    model = prepare_model(model, comm, str(cfg.get("bn_sync", "global")))
    return model, DataParallel(comm, config=cfg)


def is_root() -> bool:
    """True in rank 0 of the process's world (and in one process): the rank that writes."""
    return world().is_root


@dataclass
class _Bucket:
    """A flat buffer of one dtype holding the gradients ``entries`` (key, offset, size)."""

    buf: np.ndarray
    entries: list[tuple[str, int, int]] = field(default_factory=list)


class DataParallel:
    """The data-parallel :class:`~bnlab.train.Strategy`: state check and broadcast, batch
    sharding, gradient allreduce, shared evaluation, for one model (see the module).

    ``comm`` defaults to :func:`bnlab.comm.world`; ``config`` (any JSON-able value, e.g. the
    experiment config) must be the same on every rank. One instance serves one model.
    """

    def __init__(self, comm: Communicator | None = None, *, config: Any = None) -> None:
        self.comm = world() if comm is None else comm
        self.config = config
        self._buckets: list[_Bucket] = []
        self._model_id: int | None = None
        self.weights_differed = False  # True if rank 0's broadcast changed another rank

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def size(self) -> int:
        return self.comm.size

    @property
    def is_root(self) -> bool:
        return self.comm.is_root

    # -- start ----------------------------------------------------------------------------
    def setup(self, model: Layer, optimizer: Optimizer | None = None) -> None:
        """Check every rank trains the same thing, then copy rank 0's state to every rank.

        Raises :class:`ConfigMismatchError` on every rank (before anything changes) when the
        config, the architecture, the array shapes/dtypes or the optimizer differ. Then rank
        0's parameters, buffers, optimizer slots and step count are broadcast and the weights
        are verified to be identical. Collective: every rank must call it, in the same order.
        """
        check_same(self.comm.allgather_object(fingerprint(model, optimizer, self.config)))
        arrays = state_arrays(model, optimizer)
        before = self.comm.allgather_object(weights_digest(arrays))
        if len(set(before)) > 1:
            self.weights_differed = True
            for key, a in arrays.items():
                if not a.flags.c_contiguous:
                    raise ValueError(f"DataParallel.setup: '{key}' is not C-contiguous")
                self.comm.bcast(a, root=0)
            after = self.comm.allgather_object(weights_digest(arrays))
            if len(set(after)) > 1:
                raise ConfigMismatchError(
                    "DataParallel.setup: the weights still differ between ranks after the "
                    "broadcast from rank 0; the MPI installation is broken"
                )
        if optimizer is not None:
            optimizer.iterations = int(self.comm.allgather_object(optimizer.iterations)[0])
        self.decorrelate_dropout(model)
        self._allocate(model)

    def decorrelate_dropout(self, model: Layer) -> None:
        """Give every :class:`~bnlab.layers.Dropout` layer on this rank a generator of its
        own: ``default_rng([u, rank])`` with ``u`` drawn from its current generator. Otherwise
        ranks built from the same seed draw the same mask pattern for their shards.
        Deterministic for a given seed and world size; a no-op in one process. (The masks
        differ from the one-process run's, which draws one mask for the global batch:
        data-parallel training with dropout matches one process in distribution only.)
        """
        if self.size == 1:
            return
        for layer in model.modules():
            if isinstance(layer, Dropout):
                u = int(layer.rng.integers(2**63))
                layer.rng = np.random.default_rng([u, self.rank])

    def _allocate(self, model: Layer) -> None:
        """One flat buffer per gradient dtype; the first also carries the loss (last slot)."""
        by_dtype: dict[np.dtype, list[tuple[str, int]]] = {}
        for key, g in model.grads.items():
            by_dtype.setdefault(g.dtype, []).append((key, g.size))
        dtypes = sorted(by_dtype, key=lambda d: -d.itemsize) or [np.dtype(np.float64)]
        self._buckets = []
        for i, dt in enumerate(dtypes):
            entries, offset = [], 0
            for key, size in by_dtype.get(dt, []):
                entries.append((key, offset, size))
                offset += size
            self._buckets.append(_Bucket(np.zeros(offset + (i == 0), dt), entries))
        self._model_id = id(model)

    @property
    def message_bytes(self) -> int:
        """Bytes the gradient allreduce sends per rank and step (the buffers' sizes)."""
        return sum(b.buf.nbytes for b in self._buckets)

    # -- a step (bnlab.train.train_step) -----------------------------------------------------
    def shard(self, x: Any, y: Any = None) -> tuple[Any, Any]:
        """This rank's contiguous shard of the global batch ``(x, y)`` (y may be None).

        The first thing a step asks: a batch smaller than the world, or a step before
        :meth:`setup`, is refused here, before the model or the optimizer changes.
        """
        n = len(x)
        if n < self.size:
            raise ValueError(
                f"DataParallel: a global batch of {n} sample(s) cannot feed {self.size} ranks "
                f"(every rank needs at least one); use a batch size >= {self.size}"
            )
        if self._model_id is None:
            raise RuntimeError("DataParallel: call setup(model, optimizer) before training")
        start, stop = shard_bounds(n, self.rank, self.size)
        return x[start:stop], None if y is None else y[start:stop]

    def reduce(self, model: Layer, loss: float, m: int, n: int) -> float:
        """Sum ``model.grads`` over the ranks in place; return ``sum_r loss_r m_r / n``.

        One allreduce per gradient dtype, of a flat buffer; this rank's ``loss * m`` rides in
        the last slot of the first.
        """
        if self.size == 1:
            return loss
        if self._model_id != id(model):
            raise RuntimeError("DataParallel: call setup(model, optimizer) before training")
        grads = model.grads
        for b in self._buckets:
            for key, off, size in b.entries:
                b.buf[off : off + size] = grads[key].reshape(-1)
        self._buckets[0].buf[-1] = loss * m
        for b in self._buckets:
            self.comm.allreduce(b.buf)
        for b in self._buckets:
            for key, off, size in b.entries:
                g = grads[key]
                np.copyto(g, b.buf[off : off + size].reshape(g.shape))
        return float(self._buckets[0].buf[-1]) / n

    def sync_buffers(self, model: Layer) -> None:
        """Copy rank 0's buffers (BN running statistics) to every rank: with local BN each
        rank's drift apart, and rank 0's are the model (DDP's ``broadcast_buffers``)."""
        for key, a in model.buffers.items():
            if not a.flags.c_contiguous:
                raise ValueError(f"DataParallel.sync_buffers: '{key}' is not C-contiguous")
            self.comm.bcast(a, root=0)

    def evaluate(
        self,
        model: Layer,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 1000,
        *,
        loss_fn: LossFn | None = None,
    ) -> dict[str, float]:
        """:func:`bnlab.train.evaluate` of rank 0's model, the work shared by all ranks.

        Rank r evaluates its contiguous shard of ``(x, y)`` (eval mode, rank 0's running
        statistics, see :meth:`sync_buffers`); the correct counts and loss sums are summed:
        ``accuracy = sum_r correct_r / n``, ``loss = sum_r loss_r n_r / n``.
        """
        if self.size == 1:
            return evaluate(model, x, y, batch_size, loss_fn=loss_fn)
        self.sync_buffers(model)
        start, stop = shard_bounds(len(x), self.rank, self.size)
        m = stop - start
        ev = {"accuracy": 0.0, "loss": 0.0}
        if m > 0:
            ev = evaluate(model, x[start:stop], y[start:stop], batch_size, loss_fn=loss_fn)
        correct, loss_sum, n = self.sum([round(ev["accuracy"] * m), ev.get("loss", 0.0) * m, m])
        out = {"accuracy": correct / n}
        if loss_fn is not None:
            out["loss"] = loss_sum / n
        return out

    def sum(self, values: Sequence[float]) -> list[float]:
        """The elementwise sum over the ranks of a few numbers (float64), e.g. counts."""
        buf = np.asarray(values, dtype=np.float64).copy()
        self.comm.allreduce(buf)
        return [float(v) for v in buf]
