"""The normalization layer of ``naive-normalization``: batch centring or batch norm, with the
gradient through the batch statistics (proper) or with a stop-gradient on them (naive).

Ioffe & Szegedy 2015, section 2. A layer computes ``x = u + b`` (the bias ``b`` of the Dense
layer before this one) and normalizes it with statistics of the batch::

    centre:  y = x - mu,                      mu = (1/m) sum_n x_n
    full:    y = gamma * (x - mu) / s + beta, s = sqrt(var + eps), var = (1/m) sum_n (x_n - mu)^2

**Proper** (the gradient of the function the network computes; what BN does)::

    centre:  dx_n = dy_n - (1/m) sum_k dy_k
    full:    dx_n = gamma / s * (dy_n - mean(dy) - xhat_n * mean(dy * xhat)),  xhat = (x - mu) / s

so ``db = sum_n dx_n = 0``: the output does not depend on ``b`` and the bias receives no
gradient (to rounding).

**Naive** (the statistics treated as constants, ``stop_gradient(mu)``, ``stop_gradient(s)``:
the method of "train, update, then normalize")::

    centre:  dx_n = dy_n
    full:    dx_n = gamma / s * dy_n

so ``db = sum_n dy_n``, which is not zero. The update ``b <- b - lr * db`` moves every ``x_n``
by the same ``-lr * db``, which the next batch mean takes away again: ``u + b' - E[u + b'] =
u + b - E[u + b]``. The output and the loss do not change, and as long as ``sum_n dy_n`` keeps
its sign on average, ``b`` grows without bound. ``dgamma = sum dy * xhat`` and ``dbeta =
sum dy`` are the same in both modes (``gamma`` and ``beta`` act after the statistics).

The full mode runs the public kernels (:func:`bnlab.kernels.batch_norm_forward` and
``batch_norm_backward``); the naive full backward keeps their ``dgamma``/``dbeta`` and replaces
``dx``. Both modes use the batch's statistics in training and in evaluation (no running
statistics: the experiment evaluates on large fixed batches).

With ``comm`` of P > 1 ranks (data-parallel training, every rank holding a shard of the global
batch) the statistics are the global batch's, as :class:`~bnlab.layers.SyncBatchNorm`'s: the
full mode hands the kernels the same reduction (:class:`~bnlab.layers.sync_batchnorm.
CommReduction`); the centring sums ``[sum_n x_n, m]`` (forward) and ``[sum_n dy_n, m]``
(proper backward) over the ranks in one allreduce each, so ``mu`` and ``mean(dy)`` are over all
``M = sum_r m_r`` samples; ``dgamma``/``dbeta`` are this rank's share (the trainer sums them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.comm import Communicator
from bnlab.kernels import batch_norm_backward, batch_norm_forward
from bnlab.layers import Layer
from bnlab.layers.sync_batchnorm import CommReduction

__all__ = ["BatchNormalize"]


class BatchNormalize(Layer):
    """``y = x - mean(x)`` (``full=False``) or batch norm (``full=True``) over the batch axis of
    a dense ``(N, C)`` input; ``stop_gradient=True`` is the naive backward; ``comm`` (None:
    this process alone) the ranks whose shards make the batch (see the module).

    >>> import numpy as np
    >>> layer = BatchNormalize(3, full=False, stop_gradient=True)
    >>> x = np.arange(6.0).reshape(2, 3)
    >>> layer.forward(x).tolist()
    [[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]]
    >>> layer.backward(np.ones((2, 3))).tolist()   # naive: dx = dy, so db = sum dy = 2
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """

    # an experiment's own layer: registered under a private name, which checkpoints refuse
    registry_name = "_BatchNormalize"

    def __init__(
        self,
        num_features: int,
        *,
        full: bool = True,
        stop_gradient: bool = False,
        eps: float = 1e-5,
        dtype: Any = np.float32,
        name: str | None = None,
        comm: Communicator | None = None,
    ) -> None:
        super().__init__(name=name)
        self._sync = None if comm is None or comm.size == 1 else CommReduction(comm)
        if not isinstance(num_features, int | np.integer) or num_features < 1:
            raise ValueError(
                f"BatchNormalize: num_features must be an int >= 1, got {num_features!r}"
            )
        if not eps > 0:
            raise ValueError(f"BatchNormalize: eps must be > 0, got {eps!r}")
        self.num_features, self.full, self.eps = int(num_features), bool(full), float(eps)
        self.stop_gradient = bool(stop_gradient)
        if self.full:
            self.params = {
                "gamma": np.ones(num_features, dtype),
                "beta": np.zeros(num_features, dtype),
            }
            self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cache: Any = None
        self._rstd: np.ndarray | None = None

    def get_config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "full": self.full,
            "stop_gradient": self.stop_gradient,
            "eps": self.eps,
            "name": self.name,
        }

    def describe(self) -> str:
        kind = "BN" if self.full else "centre"
        return f"BatchNormalize({kind}, {'naive' if self.stop_gradient else 'proper'})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x - mean(x)`` or ``gamma * (x - mu) / sqrt(var + eps) + beta``, batch statistics."""
        x = np.asarray(x)
        least = 2 if self._sync is None else 1  # a shard of the global batch: one sample
        if x.ndim != 2 or x.shape[1] != self.num_features or x.shape[0] < least:
            raise ValueError(
                f"{self.describe()}: expected input (N >= {least}, {self.num_features}), got "
                f"{x.shape}"
            )
        if not self.full:
            self._cache = x.shape[0]
            return x - self._mean(x).astype(x.dtype)
        sync = self._sync
        y, self._cache = batch_norm_forward(
            x,
            self.params["gamma"],
            self.params["beta"],
            eps=self.eps,
            reduce=None if sync is None else sync.moments,
        )
        if self.stop_gradient:  # 1/s of this batch, the constant the naive backward uses
            # one process: NumPy's var (the bits of the published runs); P ranks: the global
            # batch's, which the forward's reduction merged
            var = x.astype(np.float64).var(axis=0) if sync is None else self._cache.var[0]
            self._rstd = 1.0 / np.sqrt(var + self.eps)
        return y

    def _mean(self, a: np.ndarray) -> np.ndarray:
        """``(1/M) sum_n a_n`` over the batch axis of the global batch, float64."""
        if self._sync is None:
            return a.mean(axis=0, dtype=np.float64)
        buf = np.empty(a.shape[1] + 1)
        buf[:-1], buf[-1] = a.sum(axis=0, dtype=np.float64), len(a)
        self._sync.comm.allreduce(buf)
        return buf[:-1] / buf[-1]

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """Proper or naive ``dx`` (module docstring); fills ``dgamma``, ``dbeta`` (full mode)."""
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}.backward called before forward")
        dy = np.asarray(dy)
        if not self.full:
            if self.stop_gradient:
                return dy.copy()
            return dy - self._mean(dy).astype(dy.dtype)
        sync = self._sync
        dx, dgamma, dbeta = batch_norm_backward(
            dy, self._cache, reduce=None if sync is None else sync.sums
        )
        self.grads["gamma"][...] = dgamma
        self.grads["beta"][...] = dbeta
        if self.stop_gradient:
            assert self._rstd is not None
            scale = (self.params["gamma"] * self._rstd).astype(dy.dtype)
            return dy * scale
        return dx
