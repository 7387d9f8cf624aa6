"""Feature scalers with scikit-learn's ``fit`` / ``transform`` / ``inverse_transform`` names.

Statistics are fitted on the training data once and reused unchanged on validation and test
data (and at inference). ``axis`` names the feature axes that are KEPT (Keras' meaning, as
bnlab's ``BatchNorm``); every other axis, always including the sample axis 0, is reduced:

- ``axis=-1`` on (N, D) data: one statistic per feature (scikit-learn's ``StandardScaler``);
- ``axis=-1`` on NHWC images: one statistic per channel;
- ``axis=None``: one statistic per element of a sample (per pixel and channel for images).

Statistics are accumulated in float64 over chunks of samples (two passes for the variance,
no ``E[x^2] - E[x]^2`` cancellation). ``transform`` returns float64 for float64 input and
float32 otherwise (uint8 images included).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import check_finite, compute_dtype
from bnlab.data._args import require_keys

__all__ = ["Standardizer", "MinMaxScaler", "NotFittedError"]

_CHUNK_ELEMENTS = 1 << 22


def _check_axis_type(axis: Any, where: str) -> int | tuple[int, ...] | None:
    """``axis`` if it is None, an int or a non-empty tuple of ints (bools refused)."""
    items = axis if isinstance(axis, tuple) else (axis,)
    ok = axis is None or (
        len(items) > 0
        and all(isinstance(a, int | np.integer) and not isinstance(a, bool) for a in items)
    )
    if not ok:
        raise TypeError(
            f"{where}: axis must be None, an int or a tuple of ints (the feature axes kept), "
            f"got {axis!r}"
        )
    return axis


class NotFittedError(ValueError, AttributeError):
    """``transform`` was called before ``fit`` (as scikit-learn's exception of that name)."""


class _Scaler:
    """Shared machinery: ``y = (x - offset) / scale`` with per-feature ``offset``, ``scale``."""

    def __init__(self, axis: int | tuple[int, ...] | None = -1) -> None:
        self.axis = _check_axis_type(axis, type(self).__name__)
        self._offset: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._ndim: int | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _kept(self, ndim: int) -> tuple[int, ...]:
        where = type(self).__name__
        if ndim < 2:
            raise ValueError(
                f"{where}: x must have a sample axis and at least one feature axis "
                f"(ndim >= 2), got ndim {ndim}; reshape 1-D data to (N, 1)"
            )
        if self.axis is None:
            return tuple(range(1, ndim))
        axes = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
        kept = []
        for a in axes:
            if not -ndim <= a < ndim or a % ndim == 0:
                raise ValueError(
                    f"{where}: axis={self.axis} is invalid for an input of rank {ndim}; "
                    f"expected feature axes in [1, {ndim - 1}] (axis 0 holds the samples)"
                )
            kept.append(a % ndim)
        return tuple(sorted(set(kept)))

    def _check_input(self, x: Any, fitting: bool) -> np.ndarray:
        where = type(self).__name__
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{where}: x must be a numeric array, got dtype {arr.dtype}")
        kept = self._kept(arr.ndim)
        if fitting:
            if arr.size == 0:
                raise ValueError(
                    f"{where}.fit: x has no values (shape {arr.shape}); expected at least one "
                    "sample and one feature"
                )
            if arr.dtype.kind == "f":
                check_finite(arr, "x", where=f"{where}.fit")
            return arr
        if self._offset is None or self._scale is None:
            raise NotFittedError(
                f"{where} is not fitted yet; call fit(x_train) before transform/inverse_transform"
            )
        expect = self._offset.shape
        got = tuple(arr.shape[a] if a in kept else 1 for a in range(arr.ndim))
        if arr.ndim != self._ndim or got != expect:
            raise ValueError(
                f"{where}: x of shape {arr.shape} does not match the fitted feature shape "
                f"{expect} (axis={self.axis}); transform data shaped like the training data"
            )
        if arr.dtype.kind == "f":
            check_finite(arr, "x", where=where)
        return arr

    def _chunks(self, x: np.ndarray) -> Any:
        step = max(1, _CHUNK_ELEMENTS // max(1, x[0].size))
        for i in range(0, x.shape[0], step):
            yield x[i : i + step].astype(np.float64)

    def _reduce_axes(self, x: np.ndarray) -> tuple[int, ...]:
        kept = self._kept(x.ndim)
        return tuple(a for a in range(x.ndim) if a not in kept)

    def _set(self, offset: np.ndarray, scale: np.ndarray, ndim: int) -> None:
        if not (np.isfinite(offset).all() and np.isfinite(scale).all()):
            raise FloatingPointError(
                f"{type(self).__name__}.fit: the statistics of x overflow float64 (|x| near "
                "1e308); nothing was fitted. Rescale the data first"
            )
        scale = scale.copy()
        scale[scale == 0] = 1.0  # constant features are shifted, not divided by zero
        self._offset, self._scale, self._ndim = offset, scale, ndim

    # -- public API ------------------------------------------------------------------------
    def fit(self, x: Any) -> _Scaler:
        raise NotImplementedError

    def transform(self, x: Any) -> np.ndarray:
        """``(x - offset) / scale`` in float32 (float64 for float64 input)."""
        arr = self._check_input(x, fitting=False)
        assert self._offset is not None and self._scale is not None
        dt = compute_dtype(arr.dtype)
        out = arr.astype(dt)
        out -= self._offset.astype(dt)
        out /= self._scale.astype(dt)
        return out

    def fit_transform(self, x: Any) -> np.ndarray:
        return self.fit(x).transform(x)

    def inverse_transform(self, y: Any) -> np.ndarray:
        """``y * scale + offset`` (floats; round and cast yourself to recover uint8 images)."""
        arr = self._check_input(y, fitting=False)
        assert self._offset is not None and self._scale is not None
        dt = compute_dtype(arr.dtype)
        out = arr.astype(dt)
        out *= self._scale.astype(dt)
        out += self._offset.astype(dt)
        return out

    @property
    def is_fitted(self) -> bool:
        return self._offset is not None

    def _fitted(self, statistic: np.ndarray | None) -> np.ndarray:
        """``statistic`` of the data fitted, or a NotFittedError before :meth:`fit`."""
        if statistic is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet; call fit(x_train) first"
            )
        return statistic

    def state_dict(self) -> dict[str, Any]:
        """``{"axis", "ndim", "offset", "scale"}`` (arrays copied); empty arrays if unfitted."""
        axis = list(self.axis) if isinstance(self.axis, tuple) else self.axis
        empty = np.zeros(0)
        return {
            "axis": axis,
            "ndim": self._ndim,
            "offset": empty if self._offset is None else self._offset.copy(),
            "scale": empty if self._scale is None else self._scale.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, validated first (an error leaves the scaler as it was)."""
        where = f"{type(self).__name__}.load_state_dict"
        require_keys(state, ("axis", "ndim", "offset", "scale"), where)
        offset, scale = np.asarray(state["offset"]), np.asarray(state["scale"])
        if offset.shape != scale.shape or offset.dtype.kind not in "fiu":
            raise ValueError(
                f"{where}: offset {offset.dtype} {offset.shape} and scale {scale.shape} must be "
                "numeric arrays of the same shape"
            )
        axis = state["axis"]
        axis = _check_axis_type(tuple(axis) if isinstance(axis, list) else axis, where)
        if state["ndim"] is None or offset.size == 0:
            self.axis, self._offset, self._scale, self._ndim = axis, None, None, None
            return
        ndim = int(state["ndim"])
        probe = type(self)(axis)
        kept = probe._kept(ndim)  # raises for an axis that does not fit ndim
        want = tuple(offset.shape[a] if a in kept else 1 for a in range(min(ndim, offset.ndim)))
        if offset.ndim != ndim or offset.shape != want or 0 in offset.shape:
            raise ValueError(
                f"{where}: offset/scale of shape {offset.shape} do not fit ndim={ndim} and "
                f"axis={axis} (expected 1 on every reduced axis, sample axis included)"
            )
        if not (np.isfinite(offset).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"{where}: offset must be finite and scale finite and > 0")
        self.axis, self._ndim = axis, ndim
        self._offset, self._scale = offset.astype(np.float64), scale.astype(np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(axis={self.axis!r})"


class Standardizer(_Scaler):
    """Standardize features: ``y = (x - mean) / std`` (scikit-learn's ``StandardScaler``).

    ``mean`` and the population ``std`` (ddof=0) are computed over every non-kept axis of the
    training data by :meth:`fit`; a feature with std 0 gets scale 1. Attributes after fitting:
    ``mean_``, ``scale_`` (shaped to broadcast against x) and ``var_`` (set by ``fit`` only).

    >>> s = Standardizer(axis=-1).fit(np.array([[0.0, 10.0], [2.0, 30.0]]))
    >>> s.transform(np.array([[1.0, 20.0]])).tolist()
    [[0.0, 0.0]]
    """

    def fit(self, x: Any) -> Standardizer:
        arr = self._check_input(x, fitting=True)
        red = self._reduce_axes(arr)
        count = arr.size // int(np.prod([arr.shape[a] for a in self._kept(arr.ndim)]))
        total = sum(c.sum(axis=red, keepdims=True) for c in self._chunks(arr))
        mean = np.asarray(total) / count
        with np.errstate(over="ignore"):  # an overflow is reported by _set
            sq = sum(np.square(c - mean).sum(axis=red, keepdims=True) for c in self._chunks(arr))
        var = np.asarray(sq) / count
        self._set(mean, np.sqrt(var), arr.ndim)
        self.var_ = var
        return self

    @property
    def mean_(self) -> np.ndarray:
        return self._fitted(self._offset)

    @property
    def scale_(self) -> np.ndarray:
        return self._fitted(self._scale)


class MinMaxScaler(_Scaler):
    """Scale features to [0, 1]: ``y = (x - min) / (max - min)`` (scikit-learn's default range).

    ``min`` and ``max`` are taken over every non-kept axis of the training data; a constant
    feature gets range 1. Attributes after fitting: ``data_min_``, ``data_max_`` (the latter is
    not part of ``state_dict``).
    """

    def fit(self, x: Any) -> MinMaxScaler:
        arr = self._check_input(x, fitting=True)
        red = self._reduce_axes(arr)
        lo = np.minimum.reduce([c.min(axis=red, keepdims=True) for c in self._chunks(arr)])
        hi = np.maximum.reduce([c.max(axis=red, keepdims=True) for c in self._chunks(arr)])
        with np.errstate(over="ignore"):  # an overflow is reported by _set
            span = hi - lo
        self._set(lo, span, arr.ndim)
        self.data_max_ = hi
        return self

    @property
    def data_min_(self) -> np.ndarray:
        return self._fitted(self._offset)
