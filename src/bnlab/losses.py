"""Loss functions: ``loss_fn(outputs, targets) -> (loss, doutputs)``.

Each loss returns the scalar loss as a Python float and the gradient of that loss with respect
to ``outputs`` (same shape and dtype as ``outputs``), so a training step is::

    loss, dlogits = SoftmaxCrossEntropy()(model.forward(x), y)
    model.backward(dlogits)

dtype policy: float64 outputs are computed in float64; float32 and float16 in float32 (the
gradient is returned in the input dtype).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._checks import as_float_array, compute_dtype

__all__ = ["Loss", "SoftmaxCrossEntropy", "MSE", "log_softmax", "softmax"]


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log softmax(z) = z - max(z) - log(sum(exp(z - max(z))))`` (log-sum-exp, no overflow)."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``softmax(z)_j = exp(z_j - max z) / sum_k exp(z_k - max z)``; finite for any finite z."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class Loss:
    """Base class: ``__call__(outputs, targets) -> (loss: float, doutputs: ndarray)``."""

    def __call__(self, outputs: Any, targets: Any) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy from logits, averaged over the batch (torch's ``CrossEntropyLoss``).

    For logits ``z`` of shape (N, C) and integer labels ``y`` of shape (N,)::

        loss   = -(1/N) * sum_i log softmax(z_i)[y_i]
        dloss/dz_i = (softmax(z_i) - onehot(y_i)) / N

    ``log softmax`` is computed with the log-sum-exp shift, so logits of 1e4 give a finite loss
    and gradient. Targets may also be a float (N, C) array of one-hot rows or class
    probabilities (each row summing to 1): ``loss = -(1/N) sum_i sum_c t_ic log softmax(z_i)_c``
    and the gradient is ``(softmax(z_i) - t_i) / N``.
    """

    def __call__(self, outputs: Any, targets: Any) -> tuple[float, np.ndarray]:
        where = "SoftmaxCrossEntropy"
        logits = as_float_array(outputs, "logits", where=where, min_ndim=2)
        if logits.ndim != 2:
            raise ValueError(
                f"{where}: logits must have shape (batch, classes), got shape {logits.shape}"
            )
        n, c = logits.shape
        if n == 0:
            raise ValueError(f"{where}: logits has an empty batch (shape {logits.shape})")
        if c == 0:
            raise ValueError(f"{where}: logits has 0 classes (shape {logits.shape}); need >= 1")
        if logits.dtype.itemsize > 8:
            raise TypeError(
                f"{where}: logits dtype {logits.dtype} would be computed in float32 silently; "
                "pass float32 or float64"
            )
        dt = compute_dtype(logits.dtype)
        z = logits.astype(dt, copy=False)
        logp = log_softmax(z)
        probs = np.exp(logp)
        t = np.asarray(targets)
        if t.dtype.kind in "iu":
            labels = _check_labels(t, n, c, where)
            rows = np.arange(n)
            loss = -float(logp[rows, labels].sum(dtype=np.float64)) / n
            grad = probs
            grad[rows, labels] -= 1
        elif t.dtype.kind == "f":
            if t.shape != logits.shape:
                raise ValueError(
                    f"{where}: float targets must be one-hot or probability rows of the logits' "
                    f"shape {logits.shape}, got shape {t.shape}; pass integer class indices of "
                    f"shape ({n},) otherwise"
                )
            tt = t.astype(dt, copy=False)
            loss = -float((tt * logp).sum(dtype=np.float64)) / n
            grad = probs - tt
        else:
            raise TypeError(
                f"{where}: targets must be integer class indices of shape ({n},) or float "
                f"one-hot rows of shape {logits.shape}, got dtype {t.dtype}"
            )
        grad /= n
        return loss, grad.astype(logits.dtype, copy=False)


def _check_labels(t: np.ndarray, n: int, c: int, where: str) -> np.ndarray:
    if t.shape != (n,):
        raise ValueError(
            f"{where}: integer targets must have shape ({n},) (one class index per logits row), "
            f"got shape {t.shape}"
        )
    lo, hi = (int(t.min()), int(t.max())) if t.size else (0, 0)
    if lo < 0 or hi >= c:
        raise ValueError(
            f"{where}: class indices must lie in [0, {c - 1}] for {c} logits, "
            f"got values in [{lo}, {hi}]"
        )
    return t.astype(np.intp, copy=False)


class MSE(Loss):
    """Mean squared error over every element (torch's ``MSELoss()``, Keras' ``mse``).

    ``loss = (1/S) * sum (y - t)^2`` and ``dloss/dy = 2 (y - t) / S`` where ``S = y.size``.
    ``outputs`` and ``targets`` must have the same shape (no silent broadcasting: an (N, 1)
    output against (N,) targets is almost always a bug).
    """

    def __call__(self, outputs: Any, targets: Any) -> tuple[float, np.ndarray]:
        where = "MSE"
        y = as_float_array(outputs, "outputs", where=where)
        t = np.asarray(targets)
        if t.dtype.kind not in "fiub":
            raise TypeError(f"{where}: targets must be numeric, got dtype {t.dtype}")
        if t.shape != y.shape:
            raise ValueError(
                f"{where}: outputs and targets must have the same shape, got outputs "
                f"{y.shape} and targets {t.shape}"
            )
        if y.size == 0:
            raise ValueError(f"{where}: outputs is empty (shape {y.shape})")
        dt = compute_dtype(y.dtype)
        diff = y.astype(dt) - t.astype(dt, copy=False)
        loss = float(np.square(diff).sum(dtype=np.float64)) / y.size
        diff *= 2.0 / y.size
        return loss, diff.astype(y.dtype, copy=False)
