"""The normalization core shared by BatchNorm, BatchRenorm and their synchronized twins.

A training forward pass, for G chunks (G = 1, or the ghost batches of ``virtual_batch_size``)::

    local (count, mean, var)  = moments of each chunk of this process's rows   float64, (G, C)
    global (count, mean, var) = _reduce_moments(local)     identity here; Sync*: over all ranks
    scale, shift              = _chunk_affine(mean, var)   gamma, beta (BN); gamma r, ... (renorm)
    y                         = scale * (x - mean) / sqrt(var + eps) + shift     per chunk
    new buffers               = _running_update(count, mean, var)  checked finite, then stored

and its backward::

    local sums  = [sum dy, sum dy * (x - mean)] per chunk and channel   float64, (G, 2, C)
    global sums = _reduce_grad_sums(local sums)                         identity here
    dx          = batch_norm_grad_input(..., global sums, count = global count)
    grads       = _param_grads(local sums)     this process's share: ranks add them up

Everything is validated before anything changes: a bad input, NaN/Inf statistics, running
statistics that would overflow their dtype, or NaN/Inf ``dy`` raise and leave parameters,
gradients and buffers as they were. NaN/Inf in ``x`` or ``dy`` is seen in the float64 sums the
passes compute anyway (no extra pass over the data); only then is the array scanned, for the
message. Outputs ``y`` and ``dx`` are reused buffers where that is invisible to the caller
(:mod:`bnlab.layers._norm_buffers`). The kernels are the chunked passes of
:mod:`bnlab.kernels.batchnorm_chunks` (built on the split entry points of
:mod:`bnlab.kernels.batchnorm`); the layer owns only chunk bounds, reduction hooks and state.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bnlab._checks import as_float_array, check_feature_axis, check_finite, compute_dtype
from bnlab.kernels import batch_norm_inference, batch_norm_inference_backward
from bnlab.kernels._bn_vectors import all_finite
from bnlab.kernels.batchnorm_chunks import (
    ChunkPlan,
    chunk_grad_input,
    chunk_grad_sums,
    chunk_moments,
    chunk_normalize,
    plan_chunks,
)
from bnlab.layers._norm_args import check_norm_args, create_state
from bnlab.layers._norm_buffers import OutputBuffers
from bnlab.layers.base import LAYER_REGISTRY, Layer

__all__ = ["BatchNormBase", "NormCache"]

KERAS_HINT = "momentum is the weight of the new batch; Keras' momentum k is 1 - k here"


@dataclass
class NormCache:
    """What a forward pass keeps for ``backward``; one type for every normalization layer.

    ``mode`` is ``"eval"`` (running statistics: ``x`` is the input) or ``"train"`` (batch
    statistics). In train mode ``x`` is the input in the compute dtype, C-contiguous;
    ``plan.bounds[j]`` are this process's rows of chunk j (no plan: an empty batch);
    ``count (G,)``, ``mean``/``var`` ``(G, C)`` are the (global) chunk statistics and
    ``scale`` ((C,) or (G, C)) the effective gamma.
    ``extra`` holds layer-specific per-chunk arrays (renorm's ``r`` and ``d``).
    """

    mode: str
    x: np.ndarray
    axis: int
    shape: tuple[int, ...]
    out_dtype: np.dtype[Any]
    plan: ChunkPlan | None
    count: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    scale: np.ndarray
    extra: dict[str, np.ndarray]


class BatchNormBase(Layer):
    """Arguments, buffers, config, input checks, ghost batches and the two reduction hooks.

    Subclasses set ``_kind`` and ``_config_keys`` and implement :meth:`_chunk_affine`,
    :meth:`_running_update` and :meth:`_param_grads`. A synchronized subclass overrides
    :meth:`_reduce_moments`, :meth:`_reduce_grad_sums` (and :meth:`_global_rows` for ghost
    batches); nothing else.
    """

    _kind: ClassVar[str] = "BatchNormBase"
    _config_keys: ClassVar[tuple[str, ...]] = ()
    _allow_cumulative: ClassVar[bool] = True

    def __init__(
        self,
        num_features: int | None,
        *,
        axis: int,
        momentum: float | None,
        eps: float,
        virtual_batch_size: int | None,
        affine: bool = True,
        track_running_stats: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        check_norm_args(
            f"{self._kind}({self.name!r})", self._allow_cumulative, num_features=num_features,
            axis=axis, momentum=momentum, eps=eps, virtual_batch_size=virtual_batch_size,
            affine=affine, track_running_stats=track_running_stats,
        )  # fmt: skip
        self.num_features = 0 if num_features is None else int(num_features)  # 0: until built
        self.axis = int(axis)
        self.momentum = None if momentum is None else float(momentum)
        self.eps = float(eps)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.virtual_batch_size = None if virtual_batch_size is None else int(virtual_batch_size)
        create_state(self)  # gamma, beta and the running statistics (none until built)
        self._cache: NormCache | None = None
        self._outputs = OutputBuffers()  # y and dx, reused where the caller cannot tell
        if self.momentum is not None and self.momentum > 0.5:
            warnings.warn(
                f"{self._where}: momentum={self.momentum} keeps {self.momentum:.0%} of each new "
                f"batch in the running statistics; {KERAS_HINT} (Keras' 0.99 is 0.01)",
                UserWarning,
                stacklevel=3,
            )

    def build(self, input_shape: tuple[int, ...]) -> None:
        """A lazy ``BatchNorm()``: num_features = the input's size along ``axis``, then state."""
        if not self.num_features and -len(input_shape) <= self.axis < len(input_shape) > 1:
            self.num_features = int(input_shape[self.axis])  # else _check_input explains
            create_state(self)

    # -- state -------------------------------------------------------------------------------
    @property
    def last_pass(self) -> NormCache | None:
        """What the latest forward pass kept (None before the first): in training mode its
        per-chunk ``count``, ``mean`` and biased ``var`` (global ones under sync); Algorithm 2
        (:func:`bnlab.deploy.recompute_population_stats`) reads them instead of recomputing."""
        return self._cache

    @property
    def running_mean(self) -> np.ndarray | None:
        return self.buffers.get("running_mean")

    @property
    def running_var(self) -> np.ndarray | None:
        return self.buffers.get("running_var")

    @property
    def num_batches_tracked(self) -> int | None:
        n = self.buffers.get("num_batches_tracked")
        return None if n is None else int(n)

    @property
    def _where(self) -> str:
        return f"{self._kind} layer '{self.name}'"

    def reset_running_stats(self) -> None:
        """running_mean = 0, running_var = 1, num_batches_tracked = 0 (as PyTorch)."""
        if "running_mean" in self.buffers:
            self.buffers["running_mean"][...] = 0
            self.buffers["running_var"][...] = 1
            self.buffers["num_batches_tracked"][...] = 0

    def reset_parameters(self) -> None:
        """Reset the running statistics, gamma = 1 and beta = 0 (as PyTorch)."""
        self.reset_running_stats()
        if self.affine:
            self.params["gamma"][...] = 1
            self.params["beta"][...] = 0

    def get_config(self) -> dict[str, Any]:
        config = {**{k: getattr(self, k) for k in self._config_keys}, "name": self.name}
        return {**config, "num_features": self.num_features or None}

    # -- reduction hooks (identity in one process) -------------------------------------------
    def _reduce_moments(
        self, count: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global ``(count (G,), mean (G, C), biased var (G, C))`` from this process's."""
        return count, mean, var

    def _reduce_grad_sums(self, sums: np.ndarray) -> np.ndarray:
        """Global ``[sum dy, sum dy * (x - mean)]`` ``(G, 2, C)`` from this process's."""
        return sums

    def _global_rows(self, n: int) -> tuple[int, int]:
        """``(offset of this process's first row, global batch size)``: ``(0, n)`` here."""
        return 0, n

    # -- layer-specific maths ----------------------------------------------------------------
    def _chunk_affine(
        self, mean: np.ndarray, var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Per-chunk ``(scale, shift, extra)`` that the normalization applies."""
        raise NotImplementedError

    def _running_update(
        self, count: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> dict[str, np.ndarray]:
        """New buffer values (not yet assigned) after a batch with these chunk statistics; an
        overflow may give inf (the core refuses it), without a warning (``np.errstate``)."""
        raise NotImplementedError

    def _chunk_param_grads(
        self, sum_dy: np.ndarray, sum_dy_xmu: np.ndarray, cache: NormCache
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk's ``(dgamma, dbeta)``, (G, C) in the compute dtype, from this process's
        backward sums ``(G, C)`` each."""
        raise NotImplementedError

    def _param_grads(self, sums: np.ndarray, cache: NormCache) -> tuple[np.ndarray, np.ndarray]:
        """``(dgamma, dbeta)``: the chunks' shares added in float64 (one chunk: as it is)."""
        dg, db = self._chunk_param_grads(sums[:, 0], sums[:, 1], cache)
        if len(dg) == 1:
            return dg[0], db[0]
        dgamma, dbeta = np.zeros(self.num_features), np.zeros(self.num_features)
        for j in range(len(dg)):  # in chunk order, as the chunks' layers would add them
            dgamma += dg[j]
            dbeta += db[j]
        return dgamma, dbeta

    def _check_chunking(self, total: int) -> None:
        """Refuse a global batch size the ghost batches cannot split (renorm: k must divide)."""

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize ``x``; see the class docstring for training and eval formulas."""
        self.build(np.shape(x))  # a lazy BatchNorm(): num_features from the first input
        arr, ax = self._check_input(x)
        if not self.training and "running_mean" in self.buffers:
            y = batch_norm_inference(
                arr, self.running_mean, self.running_var, self.params.get("gamma"),
                self.params.get("beta"), axis=ax, eps=self.eps,
                out=self._outputs.get(self.reuse_output, "y", arr.shape, arr.dtype),
            )  # fmt: skip
            self._cache = NormCache("eval", arr, ax, arr.shape, arr.dtype, None, *_EMPTY, {})
            return y
        return self._forward_batch(arr, ax)

    def _check_input(self, x: Any) -> tuple[np.ndarray, int]:
        arr = as_float_array(x, "x", where=self._where, min_ndim=2)
        ax = check_feature_axis(arr.ndim, self.axis, where=self._where)
        if arr.shape[ax] != self.num_features:
            raise ValueError(
                f"{self._where}: x must have num_features={self.num_features} entries along "
                f"axis {self.axis}, got shape {arr.shape} ({arr.shape[ax]} features)"
            )
        if self.virtual_batch_size is not None and ax == 0:
            raise ValueError(
                f"{self._where}: virtual_batch_size splits axis 0, so the feature axis must not "
                f"be 0; got axis={self.axis} for an input of rank {arr.ndim}"
            )
        return arr, ax

    def _chunk_bounds(self, n: int) -> list[tuple[int, int]]:
        """This process's rows of each ghost batch: rows [j k, (j+1) k) of the global batch."""
        k = self.virtual_batch_size if self.training else None
        if k is None:
            return [(0, n)]
        offset, total = self._global_rows(n)
        self._check_chunking(total)
        if total <= k:
            return [(0, n)]
        bounds = []
        for start in range(0, total, k):
            lo, hi = max(start, offset), min(start + k, offset + n)
            bounds.append((lo - offset, max(lo, hi) - offset))
        return bounds

    def _forward_batch(self, arr: np.ndarray, ax: int) -> np.ndarray:
        xc = np.ascontiguousarray(arr, dtype=compute_dtype(arr.dtype))
        bounds = self._chunk_bounds(xc.shape[0])
        plan = plan_chunks(xc, ax, bounds)
        count, mean, var = self._reduce_moments(*chunk_moments(xc, ax, plan))
        update = self.training and self.track_running_stats and "running_mean" in self.buffers
        if sum(count.tolist()) == 0:  # an empty batch: empty output, nothing updated (PyTorch)
            self._cache = NormCache("train", xc, ax, xc.shape, arr.dtype, None, *_EMPTY, {})
            return np.empty(arr.shape, arr.dtype)
        self._check_stats(arr, xc.shape, bounds, count, mean, var)
        scale, shift, extra = self._chunk_affine(mean, var)
        new = self._running_update(count, mean, var) if update else {}
        self._check_buffers(new)  # an overflow to inf is caught here
        out = self._outputs.get(self.reuse_output, "y", xc.shape, xc.dtype)
        y = chunk_normalize(xc, ax, plan, (mean, var), scale, shift, self.eps, out)
        for key, value in new.items():
            self.buffers[key][...] = value
        self._cache = NormCache(
            "train", xc, ax, xc.shape, arr.dtype, plan, count, mean, var, scale, extra
        )
        return y.astype(arr.dtype, copy=False)

    def _check_stats(
        self,
        arr: np.ndarray,
        shape: tuple[int, ...],
        bounds: list[tuple[int, int]],
        count: np.ndarray,
        mean: np.ndarray,
        var: np.ndarray,
    ) -> None:
        """At least 2 values per channel in every chunk; finite statistics (NaN/Inf in x)."""
        for j in np.flatnonzero(count < 2) if min(count.tolist()) < 2 else ():
            a, b = bounds[j]
            what = "training batch" if len(bounds) == 1 else f"virtual batch {j}"
            raise ValueError(
                f"{self._where}: Expected more than 1 value per channel when training, got a "
                f"{what} with {int(count[j])} value(s) per channel (input shape {shape}, rows "
                f"{a}:{b}); use a larger batch or virtual_batch_size, or eval mode"
            )
        if all_finite(mean) and all_finite(var):
            return
        check_finite(arr, "x (training batch)", where=self._where)
        raise FloatingPointError(
            f"{self._where}: the batch statistics are not finite (the variance of x overflows, "
            "or another rank's shard holds NaN/Inf); nothing was updated"
        )

    def _check_buffers(self, new: dict[str, np.ndarray]) -> None:
        for key, value in new.items():
            if value.dtype.kind == "f" and not all_finite(value):
                raise FloatingPointError(
                    f"{self._where}: this batch would make {key} non-finite (it overflows "
                    f"{value.dtype}: |x| is too large for the running statistics' dtype); "
                    "nothing was updated. Scale the input or use float64 (layer.astype)"
                )

    # -- backward ----------------------------------------------------------------------------
    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """``dx``; fills ``grads["gamma"]`` and ``grads["beta"]`` (see the class docstring).

        ``need_input_grad=False`` skips the dx pass of a training step and returns None (the
        sums, and a synchronized layer's collective, still run on every rank).
        """
        if self._cache is None:
            raise RuntimeError(f"{self._where}: backward called before forward")
        cache = self._cache
        g = as_float_array(dy, "dy", where=self._where, min_ndim=0)
        if g.shape != cache.shape:
            raise ValueError(
                f"{self._where}: dy must have the shape of the last forward input {cache.shape}, "
                f"got {g.shape}"
            )
        dx: np.ndarray | None
        if cache.mode == "eval":
            dx, dgamma, dbeta = batch_norm_inference_backward(
                g, cache.x, self.running_mean, self.running_var, self.params.get("gamma"),
                axis=cache.axis, eps=self.eps,
            )  # fmt: skip
            self._check_grad(g, dgamma, dbeta)
        elif cache.plan is None:  # empty training batch
            C = self.num_features
            dx, dgamma, dbeta = np.zeros(g.shape, cache.out_dtype), np.zeros(C), np.zeros(C)
        else:
            dx, dgamma, dbeta = self._backward_train(g, cache, need_input_grad)
        if self.affine:
            self.grads["gamma"][...] = dgamma
            self.grads["beta"][...] = dbeta
        return dx

    def _check_grad(self, g: np.ndarray, *sums: np.ndarray) -> None:
        """NaN/Inf in dy shows in its float64 sums (free to check); raise before any update."""
        if all(all_finite(s) for s in sums):
            return
        check_finite(g, "dy", where=self._where)
        raise FloatingPointError(
            f"{self._where}: the sums of dy are not finite (dy overflows, or another rank's dy "
            "holds NaN/Inf); nothing was updated"
        )

    def _backward_train(
        self, g: np.ndarray, cache: NormCache, need_input_grad: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        x, ax, plan = cache.x, cache.axis, cache.plan
        assert plan is not None
        gc = np.ascontiguousarray(g, dtype=x.dtype)
        sums = chunk_grad_sums(gc, x, ax, plan, cache.mean)
        total = self._reduce_grad_sums(sums)
        self._check_grad(g, total)
        dgamma, dbeta = self._param_grads(sums, cache)
        if not need_input_grad:
            return None, dgamma, dbeta
        stats = (cache.count, cache.mean, cache.var, cache.scale)
        out = self._outputs.get(self.reuse_output, "dx", x.shape, x.dtype)
        dx = chunk_grad_input(gc, x, ax, plan, stats, total, self.eps, out)
        return dx.astype(cache.out_dtype, copy=False), dgamma, dbeta

    def _rstd(self, cache: NormCache) -> np.ndarray:
        """``1 / sqrt(var + eps)`` per chunk and channel, float64 (G, C)."""
        return 1.0 / np.sqrt(cache.var + self.eps)


_EMPTY = (np.zeros(0, np.int64), np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)))

LAYER_REGISTRY.pop("BatchNormBase", None)  # an abstract core, not a layer to build by name
