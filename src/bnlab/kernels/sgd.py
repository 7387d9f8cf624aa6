"""SGD's parameter update in one pass, bit-identical to the two NumPy calls it replaces.

:class:`bnlab.optim.SGD` computes ``tmp = g * lr; p -= tmp`` (two passes over the parameter,
two ufunc dispatches); :func:`sgd_update` computes ``p[i] = p[i] - g[i] * lr`` elementwise in
one loop. The multiplication is rounded to the parameter's dtype before the subtraction, as in
NumPy (``lr`` is cast to that dtype first, NumPy's rule for a Python float scalar), and Numba
compiles without fast-math, so LLVM does not contract the two into a fused multiply-add: the
results are the same bits (tests/kernels/test_sgd_kernels.py checks it).

With momentum (torch's rule, dampening 0), :func:`sgd_momentum_update` does, per element::

    b = g  (first step)   or   b = (b * momentum) + g
    d = (b * momentum) + g  if nesterov else  b
    p = p - (d * lr)

each operation rounded to the dtype, in the order of the NumPy code of ``SGD._update``.
"""

from __future__ import annotations

import numpy as np

from bnlab.kernels._numba import njit

__all__ = ["sgd_update", "sgd_momentum_update", "fusable"]


@njit(cache=True)
def _sgd(p, g, lr):  # pragma: no cover (compiled)
    for i in range(p.size):
        p[i] = p[i] - g[i] * lr


@njit(cache=True)
def _sgd_momentum(p, g, b, lr, m, first, nesterov):  # pragma: no cover (compiled)
    for i in range(p.size):
        bi = g[i] if first else b[i] * m + g[i]
        b[i] = bi
        d = bi * m + g[i] if nesterov else bi
        p[i] = p[i] - d * lr


_FAST = (np.dtype(np.float32), np.dtype(np.float64))


def fusable(*arrays: np.ndarray) -> bool:
    """Whether the fused update applies: C-contiguous float32/float64 arrays of one dtype and
    shape, the first (the parameter) writeable; otherwise the caller keeps its NumPy code."""
    a0 = arrays[0]
    return (
        a0.dtype in _FAST
        and a0.flags.writeable
        and all(
            a.dtype == a0.dtype and a.shape == a0.shape and a.flags.c_contiguous for a in arrays
        )
    )


def sgd_update(p: np.ndarray, g: np.ndarray, lr: float) -> None:
    """``p -= lr * g`` in place, as ``tmp = g * lr; p -= tmp`` rounds it (see module doc).

    ``p`` and ``g`` must pass :func:`fusable` (1-D views of them are fastest to pass).
    """
    _sgd(_flat(p), _flat(g), p.dtype.type(lr))


def _flat(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 1 else a.reshape(-1)


def sgd_momentum_update(
    p: np.ndarray,
    g: np.ndarray,
    buf: np.ndarray,
    lr: float,
    momentum: float,
    *,
    first: bool,
    nesterov: bool,
) -> None:
    """The momentum step of :class:`bnlab.optim.SGD` in one pass (see the module doc)."""
    t = p.dtype.type
    _sgd_momentum(_flat(p), _flat(g), _flat(buf), t(lr), t(momentum), first, nesterov)
