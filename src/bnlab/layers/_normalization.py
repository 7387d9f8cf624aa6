"""The normalization core shared by BatchNorm, BatchRenorm and their synchronized twins.

A training step is one public kernel call each way (``batch_norm_forward``/``_backward`` or the
renorm pair) with what the layer owns: ghost batches (``groups``), its reduction over ranks
(``_sync``; None here) and, in a Sequential, its own output buffers (``out``); then the running
statistics are updated from the kernel's cache, checked finite first. Eval mode with running
statistics is ``batch_norm_inference`` and its backward. An error changes nothing.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, ClassVar

import numpy as np

from bnlab._checks import as_float_array, check_feature_axis
from bnlab.kernels.batchnorm import (
    BatchNormCache,
    batch_norm_inference,
    batch_norm_inference_backward,
)
from bnlab.layers._common import BufferPool, output_buffer, store_grads
from bnlab.layers.base import LAYER_REGISTRY, Layer

__all__ = ["BatchNormBase", "is_int", "is_real"]

KERAS_HINT = "momentum is the weight of the new batch; Keras' momentum k is 1 - k here"


def is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


KernelError = (TypeError, ValueError, FloatingPointError)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def named(err: Exception, where: str) -> Exception:
    """A kernel's error with the layer's name (and rank) before its message (a builtin type;
    others as they are)."""
    return type(err)(f"{where}: {err}") if type(err).__module__ == "builtins" else err


class BatchNormBase(Layer):
    """Arguments, buffers, config, input checks, ghost batches and the kernel calls;
    subclasses set ``_kind``, ``_config_keys`` and the three methods below."""

    _kind: ClassVar[str] = "BatchNormBase"
    _config_keys: ClassVar[tuple[str, ...]] = ()
    _allow_cumulative: ClassVar[bool] = True
    _sync: Any = None

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
        args = {"num_features": num_features, "axis": axis, "momentum": momentum, "eps": eps}
        self._check_args(args, virtual_batch_size, affine, track_running_stats)
        self.num_features = 0 if num_features is None else int(num_features)  # 0: until built
        self.axis = int(axis)
        self.momentum = None if momentum is None else float(momentum)
        self.eps = float(eps)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.virtual_batch_size = None if virtual_batch_size is None else int(virtual_batch_size)
        self._create_state()
        self._cache: BatchNormCache | None = None
        self._eval_input: np.ndarray | None = None
        self._pool = BufferPool()  # y and dx inside a Sequential (reuse_output)
        if self.momentum is not None and self.momentum > 0.5:
            warnings.warn(
                f"{self._where}: momentum={self.momentum} keeps {self.momentum:.0%} of each new "
                f"batch in the running statistics; {KERAS_HINT} (Keras' 0.99 is 0.01)",
                UserWarning,
                stacklevel=3,
            )

    def _create_state(self) -> None:
        """gamma, beta, their gradients (``affine``) and the running statistics
        (``track_running_stats``) for ``num_features`` channels; none while it is 0 (lazy)."""
        C = self.num_features
        if not C:
            return
        if self.affine:
            self.params = {"gamma": np.ones(C, np.float32), "beta": np.zeros(C, np.float32)}
            self.grads = {"gamma": np.zeros(C, np.float32), "beta": np.zeros(C, np.float32)}
        if self.track_running_stats:
            self.buffers = {
                "running_mean": np.zeros(C, np.float32),
                "running_var": np.ones(C, np.float32),
                "num_batches_tracked": np.array(0, np.int64),
            }

    def build(self, input_shape: tuple[int, ...]) -> None:
        """A lazy ``BatchNorm()``: num_features = the input's size along ``axis``, then state."""
        if not self.num_features and -len(input_shape) <= self.axis < len(input_shape) > 1:
            self.num_features = int(input_shape[self.axis])  # else _check_input explains
            self._create_state()

    def _check_args(self, args: dict[str, Any], vbs: Any, affine: Any, track: Any) -> None:
        """TypeError/ValueError naming the constructor argument that is wrong."""
        where = f"{self._kind}({self.name!r})"
        n, axis, momentum, eps = args.values()
        cumulative = "got None (the cumulative average is a BatchNorm option only)"
        problems = [
            (n is not None and not is_int(n), TypeError, f"num_features must be an int, got {n!r}"),
            (not is_int(axis), TypeError, f"axis must be an int, got {axis!r}"),
            (is_int(n) and n < 1, ValueError, f"num_features must be >= 1, got {n}"),
            (momentum is None and not self._allow_cumulative, TypeError,
             f"momentum must be a float in [0, 1], {cumulative}"),
            (momentum is not None and not is_real(momentum), TypeError,
             f"momentum must be a float in [0, 1], got {momentum!r}"),
            (is_real(momentum) and not 0.0 <= float(momentum) <= 1.0, ValueError,
             f"momentum must be in [0, 1] or None, got {momentum}"),
            (not is_real(eps), TypeError, f"eps must be a float > 0, got {eps!r}"),
            (is_real(eps) and not (float(eps) > 0.0 and np.isfinite(float(eps))), ValueError,
             f"eps must be > 0 and finite, got {eps}"),
            (vbs is not None and (not is_int(vbs) or vbs < 1), ValueError,
             f"virtual_batch_size must be a positive int or None, got {vbs!r}"),
            (not isinstance(affine, bool | np.bool_), TypeError,
             f"affine must be True or False, got {affine!r}"),
            (not isinstance(track, bool | np.bool_), TypeError,
             f"track_running_stats must be True or False, got {track!r}"),
        ]  # fmt: skip
        for bad, exc, message in problems:
            if bad:
                raise exc(f"{where}: {message}")

    # -- state -------------------------------------------------------------------------------
    @property
    def last_pass(self) -> BatchNormCache | None:
        """The latest training forward's kernel cache (None before, and after eval): its
        ``count``, ``mean``, biased ``var`` per ghost batch are what Algorithm 2 reads."""
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
        sync = self._sync
        rank = "" if sync is None else f" (rank {sync.comm.rank} of {sync.comm.size})"
        return f"{self._kind} layer '{self.name}'{rank}"

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
        config = {k: getattr(self, k) for k in self._config_keys} | {"name": self.name}
        return config | {"num_features": self.num_features or None}  # None: not built yet

    # -- what a subclass computes: its kernels and its running-statistics update (new values,
    # not yet assigned; an overflow may give inf, refused by forward) ------------------------
    def _kernel_forward(
        self, x: np.ndarray, groups: list[tuple[int, int]] | None, out: np.ndarray | None
    ) -> tuple[np.ndarray, BatchNormCache]:
        raise NotImplementedError

    def _kernel_backward(
        self, dy: np.ndarray, cache: BatchNormCache, out: np.ndarray | None, need: bool
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _running_update(self, cache: BatchNormCache) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _check_groups(self, total: int) -> None:
        """Refuse a global batch size the ghost batches cannot split (renorm: k must divide)."""

    # -- forward -----------------------------------------------------------------------------
    def _out(self, purpose: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """The layer's own buffer inside a Sequential; None (the kernel allocates) alone."""
        return output_buffer(self._pool, True, purpose, shape, dtype) if self.reuse_output else None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize ``x``; see the class docstring for training and eval formulas."""
        if not self.num_features:
            self.build(np.shape(x))  # a lazy BatchNorm(): num_features from the first input
        arr, ax = self._check_input(x)
        self._check_state()
        out = self._out("y", arr.shape, arr.dtype)
        groups = None if not self.training else self._groups(arr.shape[0])
        try:
            if not self.training and "running_mean" in self.buffers:
                y = batch_norm_inference(
                    arr, self.running_mean, self.running_var, self.params.get("gamma"),
                    self.params.get("beta"), axis=ax, eps=self.eps, out=out,
                )  # fmt: skip
                self._cache, self._eval_input = None, arr
                return y
            y, cache = self._kernel_forward(arr, groups, out)
        except KernelError as err:
            raise named(err, self._where) from None
        update = self.training and self.track_running_stats and "running_mean" in self.buffers
        if update and any(cache.count.tolist()):  # an empty batch changes nothing (PyTorch)
            self._update_buffers(cache)
        self._cache, self._eval_input = cache, None
        return y

    def _check_input(self, x: Any) -> tuple[np.ndarray, int]:
        if type(x) is np.ndarray and x.dtype.kind == "f" and -x.ndim <= self.axis < x.ndim > 1:
            arr, ax = x, self.axis % x.ndim  # the hot path: nothing to convert
        else:
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

    def _check_state(self) -> None:
        """ValueError for buffers replaced by hand (``buffers[k] = v``) the update cannot write in
        place: float32/float64 ``(C,)`` statistics, an integer count ``()``. Assign into them
        (``buffers[k][...] = v``) or use load_state_dict (which checks the values too)."""
        b, C = self.buffers, (self.num_features,)
        rm, rv, n = b.get("running_mean"), b.get("running_var"), b.get("num_batches_tracked")
        if not b or (
            type(rm) is type(rv) is type(n) is np.ndarray and rm.shape == rv.shape == C
            and rm.dtype in _FLOATS and rv.dtype in _FLOATS and n.shape == ()
            and n.dtype.kind in "iu"
        ):  # fmt: skip
            return
        for key, v, want in (
            ("running_mean", rm, C),
            ("running_var", rv, C),
            ("num_batches_tracked", n, ()),
        ):
            integer = not want
            if (
                type(v) is np.ndarray
                and v.shape == want
                and (v.dtype.kind in "iu" if integer else v.dtype in _FLOATS)
            ):
                continue
            got = f"{type(v).__name__} {getattr(v, 'dtype', '')} {getattr(v, 'shape', '')}".strip()
            kind = (
                "an integer array of shape ()"
                if integer
                else f"a float32/float64 array of shape {want}"
            )
            raise ValueError(
                f"{self._where}: buffers[{key!r}] must be {kind}, got {got}; assign into it "
                f"(buffers[{key!r}][...] = v) or use load_state_dict"
            )

    def _groups(self, n: int) -> list[tuple[int, int]] | None:
        """This process's rows of each ghost batch: rows [j k, (j+1) k) of the global batch."""
        k = self.virtual_batch_size
        if k is None or not self.training:
            return None
        offset, total = (0, n) if self._sync is None else self._sync.rows(n)
        self._check_groups(total)
        if total <= k:
            return None
        bounds = []
        for start in range(0, total, k):
            lo, hi = max(start, offset), min(start + k, offset + n)
            bounds.append((min(lo - offset, n), min(max(lo, hi) - offset, n)))  # may be empty
        return bounds

    def _update_buffers(self, cache: BatchNormCache) -> None:
        """The running statistics from this batch: computed, checked finite, then stored."""
        new = self._running_update(cache)
        self._check_buffers(new)
        for key, value in new.items():
            self.buffers[key][...] = value

    def _check_buffers(self, new: dict[str, np.ndarray]) -> None:
        for key, value in new.items():
            old = self.buffers[key]
            if old.dtype.kind == "f" and not (
                np.isfinite(old).all() and (key != "running_var" or old.min() >= 0)
            ):
                raise ValueError(
                    f"{self._where}: {key} holds NaN, Inf or (a variance) negative values, set by "
                    "hand?; nothing was updated. Call reset_running_stats() or load a valid state"
                )
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise FloatingPointError(
                    f"{self._where}: this batch would make {key} non-finite (it overflows "
                    f"{value.dtype}: |x| is too large for the running statistics' dtype); "
                    "nothing was updated. Scale the input or use float64 (layer.astype)"
                )

    # -- backward ----------------------------------------------------------------------------
    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """``dx``; fills ``grads``. ``need_input_grad=False`` skips the dx pass and returns None
        (the sums, and a synchronized layer's collective, still run on every rank)."""
        cache, x = self._cache, self._eval_input
        if cache is None and x is None:
            raise RuntimeError(f"{self._where}: backward called before forward")
        ok = type(dy) is np.ndarray and dy.dtype.kind == "f"
        g = dy if ok else as_float_array(dy, "dy", where=self._where, min_ndim=0)
        shape = cache.x.shape if cache is not None else x.shape  # type: ignore[union-attr]
        if g.shape != shape:
            raise ValueError(
                f"{self._where}: dy must have the shape of the last forward input {shape}, "
                f"got {g.shape}"
            )
        dx: np.ndarray | None
        try:
            if cache is None:
                dx, dgamma, dbeta = batch_norm_inference_backward(
                    g, x, self.running_mean, self.running_var, self.params.get("gamma"),
                    axis=check_feature_axis(g.ndim, self.axis, where=self._where), eps=self.eps,
                )  # fmt: skip
            else:
                out = self._out("dx", g.shape, cache.out_dtype) if need_input_grad else None
                dx, dgamma, dbeta = self._kernel_backward(g, cache, out, need_input_grad)
        except KernelError as err:
            raise named(err, self._where) from None
        if self.affine:
            store_grads(self.grads, {"gamma": dgamma, "beta": dbeta}, self._where)
        return dx


LAYER_REGISTRY.pop("BatchNormBase", None)  # an abstract core, not a layer to build by name
