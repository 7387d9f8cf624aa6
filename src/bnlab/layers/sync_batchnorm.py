"""Synchronized batch normalization: the batch statistics of the global batch split over ranks.

Data-parallel training gives each rank (process) a shard of the global batch. ``SyncBatchNorm``
and ``SyncBatchRenorm`` normalize every shard with the statistics of the *global* batch, so N
ranks compute what one process computes on the whole batch. They are :class:`BatchNorm` and
:class:`BatchRenorm` with the two reduction hooks of the normalization core
(:mod:`bnlab.layers._normalization`) overridden; nothing else differs::

    forward:   each rank: per chunk (count, mean, biased var) of its shard, float64
               ONE allgather of a packed (G, 2C+1) buffer; every rank merges the P triples in
               rank order with Chan's formula (merge_moment_stack): identical bits everywhere,
               exact for unequal and empty shards, no sum-of-squares cancellation
               y = gamma * (x - mean_global) / sqrt(var_global + eps) + beta
               running_var gets var_global * m_global / (m_global - 1), m_global = global count
    backward:  ONE allreduce (sum) of packed [sum dy, sum dy * (x - mean_global)], (G, 2, C)
               dx with the global sums and the global count
               grads["gamma"], grads["beta"]: THIS rank's share (rstd * local sum dy*(x-mean),
               local sum dy); the data-parallel trainer sums gradients over ranks, which gives
               the one-process values

Ghost batches (``virtual_batch_size=k``): chunk j is rows ``[j k, (j+1) k)`` of the global
batch, the shards being contiguous in rank order (rank 0 holds the first rows). Finding where
this rank's rows fall takes one more small collective per training forward, an allgather of
the local batch sizes; it is used with ``virtual_batch_size`` only.

Every rank sees the same global statistics, so every rank raises the same error together (a
global count below 2, NaN/Inf anywhere in the global batch or its ``dy``): no rank is left
waiting in a collective. An error found before the collective (a malformed input on one rank
only) is local to that rank; ending the job then is the data-parallel runner's fault handling.
Eval mode with running statistics communicates nothing (without them, as with
``track_running_stats=False``, eval normalizes with the global batch's statistics too, so every
rank must run it). The packed buffers are allocated once per (G, C) shape and reused.

Why classes of their own rather than a ``sync=`` option on BatchNorm: the communicator is a
run-time dependency, not configuration (``get_config`` stays the same and a checkpoint loads
in one process or many), the local layers keep no communication code, and PyTorch users know
``SyncBatchNorm`` and ``convert_sync_batchnorm``.

Example (a world of one: the same numbers as BatchNorm)::

    >>> import numpy as np
    >>> from bnlab.layers import BatchNorm, Sequential, SyncBatchNorm, convert_sync_batchnorm
    >>> x = np.random.default_rng(0).normal(size=(8, 3))
    >>> sbn = SyncBatchNorm(3).astype(np.float64)     # comm=None: bnlab.comm.world()
    >>> bool(np.allclose(sbn.forward(x), BatchNorm(3).astype(np.float64).forward(x)))
    True
    >>> model = convert_sync_batchnorm(Sequential([BatchNorm(3)]))
    >>> type(model.layers[0]).__name__
    'SyncBatchNorm'
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, ClassVar

import numpy as np

from bnlab.comm import Communicator, world
from bnlab.kernels import merge_moment_stack
from bnlab.layers.base import Layer
from bnlab.layers.batchnorm import BatchNorm
from bnlab.layers.batchrenorm import BatchRenorm

__all__ = ["SyncBatchNorm", "SyncBatchRenorm", "convert_sync_batchnorm"]


class _SyncReductions:
    """The reduction hooks over a communicator; mixed in before BatchNorm/BatchRenorm."""

    comm: Communicator
    _kind: ClassVar[str]
    name: str

    def _init_comm(self, comm: Communicator | None) -> None:
        self.comm = world() if comm is None else comm
        self._bufs: dict[str, np.ndarray] = {}

    def _buffer(self, key: str, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        buf = self._bufs.get(key)
        if buf is None or buf.shape != shape:
            buf = self._bufs[key] = np.empty(shape, dtype)
        return buf

    @property
    def _where(self) -> str:
        return f"{self._kind} layer '{self.name}' (rank {self.comm.rank} of {self.comm.size})"

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A deep copy that shares the communicator (an MPI handle cannot be copied)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, value if key == "comm" else copy.deepcopy(value, memo))
        return new

    def _reduce_moments(
        self, count: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One allgather of [count, mean, var] per chunk; merged in rank order (Chan)."""
        G, C = mean.shape
        send = self._buffer("moments_send", (G, 2 * C + 1))
        recv = self._buffer("moments_recv", (self.comm.size, G, 2 * C + 1))
        send[:, 0] = count
        send[:, 1 : C + 1] = mean
        send[:, C + 1 :] = var
        self.comm.allgather(send, recv)
        return merge_moment_stack(recv[:, :, 0], recv[:, :, 1 : C + 1], recv[:, :, C + 1 :])

    def _reduce_grad_sums(self, sums: np.ndarray) -> np.ndarray:
        """One allreduce (sum) of the packed backward sums, into a reused buffer."""
        buf = self._buffer("grad_sums", sums.shape)
        buf[...] = sums
        self.comm.allreduce(buf)
        return buf

    def _global_rows(self, n: int) -> tuple[int, int]:
        """(offset, total) of this rank's rows in the global batch: an allgather of sizes."""
        send = self._buffer("rows_send", (1,), np.int64)
        recv = self._buffer("rows_recv", (self.comm.size, 1), np.int64)
        send[0] = n
        self.comm.allgather(send, recv)
        return int(recv[: self.comm.rank, 0].sum()), int(recv[:, 0].sum())


class SyncBatchNorm(_SyncReductions, BatchNorm):
    """:class:`BatchNorm` over the global batch of all ranks of ``comm`` (see the module doc).

    Same arguments as BatchNorm plus ``comm`` (a :class:`bnlab.comm.Communicator`; None is
    :func:`bnlab.comm.world`). ``get_config`` does not contain the communicator: a layer
    rebuilt from its config uses the world of the process that rebuilds it.
    """

    _kind = "SyncBatchNorm"

    def __init__(
        self, num_features: int | None = None, *, comm: Communicator | None = None, **kwargs: Any
    ) -> None:
        self._init_comm(comm)  # first: error messages name the rank
        super().__init__(num_features, **kwargs)


class SyncBatchRenorm(_SyncReductions, BatchRenorm):
    """:class:`BatchRenorm` over the global batch: r and d from the global mu_B and sigma_B.

    Same arguments as BatchRenorm plus ``comm``; ``virtual_batch_size`` must divide the
    global batch size.
    """

    _kind = "SyncBatchRenorm"

    def __init__(
        self, num_features: int | None = None, *, comm: Communicator | None = None, **kwargs: Any
    ) -> None:
        self._init_comm(comm)  # first: error messages name the rank
        super().__init__(num_features, **kwargs)


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

    As PyTorch's ``nn.SyncBatchNorm.convert_sync_batchnorm``: containers (anything with a
    ``layers`` list, such as :class:`bnlab.layers.Sequential`) are walked recursively; the
    twins share the original layers' parameter, gradient and buffer arrays and keep their
    configuration and train/eval mode. Returns ``model`` (or the twin if ``model`` itself is
    a batch-norm layer). Layers that are already synchronized are left as they are.
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
