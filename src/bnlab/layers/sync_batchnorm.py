"""Synchronized batch normalization: the batch statistics of the global batch split over ranks.

Each rank holds a shard of the global batch; ``SyncBatchNorm`` and ``SyncBatchRenorm``
normalize every shard with the statistics of the *global* batch, so N ranks compute what one
process computes on the whole batch. They are :class:`BatchNorm` and :class:`BatchRenorm`
handing the kernels a :class:`CommReduction` as ``reduce``; nothing else differs::

    forward:   per ghost batch (count, mean, biased var) of the shard, float64; ONE allgather
               of a packed (G, 2C+1) buffer, merged in rank order by every rank
               (merge_moment_stack: the same bits everywhere, exact for unequal and empty
               shards); running_var gets var_global * m_global / (m_global - 1)
    backward:  ONE allreduce of [sum dy, sum dy * (x - mean_global)], (G, 2, C); dx from the
               global sums and count; grads are THIS rank's share (the trainer sums them)

Ghost batch j is rows ``[j k, (j+1) k)`` of the global batch (shards contiguous in rank
order): one more allgather, of the local sizes, per training forward. Every rank sees the
same global statistics, so every rank raises the same error together (a global count below 2,
NaN/Inf anywhere in the batch or its ``dy``). Eval mode with running statistics communicates
nothing. Classes of their own rather than a ``comm=`` option: the communicator is a run-time
dependency, not configuration (``get_config`` is BatchNorm's, a checkpoint loads in one
process or many), and PyTorch users know ``SyncBatchNorm`` and ``convert_sync_batchnorm``.

    >>> from bnlab.layers import BatchNorm, Sequential
    >>> x = np.random.default_rng(0).normal(size=(8, 3))   # a world of one: BatchNorm's numbers
    >>> bool(np.allclose(SyncBatchNorm(3).forward(x), BatchNorm(3).forward(x)))
    True
    >>> type(convert_sync_batchnorm(Sequential([BatchNorm(3)])).layers[0]).__name__
    'SyncBatchNorm'
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from bnlab.comm import Communicator, world
from bnlab.kernels.moments import merge_moment_stack
from bnlab.layers.base import Layer
from bnlab.layers.batchnorm import BatchNorm
from bnlab.layers.batchrenorm import BatchRenorm

__all__ = ["CommReduction", "SyncBatchNorm", "SyncBatchRenorm", "convert_sync_batchnorm"]


class CommReduction:
    """The reductions a synchronized layer hands the kernels over ``comm`` (buffers allocated
    once per shape): the moments, the backward sums, this rank's rows in the global batch."""

    def __init__(self, comm: Communicator) -> None:
        self.comm = comm
        self._bufs: dict[str, np.ndarray] = {}

    def _buffer(self, key: str, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        buf = self._bufs.get(key)
        if buf is None or buf.shape != shape:
            buf = self._bufs[key] = np.empty(shape, dtype)
        return buf

    def __deepcopy__(self, memo: dict[int, Any]) -> CommReduction:
        """A copy sharing the communicator (an MPI handle cannot be copied)."""
        return CommReduction(self.comm)

    def moments(
        self, count: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global ``(count (G,), mean (G, C), var (G, C))``: one allgather, Chan's merge."""
        G, C = mean.shape
        send = self._buffer("moments_send", (G, 2 * C + 1))
        recv = self._buffer("moments_recv", (self.comm.size, G, 2 * C + 1))
        send[:, 0] = count
        send[:, 1 : C + 1] = mean
        send[:, C + 1 :] = var
        self.comm.allgather(send, recv)
        return merge_moment_stack(recv[:, :, 0], recv[:, :, 1 : C + 1], recv[:, :, C + 1 :])

    def sums(self, sums: np.ndarray) -> np.ndarray:
        """Global ``[sum dy, sum dy * (x - mean)]`` ``(G, 2, C)``: one allreduce (sum)."""
        buf = self._buffer("grad_sums", sums.shape)
        buf[...] = sums
        self.comm.allreduce(buf)
        return buf

    def rows(self, n: int) -> tuple[int, int]:
        """(offset, total) of this rank's rows in the global batch: an allgather of sizes."""
        send = self._buffer("rows_send", (1,), np.int64)
        recv = self._buffer("rows_recv", (self.comm.size, 1), np.int64)
        send[0] = n
        self.comm.allgather(send, recv)
        return int(recv[: self.comm.rank, 0].sum()), int(recv[:, 0].sum())


class _Synced:
    """``comm`` (None: :func:`bnlab.comm.world`) as the kernels' reduction; not in the config."""

    _sync: CommReduction

    def __init__(
        self, num_features: int | None = None, *, comm: Communicator | None = None, **kw: Any
    ) -> None:
        self._sync = CommReduction(world() if comm is None else comm)  # first: errors name the rank
        super().__init__(num_features, **kw)  # type: ignore[call-arg]

    @property
    def comm(self) -> Communicator:
        return self._sync.comm


class SyncBatchNorm(_Synced, BatchNorm):
    """:class:`BatchNorm` over the global batch of all ranks of ``comm`` (see the module doc)."""

    _kind = "SyncBatchNorm"


class SyncBatchRenorm(_Synced, BatchRenorm):
    """:class:`BatchRenorm` over the global batch: r and d from the global mu_B and sigma_B;
    ``virtual_batch_size`` must divide the global batch size."""

    _kind = "SyncBatchRenorm"


def _sync_twin(layer: BatchNorm | BatchRenorm, comm: Communicator | None) -> Layer:
    cls = SyncBatchNorm if isinstance(layer, BatchNorm) else SyncBatchRenorm
    with warnings.catch_warnings():  # the momentum warning was given for the original layer
        warnings.simplefilter("ignore")
        twin = cls(**layer.get_config(), comm=comm)
    # the same arrays: an optimizer built on the old layer keeps updating the new one
    twin.params, twin.grads, twin.buffers = layer.params, layer.grads, layer.buffers
    twin.regularizers = layer.regularizers
    twin.training = layer.training
    return twin


def convert_sync_batchnorm(model: Layer, comm: Communicator | None = None) -> Layer:
    """Replace every BatchNorm/BatchRenorm in ``model`` by its synchronized twin, in place.

    As PyTorch's ``convert_sync_batchnorm``: containers (a ``layers`` list) are walked
    recursively; the twins share the original layers' parameter, gradient and buffer arrays,
    configuration and mode. Returns ``model`` (or the twin if it is a batch-norm layer).
    """
    if isinstance(model, (SyncBatchNorm, SyncBatchRenorm)):
        return model
    if isinstance(model, (BatchNorm, BatchRenorm)):
        return _sync_twin(model, comm)
    children = getattr(model, "layers", None)
    if isinstance(children, list):
        for i, child in enumerate(children):
            children[i] = convert_sync_batchnorm(child, comm)
    return model
